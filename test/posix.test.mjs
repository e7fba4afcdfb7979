// fork(plan), waitpid/wait4, waitAsync, spawnDetached, childPids, sessions:
// all against real processes, checked through /proc.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, openSync, closeSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import * as posix from '../dist/posix.mjs';
import { fileScope, procStat, procCwd, procFds, isAlive, waitFor, zombieChildren } from './helpers.mjs';

const { reaper, dir } = fileScope('posix-test-');
const { WNOHANG } = posix.constants;
const sh = '/bin/sh';

test('ESM and CJS expose the same bindings', () => {
  const cjs = createRequire(import.meta.url)('../dist/posix.js');
  for (const name of ['fork', 'execve', 'waitpid', 'wait4', 'waitAsync', 'spawnDetached', 'setsid', 'getsid',
    'getpgid', 'exit', 'childPids', 'constants']) {
    assert.ok(name in cjs, `require: ${name}`);
    assert.equal(posix[name], cjs[name], `import and require share ${name}`);
  }
  assert.deepEqual(Object.keys(posix.constants).sort(), ['WCONTINUED', 'WNOHANG', 'WUNTRACED']);
});

test('fork({ file, args, env }) + wait4 gives the exit code and plausible rusage', () => {
  const out = join(dir, 'env.txt');
  const pid = reaper.add(posix.fork({
    file: sh, args: ['-c', `echo "$GREETING $0" > ${out}; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 7`],
    env: { GREETING: 'hello' },
  }));
  const r = posix.wait4(pid);
  assert.equal(r.pid, pid);
  assert.equal(r.exitCode, 7);
  assert.equal(r.signal, null);
  assert.equal(r.coreDumped, false);
  assert.equal(readFileSync(out, 'utf8'), `hello ${sh}\n`);
  assert.ok(r.rusage.userCPUTime + r.rusage.systemCPUTime > 0, 'the loop used CPU time');
  assert.ok(r.rusage.maxRSS > 100, `maxRSS in KiB: ${r.rusage.maxRSS}`);
  assert.ok(r.rusage.minorPageFault > 0);
});

test('a signal death is reported by name', () => {
  const pid = reaper.add(posix.fork({ file: sh, args: ['-c', 'kill -KILL $$'] }));
  const r = posix.waitpid(pid);
  assert.equal(r.exitCode, null);
  assert.equal(r.signal, 'SIGKILL');
});

test('fork() without a plan throws and creates no process', () => {
  const before = posix.childPids();
  for (const bad of [undefined, null, 42, 'sh', [], () => {}]) {
    assert.throws(() => posix.fork(bad), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  }
  assert.throws(() => posix.fork({}), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => posix.fork({ setsid: true }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.deepEqual(posix.childPids(), before);
});

test('an exec failure is thrown synchronously and leaves nothing behind', () => {
  const before = posix.childPids();
  assert.throws(() => posix.fork({ file: '/no/such/program' }), {
    code: 'ENOENT', syscall: 'execve', path: '/no/such/program', errno: -2,
  });
  assert.throws(() => posix.fork({ cwd: '/no/such/dir', file: sh }), {
    code: 'ENOENT', syscall: 'chdir', path: '/no/such/dir',
  });
  assert.throws(() => posix.fork({ setsid: true, fork: { file: '/no/such/program' } }), { code: 'ENOENT' });
  const text = join(dir, 'not-a-program');
  writeFileSync(text, 'just text\n', { mode: 0o644 });
  assert.throws(() => posix.fork({ file: text }), { code: 'EACCES', syscall: 'execve', path: text });
  chmodSync(text, 0o755);
  assert.throws(() => posix.fork({ file: text }), { code: 'ENOEXEC', syscall: 'execve' });
  assert.deepEqual(posix.childPids(), before);
  assert.deepEqual(zombieChildren(process.pid), []);
});

test('waitpid(pid, WNOHANG) on a running child gives pid 0', () => {
  const pid = reaper.add(posix.fork({ file: '/bin/sleep', args: ['30'] }));
  const r = posix.waitpid(pid, WNOHANG);
  assert.equal(r.pid, 0);
  assert.equal(r.exitCode, null);
  process.kill(pid, 'SIGTERM');
  assert.equal(posix.waitpid(pid).signal, 'SIGTERM');
});

test('waitpid on something that is not our child throws ECHILD', () => {
  assert.throws(() => posix.waitpid(1, WNOHANG), { code: 'ECHILD', syscall: 'waitpid', errno: -10 });
  assert.throws(() => posix.wait4(-1, WNOHANG), { code: 'ECHILD' });
});

test('setsid in a plan makes the child a session leader; getsid/getpgid read it', () => {
  const pid = reaper.add(posix.fork({ setsid: true, file: '/bin/sleep', args: ['30'] }));
  assert.equal(posix.getsid(pid), pid);
  assert.equal(posix.getpgid(pid), pid);
  assert.equal(posix.getsid(), posix.getsid(process.pid));
  assert.notEqual(posix.getsid(), pid);
  process.kill(pid, 'SIGKILL');
  posix.waitpid(pid);
});

test('setsid() makes the caller a session leader once; a second call is EPERM', async () => {
  const posixPath = new URL('../dist/posix.js', import.meta.url).pathname;
  const child = spawn(process.execPath, ['-e', `
    const p = require(${JSON.stringify(posixPath)});
    const before = p.getsid();
    const sid = p.setsid();
    let second;
    try { p.setsid(); second = 'no error'; } catch (e) { second = e.code + ' ' + e.syscall; }
    console.log(JSON.stringify({ pid: process.pid, before, sid, after: p.getsid(), second }));
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(child.pid);
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  await new Promise((resolve) => child.on('close', resolve));
  const seen = JSON.parse(out);
  assert.notEqual(seen.before, seen.pid);
  assert.equal(seen.sid, seen.pid);
  assert.equal(seen.after, seen.pid);
  assert.equal(seen.second, 'EPERM setsid');
});

test('stdio fds, cwd, umask and keepFds reach the exec\'d program', () => {
  const outPath = join(dir, 'stdio.txt');
  const out = openSync(outPath, 'w');
  const kept = openSync(join(dir, 'kept.txt'), 'w');
  const dropped = openSync(join(dir, 'dropped.txt'), 'w');
  posix.setCloexec(dropped, false);  // inheritable, yet not kept: must not reach the child
  try {
    const pid = reaper.add(posix.fork({
      cwd: dir, umask: 0o027, stdio: [0, out, out], keepFds: [kept],
      file: sh, args: ['-c', `pwd; umask; ls /proc/self/fd | sort -n | tr '\\n' ' '`],
    }));
    assert.equal(posix.waitpid(pid).exitCode, 0);
  } finally {
    closeSync(out);
    closeSync(kept);
    closeSync(dropped);
  }
  const [cwd, mask, fds] = readFileSync(outPath, 'utf8').trim().split('\n');
  assert.equal(cwd, dir);
  assert.equal(mask, '0027');
  const open = fds.trim().split(' ').map(Number);
  assert.ok(open.includes(kept), `kept fd ${kept} in ${fds}`);
  assert.ok(!open.includes(dropped), `dropped fd ${dropped} not in ${fds}`);
});

// Node makes a pipe on stdout non-blocking; most programs cannot cope with
// that (a write that would block fails with EAGAIN), so an exec'd program
// gets Node's stdio back in the mode it had when the process started. An fd
// the plan chose is the caller's business and keeps its mode.
test('the exec\'d program gets Node\'s stdio back blocking (also through an intermediate); an fd the plan chose keeps O_NONBLOCK', async () => {
  const posixPath = new URL('../dist/posix.js', import.meta.url).pathname;
  const chosen = join(dir, 'nonblocking.txt');
  const child = spawn(process.execPath, ['-e', `
    const p = require(${JSON.stringify(posixPath)});
    const fs = require('node:fs');
    const mode = (text) => (parseInt(/^flags:\\s+(\\d+)/m.exec(text)[1], 8) & fs.constants.O_NONBLOCK) ? 'nonblocking' : 'blocking';
    const show = 'cat /proc/self/fdinfo/1';
    const run = (plan) => { const r = p.waitpid(p.fork(plan)); if (r.exitCode !== 0) throw new Error(JSON.stringify(r)); };
    process.stdout.write('');  // Node's stdout pipe is set up (and non-blocking) from here on
    const node = mode(fs.readFileSync('/proc/self/fdinfo/1', 'latin1'));
    const out = [];
    const seen = (n) => ${JSON.stringify(join(dir, 'fdinfo-'))} + n;
    // The program writes elsewhere and renames: a complete file or none.
    const program = (n) => ({ file: '/bin/sh', args: ['-c', show + ' > ' + seen(n) + '.tmp && mv ' + seen(n) + '.tmp ' + seen(n)] });
    const read = (n) => {
      // The exec level of a nested plan is not our child: wait for its file.
      for (let i = 0; i < 1000 && !fs.existsSync(seen(n)); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      return mode(fs.readFileSync(seen(n), 'latin1'));
    };
    run(program(1));
    out.push(read(1));
    p.fork({ setsid: true, fork: program(2) });  // returns the exec level's PID, not a child of ours
    out.push(read(2));
    const fd = fs.openSync(${JSON.stringify(chosen)}, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NONBLOCK);
    run({ stdio: [0, fd, 2], file: '/bin/sh', args: ['-c', show] });
    out.push(mode(fs.readFileSync(${JSON.stringify(chosen)}, 'latin1')));
    console.log(JSON.stringify({ node, out }));
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(child.pid);
  let text = '';
  child.stdout.on('data', (d) => { text += d; });
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0);
  const seen = JSON.parse(text);
  assert.equal(seen.node, 'nonblocking', 'Node made its stdout pipe non-blocking (else this test proves nothing)');
  assert.deepEqual(seen.out, ['blocking', 'blocking', 'nonblocking']);
});

test('waitAsync resolves for an exiting child while the event loop keeps running, with no thread added', async () => {
  const threads = () => readdirSync('/proc/self/task').length;
  const before = threads();
  const pids = [];
  for (let i = 0; i < 5; i++) pids.push(reaper.add(posix.fork({ file: sh, args: ['-c', `sleep 0.3; exit ${i}`] })));
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 10);
  const waits = pids.map((pid) => posix.waitAsync(pid));
  assert.equal(threads(), before, 'watching adds no thread');
  const results = await Promise.all(waits);
  clearInterval(timer);
  assert.deepEqual(results.map((r) => r.exitCode), [0, 1, 2, 3, 4]);
  assert.deepEqual(results.map((r) => r.pid), pids);
  assert.ok(ticks > 3, `timer ticked ${ticks} times while waiting`);
  assert.equal(threads(), before);
  assert.ok(results[0].rusage.maxRSS > 0);
});

test('waitAsync on an already exited child resolves at once; on a non-child rejects ECHILD', async () => {
  const pid = reaper.add(posix.fork({ file: sh, args: ['-c', 'exit 5'] }));
  await waitFor(() => procStat(pid)?.state === 'Z', { what: 'zombie' });
  assert.equal((await posix.waitAsync(pid)).exitCode, 5);
  await assert.rejects(posix.waitAsync(1), { code: 'ECHILD' });
});

test('an aborted waitAsync rejects with AbortError and leaves the child unreaped', async () => {
  const pid = reaper.add(posix.fork({ file: '/bin/sleep', args: ['30'] }));
  const ac = new AbortController();
  const p = posix.waitAsync(pid, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, { name: 'AbortError', code: 'ABORT_ERR' });
  process.kill(pid, 'SIGKILL');
  await waitFor(() => procStat(pid)?.state === 'Z', { what: 'zombie' });
  assert.equal(posix.waitpid(pid).signal, 'SIGKILL', 'still ours to reap');
  await assert.rejects(posix.waitAsync(pid, { signal: AbortSignal.abort() }), { name: 'AbortError' });
});

test('waitAsync does not steal the exit status of a child_process child', async () => {
  const child = spawn(sh, ['-c', 'sleep 0.2; exit 9']);
  reaper.add(child.pid);
  const mine = reaper.add(posix.fork({ file: sh, args: ['-c', 'sleep 0.1; exit 4'] }));
  const [code, r] = await Promise.all([
    new Promise((resolve) => child.on('exit', (c) => resolve(c))),
    posix.waitAsync(mine),
  ]);
  assert.equal(code, 9);
  assert.equal(r.exitCode, 4);
});

test('spawnDetached: not our child, not a session leader, no tty, cwd /, stdio on /dev/null', async () => {
  const pid = reaper.add(posix.spawnDetached('sleep', ['30']));
  // Wait until sleep itself runs: while the dynamic loader starts it, a
  // library may briefly be open as fd 3.
  await waitFor(() => procStat(pid)?.state === 'S' && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep',
    { what: 'detached sleep to be asleep' });
  const st = procStat(pid);
  assert.notEqual(st.ppid, process.pid);
  assert.notEqual(posix.getsid(pid), pid, 'not a session leader');
  assert.notEqual(posix.getsid(pid), posix.getsid(), 'own session');
  assert.notEqual(st.pgrp, pid);
  assert.equal(st.ttyNr, 0);
  assert.equal(procCwd(pid), '/');
  const fds = procFds(pid);
  assert.equal(fds['0'], '/dev/null');
  assert.equal(fds['1'], '/dev/null');
  assert.equal(fds['2'], '/dev/null');
  assert.deepEqual(Object.keys(fds).sort(), ['0', '1', '2']);
  assert.throws(() => posix.waitpid(pid, WNOHANG), { code: 'ECHILD' });
  assert.deepEqual(zombieChildren(process.pid), [], 'the intermediate was reaped');
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !isAlive(pid), { what: 'detached process to die' });
});

test('spawnDetached throws exec errors synchronously', () => {
  assert.throws(() => posix.spawnDetached('/no/such/daemon'), { code: 'ENOENT', syscall: 'execve' });
  assert.throws(() => posix.spawnDetached('no-such-command-anywhere'), { code: 'ENOENT' });
  assert.deepEqual(zombieChildren(process.pid), []);
});

test('childPids lists the current children', () => {
  const a = reaper.add(posix.fork({ file: '/bin/sleep', args: ['30'] }));
  const b = reaper.add(posix.fork({ file: '/bin/sleep', args: ['30'] }));
  const kids = posix.childPids();
  assert.ok(kids.includes(a) && kids.includes(b), JSON.stringify(kids));
  assert.deepEqual(posix.childPids(a), []);
  assert.ok(posix.childPids(process.ppid).includes(process.pid), 'our parent lists us');
  for (const pid of [a, b]) {
    process.kill(pid, 'SIGKILL');
    posix.waitpid(pid);
  }
  assert.ok(!posix.childPids().includes(a));
});

test('validation errors carry Node codes and messages', () => {
  const cases = [
    [() => posix.waitpid('1'), 'ERR_INVALID_ARG_TYPE', 'The "pid" argument must be of type number. Received type string (\'1\')'],
    [() => posix.waitpid(1.5), 'ERR_OUT_OF_RANGE', /The value of "pid" is out of range. It must be an integer/],
    [() => posix.waitpid(1, 1 << 20), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.getsid(-1), 'ERR_OUT_OF_RANGE'],
    [() => posix.exit('0'), 'ERR_INVALID_ARG_TYPE'],
    [() => posix.fork({ file: 1 }), 'ERR_INVALID_ARG_TYPE', /The "plan.file" property must be of type string/],
    [() => posix.fork({ file: '' }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ file: 'a\u0000b' }), 'ERR_INVALID_ARG_VALUE', /must be a string without null bytes/],
    [() => posix.fork({ file: sh, umask: 0o1000 }), 'ERR_OUT_OF_RANGE'],
    [() => posix.fork({ file: sh, stdio: 'pipe' }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ file: sh, keepFds: [2] }), 'ERR_OUT_OF_RANGE'],
    [() => posix.fork({ file: sh, args: [1] }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ file: sh, env: { A: {} } }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ file: sh, fork: { file: sh } }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ fork: { fork: { fork: { fork: { fork: { file: sh } } } } } }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.fork({ file: sh, setsid: 'yes' }), 'ERR_INVALID_ARG_TYPE'],
    [() => posix.fork({ file: sh, setpgid: 1 }), 'ERR_INVALID_ARG_TYPE', /"plan.setpgid"/],
    [() => posix.fork({ fork: { file: sh, setpgid: 1 } }), 'ERR_INVALID_ARG_TYPE', /"plan.fork.setpgid"/],
    [() => posix.fork({ setsid: true, setpgid: true, file: sh }), 'ERR_INVALID_ARG_VALUE'],
    [() => posix.spawnDetached(sh, 'x'), 'ERR_INVALID_ARG_TYPE'],
    [() => posix.spawnDetached(sh, [], { cwd: 5 }), 'ERR_INVALID_ARG_TYPE', /"options.fork.cwd"|"options.cwd"/],
    [() => posix.waitAsync(0), 'ERR_OUT_OF_RANGE'],
    [() => posix.waitAsync(1, { signal: 'x' }), 'ERR_INVALID_ARG_TYPE'],
    [() => posix.childPids(0), 'ERR_OUT_OF_RANGE'],
  ];
  for (const [fn, code, message] of cases) {
    assert.throws(fn, (err) => {
      assert.equal(err.code, code, `${fn}: ${err.message}`);
      if (typeof message === 'string') assert.equal(err.message, message);
      else if (message) assert.match(err.message, message);
      return true;
    });
  }
});

test('fork({ deathSignal }): a child outlives no parent: SIGKILL the parent and the child gets the signal (PR_SET_PDEATHSIG)', async () => {
  const mark = join(dir, 'death-signal-mark');
  // The parent: a Node process that forks a shell which records the signal
  // it gets, then waits to be killed.
  const parentScript = `
    const posix = require(${JSON.stringify(join(process.cwd(), 'dist', 'posix.js'))});
    const pid = posix.fork({ file: '/bin/sh', args: ['-c', 'trap "echo TERM > ${mark}; exit 0" TERM; while :; do sleep 0.05; done'],
      deathSignal: 'SIGTERM' });
    console.log(pid);
    setInterval(() => {}, 1000);`;
  const parent = spawn(process.execPath, ['-e', parentScript], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(parent.pid);
  let out = '';
  parent.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const child = Number(await waitFor(() => /^\d+\n/.test(out) && out.trim(), { what: 'the child pid' }));
  reaper.add(child);
  // Exec'd (not the forked copy of Node any more) and still the parent's child.
  await waitFor(() => readFileSync(`/proc/${child}/cmdline`, 'latin1').startsWith('/bin/sh\0'), { what: 'the shell' });
  assert.equal(procStat(child).ppid, parent.pid);
  parent.kill('SIGKILL');
  await waitFor(() => { try { return readFileSync(mark, 'utf8') === 'TERM\n'; } catch { return false; } },
    { what: 'the child to get SIGTERM' });
  await waitFor(() => !isAlive(child), { what: 'the child to end' });
});

test('fork({ deathSignal }) is validated: a signal, a direct child only', () => {
  assert.throws(() => posix.fork({ file: sh, deathSignal: 'SIGNOPE' }), { code: 'ERR_UNKNOWN_SIGNAL' });
  assert.throws(() => posix.fork({ file: sh, deathSignal: {} }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => posix.fork({ fork: { file: sh, deathSignal: 'SIGTERM' } }),
    { code: 'ERR_INVALID_ARG_VALUE', message: /plan\.fork\.deathSignal.*only for a direct child/ });
  assert.throws(() => posix.fork({ fork: { file: sh }, deathSignal: 'SIGTERM' }),
    { code: 'ERR_INVALID_ARG_VALUE', message: /must not have 'deathSignal' with 'fork'/ });
});

test('spawnDetached({ argv0 }): the documented option is accepted and becomes argv[0]', async () => {
  const pid = reaper.add(posix.spawnDetached('sleep', ['30'], { argv0: 'pd-argv0-sleeper' }));
  await waitFor(() => { try { return readFileSync(`/proc/${pid}/cmdline`, 'latin1').startsWith('pd-argv0-sleeper\0'); } catch { return false; } },
    { what: 'argv[0] of the detached sleep' });
  process.kill(pid, 'SIGKILL');
});
