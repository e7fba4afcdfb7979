// PID files with a lock, the daemonize({ pidFile }) hand-over, stopDaemon and
// the pidfd process handle: real processes, real files, checked via /proc.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, isAlive, runNode, waitFor } from './helpers.mjs';
import { lockPidFile, readPidFile, stopDaemon, openProcess, lockPidFileForLaunch } from '../dist/index.mjs';

const app = join(fixtures, 'pidfile-app.mjs');
const { reaper, dir: tmp } = fileScope('posix-daemon-pidfile-');
let n = 0;
const fresh = () => join(tmp, `t${++n}.pid`);

function hold(path, ...args) {
  const child = spawn(process.execPath, [app, 'hold', path, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(child.pid);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal })));
  const locked = waitFor(() => /LOCKED (\d+)/.exec(out)?.[1], { what: 'LOCKED' }).then(Number);
  return { child, locked, exited };
}

function opensFile(pid, path) {
  return readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === path;
    } catch {
      return false;
    }
  });
}

test('lockPidFile: PID written under the lock, a second lock fails naming both, removed on a clean exit', async () => {
  const path = fresh();
  const h = hold(path);
  const pid = await h.locked;
  assert.equal(readFileSync(path, 'latin1'), `${pid}\n`);
  assert.equal(readPidFile(path), pid);
  assert.throws(() => lockPidFile(path), (err) => {
    assert.equal(err.code, 'ERR_ALREADY_RUNNING');
    assert.equal(err.pid, pid);
    assert.equal(err.path, path);
    assert.match(err.message, new RegExp(`${path}.*${pid}`));
    return true;
  });
  // a second process fails the same way
  const second = await runNode(app, ['hold', path]);
  assert.equal(second.code, 1);
  assert.equal(JSON.parse(second.stdout.slice(6)).pid, pid);
  process.kill(pid, 'SIGTERM');
  assert.equal((await h.exited).code, 0);
  assert.equal(existsSync(path), false, 'removed on a clean exit');
  assert.equal(readPidFile(path), null);
});

test('a stale file (holder SIGKILLed) holds no lock: readPidFile says null, the next lock takes it over', async () => {
  const path = fresh();
  const h = hold(path);
  const pid = await h.locked;
  process.kill(pid, 'SIGKILL');
  await h.exited;
  assert.equal(readFileSync(path, 'latin1'), `${pid}\n`, 'the number is still there');
  assert.equal(readPidFile(path), null, 'but nobody holds the lock: not trusted');
  // even a live PID in an unlocked file is not trusted
  writeFileSync(path, `${process.pid}\n`);
  assert.equal(readPidFile(path), null);
  const lock = lockPidFile(path);
  assert.equal(readFileSync(path, 'latin1'), `${process.pid}\n`);
  assert.equal(lock.pid, process.pid);
  lock.release();
  assert.equal(existsSync(path), false);
});

test('a symlink planted at the path is refused, its target untouched', () => {
  const target = join(tmp, 'precious');
  writeFileSync(target, 'keep me');
  const path = fresh();
  symlinkSync(target, path);
  assert.throws(() => lockPidFile(path), { code: 'ELOOP' });
  assert.equal(readFileSync(target, 'latin1'), 'keep me');
  assert.equal(readPidFile(path), null);
});

test('daemonize shape: the foreground locks first, the daemon inherits the lock and keeps it through an in-place restart', async () => {
  const path = fresh();
  const dir = mkdtempSync(join(tmp, 'd-'));
  const r = await runNode(app, ['launch', path, dir]);
  assert.equal(r.code, 0, r.stderr);
  const daemon = reaper.add(Number(/PID (\d+)/.exec(r.stdout)[1]));
  const restarted = await waitFor(() => existsSync(join(dir, 'restarted')) && readFileSync(join(dir, 'restarted'), 'latin1'),
    { what: 'the daemon to restart in place' });
  const [first] = readFileSync(join(dir, 'first'), 'latin1').split(' ').map(Number);
  const [again, lockPid] = restarted.split(' ').map(Number);
  assert.equal(first, daemon);
  assert.equal(again, daemon, 'same PID after execve');
  assert.equal(lockPid, daemon);
  assert.equal(readFileSync(path, 'latin1'), `${daemon}\n`, 'the daemon wrote its own PID');
  assert.equal(readPidFile(path), daemon, 'the lock survived the exec');
  assert.ok(opensFile(daemon, path), 'the daemon holds the file open');
  // A second start fails before anything is launched.
  const second = await runNode(app, ['launch', path, dir]);
  assert.equal(second.code, 1);
  assert.doesNotMatch(second.stdout, /PID /, 'nothing was launched');
  const err = JSON.parse(/ERROR (.*)/.exec(second.stdout)[1]);
  assert.equal(err.code, 'ERR_ALREADY_RUNNING');
  assert.equal(err.pid, daemon);
  assert.throws(() => lockPidFileForLaunch(path), { code: 'ERR_ALREADY_RUNNING', pid: daemon });
  // stopDaemon by PID file: SIGTERM, clean exit, file removed.
  const res = await stopDaemon(path, { timeout: 20000 });
  assert.deepEqual(res, { pid: daemon, signal: 'SIGTERM', killed: false });
  assert.equal(isAlive(daemon), false);
  await waitFor(() => !existsSync(path), { what: 'the PID file to go' });
});

test('lockPidFile then restartViaExec: the new image locks the same file again, same PID, same lock', async () => {
  const path = fresh();
  const dir = mkdtempSync(join(tmp, 'r-'));
  const child = spawn(process.execPath, [app, 'restart', path, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  const pid = reaper.add(child.pid);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const restarted = await waitFor(() => existsSync(join(dir, 'restarted')) && readFileSync(join(dir, 'restarted'), 'latin1'),
    { what: `the program to restart in place (stderr: ${stderr})` });
  const [firstPid, firstFd] = readFileSync(join(dir, 'first'), 'latin1').split(' ').map(Number);
  const [again, fd, holder, held] = restarted.split(' ');
  assert.equal(firstPid, pid);
  assert.equal(Number(again), pid, 'same PID after restartViaExec');
  assert.equal(Number(fd), firstFd, 'the inherited lock fd was adopted, not a second lock taken');
  assert.equal(Number(holder), pid, 'readPidFile: the lock is held, by us');
  assert.equal(held, String(firstFd), 'and would be kept across the next restart');
  assert.throws(() => lockPidFile(path), { code: 'ERR_ALREADY_RUNNING', pid });
  const res = await stopDaemon(path, { timeout: 20000 });
  assert.deepEqual(res, { pid, signal: 'SIGTERM', killed: false });
  await waitFor(() => !existsSync(path), { what: 'the PID file to go on the clean exit' });
});

test('stopDaemon: SIGKILL after the timeout for a process that ignores SIGTERM', async () => {
  const path = fresh();
  const h = hold(path, 'stubborn');
  const pid = await h.locked;
  const res = await stopDaemon(path, { timeout: 200 });
  assert.deepEqual(res, { pid, signal: 'SIGTERM', killed: true });
  assert.equal((await h.exited).signal, 'SIGKILL');
  assert.equal(readPidFile(path), null, 'stale now');
  await assert.rejects(stopDaemon(path), { code: 'ESRCH', path });
  await assert.rejects(stopDaemon(join(tmp, 'missing.pid')), { code: 'ENOENT', syscall: 'open' });
});

test('stopDaemon by PID, with another signal', async () => {
  const h = hold(fresh());
  const pid = await h.locked;
  assert.deepEqual(await stopDaemon(pid, { signal: 'SIGINT', timeout: 20000 }), { pid, signal: 'SIGINT', killed: false });
  assert.equal((await h.exited).signal, 'SIGINT');
  await assert.rejects(stopDaemon(pid), { code: 'ESRCH' });
  await assert.rejects(stopDaemon(pid, { signal: 'SIGNOPE' }), { code: 'ERR_UNKNOWN_SIGNAL' });
  await assert.rejects(stopDaemon(pid, { timeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  await assert.rejects(stopDaemon({}), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('openProcess: a pidfd pins the process; after it ends kill() says false instead of hitting a reused PID', async () => {
  const child = spawn('sleep', ['100'], { stdio: 'ignore' });
  reaper.add(child.pid);
  const handle = openProcess(child.pid);
  assert.equal(handle.kind, 'pidfd');
  assert.equal(handle.kill(0), true);
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(signal)));
  assert.equal(handle.kill('SIGTERM'), true);
  await handle.exited;
  assert.equal(await exited, 'SIGTERM');
  // Reaped by child_process by now: the number is free for reuse, the pidfd is not.
  assert.equal(handle.kill('SIGKILL'), false);
  handle.close();
  assert.throws(() => handle.kill(0), { code: 'EBADF' });
  assert.throws(() => openProcess(child.pid), { code: 'ESRCH' });
  assert.throws(() => openProcess(0), { code: 'ERR_OUT_OF_RANGE' });
});

// Issue 22, item 23: a lock proves something only when the process in the
// file holds it, in a file that someone trusted wrote.
function startSleep() {
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
  reaper.add(sleeper.pid);
  return sleeper;
}

/** `flock -x path` held by a process running as `user` (setpriv), which prints 'locked'. */
async function flockAs(path, uid) {
  const cmd = ['-x', path, 'sh', '-c', 'echo locked; exec sleep 60'];
  const holder = uid === 0 ? spawn('flock', cmd, { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'flock', ...cmd], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(holder.pid);
  let out = '';
  holder.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  await waitFor(() => out.includes('locked'), { what: 'flock to hold the file' });
  return holder;
}

test('stopDaemon/readPidFile: another user\'s locked file naming root\'s process is not trusted', {
  skip: process.getuid() !== 0 && 'needs root (to be nobody, and to own the victim)',
}, async () => {
  const sleeper = startSleep();
  // A world-writable sticky directory, as /tmp is.
  const shared = join(tmp, 'shared');
  mkdirSync(shared);
  chmodSync(tmp, 0o755);
  chmodSync(shared, 0o1777);
  const path = join(shared, 'fake.pid');
  const nobody = 65534;
  const w = spawnSync('setpriv', [`--reuid=${nobody}`, `--regid=${nobody}`, '--clear-groups', 'sh', '-c', `echo ${sleeper.pid} > "$0"`, path]);
  assert.equal(w.status, 0, String(w.stderr));
  assert.equal(statSync(path).uid, nobody);
  await flockAs(path, nobody);
  assert.equal(readPidFile(path), null);
  await assert.rejects(stopDaemon(path, { timeout: 1000 }), { code: 'ESRCH' });
  assert.ok(isAlive(sleeper.pid), 'root\'s sleep survived');
});

test('stopDaemon/readPidFile: a lock held by another process than the one in the file proves nothing', async () => {
  const sleeper = startSleep();
  const path = fresh();
  writeFileSync(path, `${sleeper.pid}\n`);
  const holder = await flockAs(path, 0);
  assert.notEqual(holder.pid, sleeper.pid);
  assert.equal(readPidFile(path), null);
  await assert.rejects(stopDaemon(path, { timeout: 1000 }), { code: 'ESRCH' });
  assert.ok(isAlive(sleeper.pid), 'the process named in the file survived');
});
