// A program whose node_modules/posix-daemon is a symlink (pnpm, `npm link`):
// every image a restart starts (the preflight/bridge and the image after the
// exec, both with the guard preloaded) must load the one copy of the library
// the program imports, or the program's listen() sees no handed-over socket
// (inherited: false, the systemd name lost) and the bridge does not know it
// is one. The cause was Node's fs.realpathSync reading a process-wide stat
// array that our fstatSync of a pipe had left behind (see fdfile.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, root, startNode, waitFor } from './helpers.mjs';
import { freePort } from './systemd-helpers.mjs';

const { reaper, dirs } = fileScope();

test('node_modules/posix-daemon as a symlink: the bridge and the next image take the socket under its name (one copy of the library)', { timeout: 120000 }, async () => {
  const dir = dirs.make('pd-symlink-');
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'posix-daemon'), 'dir');
  const port = await freePort();
  writeFileSync(join(dir, 'app.mjs'), `
import http from 'node:http';
import { createRequire } from 'node:module';
import { listen, restartOnSignal, isBridge } from 'posix-daemon/autorestart';
const require = createRequire(import.meta.url);
const server = http.createServer((req, res) => res.end('ok\\n'));
const result = await listen(server, { port: ${port}, host: '127.0.0.1', name: 'web' });
// Armed before LISTEN: the test signals as soon as it reads it.
restartOnSignal('SIGUSR2', { servers: [server], onError: (err) => console.log('REFUSED ' + err.message) });
process.on('SIGTERM', () => process.exit(0));
console.log('LISTEN ' + JSON.stringify({
  pid: process.pid, bridge: isBridge(), result,
  resolved: import.meta.resolve('posix-daemon/autorestart'),
  copies: Object.keys(require.cache).filter((k) => k.endsWith('/dist/sockets.js')),
}));
`);
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  const { child } = app;
  // A bridge's lines come marked with its PID ("[preflight PID] ", "[bridge PID] ").
  const lines = () => app.out.split('\n').map((l) => l.replace(/^\[(?:preflight|bridge) \d+\] /, ''))
    .filter((l) => l.startsWith('LISTEN ')).map((l) => JSON.parse(l.slice(7)));
  const images = () => lines().filter((l) => l.pid === child.pid);
  await waitFor(() => images().length === 1, { what: 'the first start', timeout: 30000 });
  for (let n = 2; n <= 3; n++) {
    process.kill(child.pid, 'SIGUSR2');
    // The bridge's line is copied by the image that holds its output pipe:
    // it may come after the new image's own line.
    await waitFor(() => (images().length === n && lines().length === 2 * n - 1) || /REFUSED/.test(app.out),
      { what: () => `image ${n} (exit ${child.exitCode} ${child.signalCode}; stdout: ${app.out}; stderr: ${app.err})`, timeout: 30000 });
  }
  const bridges = lines().filter((l) => l.pid !== child.pid);
  const real = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;
  const sockets = join(root, 'dist', 'sockets.js');
  assert.equal(bridges.length, 2, app.out);
  for (const b of bridges) {
    assert.deepEqual({ bridge: b.bridge, result: b.result, resolved: b.resolved, copies: b.copies },
      { bridge: true, result: { inherited: true, fd: b.result.fd, name: 'web' }, resolved: real, copies: [sockets] }, app.out);
  }
  const [first, ...restarted] = images();
  assert.deepEqual(first.result, { inherited: false, name: 'web' });
  for (const i of restarted) {
    assert.deepEqual({ bridge: i.bridge, result: i.result, resolved: i.resolved, copies: i.copies },
      { bridge: false, result: { inherited: true, fd: i.result.fd, name: 'web' }, resolved: real, copies: [sockets] }, app.out);
  }
  child.kill('SIGTERM');
  await app.exited;
  // Every bridge ended with the program.
  await waitFor(() => bridges.every((b) => { try { process.kill(b.pid, 0); return false; } catch { return true; } }),
    { what: 'bridges to end', timeout: 30000 });
});
