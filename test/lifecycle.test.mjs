// The one lifecycle (src/lifecycle.ts), seen from outside through its
// diagnostics channel: the phases of a first start, a refused restart, a
// restart that happens (the new image starts again), and a stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, freePort, putFile, root, startNode, waitFor } from './helpers.mjs';

const { reaper, dir } = fileScope('pd-lifecycle-');
const dist = (name) => pathToFileURL(join(root, 'dist', name)).href;

test('phases: starting -> up (a server listens) -> reloading -> up (refused) -> reloading -> draining -> [exec] -> up -> stopping', async () => {
  const port = await freePort();
  writeFileSync(join(dir, 'app.mjs'), `
import diagnostics_channel from 'node:diagnostics_channel';
diagnostics_channel.subscribe('posix-daemon:lifecycle', (m) => console.log('PHASE ' + m.previous + ' ' + m.phase));
const http = await import('node:http');
const { restartOnSignal } = await import('${dist('autorestart.mjs')}');
const { gracefulShutdown } = await import('${dist('monitor.mjs')}');
const { version } = await import('./version.mjs');
const server = http.createServer((req, res) => res.end('v' + version));
gracefulShutdown();
server.listen(${port}, '127.0.0.1', () => {
  restartOnSignal('SIGUSR2', { servers: [server], preflightTimeout: 20000 });
  console.log('READY v' + version);
});
`);
  writeFileSync(join(dir, 'version.mjs'), 'export const version = 1;\n');
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  await waitFor(() => app.out.includes('READY v1'), { what: () => app.err });
  putFile(dir, 'version.mjs', 'throw new Error("bad release");\n');
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => app.err.includes('restart refused'), { what: () => app.err });
  putFile(dir, 'version.mjs', 'export const version = 2;\n');
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => /^READY v2$/m.test(app.out), { what: () => app.out + app.err });
  process.kill(app.child.pid, 'SIGTERM');
  const st = await app.exited;
  assert.deepEqual(st, { code: 0, signal: null }, app.err);
  // The lines of this PID only (a preflight's lines are marked with its own).
  const phases = app.out.split('\n').filter((l) => l.startsWith('PHASE ')).map((l) => l.slice(6));
  assert.deepEqual(phases, [
    'starting up',                          // a server listens
    'up reloading', 'reloading up',         // refused: the running version is up again
    'up reloading', 'reloading draining',   // the exec
    'starting up',                          // the new image took its socket
    'up stopping',                          // SIGTERM
  ], app.out);
});
