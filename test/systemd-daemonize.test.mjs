// daemonize() under a service manager: where NOTIFY_SOCKET or INVOCATION_ID
// says systemd runs the program, it must not fork away (that breaks MAINPID
// and Type=simple tracking): the program goes on in the same process, and
// its report() tells systemd through the notify socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileScope, fixtures, runNode, waitFor } from './helpers.mjs';
import { notifyReceiver } from './systemd-helpers.mjs';
import { daemonize } from '../dist/index.mjs';

const { reaper, dir } = fileScope('pd-sd-daemonize-');

const app = join(fixtures, 'systemd-daemonize-app.mjs');
const cleanEnv = () => {
  const env = { ...process.env };
  for (const k of ['NOTIFY_SOCKET', 'INVOCATION_ID', 'SYSTEMD_EXEC_PID', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_FDS', 'LISTEN_PID']) delete env[k];
  return env;
};

function parse(stdout) {
  const m = /^RESULT (\d+) (\S+) (\S+)$/m.exec(stdout);
  assert.ok(m, `no RESULT line in ${JSON.stringify(stdout)}`);
  const line = (tag) => new RegExp(`^${tag} (.*)$`, 'm').exec(stdout)?.[1];
  return { pid: Number(m[1]), result: JSON.parse(m[2]), children: JSON.parse(m[3]), reported: line('REPORTED'), second: line('SECOND') };
}

test('NOTIFY_SOCKET set: no fork; report() sends READY=1 from the same PID, once', async () => {
  const address = join(dir, 'notify-ready.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const run = await runNode(app, ['ready'], { env: { ...cleanEnv(), NOTIFY_SOCKET: address }, reaper });
    assert.equal(run.code, 0, run.stderr);
    const out = parse(run.stdout);
    assert.equal(out.pid, run.pid, 'the program went on in the process systemd started');
    assert.deepEqual(out.result, { foreground: false });
    assert.deepEqual(out.children, [], 'nothing was forked');
    assert.equal(out.reported, 'true reported:sd_notify:');
    assert.equal(out.second, 'false', 'a second report is a no-op');
    await waitFor(() => rx.from(run.pid).length > 0, { what: 'READY=1' });
    assert.deepEqual(rx.messages.map((m) => [m.pid, m.data]), [[run.pid, 'READY=1']]);
  } finally {
    rx.stop();
  }
});

test('an error report sends STATUS=<message> and ERRNO=', async () => {
  const address = `@posix-daemon-sd-daemonize-${process.pid}`;
  const rx = await notifyReceiver(address, reaper);
  try {
    const run = await runNode(app, ['fail'], { env: { ...cleanEnv(), NOTIFY_SOCKET: address }, reaper });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(parse(run.stdout).reported, 'true reported:sd_notify:');
    await waitFor(() => rx.from(run.pid).length > 0, { what: 'the status' });
    assert.deepEqual(rx.messages.map((m) => [m.pid, m.data]), [[run.pid, 'STATUS=config file missing\nERRNO=2']]);
  } finally {
    rx.stop();
  }
});

test('INVOCATION_ID alone (systemd, no notify socket): no fork; report() has nobody to tell', async () => {
  const run = await runNode(app, ['ready'], { env: { ...cleanEnv(), INVOCATION_ID: '0123456789abcdef0123456789abcdef' }, reaper });
  assert.equal(run.code, 0, run.stderr);
  const out = parse(run.stdout);
  assert.equal(out.pid, run.pid);
  assert.deepEqual(out.result, { foreground: false });
  assert.deepEqual(out.children, []);
  assert.match(out.reported, /^false /);
});

test('detach: true forks under a service manager all the same; detach: false never forks', async () => {
  const address = join(dir, 'notify-detach.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const forced = await runNode(app, ['ready', JSON.stringify({ detach: true })], {
      env: { ...cleanEnv(), NOTIFY_SOCKET: address }, reaper,
    });
    assert.equal(forced.code, 0, forced.stderr);
    const out = parse(forced.stdout);
    assert.equal(out.result.foreground, true);
    reaper.add(out.result.pid);
    assert.notEqual(out.result.pid, forced.pid, 'a daemon was started');
    assert.equal(rx.from(forced.pid).length, 0, 'the foreground sent systemd nothing');
  } finally {
    rx.stop();
  }
  const inPlace = await runNode(app, ['ready', JSON.stringify({ detach: false })], { env: cleanEnv(), reaper });
  assert.equal(inPlace.code, 0, inPlace.stderr);
  const out = parse(inPlace.stdout);
  assert.equal(out.pid, inPlace.pid);
  assert.deepEqual(out.result, { foreground: false });
  assert.deepEqual(out.children, []);
  assert.match(out.reported, /^false /, 'no NOTIFY_SOCKET: nobody to tell');
});

test('a descendant of a unit (SYSTEMD_EXEC_PID names another process) is not the service: it forks', async () => {
  const run = await runNode(app, ['ready'], {
    env: { ...cleanEnv(), INVOCATION_ID: '0123456789abcdef0123456789abcdef', SYSTEMD_EXEC_PID: String(process.pid) }, reaper,
  });
  assert.equal(run.code, 0, run.stderr);
  const out = parse(run.stdout);
  assert.equal(out.result.foreground, true);
  reaper.add(out.result.pid);
  assert.notEqual(out.result.pid, run.pid, 'a daemon was started');
  // The service itself (SYSTEMD_EXEC_PID is us) does not fork.
  const self = await runNode(join(fixtures, 'systemd-daemonize-app.mjs'), ['ready', JSON.stringify({ execPidIsSelf: true })], {
    env: { ...cleanEnv(), INVOCATION_ID: '0123456789abcdef0123456789abcdef' }, reaper,
  });
  assert.equal(self.code, 0, self.stderr);
  assert.equal(parse(self.stdout).pid, self.pid);
  assert.deepEqual(parse(self.stdout).result, { foreground: false });
});

test('detach is validated', async () => {
  // An aborted signal: should validation ever regress, nothing is launched.
  await assert.rejects(daemonize({ envKey: 'POSIX_DAEMON_TEST_SD_VALIDATE', detach: 'yes', signal: AbortSignal.abort() }), {
    code: 'ERR_INVALID_ARG_VALUE', message: /options\.detach/,
  });
});
