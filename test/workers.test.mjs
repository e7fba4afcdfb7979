// selfMonitor with workers: real monitors, real workers, real sockets and
// real load. Nothing here waits for a fixed time: every step waits for the
// event that says it happened.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, readlinkSync, readdirSync, existsSync, mkdirSync, rmdirSync, copyFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { fileScope, fixtures, root, isAlive, waitFor } from './helpers.mjs';
import { startService, load } from './workers-helpers.mjs';

const { reaper, dir } = fileScope('workers-test-');

let n = 0;
function service(env = {}, opts = {}) {
  const version = join(dir, `version-${++n}`);
  writeFileSync(version, env.version ?? 'v1');
  const svc = startService({ WK_VERSION: version, ...env }, { reaper, ...opts });
  svc.setVersion = (v) => writeFileSync(version, v);
  svc.port = () => svc.line(/^PORT /).then((l) => Number(l.split(' ')[1]));
  svc.stop = async () => {
    if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGTERM');
    return svc.exited;
  };
  return svc;
}

/** Load that runs until stopped; `.stop()` resolves with the stats. */
function startLoad(port, opts = {}) {
  const ac = new AbortController();
  const p = load(port, { ...opts, signal: ac.signal });
  return { stop: () => { ac.abort(); return p; } };
}

/** The inode of every socket `pid` holds open. */
function socketInodes(pid) {
  const out = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

const readyPids = (svc) => svc.events.filter((e) => e.type === 'ready').map((e) => e.pid);
const get = (port) => fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } }).then((r) => r.text());

test('two workers share the monitor\'s socket and both serve', async () => {
  const svc = service({ WK_WORKERS: '2' });
  const port = await svc.port();
  const [a, b] = readyPids(svc);
  // One listening socket, held by the monitor and by both workers.
  const shared = [...socketInodes(svc.pid)].filter((i) => socketInodes(a).has(i) && socketInodes(b).has(i));
  assert.ok(shared.length >= 1, 'the workers hold the monitor\'s listening socket');
  // Fresh connections, 8 at a time, until both workers have answered.
  const seen = new Set();
  await waitFor(async () => {
    const bodies = await Promise.all(Array.from({ length: 8 }, () => get(port)));
    for (const body of bodies) seen.add(Number(body.split(' ')[0]));
    return seen.size === 2;
  }, { what: 'both workers to answer', timeout: 60000, interval: 0 });
  assert.deepEqual([...seen].sort(), [a, b].sort());
  const r = await svc.stop();
  assert.equal(isAlive(a) || isAlive(b), false);
  assert.ok(r.signal === 'SIGTERM' || r.code === 0);
});

test('a rolling reload under load fails no request and leaves only new workers', async () => {
  const svc = service({ WK_WORKERS: '2' });
  const port = await svc.port();
  const old = readyPids(svc);
  const l = startLoad(port, { concurrency: 8 });
  svc.setVersion('v2');
  process.kill(svc.pid, 'SIGHUP');
  await svc.waitEvent((e) => e.type === 'reload-done');
  svc.setVersion('v3');
  process.kill(svc.pid, 'SIGHUP');
  const done = svc.events.filter((e) => e.type === 'reload-done').length;
  await svc.waitEvent((e) => e.type === 'reload-done' && svc.events.filter((x) => x.type === 'reload-done').length > done);
  const stats = await l.stop();
  assert.equal(stats.failed, 0, JSON.stringify(stats.errors));
  assert.ok(stats.ok > 0);
  for (const pid of old) assert.equal(isAlive(pid), false, `old worker ${pid} is gone`);
  const bodies = await Promise.all(Array.from({ length: 8 }, () => get(port)));
  for (const body of bodies) assert.match(body, / v3$/);
  // One slot at a time: each new worker was ready before its old one got the stop signal.
  const evs = svc.events;
  for (const sd of evs.filter((e) => e.type === 'shutdown')) {
    const i = evs.indexOf(sd);
    const readyBefore = evs.slice(0, i).filter((e) => e.type === 'ready' && e.slot === sd.slot).at(-1);
    assert.ok(readyBefore && readyBefore.pid !== sd.pid, 'a new worker was ready in the slot first');
  }
  await svc.stop();
});

test('a reload asked for while the workers are still starting replaces them too, once they are up', async () => {
  const svc = service({ WK_WORKERS: '2', WK_READY_DELAY: '1500' });
  // Both workers spawned (running v1), neither ready yet: a new version and a reload.
  await svc.waitEvent((e) => e.type === 'start' && e.slot === 1);
  await svc.waitEvent((e) => e.type === 'start' && e.slot === 0);
  const first = svc.events.filter((e) => e.type === 'start').map((e) => e.pid);
  svc.setVersion('v2');
  process.kill(svc.pid, 'SIGHUP');
  await svc.waitEvent((e) => e.type === 'reload-done');
  const port = await svc.port();
  for (const pid of first) await waitFor(() => !isAlive(pid), { what: `worker ${pid} (spawned before the reload) to be replaced` });
  const bodies = await Promise.all(Array.from({ length: 8 }, () => get(port)));
  for (const body of bodies) assert.match(body, / v2$/);
  await svc.stop();
});

test('a version that throws at start-up stops the roll; the old workers keep serving; the next reload succeeds', async () => {
  const svc = service({ WK_WORKERS: '2' });
  const port = await svc.port();
  const old = readyPids(svc);
  const l = startLoad(port, { concurrency: 4 });
  svc.setVersion('throw');
  process.kill(svc.pid, 'SIGHUP');
  const failed = await svc.waitEvent((e) => e.type === 'reload-failed');
  assert.match(failed.error, /reload stopped at worker slot 0: worker \(pid \d+\) exited with code 1 before it was ready/);
  for (const pid of old) assert.ok(isAlive(pid), `old worker ${pid} still runs`);
  const mid = await Promise.all(Array.from({ length: 4 }, () => get(port)));
  for (const body of mid) assert.match(body, / v1$/);
  svc.setVersion('v2');
  process.kill(svc.pid, 'SIGHUP');
  await svc.waitEvent((e) => e.type === 'reload-done');
  const stats = await l.stop();
  assert.equal(stats.failed, 0, JSON.stringify(stats.errors));
  const bodies = await Promise.all(Array.from({ length: 4 }, () => get(port)));
  for (const body of bodies) assert.match(body, / v2$/);
  await svc.stop();
});

test('a SIGKILLed worker is replaced while the other one serves', async () => {
  const svc = service({ WK_WORKERS: '2' });
  const port = await svc.port();
  const [a, b] = readyPids(svc);
  process.kill(a, 'SIGKILL');
  await svc.waitEvent((e) => e.type === 'exit' && e.pid === a);
  // Until the replacement is ready, the other worker answers every request.
  const during = await Promise.all(Array.from({ length: 8 }, () => get(port)));
  const replacement = await svc.waitEvent((e) => e.type === 'ready' && e.pid !== a && e.pid !== b);
  for (const body of during) assert.match(body, /^\d+ v1$/);
  assert.ok(isAlive(b) && isAlive(replacement.pid));
  const exit = svc.events.find((e) => e.type === 'exit' && e.pid === a);
  assert.equal(exit.signal, 'SIGKILL');
  assert.ok(svc.events.some((e) => e.type === 'backoff' && e.slot === exit.slot), 'restarted with the backoff');
  await svc.stop();
});

test('a SIGKILLed monitor leaves no worker behind: the kernel sends each its shutdown signal', async () => {
  const svc = service({ WK_WORKERS: '2' });
  await svc.port();
  const workers = readyPids(svc);
  assert.equal(workers.length, 2);
  for (const pid of workers) assert.ok(isAlive(pid));
  svc.child.kill('SIGKILL');
  await svc.exited;
  await waitFor(() => workers.every((pid) => !isAlive(pid)), { what: () => `workers ${workers} to end` });
});

test('SIGTERM under gracefulShutdown: in-flight requests finish, the monitor exits 0 and nothing is left', async () => {
  const svc = service({ WK_WORKERS: '2', WK_GRACEFUL: '1', WK_BUSY_MS: '300' });
  const port = await svc.port();
  const workers = readyPids(svc);
  const inflight = Array.from({ length: 2 }, () => get(port).then((b) => b, (e) => `failed: ${e.message}`));
  // Both requests were accepted (each takes 300 ms of CPU) when SIGTERM comes.
  await waitFor(() => svc.lines.filter((l) => l.startsWith('REQUEST ')).length === 2, { what: 'two requests in flight' });
  process.kill(svc.pid, 'SIGTERM');
  const r = await svc.exited;
  assert.equal(r.code, 0, svc.stderr);
  for (const body of await Promise.all(inflight)) assert.match(body, /^\d+ v1$/);
  for (const pid of workers) assert.equal(isAlive(pid), false);
  await assert.rejects(new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(); }).on('error', reject);
  }), { code: 'ECONNREFUSED' }, 'the port is closed');
});

test('the restart budget ends a crash loop with a clear error', async () => {
  const svc = service({ WK_WORKERS: '1', version: 'exit', WK_MAX_RESTARTS: '3', WK_MIN: '10' });
  const r = await svc.exited;
  assert.equal(r.code, 0);
  const gaveUp = svc.events.find((e) => e.type === 'gave-up');
  assert.equal(gaveUp.code, 'ERR_MONITOR_RESTART_LIMIT');
  assert.match(gaveUp.error, /worker slot 0 was restarted 4 times within 60000 ms \(maxRestarts 3\): giving up/);
  assert.ok(svc.lines.some((l) => /^REJECTED ERR_MONITOR_RESTART_LIMIT/.test(l)));
  assert.equal(svc.events.filter((e) => e.type === 'start').length, 4);
  for (const e of svc.events) if (e.pid) assert.equal(isAlive(e.pid), false);
});

test("issue 22, item 21: a program the worker starts cannot report for it: the readiness pipe is close-on-exec in the worker", async () => {
  const svc = service({ WK_WORKERS: '1', WK_CHILD_REPORTS: '1', WK_READY_TIMEOUT: '1500' });
  const line = await svc.line(/^CHILD /);
  const [, pid, fd, status] = line.split(' ').map(Number);
  // Read now: the monitor stops a worker that is not ready.
  const flags = Number.parseInt(/^flags:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))[1], 8);
  const verdict = await svc.waitEvent((e) => e.pid === pid && (e.type === 'ready' || e.type === 'not-ready'));
  assert.equal(verdict.type, 'not-ready', 'the monitor counted the worker ready on its child\'s word');
  assert.equal(verdict.code, 'ETIMEDOUT');
  // The shell found no fd to write to: its redirection failed.
  assert.notEqual(status, 0, 'the child could open the worker\'s readiness pipe');
  assert.ok(flags & 0o2000000, `fd ${fd} of worker ${pid} is close-on-exec (flags ${flags.toString(8)})`);
  await svc.stop();
  assert.equal(isAlive(pid), false);
});

test('issue 22, item 15: a crash-looping slot gives up alone; the healthy slot serves on; a reload retries it; the monitor ends when no slot is left', async () => {
  const { notifyReceiver } = await import('./systemd-helpers.mjs');
  const address = join(dir, `notify-${++n}.sock`);
  const rx = await notifyReceiver(address, reaper);
  try {
    const version = join(dir, `version-${n + 1}`);
    writeFileSync(`${version}.slot1`, 'throw');
    const svc = service({ WK_WORKERS: '2', WK_MAX_RESTARTS: '2', WK_MIN: '10', WK_PORT_ON_GAVE_UP: '1', NOTIFY_SOCKET: address });
    const gaveUp = await svc.waitEvent((e) => e.type === 'gave-up');
    assert.equal(gaveUp.slot, 1);
    assert.equal(gaveUp.code, 'ERR_MONITOR_RESTART_LIMIT');
    assert.match(gaveUp.error, /worker slot 1 was restarted 3 times within 60000 ms \(maxRestarts 2\): giving up/);
    const port = await svc.port();
    const healthy = svc.events.find((e) => e.type === 'ready' && e.slot === 0).pid;
    // Served by slot 0, after the give-up: the monitor did not stop it.
    for (const body of await Promise.all(Array.from({ length: 4 }, () => get(port)))) assert.equal(body, `${healthy} v1`);
    assert.ok(isAlive(healthy) && isAlive(svc.pid));
    assert.equal(svc.events.some((e) => e.type === 'stopped' || (e.type === 'exit' && e.pid === healthy)), false);
    // systemd: the service is up (READY=1) and its status names the failed slot.
    const fields = () => rx.from(svc.pid).map((m) => m.data);
    const ready = await waitFor(() => fields().find((d) => /^READY=1$/m.test(d)), { what: () => `READY=1 in ${JSON.stringify(fields())}` });
    assert.match(ready, /^STATUS=1\/2 workers ready; slot 1 gave up$/m);
    assert.ok(fields().some((d) => /^STATUS=worker slot 1 was restarted 3 times/m.test(d)), JSON.stringify(fields()));
    // A reload (new code) tries the failed slot again.
    unlinkSync(`${version}.slot1`);
    const mark = svc.events.length;
    process.kill(svc.pid, 'SIGHUP');
    await svc.waitEvent((e) => e.type === 'reload-done' && svc.events.indexOf(e) >= mark);
    const revived = svc.events.slice(mark).find((e) => e.type === 'ready' && e.slot === 1);
    assert.ok(revived, 'slot 1 runs again after the reload');
    assert.ok(svc.events.slice(mark).some((e) => e.type === 'all-ready'));
    // Every slot crash-looping: now the monitor ends, with the last slot's error.
    writeFileSync(version, 'throw');
    const live = svc.events.slice(mark).filter((e) => e.type === 'ready').map((e) => e.pid);
    for (const pid of live) process.kill(pid, 'SIGKILL');
    const r = await svc.exited;
    assert.equal(r.code, 0, svc.stderr);
    assert.match(svc.lines.find((l) => l.startsWith('REJECTED ')), /^REJECTED ERR_MONITOR_RESTART_LIMIT worker slot \d was restarted 3 times/);
    assert.deepEqual(svc.events.filter((e) => e.type === 'gave-up').map((e) => e.slot).slice(1).sort(), [0, 1]);
    for (const e of svc.events) if (e.pid) assert.equal(isAlive(e.pid), false);
  } finally {
    rx.stop();
  }
});

test('README snippet: Ctrl-C ends a worker that stays alive promptly, without SIGKILL', async () => {
  const svc = startService({}, { script: join(fixtures, 'monitor-readme.cjs'), reaper });
  await svc.waitEvent((e) => e.type === 'ready');
  process.kill(svc.pid, 'SIGINT');
  await svc.exited;
  const types = svc.events.map((e) => e.type);
  assert.deepEqual(types, ['start', 'ready', 'shutdown', 'exit', 'stopped']);
  const exit = svc.events.find((e) => e.type === 'exit');
  assert.equal(exit.code, 0, 'the worker ended on the forwarded SIGINT itself');
  assert.equal(isAlive(exit.pid), false);
});

test('the monitor restarts in place when its code changes: its workers survive the exec, then are rolled; no request fails', async () => {
  const { procStat } = await import('./helpers.mjs');
  const app = join(dir, `app-${++n}`);
  mkdirSync(app);
  const script = join(app, 'workers-app.cjs');
  const source = readFileSync(join(fixtures, 'workers-app.cjs'), 'utf8').replaceAll('../../dist/', `${root}/dist/`);
  writeFileSync(script, source);
  const svc = service({ WK_WORKERS: '2', WK_RESTART_ON_CHANGE: '1' }, { script });
  const port = await svc.port();
  const old = readyPids(svc);
  await svc.line(/^MONITOR \d+ one$/);
  const l = startLoad(port, { concurrency: 8 });
  // A new version of the program, written next to it and renamed into place.
  writeFileSync(`${script}.tmp`, source.replace('IMAGE-MARK one', 'IMAGE-MARK two'));
  const { renameSync } = await import('node:fs');
  renameSync(`${script}.tmp`, script);
  const line = await svc.line(/^MONITOR \d+ two$/);
  assert.equal(Number(line.split(' ')[1]), svc.pid, 'same PID: restarted in place');
  const adopted = await waitFor(() => {
    const a = svc.events.filter((e) => e.type === 'adopted');
    return a.length === 2 && a;
  }, { what: 'both workers adopted' });
  assert.deepEqual(adopted.map((e) => e.pid).sort(), [...old].sort());
  await svc.waitEvent((e) => e.type === 'reload-done');
  const stats = await l.stop();
  assert.equal(stats.failed, 0, JSON.stringify(stats.errors));
  for (const pid of old) assert.equal(isAlive(pid), false, `old worker ${pid} was rolled`);
  const now = svc.events.filter((e) => e.type === 'ready').map((e) => e.pid).slice(-2);
  for (const pid of now) assert.equal(procStat(pid).ppid, svc.pid);
  await svc.stop();
});

test('maxMemory: a worker over it is replaced through the roll, drained first', async () => {
  const svc = service({ WK_WORKERS: '2', WK_MAX_MEMORY: String(200 << 20) });
  const port = await svc.port();
  const old = readyPids(svc);
  // Grow one worker past 200 MB: 4 x 64 MB on one keep-alive connection.
  const http = await import('node:http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let grown;
  for (let i = 0; i < 4; i++) {
    grown = await new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port, path: '/grow', agent }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; }).on('end', () => resolve(Number(b.split(' ')[0])));
    }).on('error', reject));
  }
  agent.destroy();
  const memory = await svc.waitEvent((e) => e.type === 'memory');
  assert.equal(memory.pid, grown);
  assert.ok(memory.rss > 200 << 20);
  await svc.waitEvent((e) => e.type === 'reload-done');
  assert.equal(isAlive(grown), false);
  const other = old.find((p) => p !== grown);
  assert.ok(isAlive(other), 'the other worker was not touched');
  // The replacement was ready before the big one got its stop signal.
  const shutdown = svc.events.find((e) => e.type === 'shutdown' && e.pid === grown);
  const i = svc.events.indexOf(shutdown);
  assert.ok(svc.events.slice(0, i).some((e) => e.type === 'ready' && e.slot === memory.slot && e.pid !== grown));
  await svc.stop();
});

test('systemd: READY=1 once every worker is ready, RELOADING=1/READY=1 around a roll, STATUS= counts, the watchdog from the monitor', async () => {
  const { notifyReceiver } = await import('./systemd-helpers.mjs');
  const address = join(dir, `notify-${++n}.sock`);
  const rx = await notifyReceiver(address, reaper);
  try {
    const svc = service({ WK_WORKERS: '2', NOTIFY_SOCKET: address, WATCHDOG_USEC: '600000' });
    await svc.port();
    const fields = () => rx.from(svc.pid).map((m) => m.data);
    const first = await waitFor(() => fields().find((d) => /^READY=1$/m.test(d)), { what: 'READY=1' });
    assert.match(first, /^STATUS=2\/2 workers ready$/m);
    // Nothing said READY before both workers were.
    const before = fields().slice(0, fields().indexOf(first));
    assert.ok(before.every((d) => !/READY=1/.test(d)));
    await waitFor(() => fields().some((d) => d === 'WATCHDOG=1'), { what: 'a watchdog ping' });
    const mark = fields().length;
    process.kill(svc.pid, 'SIGHUP');
    await svc.waitEvent((e) => e.type === 'reload-done');
    const after = await waitFor(() => {
      const f = fields().slice(mark).filter((d) => d !== 'WATCHDOG=1');
      return f.some((d) => /^READY=1$/m.test(d)) && f;
    }, { what: 'READY=1 after the roll' });
    assert.match(after[0], /^RELOADING=1$/m);
    assert.match(after[0], /^MONOTONIC_USEC=\d+$/m);
    assert.match(after.at(-1), /READY=1\nSTATUS=2\/2 workers ready/);
    // Only the monitor talks to the service manager.
    assert.deepEqual(rx.messages.filter((m) => m.pid !== svc.pid), []);
    await svc.stop();
  } finally {
    rx.stop();
  }
});

test('socket activation: the monitor takes systemd\'s socket (LISTEN_FDS, FileDescriptorName=web) and hands it to the workers', async () => {
  const { freePort } = await import('./systemd-helpers.mjs');
  const { spawnSync } = await import('node:child_process');
  if (spawnSync('systemd-socket-activate', ['--help']).error) return;  // the tool is missing
  const port = await freePort();
  const version = join(dir, `version-${++n}`);
  writeFileSync(version, 'v1');
  const { spawn } = await import('node:child_process');
  const child = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '--fdname=web', '-E', `WK_VERSION=${version}`,
    '-E', 'WK_WORKERS=2', process.execPath, join(fixtures, 'workers-app.cjs')], { stdio: ['ignore', 'pipe', 'pipe'] });
  reaper.add(child.pid);
  // systemd-socket-activate accepts nothing itself: the first connection starts the program.
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; reaper.watchOutput(d); });
  child.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
  await waitFor(() => /Listening on/.test(err), { what: 'systemd-socket-activate to listen' });
  const first = get(port);
  await waitFor(() => /^PORT \d+$/m.test(out), { what: 'the service', timeout: 30000 });
  assert.equal(Number(/^PORT (\d+)$/m.exec(out)[1]), port, 'the monitor holds the activated socket');
  assert.match(await first, /^\d+ v1$/, 'the connection that started the service was served');
  const monitor = Number(/^MONITOR (\d+)/m.exec(out)[1]);
  assert.equal(readlinkSync(`/proc/${monitor}/fd/3`).startsWith('socket:'), true, 'fd 3, from LISTEN_FDS');
  const workers = [...out.matchAll(/^WORKER (\d+)/gm)].map((m) => Number(m[1]));
  const inode = readlinkSync(`/proc/${monitor}/fd/3`);
  for (const w of workers) assert.ok([...socketInodes(w)].some((i) => `socket:[${i}]` === inode), `worker ${w} holds it`);
  process.kill(monitor, 'SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));
  for (const w of workers) assert.equal(isAlive(w), false);
});
