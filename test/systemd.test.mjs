// posix-daemon/systemd against a real notify socket (python3, SO_PASSCRED:
// the kernel tells the sender's PID) and systemd's own systemd-notify.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileScope, fixtures, root, runNode, waitFor } from './helpers.mjs';
import { notifyReceiver } from './systemd-helpers.mjs';
import * as systemd from '../dist/systemd.mjs';

const { reaper, dir } = fileScope('pd-systemd-');

const dist = join(root, 'dist');
const nodeSnippet = (code) => `const sd = require(${JSON.stringify(join(dist, 'systemd.js'))});\n${code}`;

for (const kind of ['path', 'abstract']) {
  test(`ready() sends what systemd-notify --ready --status= sends, from our own PID (${kind} address)`, async () => {
    const address = kind === 'path' ? join(dir, `notify-${kind}.sock`) : `@posix-daemon-test-${randomBytes(8).toString('hex')}`;
    const rx = await notifyReceiver(address, reaper);
    try {
      const env = { ...process.env, NOTIFY_SOCKET: address };
      execFileSync('systemd-notify', ['--ready', '--status=Serving on :8080'], { env });
      await waitFor(() => rx.messages.some((m) => m.data.startsWith('READY=1')), { what: 'systemd-notify datagram' });
      const theirs = rx.messages.find((m) => m.data.startsWith('READY=1'));

      const r = await runNode('-e', [nodeSnippet(`console.log(JSON.stringify({ sent: sd.ready('Serving on :8080') }))`)], { env, reaper });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { sent: true });
      await waitFor(() => rx.from(r.pid).length === 1, { what: 'our datagram' });
      const ours = rx.from(r.pid)[0];
      assert.equal(ours.data, theirs.data, 'same bytes as systemd-notify');
      assert.equal(ours.data, 'READY=1\nSTATUS=Serving on :8080');
      assert.equal(ours.uid, process.getuid());
    } finally {
      rx.stop();
    }
  });
}

test('every helper sends its fields; false when NOTIFY_SOCKET is unset or nobody listens; bad arguments throw', async () => {
  const address = join(dir, 'notify-fields.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const code = `
      const out = [];
      out.push(sd.notify({ READY: 1, STATUS: 'x', MAINPID: 7, FLAG: true, BIG: 12n, SKIP: undefined }));
      out.push(sd.notify('CUSTOM=1\\nOTHER=2'));
      out.push(sd.status('Half way'));
      out.push(sd.mainPid(process.pid));
      out.push(sd.stopping());
      out.push(sd.reloading());
      out.push(sd.ready());
      const e = new Error('bind failed\\nbadly'); e.errno = -98; e.code = 'EADDRINUSE';
      out.push(sd.notifyError(e));
      const e2 = new Error('no errno'); e2.code = 'ENOENT';
      out.push(sd.notifyError(e2));
      out.push(sd.notifyError('plain'));
      out.push(sd.underServiceManager());
      console.log(JSON.stringify(out));
    `;
    const r = await runNode('-e', [nodeSnippet(code)], { env: { ...process.env, NOTIFY_SOCKET: address }, reaper });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), Array(10).fill(true).concat(true));
    await waitFor(() => rx.from(r.pid).length === 10, { what: '10 datagrams' });
    const data = rx.from(r.pid).map((m) => m.data);
    assert.deepEqual(data.slice(0, 5), [
      'READY=1\nSTATUS=x\nMAINPID=7\nFLAG=1\nBIG=12',
      'CUSTOM=1\nOTHER=2',
      'STATUS=Half way',
      `MAINPID=${r.pid}`,
      'STOPPING=1',
    ]);
    assert.match(data[5], /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    assert.deepEqual(data.slice(6), ['READY=1', 'STATUS=bind failed badly\nERRNO=98', 'STATUS=no errno\nERRNO=2', 'STATUS=plain']);
  } finally {
    rx.stop();
  }

  // Not under a service manager, or nobody listening: false, never a throw.
  const saved = { NOTIFY_SOCKET: process.env.NOTIFY_SOCKET, INVOCATION_ID: process.env.INVOCATION_ID };
  try {
    delete process.env.NOTIFY_SOCKET;
    delete process.env.INVOCATION_ID;
    assert.equal(systemd.ready(), false);
    assert.equal(systemd.reloading(), false);
    assert.equal(systemd.underServiceManager(), false);
    assert.equal(systemd.underServiceManager({ INVOCATION_ID: 'abc' }), true);
    for (const bad of [join(dir, 'nobody.sock'), '@posix-daemon-nobody-' + randomBytes(6).toString('hex'), 'relative.sock', '/' + 'x'.repeat(200), dir]) {
      process.env.NOTIFY_SOCKET = bad;
      assert.equal(systemd.notify({ READY: 1 }), false, bad);
      assert.equal(systemd.stopping(), false, bad);
    }
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }

  assert.throws(() => systemd.notify({ STATUS: 'a\nb' }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.notify({ 'BAD=KEY': 1 }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.notify({}), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.notify(''), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.notify('A=\0'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.notify(null), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => systemd.notify([1]), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => systemd.notify({ A: {} }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => systemd.notify({ A: NaN }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.status(1), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => systemd.ready('two\nlines'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => systemd.mainPid(0), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => systemd.notifyError(42), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => systemd.startWatchdog({ signal: 1 }), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('watchdogInterval() reads WATCHDOG_USEC for this process only', () => {
  const saved = { WATCHDOG_USEC: process.env.WATCHDOG_USEC, WATCHDOG_PID: process.env.WATCHDOG_PID };
  const set = (usec, pid) => {
    if (usec === undefined) delete process.env.WATCHDOG_USEC; else process.env.WATCHDOG_USEC = usec;
    if (pid === undefined) delete process.env.WATCHDOG_PID; else process.env.WATCHDOG_PID = pid;
  };
  try {
    set(undefined, undefined);
    assert.equal(systemd.watchdogInterval(), 0);
    set('30000000', undefined);
    assert.equal(systemd.watchdogInterval(), 30000000);
    set('30000000', String(process.pid));
    assert.equal(systemd.watchdogInterval(), 30000000);
    set('30000000', String(process.pid + 1));
    assert.equal(systemd.watchdogInterval(), 0);
    for (const bad of ['0', '-5', 'abc', '1e9', '99999999999999999999']) {
      set(bad, undefined);
      assert.equal(systemd.watchdogInterval(), 0, bad);
    }
    set('30000000', String(process.pid + 1));
    const stop = systemd.startWatchdog();
    stop();
  } finally {
    set(saved.WATCHDOG_USEC, saved.WATCHDOG_PID);
  }
});

async function runWatchdog(address, env) {
  const child = spawn(process.execPath, [join(fixtures, 'systemd-watchdog.cjs')], {
    env: { ...process.env, NOTIFY_SOCKET: address, ...env }, stdio: ['ignore', 'inherit', 'inherit'],
  });
  reaper.add(child.pid);
  const code = await new Promise((resolve) => child.on('exit', resolve));
  return { pid: child.pid, code };
}

test('startWatchdog pings every half WATCHDOG_USEC from an unref\'d timer, and stops', async () => {
  const address = join(dir, 'notify-watchdog.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    // The fixture's reference timer ticks at half the interval: between two
    // ticks comes exactly one ping (a full-interval timer would give one
    // ping per two ticks, a quarter one two per tick). The process exits on
    // its own once the reference timer ends: the watchdog timer is unref'd.
    const { pid, code } = await runWatchdog(address, { WATCHDOG_USEC: '200000', SD_TICKS: '6' });
    assert.equal(code, 0);
    await waitFor(() => rx.from(pid).filter((m) => m.data.startsWith('STATUS=tick')).length === 6, { what: 'ticks' });
    const seq = rx.from(pid).map((m) => (m.data === 'WATCHDOG=1' ? 'W' : m.data.startsWith('STATUS=tick') ? 'T' : m.data)).join('');
    assert.equal(seq[0], 'W', `a first ping at once: ${seq}`);
    assert.match(seq, /^W(WT){6}$/, `one ping per half interval: ${seq}`);
    assert.match(rx.from(pid).find((m) => m.data.startsWith('STATUS=tick')).data, /X_INTERVAL=200000$/);

    // Stopped: no ping after the stop.
    const stopped = await runWatchdog(address, { WATCHDOG_USEC: '100000', SD_TICKS: '3', SD_STOP: '1' });
    assert.equal(stopped.code, 0);
    await waitFor(() => rx.from(stopped.pid).some((m) => m.data === 'STATUS=end'), { what: 'end mark' });
    const seq2 = rx.from(stopped.pid).map((m) => (m.data === 'WATCHDOG=1' ? 'W' : m.data.startsWith('STATUS=tick') ? 'T' : 'E')).join('');
    assert.match(seq2, /^W(WT){3}E$/, seq2);

    // A watchdog meant for another process: no ping at all.
    const other = await runWatchdog(address, { WATCHDOG_USEC: '100000', WATCHDOG_PID: '1', SD_TICKS: '4' });
    assert.equal(other.code, 0);
    await waitFor(() => rx.from(other.pid).length === 4, { what: 'ticks' });
    assert.deepEqual(rx.from(other.pid).map((m) => m.data.split('\n')[0]), ['STATUS=tick 1', 'STATUS=tick 2', 'STATUS=tick 3', 'STATUS=tick 4']);
    assert.match(rx.from(other.pid)[0].data, /X_INTERVAL=0$/);
  } finally {
    rx.stop();
  }
});

test('READY -> RELOADING (+MONOTONIC_USEC) -> READY over an in-place restart, all from one PID', async () => {
  const address = join(dir, 'notify-reload.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const child = spawn(process.execPath, [join(fixtures, 'systemd-server.cjs')], {
      env: { ...process.env, NOTIFY_SOCKET: address, SD_LISTEN: JSON.stringify([{ port: 0, host: '127.0.0.1' }]) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    reaper.add(child.pid);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    await waitFor(() => out.includes('READY GEN 0'), { what: 'server' });
    await waitFor(() => rx.from(child.pid).some((m) => m.data.startsWith('READY=1')), { what: 'READY' });
    const before = process.hrtime.bigint() / 1000n;  // CLOCK_MONOTONIC, as systemd reads it before its signal
    process.kill(child.pid, 'SIGHUP');
    // The image itself, not the restart's bridge.
    await waitFor(() => out.includes(`READY GEN 1 PID ${child.pid} `), { what: 'generation 1' });
    await waitFor(() => rx.from(child.pid).filter((m) => m.data.startsWith('READY=1')).length === 2, { what: 'second READY' });
    const msgs = rx.from(child.pid).filter((m) => m.data !== 'WATCHDOG=1');
    assert.deepEqual(msgs.map((m) => m.data.split('\n')[0]), ['READY=1', 'RELOADING=1', 'READY=1']);
    assert.deepEqual(msgs.map((m) => m.data.split('\n')[1]), ['STATUS=generation 0', msgs[1].data.split('\n')[1], 'STATUS=generation 1']);
    const usec = BigInt(/^RELOADING=1\nMONOTONIC_USEC=(\d+)$/.exec(msgs[1].data)[1]);
    assert.ok(usec >= before, `MONOTONIC_USEC ${usec} not before the signal (${before})`);
    assert.ok(usec <= BigInt(msgs[1].monotonic_usec), 'MONOTONIC_USEC not after its own receipt');
    process.kill(child.pid, 'SIGTERM');
  } finally {
    rx.stop();
  }
});

test('a failed exec completes the reload with READY=1 and a status, so systemctl reload does not hang', async () => {
  const address = join(dir, 'notify-fail.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const code = `
      const { restartViaExec } = require(${JSON.stringify(join(dist, 'autorestart.js'))});
      const ac = new AbortController();
      restartViaExec({ env: { ...process.env, TOO_BIG: 'x'.repeat(200 * 1024) }, retryInterval: 60000, signal: ac.signal })
        .catch((e) => console.log('STOPPED ' + e.name));
      setTimeout(() => ac.abort(), 300);
    `;
    const r = await runNode('-e', [code], { env: { ...process.env, NOTIFY_SOCKET: address }, reaper });
    assert.match(r.stdout, /STOPPED AbortError/, r.stderr);
    await waitFor(() => rx.from(r.pid).length === 2, { what: 'two datagrams' });
    const data = rx.from(r.pid).map((m) => m.data);
    assert.match(data[0], /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    assert.match(data[1], /^READY=1\nSTATUS=restart failed \(E2BIG: .*\); retrying\nERRNO=7$/);
  } finally {
    rx.stop();
  }
});

test('ready() in a program that only notifies leaves LISTEN_* alone and loads no restart machinery', () => {
  const script = `
    const systemd = require(${JSON.stringify(join(root, 'dist', 'systemd.js'))});
    systemd.ready('up');
    console.log(JSON.stringify({ fds: process.env.LISTEN_FDS ?? null, names: process.env.LISTEN_FDNAMES ?? null,
      loaded: Object.keys(require.cache).filter((k) => /dist[\\\\/](sockets|autorestart)/.test(k)) }));`;
  const out = execFileSync(process.execPath, ['-e', script], {
    env: { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'web', NOTIFY_SOCKET: '' }, encoding: 'utf8',
  });
  assert.deepEqual(JSON.parse(out), { fds: '1', names: 'web', loaded: [] });
});
