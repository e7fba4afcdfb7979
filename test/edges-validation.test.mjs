// Issue 16, items 19, 20, 25 and 27: the edges of the public API a new
// user meets first. Every check goes through the public entry points, and
// what has to exec runs in a child process of its own.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.mjs';
import { lockPidFile, readPidFile, stopDaemon, reopenLogsOn, daemonize } from '../dist/index.mjs';
import { restartViaExec, restartOnChange, restartOnSignal, cleanUpChildZombies } from '../dist/autorestart.mjs';
import { fork, execve, spawnDetached } from '../dist/posix.mjs';
import { backoffDelay } from '../dist/monitor.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'pd-edges-validation-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `code` (an ES module) in a fresh node; returns { status, stdout, stderr }. */
function runModule(code, { env = process.env, timeout = 30_000 } = {}) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: root, env, encoding: 'utf8', timeout,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// ---- 19 -------------------------------------------------------------------

test('19: restartViaExec({ keepFds: [99999] }) rejects at once with EBADF naming the fd', async () => {
  const ac = new AbortController();
  const err = await Promise.race([
    restartViaExec({ keepFds: [99999], signal: ac.signal }).then(() => null, (e) => e),
    // Not a wall-clock assertion: the old code never settled; this only
    // turns "never" into a failure instead of a hang.
    new Promise((resolve) => setTimeout(resolve, 3000, 'still pending')).then((v) => { ac.abort(); return v; }),
  ]);
  assert.notEqual(err, 'still pending', 'restartViaExec must not retry a closed fd forever');
  assert.equal(err.code, 'EBADF');
  assert.equal(err.fd, 99999);
  assert.match(err.message, /options\.keepFds\[0\]: fd 99999/);
});

test('19: execve names the closed kept fd too (before anything is reset)', () => {
  const r = runModule(`
    import { execve } from './dist/posix.mjs';
    try { execve('/bin/true', ['true'], {}, { keepFds: [99999] }); }
    catch (e) { console.log(JSON.stringify({ code: e.code, fd: e.fd, message: e.message })); }
  `);
  const out = JSON.parse(r.stdout);
  assert.equal(out.code, 'EBADF');
  assert.equal(out.fd, 99999);
  assert.match(out.message, /fd 99999/);
});

test('19: restartOnChange checks kept fds before watching', async () => {
  await assert.rejects(restartOnChange({ keepFds: [99999] }), { code: 'EBADF', fd: 99999 });
});

// ---- 20 -------------------------------------------------------------------

test('20: reopenLogsOn(SIGKILL/SIGSTOP) is ERR_INVALID_ARG_VALUE, as daemonize says it', async () => {
  for (const sig of ['SIGKILL', 'SIGSTOP', 9, 19]) {
    assert.throws(() => reopenLogsOn(sig), {
      code: 'ERR_INVALID_ARG_VALUE', message: /must be a signal that can be caught/,
    }, String(sig));
  }
  assert.throws(() => reopenLogsOn('SIGNOPE'), { code: 'ERR_UNKNOWN_SIGNAL' });
  await assert.rejects(daemonize({ envKey: 'PD_EDGES_NEVER_SET', reopenLogsOn: 'SIGKILL' }), {
    code: 'ERR_INVALID_ARG_VALUE', message: /must be a signal that can be caught/,
  });
  await assert.rejects(restartOnSignal('SIGKILL'), {
    code: 'ERR_INVALID_ARG_VALUE', message: /must be a signal that can be caught/,
  });
  // A number is taken as the signal it names, and the handler goes away.
  const before = process.listenerCount('SIGUSR2');  // the test runner may have one
  const off = reopenLogsOn(12);
  assert.equal(process.listenerCount('SIGUSR2'), before + 1);
  off();
  assert.equal(process.listenerCount('SIGUSR2'), before);
});

// ---- 25 -------------------------------------------------------------------

test('issue 22, item 9: restartOnChange lists each of its options once when a key is unknown', async () => {
  const err = await restartOnChange({ zzzzzzzzzzzz: 1 }).then(() => null, (e) => e);
  assert.equal(err?.code, 'ERR_INVALID_ARG_VALUE');
  const list = /\(the options are: (.*)\)\. Received/.exec(err.message)[1].split(', ');
  assert.deepEqual(list.filter((k, i) => list.indexOf(k) !== i), [], err.message);
  for (const k of ['signal', 'paths', 'servers', 'check', 'beforeRestart', 'onError']) assert.ok(list.includes(k), `${k} in ${list}`);
});

test("25: restartOnChange({ servers: ['x'] }) is refused at once, as restartViaExec refuses it", async () => {
  await assert.rejects(restartOnChange({ servers: ['x'] }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.servers\[0\]/ });
  await assert.rejects(restartViaExec({ servers: ['x'] }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.servers\[0\]/ });
  await assert.rejects(restartOnSignal('SIGUSR2', { servers: [{ server: 'x' }] }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(restartOnChange({ env: { A: 'x\u0000y' } }), { code: 'ERR_INVALID_ARG_VALUE' });
});

test("25: fork, spawnDetached and execve refuse an env key containing '=' (as daemonize does)", async () => {
  assert.throws(() => fork({ file: '/bin/true', env: { 'A=B': 'c' } }), { code: 'ERR_INVALID_ARG_VALUE', message: /'='/ });
  assert.throws(() => fork({ file: '/bin/true', env: { '': 'c' } }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => spawnDetached('/bin/true', [], { env: { 'A=B': 'c' } }), { code: 'ERR_INVALID_ARG_VALUE' });
  // execve validates before it resets anything: this process goes on.
  assert.throws(() => execve('/bin/true', ['true'], { 'A=B': 'c' }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(daemonize({ envKey: 'PD_EDGES_NEVER_SET', env: { 'A=B': 'c' } }), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('25: backoffDelay(NaN) is a validation error, not NaN', () => {
  assert.throws(() => backoffDelay(NaN), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => backoffDelay(-1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => backoffDelay('1'), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => backoffDelay(1, NaN), { code: 'ERR_OUT_OF_RANGE' });
  assert.equal(backoffDelay(3), 8000);
});

test('25: a PID file under /proc fails with an error that names the path', () => {
  assert.throws(() => lockPidFile('/proc/self/comm'), (err) => {
    assert.equal(err.path, '/proc/self/comm');
    assert.match(err.message, /'\/proc\/self\/comm'/);
    assert.equal(typeof err.errno, 'number');
    return true;
  });
});

test('25: stopDaemon on a missing PID file is ENOENT (open) with the path, not "ESRCH ... kill"', async () => {
  const path = join(tmp, 'missing.pid');
  await assert.rejects(stopDaemon(path), (err) => {
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.syscall, 'open');
    assert.equal(err.path, path);
    assert.doesNotMatch(err.message, /kill/);
    return true;
  });
  // A file nobody holds: ESRCH, and the message says why.
  closeSync(openSync(join(tmp, 'stale.pid'), 'w'));
  await assert.rejects(stopDaemon(join(tmp, 'stale.pid')), { code: 'ESRCH', message: /not locked by a running process/ });
});

test('25: a second lockPidFile(path) in the holding process is ERR_ALREADY_RUNNING; the first lock stays', () => {
  const path = join(tmp, 'twice.pid');
  const first = lockPidFile(path);
  try {
    assert.throws(() => lockPidFile(path), { code: 'ERR_ALREADY_RUNNING', pid: process.pid, path, message: /this process/ });
    assert.equal(readPidFile(path), process.pid, 'still locked after the refused second call');
  } finally {
    first.release();
  }
  assert.equal(readPidFile(path), null);
  const again = lockPidFile(path);  // released: can be taken again
  again.release();
});

test('25: cleanUpChildZombies() prints nothing when no image handed children over', () => {
  const r = runModule(`
    import { cleanUpChildZombies } from './dist/autorestart.mjs';
    const reaped = await cleanUpChildZombies();
    console.log(JSON.stringify(reaped));
  `);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[]');
  assert.equal(r.stderr, '');
  assert.equal(typeof cleanUpChildZombies, 'function');
});

test('25: the demo prints no ANSI escapes when its stdout is not a terminal', () => {
  // Only its first line is needed: the line throws, so the demo stops
  // before it starts anything, and its finally block removes its temp dir.
  const env = { ...process.env };
  delete env.FORCE_COLOR;
  delete env.NO_COLOR;
  const r = spawnSync(process.execPath, ['-e', `
    const origLog = console.log;
    console.log = (...a) => { origLog(...a); throw new Error('pd-edges: stop after the first line'); };
    import(${JSON.stringify(new URL('../scripts/demo.mjs', import.meta.url).href)}).catch(() => {});
  `], { encoding: 'utf8', timeout: 60_000, env });
  assert.match(r.stdout, /==>/);
  assert.doesNotMatch(r.stdout, /\x1b\[/);
});

// ---- 27 -------------------------------------------------------------------

test("27: execve ignores a junk 4th argument, as process.execve does", () => {
  const r = runModule(`
    import { execve } from './dist/posix.mjs';
    execve('/bin/sh', ['sh', '-c', 'echo replaced'], { PATH: '/usr/bin:/bin' }, 'junk');
  `);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'replaced\n');
});

test("27: execve publishes diagnostics_channel 'process.execve' with Node's message shape", () => {
  const r = runModule(`
    import { subscribe } from 'node:diagnostics_channel';
    import { execve } from './dist/posix.mjs';
    subscribe('process.execve', (msg) => console.log(JSON.stringify(msg)));
    try { execve('/nonexistent/pd-edges', ['x', 'y'], { A: '1' }); } catch (e) { console.log(e.code); }
    execve('/bin/sh', ['sh', '-c', 'echo after'], { B: '2' });
  `);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.deepEqual(JSON.parse(lines[0]), { execPath: '/nonexistent/pd-edges', args: ['x', 'y'], env: ['A=1'] });
  assert.equal(lines[1], 'ENOENT');
  assert.deepEqual(JSON.parse(lines[2]), { execPath: '/bin/sh', args: ['sh', '-c', 'echo after'], env: ['B=2'] });
  assert.equal(lines[3], 'after');
});

test('servers: a listening server still passes the shape check (no false refusal)', async () => {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const ac = new AbortController();
  ac.abort();
  // Valid options: the only reason to reject is the abort.
  await assert.rejects(restartOnSignal('SIGUSR2', { servers: [server, { server, name: 'web' }], signal: ac.signal }),
    { name: 'AbortError' });
  server.close();
});

// ---- 22 (the run-time half; the types are in test/types.test.mjs) ---------

test("22: a level that forks again refuses what only an exec takes, as its type does", () => {
  assert.throws(() => fork({ file: '/bin/true', fork: { file: '/bin/true' } }), { code: 'ERR_INVALID_ARG_VALUE' });
  for (const key of ['args', 'argv0', 'env']) {
    const value = key === 'args' ? ['x'] : key === 'env' ? {} : 'x';
    assert.throws(() => fork({ setsid: true, fork: { file: '/bin/true' }, [key]: value }),
      { code: 'ERR_INVALID_ARG_VALUE', message: new RegExp(`'${key}' with 'fork'`) });
  }
});

// One rule for "a server" wherever one is taken: the same code and message
// from listen(), storeSocket(), gracefulShutdown() and the restart options;
// a server that does not listen has no socket to hand over or to store.
test('a server argument: ERR_INVALID_ARG_TYPE "must be net.Server" everywhere; not listening: ERR_INVALID_ARG_VALUE', async () => {
  const { listen, gracefulShutdown } = await import('../dist/monitor.mjs');
  const { storeSocket } = await import('../dist/systemd.mjs');
  const type = (name) => ({ code: 'ERR_INVALID_ARG_TYPE', message: new RegExp(`^The "${name.replace(/[[\]]/g, '\\$&')}" (argument|property) must be net\\.Server\\. Received`) });
  assert.throws(() => listen({}, { port: 0 }), type('server'));
  assert.throws(() => storeSocket(42), type('server'));
  assert.throws(() => gracefulShutdown({ servers: [null] }), type('options.servers[0]'));
  await assert.rejects(restartViaExec({ servers: [{ server: 'x', name: 'web' }] }), type('options.servers[0]'));
  const idle = createServer();
  const notListening = { code: 'ERR_INVALID_ARG_VALUE', message: /must be listening on a socket of its own/ };
  assert.throws(() => storeSocket(idle), notListening);
});

// Issue 22, item 9: a misspelt option is refused, with the likely one named,
// as every other entry point does.
test('gracefulShutdown and listen refuse unknown option keys (timout, nme, hots)', async () => {
  const { listen, gracefulShutdown } = await import('../dist/monitor.mjs');
  assert.throws(() => gracefulShutdown({ timout: 1000 }),
    { code: 'ERR_INVALID_ARG_VALUE', message: /options\.timout' is not an option \(did you mean 'options\.timeout'\?\)/ });
  const server = createServer();
  assert.throws(() => listen(server, { port: 0, nme: 'web' }),
    { code: 'ERR_INVALID_ARG_VALUE', message: /options\.nme' is not an option \(did you mean 'options\.name'\?\)/ });
  assert.throws(() => listen(server, { port: 0, hots: '127.0.0.1' }),
    { code: 'ERR_INVALID_ARG_VALUE', message: /options\.hots' is not an option \(did you mean 'options\.host'\?\)/ });
  assert.equal(server.listening, false);
  // Every option Node's listen takes is still accepted.
  await listen(server, { port: 0, host: '127.0.0.1', backlog: 10, exclusive: true, ipv6Only: false });
  server.close();
});
