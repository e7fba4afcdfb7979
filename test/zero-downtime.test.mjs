// Restart in place under load: the listening socket is handed to the new
// image (LISTEN_FDS at fd 3) after a drain, so no request is refused or reset.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fixtures, Reaper, waitFor } from './helpers.mjs';
import { listenFds, restartOnSignal } from '../dist/autorestart.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

test('200 in-place restarts under a small load loop lose no request; PID and port stay', { timeout: 240000 }, async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [join(fixtures, 'zero-downtime-server.cjs')], {
    env: { ...process.env, ZD_PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  await waitFor(() => out.includes('READY GEN 0'), { what: 'server' });

  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  let ok = 0;
  let failed = 0;
  const errors = new Map();
  let newestGen = 0;
  const pids = new Set();
  let running = true;
  const request = () => new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, agent, path: '/' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => {
        const m = /GEN (\d+) PID (\d+)/.exec(body);
        if (res.statusCode === 200 && m) {
          ok++;
          newestGen = Math.max(newestGen, Number(m[1]));
          pids.add(Number(m[2]));
        } else {
          failed++;
        }
        resolve();
      });
    });
    req.on('error', (err) => {
      failed++;
      errors.set(err.code, (errors.get(err.code) ?? 0) + 1);
      resolve();
    });
  });
  const clients = Array.from({ length: 4 }, async () => { while (running) await request(); });

  const restarts = 200;
  for (let n = 1; n <= restarts; n++) {
    process.kill(child.pid, 'SIGUSR2');
    await waitFor(() => newestGen >= n, { what: `generation ${n}`, interval: 5 });
  }
  running = false;
  await Promise.all(clients);
  agent.destroy();
  process.kill(child.pid, 'SIGTERM');

  assert.equal(failed, 0, `failed requests: ${failed} ${JSON.stringify([...errors])}`);
  assert.ok(ok > restarts, `${ok} requests served`);
  assert.deepEqual([...pids], [child.pid], 'every generation ran under the same PID');
  assert.match(out, /READY GEN 200 PID \d+ inherited=true/);
});

test('listenFds ignores LISTEN_* meant for another process, and clears them', async () => {
  const { runNode } = await import('./helpers.mjs');
  const script = `
    const { listenFds } = require(${JSON.stringify(join(fixtures, '..', '..', 'dist', 'autorestart.js'))});
    const fds = listenFds();
    console.log(JSON.stringify({ fds, left: ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].filter((k) => k in process.env) }));
  `;
  const r = await runNode('-e', [script], {
    env: { ...process.env, LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' }, reaper,
  });
  // runNode puts the script first; "-e" then the code works the same.
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { fds: [], left: [] });
});

test('listenFds reads a systemd-style environment built for this process', async () => {
  // Build it the way systemd does: a listening socket at fd 3, LISTEN_PID = the
  // new process. The process must know its own PID, so it sets the variables
  // itself and then execs (same PID) into the reader.
  const { runNode } = await import('./helpers.mjs');
  const dist = join(fixtures, '..', '..', 'dist');
  const script = `
    const net = require('node:net');
    const { execve } = require(${JSON.stringify(join(dist, 'posix.js'))});
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const reader = \`
        const net = require('node:net');
        const { listenFds, listen } = require(\${JSON.stringify(${JSON.stringify(join(dist, 'autorestart.js'))})});
        const fds = listenFds();
        const fl = require('node:fs').readFileSync('/proc/self/fdinfo/3', 'utf8');
        const cloexec = (parseInt(/flags:\\\\s+(\\\\d+)/.exec(fl)[1], 8) & 0o2000000) !== 0;
        const s = net.createServer((c) => c.end('hi')).listen({ fd: fds[0].fd }, () => {
          console.log(JSON.stringify({ fds, cloexec, port: s.address().port, env: 'LISTEN_FDS' in process.env }));
          s.close();
        });\`;
      execve(process.execPath, [process.execPath, '-e', reader],
        { ...process.env, LISTEN_PID: String(process.pid), LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' },
        { moveFds: [[server._handle.fd, 3]] });
    });
  `;
  const r = await runNode('-e', [script], { reaper });
  assert.equal(r.code, 0, r.stderr);
  const seen = JSON.parse(r.stdout);
  assert.deepEqual(seen.fds, [{ fd: 3, name: 'web' }]);
  assert.equal(seen.cloexec, true, 'close-on-exec again');
  assert.equal(seen.env, false, 'variables cleared');
  assert.ok(seen.port > 0);
  assert.deepEqual(listenFds(), [], 'this test process inherited nothing');
});

test('restartOnSignal validates its arguments and stops waiting on abort', async () => {
  await assert.rejects(restartOnSignal('SIGNOPE'), { code: 'ERR_UNKNOWN_SIGNAL' });
  await assert.rejects(restartOnSignal('SIGKILL'), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(restartOnSignal('SIGUSR2', { signal: 'x' }), { code: 'ERR_INVALID_ARG_TYPE' });
  const before = process.listenerCount('SIGUSR2');
  const ac = new AbortController();
  const p = restartOnSignal('SIGUSR2', { signal: ac.signal });
  assert.equal(process.listenerCount('SIGUSR2'), before + 1);
  ac.abort();
  await assert.rejects(p, { name: 'AbortError' });
  assert.equal(process.listenerCount('SIGUSR2'), before, 'listener removed');
});

test('if the exec fails after the drain, the server listens again on the same port and keeps serving', async () => {
  const { runNode } = await import('./helpers.mjs');
  const r = await runNode(join(fixtures, 'zero-downtime-fail.cjs'), [], { reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /E2BIG/, 'the exec really failed');
  const [, before, after] = /LISTENING (\d+) (\d+)/.exec(r.stdout);
  assert.equal(after, before, 'same port');
  assert.match(r.stdout, new RegExp(`ANSWER STILL ${r.pid}`));
  assert.match(r.stdout, /STOPPED AbortError/);
});
