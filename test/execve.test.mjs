// execve: same PID, new argv/env, no exit handlers, and the process left as
// the next program expects it; a failed exec leaves the old image working.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { fixtures, runNode, Reaper } from './helpers.mjs';
import { execve } from '../dist/posix.mjs';

const fixture = join(fixtures, 'posix-execve.cjs');
const reaper = new Reaper();
after(() => reaper.killAll());

const run = (...args) => runNode(fixture, args, { reaper });

test('execve keeps the PID', async () => {
  const r = await run('pid');
  assert.equal(r.code, 0, r.stderr);
  const before = /BEFORE (\d+)/.exec(r.stdout)[1];
  const afterPid = /AFTER (\d+)/.exec(r.stdout)[1];
  assert.equal(afterPid, before);
  assert.equal(Number(before), r.pid);
});

test('execve replaces argv and the whole environment', async () => {
  const r = await run('argv-env');
  assert.equal(r.code, 0, r.stderr);
  const seen = JSON.parse(r.stdout);
  assert.deepEqual(seen.argv, ['one', 'two']);
  assert.deepEqual(seen.env, { ONLY_THIS: 'yes', OTHER: 'x=y' });
});

test('execve does not run process.on("exit") handlers', async () => {
  const r = await run('exit-handlers');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /EXECED/);
  assert.doesNotMatch(r.stdout, /EXIT HANDLER RAN/);
});

test('execve hands the next program a blocking stdout pipe', async () => {
  const r = await run('stdout-blocking');
  assert.equal(r.code, 0, r.stderr);
  // Node really had made it non-blocking ...
  assert.match(r.stdout, /NODE_NONBLOCK true/);
  // ... and the exec'd shell sees it blocking again.
  const flags = parseInt(/flags:\s+(\d+)/.exec(r.stdout)[1], 8);
  assert.equal(flags & 0o4000, 0, `O_NONBLOCK still set: ${flags.toString(8)}`);
});

test('execve gives the new program an empty signal mask and no ignored signals', async () => {
  const r = await run('signals');
  assert.equal(r.code, 0, r.stderr);
  const get = (name) => BigInt(`0x${new RegExp(`${name}:\\s+([0-9a-f]+)`).exec(r.stdout)[1]}`);
  assert.equal(get('SigIgn'), 0n, r.stdout);
  assert.equal(get('SigBlk'), 0n, r.stdout);
});

test('blockSignals: the new program starts with those signals blocked, and only those', async () => {
  const r = await run('block-signals');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => l.split(/:\s+/));
  // SIGHUP is 1 (bit 0), SIGUSR2 12 (bit 11).
  assert.deepEqual(lines, [['SigBlk', '0000000000000801'], ['SigIgn', '0000000000000000']]);
});

test('execve closes a listening socket unless keepFds names it', async () => {
  for (const keep of [false, true]) {
    const r = await run('listen', keep ? 'keep' : 'drop');
    assert.equal(r.code, 0, r.stderr);
    const fd = /LISTEN_FD (\d+)/.exec(r.stdout)[1];
    const fds = Object.fromEntries([...r.stdout.matchAll(/^FD (\d+) (.*)$/gm)].map((m) => [m[1], m[2]]));
    if (keep) assert.match(fds[fd] ?? '', /^socket:/, `fd ${fd} should survive: ${r.stdout}`);
    else assert.equal(fds[fd], undefined, `fd ${fd} should be closed: ${r.stdout}`);
    // Only stdio, the kept socket and ls's own directory fd remain.
    const others = Object.keys(fds).filter((n) => Number(n) > 2 && n !== fd && !fds[n].startsWith('/proc/'));
    assert.deepEqual(others, [], r.stdout);
  }
});

test('a failed execve throws a Node-style error and leaves the process working', async () => {
  const r = await run('fail');
  assert.equal(r.code, 0, r.stderr);
  const err = JSON.parse(/ERROR (.*)/.exec(r.stdout)[1]);
  assert.equal(err.code, 'ENOENT');
  assert.equal(err.errno, -2);
  assert.equal(err.syscall, 'execve');
  assert.equal(err.path, '/nonexistent/program');
  assert.equal(err.message, "ENOENT: no such file or directory, execve '/nonexistent/program'");
  const state = JSON.parse(/STATE (.*)/.exec(r.stdout)[1]);
  assert.deepEqual(state.after, state.before, 'ignored signals, signal mask (blockSignals too), fd flags and stdio mode restored');
  assert.equal(state.after.sigblk, '0000000000000000');
  assert.notEqual(state.before.sigign, '0000000000000000', 'Node ignores SIGPIPE, so SigIgn was non-zero');
  assert.match(r.stdout, /STILL ALIVE/);
});

test('a worker writing to a closed pipe never dies of SIGPIPE while execve keeps failing', async () => {
  // Node ignores SIGPIPE; the new image must not inherit that, but setting
  // SIG_DFL on the running process (as execve did during the whole
  // preparation and the failed exec) kills it when another thread gets
  // EPIPE in that window. Ignored signals now get a no-op handler instead,
  // which execve(2) itself resets to SIG_DFL.
  const script = `
    const fs = require('node:fs');
    const { Worker } = require('node:worker_threads');
    const posix = require(${JSON.stringify(join(fixtures, '..', '..', 'dist', 'posix.js'))});
    const [r, w] = posix.pipe();
    fs.closeSync(r);
    const worker = new Worker(\`
      const fs = require('node:fs');
      const { workerData, parentPort } = require('node:worker_threads');
      parentPort.postMessage('writing');
      for (;;) { try { fs.writeSync(workerData, 'x'); } catch (e) { if (e.code !== 'EPIPE') throw e; } }
    \`, { eval: true, workerData: w });
    worker.once('message', () => {
      let failed = 0;
      for (let i = 0; i < 3000; i++) {
        try { posix.execve('/nonexistent/program', ['x'], {}, {}); } catch (e) { if (e.code === 'ENOENT') failed++; }
      }
      console.log('SURVIVED ' + failed);
      process.exit(0);
    });
  `;
  const r = await runNode('-e', [script], { reaper, timeout: 60000 });
  assert.equal(r.signal, null, `killed by ${r.signal}`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /SURVIVED 3000/);
});

test('execve validates like process.execve', () => {
  assert.throws(() => execve(1), { code: 'ERR_INVALID_ARG_TYPE', message: /The "execPath" argument must be of type string/ });
  assert.throws(() => execve('/bin/true', 'x'), { code: 'ERR_INVALID_ARG_TYPE', message: /The "args" argument must be an instance of Array/ });
  assert.throws(() => execve('/bin/true', ['a', 1]), { code: 'ERR_INVALID_ARG_VALUE', message: "The argument 'args[1]' must be a string without null bytes. Received 1" });
  assert.throws(() => execve('/bin/true', ['a\u0000b']), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => execve('/bin/true', [], { A: 1 }), { code: 'ERR_INVALID_ARG_VALUE', message: /must be an object with string keys and values without null bytes/ });
  assert.throws(() => execve('/bin/true', [], null), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => execve('/bin/true', [], {}, { keepFds: [1] }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => execve('/bin/true', [], {}, { keepFds: [987654] }), { code: 'EBADF' });
  // Moving fds onto low numbers would replace fds libuv owns: not offered.
  assert.throws(() => execve('/bin/true', [], {}, { blockSignals: 'SIGHUP' }), { code: 'ERR_INVALID_ARG_TYPE', message: /"options\.blockSignals" property must be an instance of Array/ });
  assert.throws(() => execve('/bin/true', [], {}, { blockSignals: ['SIGKILL'] }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.blockSignals\[0\].*can be caught/ });
  assert.throws(() => execve('/bin/true', [], {}, { blockSignals: ['SIGNOPE'] }), { code: 'ERR_UNKNOWN_SIGNAL' });
  assert.throws(() => execve('/bin/true', [], {}, { moveFds: [[1, 3]] }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.moveFds.*is not supported/ });
});

test('execve is refused in a worker thread', async () => {
  const w = new Worker(`
    const { parentPort } = require('node:worker_threads');
    const { execve } = require(${JSON.stringify(new URL('../dist/posix.js', import.meta.url).pathname)});
    try { execve('/bin/true', ['true']); parentPort.postMessage('no error'); }
    catch (e) { parentPort.postMessage(e.code); }
  `, { eval: true });
  const [msg] = await Promise.all([new Promise((r) => w.once('message', r)), new Promise((r) => w.once('exit', r))]);
  assert.equal(msg, 'ERR_WORKER_UNSUPPORTED_OPERATION');
});
