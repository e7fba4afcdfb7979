// Log files: created with the daemon's umask, reopened after a logrotate-style
// rename, never redirected by a hostile environment. Real files, a real process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, waitFor } from './helpers.mjs';
import { openLogFile, logFilesEnv, LOGS_ENV } from '../dist/index.mjs';

const app = join(fixtures, 'logs-app.mjs');
const { reaper, dir: tmp } = fileScope('posix-daemon-logs-');

const read = (p) => (existsSync(p) ? readFileSync(p, 'utf8') : '');

test('openLogFile: mode 0o666 & ~umask whatever the process umask is', () => {
  const old = process.umask(0o022);
  try {
    const a = join(tmp, 'a.log');
    closeSync(openLogFile(a, 0o077));
    assert.equal(statSync(a).mode & 0o777, 0o600, 'narrower than the process umask');
    process.umask(0o077);
    const b = join(tmp, 'b.log');
    closeSync(openLogFile(b, 0o022));
    assert.equal(statSync(b).mode & 0o777, 0o644, 'wider than the process umask');
    // an existing file keeps its mode; appends
    closeSync(openLogFile(a, 0o000));
    assert.equal(statSync(a).mode & 0o777, 0o600);
    assert.throws(() => openLogFile(a, 0o1000), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => openLogFile(''), { code: 'ERR_INVALID_ARG_VALUE' });
  } finally {
    process.umask(old);
  }
});

function startDaemon(out, err, env) {
  const o = openLogFile(out, 0o077);
  const e = err === out ? o : openLogFile(err, 0o077);
  const child = spawn(process.execPath, [app], { stdio: ['ignore', o, e], env: { ...process.env, ...env } });
  closeSync(o);
  if (e !== o) closeSync(e);
  reaper.add(child.pid);
  return child;
}

test('reopenLogs on SIGUSR1 after a logrotate-style rename: old lines stay in the old file, new ones go to a new file', async () => {
  const out = join(tmp, 'out.log');
  const err = join(tmp, 'err.log');
  const child = startDaemon(out, err, logFilesEnv({ stdout: out, stderr: err }));
  await waitFor(() => read(out).includes('READY'), { what: 'READY' });
  assert.deepEqual(JSON.parse(/READY (.*)/.exec(read(out))[1]), { stdout: out, stderr: err });
  child.kill('SIGUSR2');
  await waitFor(() => read(out).includes('line 1') && read(err).includes('err line 1'), { what: 'line 1' });
  renameSync(out, `${out}.1`);
  renameSync(err, `${err}.1`);
  child.kill('SIGUSR2');  // still the old (renamed) files
  await waitFor(() => read(`${out}.1`).includes('line 2'), { what: 'line 2 in the renamed file' });
  child.kill('SIGUSR1');
  await waitFor(() => read(out).includes('reopened 2') && read(err).includes('err reopened 2'), { what: 'the reopen' });
  child.kill('SIGUSR2');
  await waitFor(() => read(out).includes('line 3') && read(err).includes('err line 3'), { what: 'line 3' });
  assert.doesNotMatch(read(`${out}.1`), /line 3|reopened/);
  assert.doesNotMatch(read(`${err}.1`), /line 3|reopened/);
  assert.doesNotMatch(read(out), /line [12]/);
  assert.equal(statSync(`${out}.1`).mode & 0o777, 0o600, 'created by the foreground with the daemon umask 077');
  assert.equal(statSync(out).mode & 0o777, 0o640, 'recreated by the daemon with its own umask 027');
  // A repeated trigger never hurts.
  child.kill('SIGUSR1');
  child.kill('SIGUSR1');
  child.kill('SIGUSR2');
  await waitFor(() => read(out).includes('line 4'), { what: 'line 4' });
  assert.doesNotMatch(read(`${out}.1`), /line 4/);
  child.kill('SIGKILL');
});

test('stdout and stderr in one file stay one file after the reopen', async () => {
  const both = join(tmp, 'both.log');
  const child = startDaemon(both, both, logFilesEnv({ stdout: both, stderr: both }));
  await waitFor(() => read(both).includes('READY'), { what: 'READY' });
  renameSync(both, `${both}.1`);
  child.kill('SIGUSR1');
  await waitFor(() => read(both).includes('reopened 0') && read(both).includes('err reopened 0'), { what: 'the reopen' });
  const fds = ['1', '2'].map((fd) => statSync(`/proc/${child.pid}/fd/${fd}`).ino);
  assert.equal(fds[0], fds[1]);
  child.kill('SIGKILL');
});

test('a hostile POSIX_DAEMON_LOGS cannot point the daemon at another file', async () => {
  const out = join(tmp, 'h-out.log');
  const target = join(tmp, 'victim');
  const child = startDaemon(out, out, { [LOGS_ENV]: JSON.stringify({ 1: target, 2: 'relative.log' }) });
  await waitFor(() => read(out).includes('READY'), { what: 'READY' });
  assert.deepEqual(JSON.parse(/READY (.*)/.exec(read(out))[1]), {}, 'nothing adopted');
  child.kill('SIGUSR1');
  await waitFor(() => read(out).includes('reopened 0'), { what: 'the handler' });
  assert.equal(existsSync(target), false, 'the victim path was never opened');
  child.kill('SIGKILL');
});
