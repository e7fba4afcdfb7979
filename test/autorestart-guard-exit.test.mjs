// A guarded image (started by a restart, the guard preloaded) whose program
// ends always exits: process.exit(0) before it took its handed-over sockets
// (a SIGTERM handler during the start, a program that is done) and a program
// whose event loop runs dry. Before, the guard turned both into "the new code
// failed at start-up; waiting for a change": a process nobody would end
// (parent 1 once its launcher was gone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, putFile as put, root, startNode, waitFor } from './helpers.mjs';
import { freePort } from './systemd-helpers.mjs';

const { reaper, dirs } = fileScope();

const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;

for (const [what, ending] of [
  ['process.exit(0) before it took its sockets', 'process.exit(0);'],
  ['a program that ends before it took its sockets', '/* nothing left to do */'],
]) {
  test(`a guarded image exits on ${what}`, { timeout: 60000 }, async () => {
    const dir = dirs.make('pd-guard-exit-');
    const port = await freePort();
    put(dir, 'version.mjs', 'export const version = 1;\n');
    put(dir, 'app.mjs', `
import http from 'node:http';
import { listen, restartOnSignal } from ${JSON.stringify(lib)};
import { version } from './version.mjs';
if (version === 2) {
  console.log('ENDING');
  ${ending}
} else {
  const server = http.createServer((req, res) => res.end('ok'));
  await listen(server, { port: ${port}, host: '127.0.0.1' });
  // Armed before READY: the test signals on reading it.
  restartOnSignal('SIGUSR2', { servers: [server], preflight: false });
  console.log('READY ' + version);
}
`);
    const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
    const { exited } = app;
    await waitFor(() => app.out.includes('READY 1'), { what: 'v1', timeout: 30000 });
    put(dir, 'version.mjs', 'export const version = 2;\n');
    process.kill(app.child.pid, 'SIGUSR2');
    await waitFor(() => app.out.includes('ENDING'), {
      what: () => `the next image (exit ${app.child.exitCode ?? app.child.signalCode}; ${app.err})`, timeout: 30000 });
    const r = await Promise.race([exited, new Promise((resolve) => {
      // The guard says so at once when it keeps the process: no need to wait longer.
      const t = setInterval(() => { if (/waiting for/.test(app.err)) { clearInterval(t); resolve('kept'); } }, 20);
      exited.then(() => clearInterval(t));
    })]);
    assert.deepEqual(r, { code: 0, signal: null }, `${app.out}\n${app.err}`);
  });
}
