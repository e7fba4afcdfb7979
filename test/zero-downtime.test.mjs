// Restart in place under load: the listening socket is handed to the new
// image (LISTEN_FDS at fd 3) after a drain, so no request is refused or reset.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { rmSync } from 'node:fs';
import { fixtures, freePort, Reaper, waitFor } from './helpers.mjs';
import { listenFds, restartOnSignal } from '../dist/autorestart.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

test('200 in-place restarts under a small load loop lose no request; PID and port stay', { timeout: 240000 }, async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [join(fixtures, 'zero-downtime-server.cjs')], {
    // The drain-and-exec path itself, 200 times (the preflight and bridge,
    // the default, have their own test under load: autorestart-bridge).
    env: { ...process.env, ZD_PORT: String(port), ZD_PREFLIGHT: '0' }, stdio: ['ignore', 'pipe', 'inherit'],
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
  // The clients stop on every way out (a failed wait too): never a loop
  // spinning against a dead server.
  try {
    for (let n = 1; n <= restarts; n++) {
      process.kill(child.pid, 'SIGUSR2');
      // The image itself, not its bridge (which answers for generation n
      // before the exec: a signal then would fold into this restart).
      await waitFor(() => newestGen >= n && out.includes(`READY GEN ${n} PID ${child.pid} `), { what: `generation ${n}`, interval: 5 });
    }
  } finally {
    running = false;
    await Promise.all(clients);
    agent.destroy();
  }
  process.kill(child.pid, 'SIGTERM');

  assert.equal(failed, 0, `failed requests: ${failed} ${JSON.stringify([...errors])}`);
  assert.ok(ok > restarts, `${ok} requests served`);
  // Every generation ran under the same PID; the others answering were
  // the restarts' bridges, children of it (one per restart).
  const bridges = new Set([...out.matchAll(/^(?:\[(?:preflight|bridge) \d+\] )?READY GEN \d+ PID (\d+) /gm)].map((m) => Number(m[1])).filter((p) => p !== child.pid));
  assert.ok(pids.has(child.pid));
  for (const p of pids) assert.ok(p === child.pid || bridges.has(p), `pid ${p} answered`);
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

/**
 * Runs the zero-downtime-listen fixture under a systemd-style launcher
 * (python3, single-threaded: fds at 3, 4, ..., LISTEN_PID = its own PID,
 * kept by its exec) and returns each generation's STATE and the launched fds.
 */
async function launchPy(specs, listenOptions, { restarts = 0, env = {} } = {}) {
  const child = spawn('python3', [join(fixtures, 'systemd-launch.py'), JSON.stringify(specs), process.execPath, join(fixtures, 'zero-downtime-listen.cjs')], {
    env: { ...process.env, ZD_LISTEN: JSON.stringify(listenOptions), ZD_RESTARTS: String(restarts), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  reaper.add(child.pid);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
  const code = await new Promise((resolve) => child.on('close', resolve));
  const fds = JSON.parse(/^FDS (.*)$/m.exec(out)?.[1] ?? 'null');
  // Only the launched process's own images (not the restarts' bridges).
  const states = [...out.matchAll(/^STATE (.*)$/gm)].map((m) => JSON.parse(m[1])).filter((s) => s.pid === child.pid);
  return { code, out, err, fds, states, pid: child.pid };
}

test('listenFds returns only the listening stream sockets it inherited, described, close-on-exec, variables cleared', async () => {
  const path = join(tmpdir(), `pd-zd-${process.pid}-${Date.now()}.sock`);
  after(() => rmSync(path, { force: true }));
  const r = await launchPy(
    [{ kind: 'file' }, { kind: 'udp' }, { kind: 'connected' }, { kind: 'tcp', name: 'web' }, { kind: 'unix', path }, { kind: 'tcp6' }],
    [], { env: { NODE_DEBUG: 'posix-daemon' } });
  assert.equal(r.code, 0, r.err);
  const [s] = r.states;
  assert.equal(s.pid, r.pid, 'LISTEN_PID was right: the launcher exec\'d the server');
  assert.deepEqual(s.before, [
    { fd: 6, name: 'web', family: 'IPv4', address: '127.0.0.1', port: r.fds[3].port },
    { fd: 7, name: 'unknown', family: 'unix', path },
    { fd: 8, name: 'unknown', family: 'IPv6', address: '::1', port: r.fds[5].port },
  ]);
  assert.deepEqual(s.cloexec, [true, true, true]);
  assert.deepEqual(s.envLeft, []);
  for (const fd of [3, 4, 5]) assert.match(r.err, new RegExp(`LISTEN_FDS: fd ${fd} is not a listening stream socket`));
});

test('listen() matches inherited sockets by address: wildcard or omitted host, exact host, IPv6, unix path; else binds anew', async () => {
  const path = join(tmpdir(), `pd-zd-m-${process.pid}-${Date.now()}.sock`);
  after(() => rmSync(path, { force: true }));
  const [p1, p2, p3, p4] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const r = await launchPy(
    [{ kind: 'tcp', port: p1 }, { kind: 'tcp', port: p2 }, { kind: 'tcp6', port: p3 }, { kind: 'unix', path }, { kind: 'tcp', port: p4 }],
    [
      { port: p2, host: '0.0.0.0' },             // wildcard host: any address on that port
      { port: p1 },                               // host omitted
      { port: p3, host: '0:0:0:0:0:0:0:1' },      // the same IPv6 address, written differently
      { path },                                   // unix path
      { port: p4, host: '127.0.0.2' },            // another address: not this socket
      { port: 0, host: '127.0.0.1' },             // port 0: a new one
    ]);
  assert.equal(r.code, 0, r.err);
  const [s] = r.states;
  const fdOf = (i) => s.before[i].fd;
  assert.deepEqual(s.results.map((x) => [x.inherited, x.fd]), [
    [true, fdOf(1)], [true, fdOf(0)], [true, fdOf(2)], [true, fdOf(3)], [false, undefined], [false, undefined],
  ]);
  assert.deepEqual(s.results.map((x) => x.socketName), ['unknown', 'unknown', 'unknown', 'unknown', `tcp_${p4}`, `tcp_${s.results[5].address.port}`]);
  assert.equal(s.results[4].address.address, '127.0.0.2');
  assert.deepEqual(s.left.map((x) => x.port), [p4], 'the socket no listen() matched is still listed');
});

test('names are sticky across in-place restarts; untaken inherited sockets are handed on too; same PID', async () => {
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  const r = await launchPy(
    [{ kind: 'tcp', port: p1, name: 'web' }, { kind: 'tcp', port: p2 }, { kind: 'tcp', port: p3, name: 'spare' }],
    [{ port: p1 }, { name: 'api', port: p2, host: '127.0.0.1' }],
    { restarts: 3 });
  assert.equal(r.code, 0, r.err);
  assert.equal(r.states.length, 4, r.out);
  for (const s of r.states) {
    assert.equal(s.pid, r.pid);
    assert.deepEqual(s.envLeft, []);
    // systemd's FileDescriptorName wins over matching by port; our own name
    // replaces systemd's default "unknown"; both travel on.
    assert.deepEqual(s.results.map((x) => [x.inherited, x.name, x.address.port]), [[true, 'web', p1], [true, 'api', p2]], JSON.stringify(s));
    assert.deepEqual(s.left.map((x) => [x.name, x.port]), [['spare', p3]], 'the untaken socket survives every restart');
  }
  assert.deepEqual(r.states.slice(1).map((s) => s.before.map((x) => x.name)), Array(3).fill(['web', 'api', 'spare']));
});

test('a handed-over description for another PID, or naming fds that are not listening sockets, is ignored', async () => {
  const { runNode } = await import('./helpers.mjs');
  const script = `
    const { listenFds } = require(${JSON.stringify(join(fixtures, '..', '..', 'dist', 'autorestart.js'))});
    console.log(JSON.stringify({ fds: listenFds(), left: 'POSIX_DAEMON_LISTEN_FDS' in process.env }));
  `;
  for (const value of ['1;0=web', `PID;0=web;1=x;2=y`, 'garbage', '']) {
    const r = await runNode('-e', [script], { reaper, env: { ...process.env, POSIX_DAEMON_LISTEN_FDS: value, NODE_DEBUG: 'posix-daemon' } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { fds: [], left: false }, value);
  }
  // The right PID, but fds that are stdio, a pipe or not open at all.
  const self = `
    const { execve } = require(${JSON.stringify(join(fixtures, '..', '..', 'dist', 'posix.js'))});
    execve(process.execPath, [process.execPath, '-e', ${JSON.stringify(script)}],
      { ...process.env, POSIX_DAEMON_LISTEN_FDS: process.pid + ';0=a;1=b;2=c;4=d;999=e;x=f' });
  `;
  const r = await runNode('-e', [self], { reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { fds: [], left: false });
  assert.match(r.stderr, /fd 0 is not a listening stream socket/);
  assert.match(r.stderr, /fd 999: EBADF/);
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

// The old hand-over moved the sockets to fds 3, 4, ...: with 2 servers a
// signal was lost in every run (libuv's signal pipe replaced for an
// instant), with 8 the process died (libuv's own epoll/eventfd replaced).
for (const servers of [2, 8]) {
  test(`a loop of failing hand-over execs (${servers} servers) while signals arrive loses no signal`, { timeout: 120000 }, async () => {
    const child = spawn(process.execPath, [join(fixtures, 'zero-downtime-signals.cjs')], {
      env: { ...process.env, ZD_SERVERS: String(servers), NODE_DEBUG: 'posix-daemon' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    reaper.add(child.pid);
    let out = '';
    let err = '';
    let exit = null;
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
    child.on('exit', (code, signal) => { exit = { code, signal }; });
    await waitFor(() => out.includes('LOOPING'), { what: 'fixture' });
    const sent = 500;
    let lost = null;
    for (let n = 1; n <= sent && lost === null && exit === null; n++) {
      process.kill(child.pid, 'SIGUSR2');
      // One at a time (a second pending SIGUSR2 would merge with the first):
      // the next is sent once this one has reached the listener.
      await waitFor(() => out.includes(`SIG ${n}\n`) || exit !== null, { what: `signal ${n}`, timeout: 5000, interval: 2 })
        .catch(() => { lost = n; });
    }
    assert.equal(exit, null, `the fixture died: ${JSON.stringify(exit)} ${err.slice(-300)}`);
    const attempts = err.match(/exec attempt \d+ failed: E2BIG/g)?.length ?? 0;
    process.kill(child.pid, 'SIGTERM');
    await new Promise((resolve) => child.on('close', resolve));
    assert.equal(lost, null, `signal ${lost} of ${sent} never reached its listener`);
    assert.match(out, /STOPPED AbortError/, 'the fixture was still looping, alive, at the end');
    assert.ok(attempts > 10, `${attempts} failed hand-over execs meanwhile`);
  });
}
