// daemonize({ pidFile, stdout, stderr, umask, reopenLogsOn }): real daemons,
// real files, checked through /proc.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reaper, fixtures, isAlive, procFds, runNode, waitFor } from './helpers.mjs';
import { daemonize, readPidFile, stopDaemon } from '../dist/index.mjs';

const app = join(fixtures, 'daemon-app.mjs');
const ENV_KEY = 'POSIX_DAEMON_TEST_DAEMON';
const reaper = new Reaper();
const everyPid = new Set();
const tmp = mkdtempSync(join(tmpdir(), 'posix-daemon-pidfile-daemon-'));
after(async () => {
  await reaper.killAll();
  rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual([...everyPid].filter(isAlive), [], 'no daemon may outlive the tests');
});
let n = 0;
const fresh = (ext = 'pid') => join(tmp, `t${++n}.${ext}`);

const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' };

function run(mode, opts = {}, env = baseEnv) {
  return runNode(app, [mode, JSON.stringify(opts)], { env, reaper }).then((r) => {
    for (const m of r.stdout.matchAll(/^(?:PID|ERROR) (\d+)/gm)) {
      if (Number(m[1]) > 0) everyPid.add(reaper.add(Number(m[1])));
    }
    return r;
  });
}

function daemonPid(r) {
  const m = /^PID (\d+)$/m.exec(r.stdout);
  assert.ok(m, `expected a PID line, got: ${r.stdout} ${r.stderr}`);
  return Number(m[1]);
}

function failure(r) {
  const m = /^ERROR (\d+) (.*)$/m.exec(r.stdout);
  assert.ok(m, `expected an ERROR line, got: ${r.stdout} ${r.stderr}`);
  return { pid: Number(m[1]), ...JSON.parse(m[2]) };
}

/** PIDs of processes whose environment holds `NAME=value`. */
function processesWithEnv(kv) {
  const out = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/environ`, 'latin1').split('\0').includes(kv)) out.push(Number(e));
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

test('pidFile: the daemon holds the lock with its own PID; a second start fails before launching anything', async () => {
  const path = fresh();
  const r = await run('serve', { pidFile: path });
  assert.equal(r.code, 0, r.stderr);
  const pid = daemonPid(r);
  // The foreground has exited: only the daemon can hold the lock now.
  assert.equal(readPidFile(path), pid);
  assert.equal(readFileSync(path, 'latin1'), `${pid}\n`);
  assert.ok(Object.values(procFds(pid)).includes(path), 'the daemon has the PID file open');

  // Second start, with an inherited environment carrying a marker: any
  // process it launched would carry the marker too.
  const marker = `POSIX_DAEMON_TEST_MARK=${process.pid}-${n}`;
  const second = await run('serve', { pidFile: path, env: 'inherit' }, { ...baseEnv, [marker.split('=')[0]]: marker.split('=')[1] });
  assert.equal(second.code, 1);
  const err = failure(second);
  assert.equal(err.code, 'ERR_ALREADY_RUNNING');
  assert.equal(err.pid, pid);
  assert.ok(err.message.includes(path) && err.message.includes(String(pid)), err.message);
  assert.deepEqual(processesWithEnv(marker), [], 'nothing was launched');
  // The failed start changed nothing.
  assert.equal(readPidFile(path), pid);
  assert.equal(readFileSync(path, 'latin1'), `${pid}\n`);

  // stopDaemon: SIGTERM through a pidfd; the daemon exits cleanly and removes the file.
  const stopped = await stopDaemon(path, { timeout: 10000 });
  assert.deepEqual(stopped, { pid, signal: 'SIGTERM', killed: false });
  assert.equal(isAlive(pid), false);
  assert.equal(existsSync(path), false, 'a clean exit removes the PID file');
  assert.equal(readPidFile(path), null);
});

test('pidFile: a SIGKILLed daemon leaves an unlocked file that the next start takes over', async () => {
  const path = fresh();
  const first = daemonPid(await run('serve', { pidFile: path }));
  process.kill(first, 'SIGKILL');
  await waitFor(() => !isAlive(first), { what: 'the daemon to die' });
  assert.equal(readFileSync(path, 'latin1'), `${first}\n`, 'the stale number stays behind');
  // The leader shows as a zombie while its other threads may still be
  // exiting and holding the files: the lock goes once the last one is gone.
  await waitFor(() => readPidFile(path) === null, { what: 'readPidFile to say null: nobody holds the lock' });
  const r = await run('serve', { pidFile: path });
  assert.equal(r.code, 0, r.stderr);
  const second = daemonPid(r);
  assert.notEqual(second, first);
  assert.equal(readPidFile(path), second);
  await stopDaemon(path);
  assert.equal(existsSync(path), false);
});

test('pidFile: a daemon that never gets ready leaves no file and no lock behind', async () => {
  for (const mode of ['exit3', 'fail']) {
    const path = fresh();
    const r = await run(mode, { pidFile: path });
    assert.equal(r.code, 1, mode);
    const { pid } = failure(r);
    assert.ok(pid > 0);
    assert.equal(isAlive(pid), false, `${mode}: killed`);
    assert.equal(existsSync(path), false, `${mode}: file removed`);
    // The lock is free: the next start works.
    const ok = await run('serve', { pidFile: path });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(readPidFile(path), daemonPid(ok));
    await stopDaemon(path);
  }
});

test('log files are created with the daemon\'s umask, not the foreground\'s', async () => {
  const out = fresh('log');
  const errLog = fresh('log');
  // The foreground runs with umask 022 (this process's): before, the files got 0644.
  const old = process.umask(0o022);
  try {
    const r = await run('serve', { umask: 0o077, stdout: out, stderr: errLog });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    assert.equal(statSync(errLog).mode & 0o777, 0o600);
    process.kill(daemonPid(r), 'SIGTERM');
  } finally {
    process.umask(old);
  }
});

test('reopenLogsOn: after a rename, the signal makes the daemon write to new files at the old paths', async () => {
  const out = fresh('log');
  const errLog = fresh('log');
  const pidFile = fresh();
  const r = await run('serve', { umask: 0o027, stdout: out, stderr: errLog, reopenLogsOn: 'SIGUSR1', pidFile });
  assert.equal(r.code, 0, r.stderr);
  const pid = daemonPid(r);
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => readFileSync(out, 'utf8').includes('line 1\n'), { what: 'line 1' });
  // logrotate's create-less rotation: rename, then signal.
  renameSync(out, `${out}.1`);
  renameSync(errLog, `${errLog}.1`);
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => readFileSync(`${out}.1`, 'utf8').includes('line 2\n'), { what: 'line 2 in the renamed file' });
  assert.equal(existsSync(out), false);
  process.kill(pid, 'SIGUSR1');
  await waitFor(() => procFds(pid)['1'] === out && procFds(pid)['2'] === errLog, { what: 'fds 1 and 2 reopened' });
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => readFileSync(out, 'utf8') === 'line 3\n', { what: 'line 3 in the new file' });
  await waitFor(() => readFileSync(errLog, 'utf8') === 'err line 3\n', { what: 'err line 3 in the new file' });
  assert.equal(readFileSync(`${out}.1`, 'utf8'), 'line 1\nline 2\n');
  // The new files get the daemon's umask too; a repeated signal does no harm.
  assert.equal(statSync(out).mode & 0o777, 0o640);
  process.kill(pid, 'SIGUSR1');
  process.kill(pid, 'SIGUSR1');
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => readFileSync(out, 'utf8') === 'line 3\nline 4\n', { what: 'line 4' });
  assert.equal(isAlive(pid), true);
  await stopDaemon(pidFile);
});

test('pidFile and reopenLogsOn are validated before anything starts', async () => {
  // An aborted signal: should validation miss something, daemonize rejects
  // with an AbortError instead of starting this test file as a daemon.
  const base = { envKey: `POSIX_DAEMON_TEST_UNSET_${process.pid}`, signal: AbortSignal.abort() };
  await assert.rejects(daemonize({ ...base, pidFile: '' }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(daemonize({ ...base, pidFile: 7 }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(daemonize({ ...base, pidFile: 'a\0b' }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(daemonize({ ...base, reopenLogsOn: 'SIGNOPE' }), { code: 'ERR_UNKNOWN_SIGNAL' });
  await assert.rejects(daemonize({ ...base, reopenLogsOn: 10 }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(daemonize({ ...base, reopenLogsOn: 'SIGKILL' }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.equal(process.env[ENV_KEY], undefined);
});
