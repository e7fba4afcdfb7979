// Native core hardening (issue 10 items 5, 6, 7, 9; issue 13's setpgid):
// each defect reproduced against real processes, /proc, strace and RSS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as posix from '../dist/posix.mjs';
import { fileScope, fixtures, runNode, isAlive, procStat, straceCalls, waitFor } from './helpers.mjs';

const { addon } = createRequire(import.meta.url)('../dist/native.js');
const sh = '/bin/sh';
const strace = ['/usr/bin/strace', '/bin/strace'].find(existsSync);
const bash = ['/bin/bash', '/usr/bin/bash'].find(existsSync);

const { reaper, dir } = fileScope('native-hardening-');

test('ExitWatcher for a PID that does not exist (ESRCH) frees what it allocated', async () => {
  // 300000 failed constructions used to keep their libuv handles (+96 MiB
  // RSS); a bounded memory growth is the assertion, never a duration.
  const r = await runNode(join(fixtures, 'native-hardening-watcher-esrch.cjs'), ['300000'],
    { nodeArgs: ['--expose-gc'], timeout: 120000, reaper });
  assert.equal(r.code, 0, r.stderr);
  const { calls, growth } = JSON.parse(r.stdout);
  assert.equal(calls, 300000);
  assert.ok(growth < 16 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB over ${calls} failed constructions`);
});

/** Waits until a process that is not our child is gone. */
async function gone(pid) {
  await waitFor(() => !isAlive(pid), { what: `pid ${pid} to end` });
}

/** The fds a `ls /proc/self/fd` run listed, without the one ls itself had open for the listing. */
function listedFds(path) {
  return readFileSync(path, 'utf8').trim().split(/\s+/).map(Number);
}

test('a nested plan applies umask, cwd, stdio and keepFds of its outer level; the inner level inherits them', async () => {
  const out = join(dir, 'outer.txt');
  const outFd = openSync(out, 'w');
  const kept = openSync(join(dir, 'kept-outer'), 'w');
  let pid;
  try {
    pid = reaper.add(posix.fork({
      setsid: true, umask: 0o077, cwd: dir, stdio: [0, outFd, outFd], keepFds: [kept],
      fork: { file: sh, args: ['-c', 'umask; pwd; ls /proc/self/fd | tr "\\n" " "; echo'] },
    }));
  } finally {
    closeSync(outFd);
    closeSync(kept);
  }
  await gone(pid);
  const [mask, cwd, fds] = readFileSync(out, 'utf8').split('\n');
  assert.equal(mask, '0077', 'umask of the outer level');
  assert.equal(cwd, dir, 'cwd of the outer level');
  assert.ok(fds.trim().split(' ').map(Number).includes(kept), `outer keepFds ${kept} reached the program: ${fds}`);
});

test('an inner level overrides what it sets itself; a relative inner cwd starts from the outer one', async () => {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  const out = join(dir, 'sub', 'inner.txt');
  const kept = openSync(join(dir, 'kept-inner'), 'w');
  let pid;
  try {
    pid = reaper.add(posix.fork({
      umask: 0o077, cwd: dir, stdio: 'ignore', keepFds: [kept],
      fork: {
        umask: 0o022, cwd: 'sub', keepFds: [],
        file: sh, args: ['-c', `{ umask; pwd; readlink /proc/self/fd/2; ls /proc/self/fd | tr "\\n" " "; } > inner.txt`],
      },
    }));
  } finally {
    closeSync(kept);
  }
  await gone(pid);
  const [mask, cwd, stdout, fds] = readFileSync(out, 'utf8').split('\n');
  assert.equal(mask, '0022');
  assert.equal(cwd, join(dir, 'sub'));
  assert.equal(stdout, '/dev/null', "stdio 'ignore' of the outer level is inherited");
  assert.ok(!fds.trim().split(' ').map(Number).includes(kept), `inner keepFds [] wins over the outer's: ${fds}`);
});

test('a failure in an outer level (chdir) is thrown, with its path, and leaves nothing behind', () => {
  const before = posix.childPids();
  assert.throws(() => posix.fork({ cwd: '/no/such/outer', fork: { cwd: '/', file: sh } }),
    { code: 'ENOENT', syscall: 'chdir', path: '/no/such/outer' });
  assert.throws(() => posix.fork({ fork: { cwd: '/no/such/inner', fork: { file: sh } } }),
    { code: 'ENOENT', syscall: 'chdir', path: '/no/such/inner' });
  assert.deepEqual(posix.childPids(), before);
});

test('setpgid: the child leads a new process group in our session; not together with setsid', async () => {
  const pid = reaper.add(posix.fork({ setpgid: true, file: '/bin/sleep', args: ['30'] }));
  const st = procStat(pid);
  assert.equal(st.pgrp, pid, 'pgid from /proc/PID/stat is the child\'s own pid');
  assert.equal(st.session, procStat(process.pid).session, 'same session');
  process.kill(pid, 'SIGKILL');
  assert.equal(posix.waitpid(pid).signal, 'SIGKILL');

  const plain = reaper.add(posix.fork({ file: '/bin/sleep', args: ['30'] }));
  assert.equal(procStat(plain).pgrp, procStat(process.pid).pgrp, 'without setpgid: our group');
  process.kill(plain, 'SIGKILL');
  posix.waitpid(plain);

  // On an outer level: the intermediate leads the group, the program below inherits it.
  const inner = reaper.add(posix.fork({ setpgid: true, fork: { file: '/bin/sleep', args: ['30'] } }));
  const ist = procStat(inner);
  assert.notEqual(ist.pgrp, procStat(process.pid).pgrp);
  assert.notEqual(ist.pgrp, inner);
  process.kill(inner, 'SIGKILL');
  await gone(inner);

  for (const fork of [posix.fork, addon.fork]) {
    assert.throws(() => fork({ setsid: true, setpgid: true, file: '/bin/true' }),
      { code: 'ERR_INVALID_ARG_VALUE', message: /setsid.*setpgid/ });
    assert.throws(() => fork({ setpgid: 'yes', file: '/bin/true' }), { code: 'ERR_INVALID_ARG_TYPE' });
  }
});

test('strace: every wait4 names a child its caller forked itself; Node waits only for its direct child', async (t) => {
  if (!strace) {
    t.skip('strace is not installed');
    return;
  }
  const log = join(dir, 'reap.strace');
  const r = spawnSync(strace, ['-f', '-qq', '-o', log, '-e', 'trace=clone,clone3,fork,vfork,wait4,waitid',
    process.execPath, join(fixtures, 'native-hardening-reap.cjs')], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  for (const run of report.runs) reaper.add(run.daemon);
  for (const run of report.runs) {
    assert.equal(run.failure, 'ENOENT execve', `subreaper ${run.subreaper}`);
    assert.deepEqual(run.zombies, [], `subreaper ${run.subreaper}: nothing left unreaped`);
  }

  const calls = straceCalls(log);
  const forkedBy = new Map();  // pid -> set of process children it cloned
  for (const c of calls) {
    const m = /^(clone3?|fork|vfork)\(.*= (\d+)$/.exec(c.text);
    if (!m || c.text.includes('CLONE_THREAD')) continue;
    if (!forkedBy.has(c.pid)) forkedBy.set(c.pid, new Set());
    forkedBy.get(c.pid).add(Number(m[2]));
  }
  const waits = calls.filter((c) => /^wait4\(/.test(c.text));
  assert.ok(waits.length >= 4, `waits seen: ${waits.length}`);
  for (const w of waits) {
    const target = Number(/^wait4\((-?\d+),/.exec(w.text)[1]);
    assert.ok(forkedBy.get(w.pid)?.has(target), `${w.pid} waited for ${target}, which it did not fork: ${w.text}`);
  }
  const nodeWaits = waits.filter((w) => w.pid === report.pid);
  assert.equal(nodeWaits.length, 4, 'Node reaps exactly the one intermediate of each of its four fork() calls');
});

test('close_range missing (ENOSYS injected): no fd above a lowered RLIMIT_NOFILE reaches the program', async (t) => {
  if (!strace || !bash) {
    t.skip('strace and bash are needed');
    return;
  }
  const highFd = 300;
  for (const mode of ['fork', 'nested', 'execve']) {
    const out = join(dir, `fds-${mode}.txt`);
    const log = join(dir, `fds-${mode}.strace`);
    // bash opens fd 300 (inheritable), lowers soft and hard RLIMIT_NOFILE to
    // 64 below it, then becomes node (which cannot raise the limit back).
    const r = spawnSync(strace, ['-f', '-qq', '-o', log, '-e', 'trace=close_range', '-e', 'inject=close_range:error=ENOSYS',
      bash, '-c', `exec ${highFd}</dev/null; ulimit -n 64; exec "$0" "$@"`,
      process.execPath, join(fixtures, 'native-hardening-fds.cjs'), mode, out, String(highFd)],
    { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, `${mode}: ${r.stderr}`);
    assert.match(JSON.parse(r.stdout.split('\n')[0]).limits, /\s64\s+64\s/, 'the limit was lowered under the open fd');
    await waitFor(() => existsSync(out) && readFileSync(out, 'utf8').endsWith(' '), { what: `${mode}: listing` });
    const fds = listedFds(out);
    assert.ok(fds.includes(0) && fds.includes(1) && fds.includes(2), `${mode}: ${fds}`);
    assert.ok(!fds.includes(highFd), `${mode}: fd ${highFd} leaked into the program: ${fds}`);
    if (mode !== 'execve') {
      assert.match(readFileSync(log, 'utf8'), /close_range\(.*ENOSYS.*INJECTED/, `${mode}: the fallback ran`);
    }
  }
});

// The bound of the child's last-resort loop is needed only where neither
// close_range nor /proc works; where close_range works (probed once per
// process) Node's thread does not list its own fds before every fork:
// with 10000 fds open that listing made a fork+exec+wait 3 to 4 times slower.
test('strace: with close_range working, fork() does not list /proc/self/fd in the parent', (t) => {
  if (!strace) {
    t.skip('strace is not installed');
    return;
  }
  const log = join(dir, 'scan.strace');
  const posixPath = new URL('../dist/posix.js', import.meta.url).pathname;
  const r = spawnSync(strace, ['-f', '-qq', '-o', log, '-e', 'trace=openat,close_range', process.execPath, '-e', `
    const p = require(${JSON.stringify(posixPath)});
    for (let i = 0; i < 20; i++) p.waitpid(p.fork({ file: '/bin/true' }));
    console.log(process.pid);
  `], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  const node = Number(r.stdout.trim());
  const lines = readFileSync(log, 'utf8').split('\n');
  const listings = lines.filter((l) => l.startsWith(`${node} `) && /openat\(.*"\/proc\/self\/fd"/.test(l));
  assert.deepEqual(listings, [], 'Node\'s main thread listed its fds');
  // The children did mark their fds close-on-exec with close_range.
  assert.ok(lines.filter((l) => /close_range\(.*CLOSE_RANGE_CLOEXEC\) = 0/.test(l)).length >= 20, 'close_range in each child');
});

test("stdio: 'ignore' in a process whose fd 0 is closed: the program still gets /dev/null on 0-2", () => {
  const r = spawnSync(process.execPath, [join(fixtures, 'native-hardening-stdin-closed.cjs')], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), ['/dev/null', '/dev/null', '/dev/null']);
});
