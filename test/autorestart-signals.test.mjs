// restartOnSignal: a repeated trigger never hurts. A second SIGUSR2 while the
// first restart drains the servers is folded into that restart: the
// in-flight request completes, and the process lives on under its PID.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { Reaper, fixtures, waitFor } from './helpers.mjs';
import { App } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

function get(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

test('two SIGUSR2 in a row during a slow drain: the request completes, one restart, same PID', async () => {
  const app = new App([join(fixtures, 'autorestart-slow-drain.cjs')], {
    reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, cwd: fixtures,
  });
  const [, , pid, port] = await app.nextLine(/^ready (0) (\d+) (\d+)$/, 'first start');
  assert.equal(Number(pid), app.pid);
  const slow = get(Number(port), '/slow');
  await app.nextLine(/^slow-started$/);
  process.kill(app.pid, 'SIGUSR2');
  await waitFor(() => /SIGUSR2 received, restarting/.test(app.stderr), { what: 'the restart to begin' });
  process.kill(app.pid, 'SIGUSR2');
  const res = await slow;
  assert.deepEqual(res, { status: 200, body: `slow done by 0 ${app.pid}\n` }, 'the in-flight request completed');
  const m = await app.nextLine(/^ready (\d+) (\d+) (\d+)$/, 'the new image');
  assert.deepEqual([m[1], Number(m[2]), m[3]], ['1', app.pid, port], 'one restart, same PID, same port');
  assert.deepEqual(await get(Number(port), '/'), { status: 200, body: `gen 1 ${app.pid}\n` });
  assert.equal(app.child.exitCode, null, 'still running');
  assert.equal(app.child.signalCode, null);
});

test('a second SIGHUP while the new image is still starting (not yet re-armed) folds into the restart: the service lives on', async () => {
  const app = new App([join(fixtures, 'autorestart-slow-start.mjs')], {
    reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, cwd: fixtures,
  });
  await app.nextLine(/^ready 0 (\d+)$/, 'first start');
  process.kill(app.pid, 'SIGHUP');
  await app.nextLine(new RegExp(`^starting 1 ${app.pid}$`), 'the new image starting');
  // The exec reset SIGHUP to its default action (terminate); the program
  // arms it again only after its slow start.
  process.kill(app.pid, 'SIGHUP');
  await app.nextLine(new RegExp(`^ready 1 ${app.pid}$`), 'the new image ready');
  assert.equal(app.child.exitCode, null, 'still running');
  assert.equal(app.child.signalCode, null, 'not killed by the second SIGHUP');
  assert.match(app.stderr, /guard: SIGHUP while the new image starts: folded into the restart in progress/);
  assert.equal(app.lines.filter((l) => l.startsWith('starting ')).length, 2, 'the second SIGHUP started no restart of its own');
  // Once the program armed it again, SIGHUP restarts as before.
  process.kill(app.pid, 'SIGHUP');
  await app.nextLine(new RegExp(`^ready 2 ${app.pid}$`), 'a restart after the held one');
});
