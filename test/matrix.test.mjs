// The interaction matrix, part 1: each way of serving against each
// lifecycle operation, under 10 keep-alive clients. Invariants: 0 failed
// requests, the same PID where the README promises it, a request in flight
// finishes, nothing left running, exit codes. The table is printed at the
// end (and kept in the README's "How it works").
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { fileScope, freePort, isAlive, waitFor } from './helpers.mjs';
import { notifyReceiver } from './systemd-helpers.mjs';
import {
  SERVES, childrenOf, ended, get, loadClients, setVersion, startApp, table, waitServing,
} from './matrix-helpers.mjs';

const { reaper, dirs } = fileScope();
const cells = new Map();
const OPS = ['restartViaExec', 'restartOnSignal', 'restartOnChange', 'second trigger', 'SIGTERM', 'SIGTERM during restart',
  'rolling reload', 'notify socket', 'daemonize + workers'];
after(() => console.log(`\n${table('serving \\ operation', SERVES, OPS, cells)}\n`));

/** Runs one cell: the body asserts; the cell records whether it held. */
function cell(serve, op, body) {
  test(`${serve} × ${op}`, { timeout: 90000 }, async () => {
    cells.set(`${serve}|${op}`, false);
    await body();
    cells.set(`${serve}|${op}`, true);
  });
}

async function restartCell(serve, trigger, act, env) {
  const dir = dirs.make('pd-matrix-');
  const port = await freePort();
  const app = startApp(dir, { serve, trigger, port, reaper, env });
  const pid = app.child.pid;
  await waitFor(() => app.out.includes(`READY v1 pid ${pid}`), { what: () => `v1; stderr: ${app.err}` });
  const load = loadClients(port);
  try {
    await sleep(200);
    await act(dir, pid);
    // The new image, under the same PID, serves.
    await waitServing(port, 2, { pid, n: 3 });
    await sleep(200);
  } finally {
    await load.stop();
  }
  assert.equal(load.failed, 0, `failed requests: ${JSON.stringify(load.errors)}; stderr: ${app.err.slice(-3000)}`);
  assert.ok(load.ok > 20, `${load.ok} requests served`);
  assert.ok(isAlive(pid));
  process.kill(pid, 'SIGTERM');
  const st = await ended(app);
  assert.deepEqual(st, { code: 0, signal: null }, app.err);
}

for (const serve of SERVES) {
  cell(serve, 'restartViaExec', () => restartCell(serve, 'call', (dir, pid) => {
    setVersion(dir, 2);
    process.kill(pid, 'SIGUSR2');
  }));
  cell(serve, 'restartOnSignal', () => restartCell(serve, 'signal', (dir, pid) => {
    setVersion(dir, 2);
    process.kill(pid, 'SIGUSR2');
  }));
  cell(serve, 'restartOnChange', () => restartCell(serve, 'change', (dir) => setVersion(dir, 2)));
  cell(serve, 'second trigger', () => restartCell(serve, 'signal', async (dir, pid) => {
    setVersion(dir, 2);
    // A trigger repeated while the restart runs joins it (or starts the
    // next one once this one is done): never fatal.
    for (let i = 0; i < 6; i++) {
      process.kill(pid, 'SIGUSR2');
      await sleep(40);
    }
  }));

  cell(serve, 'SIGTERM', async () => {
    const dir = dirs.make('pd-matrix-');
    const port = await freePort();
    const app = startApp(dir, { serve, trigger: 'signal', port, reaper });
    const pid = app.child.pid;
    await waitFor(() => app.out.includes(`READY v1 pid ${pid}`), { what: () => `v1; stderr: ${app.err}` });
    const load = loadClients(port, 4);
    await sleep(200);
    await load.stop();
    const slow = get(port, '/slow');
    await sleep(300);
    process.kill(pid, 'SIGTERM');
    const r = await slow;
    assert.equal(r.status, 200, `the request in flight: ${r.error?.code}; stderr: ${app.err}`);
    assert.match(r.body, /^v1 /);
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
    assert.equal(load.failed, 0, JSON.stringify(load.errors));
  });

  cell(serve, 'SIGTERM during restart', async () => {
    const dir = dirs.make('pd-matrix-');
    const port = await freePort();
    const app = startApp(dir, { serve, trigger: 'signal', port, reaper });
    const pid = app.child.pid;
    await waitFor(() => app.out.includes(`READY v1 pid ${pid}`), { what: () => `v1; stderr: ${app.err}` });
    const slow = get(port, '/slow');
    await sleep(200);
    setVersion(dir, 2);
    process.kill(pid, 'SIGUSR2');
    // The preflight of v2 is up (it prints its line), so this image drains
    // for the exec, held by the slow request: now the stop comes.
    const bridgeLine = await waitFor(() => /READY v2 pid (\d+)/.exec(app.out), { what: () => `the preflight; stderr: ${app.err}` });
    reaper.add(Number(bridgeLine[1]));
    await sleep(200);
    process.kill(pid, 'SIGTERM');
    const r = await slow;
    assert.equal(r.status, 200, `the request in flight: ${r.error?.code}; stderr: ${app.err}`);
    assert.match(r.body, /^v1 /);
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
    assert.ok(!app.out.includes(`READY v2 pid ${pid}`), 'the stopping image did not exec');
    // The bridge saw its parent go and ended too.
    await waitFor(() => !isAlive(Number(bridgeLine[1])), { what: 'the bridge to end' });
  });

  cell(serve, 'rolling reload', async () => {
    const dir = dirs.make('pd-matrix-');
    const port = await freePort();
    const app = startApp(dir, { serve, port, workers: 2, reaper });
    const pid = app.child.pid;
    await waitFor(() => (app.out.match(/READY v1 pid \d+/g) ?? []).length >= 2, { what: () => `2 workers; stderr: ${app.err}` });
    reaper.watchOutput(app.out.replace(/pid/g, 'PID'));
    const load = loadClients(port);
    try {
      await sleep(300);
      setVersion(dir, 2);
      process.kill(pid, 'SIGHUP');
      await waitFor(() => (app.out.match(/READY v2 pid \d+/g) ?? []).length >= 2, { timeout: 40000, what: () => `2 new workers; stderr: ${app.err}` });
      reaper.watchOutput(app.out.replace(/pid/g, 'PID'));
      await waitServing(port, 2, { n: 10 });
      await sleep(300);
    } finally {
      await load.stop();
    }
    assert.equal(load.failed, 0, `failed requests: ${JSON.stringify(load.errors)}; stderr: ${app.err.slice(-3000)}`);
    process.kill(pid, 'SIGTERM');
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
  });

  // Under a notify socket (Type=notify-reload): the reload is announced and
  // completed, and a refused one completes too, the old version serving.
  cell(serve, 'notify socket', async () => {
    const sock = join(dirs.make('pd-matrix-notify-'), 'notify');
    const rx = await notifyReceiver(sock, reaper);
    try {
      let pid;
      await restartCell(serve, 'signal', async (dir, p) => {
        pid = p;
        await waitFor(() => rx.from(pid).some((m) => m.data.includes('READY=1')), { what: 'READY=1' });
        setVersion(dir, 2);
        process.kill(pid, 'SIGUSR2');
      }, { NOTIFY_SOCKET: sock });
      const seq = rx.from(pid).map((m) => m.data.split('\n').find((l) => /^(READY|RELOADING|STOPPING)=1$/.test(l))).filter(Boolean);
      assert.deepEqual(seq.slice(0, 3), ['READY=1', 'RELOADING=1', 'READY=1'], JSON.stringify(rx.from(pid)));
    } finally {
      rx.stop();
    }
  });

  cell(serve, 'daemonize + workers', async () => {
    const dir = dirs.make('pd-matrix-');
    const port = await freePort();
    const fg = startApp(dir, { serve, port, workers: 2, reaper, env: { MATRIX_DAEMON: '1' } });
    assert.deepEqual(await ended(fg, 40000), { code: 0, signal: null }, fg.err);
    const daemon = Number(/DAEMON pid (\d+)/.exec(fg.out)[1]);
    reaper.add(daemon);
    const workerPids = childrenOf(daemon);
    workerPids.forEach((w) => reaper.add(w));
    assert.equal(workerPids.length, 2, 'both workers were up when the foreground returned');
    const load = loadClients(port);
    try {
      await sleep(300);
      setVersion(dir, 2);
      process.kill(daemon, 'SIGHUP');
      await waitServing(port, 2, { n: 10 });
      await sleep(300);
    } finally {
      await load.stop();
    }
    childrenOf(daemon).forEach((w) => reaper.add(w));
    assert.equal(load.failed, 0, `failed requests: ${JSON.stringify(load.errors)}`);
    const last = childrenOf(daemon);
    process.kill(daemon, 'SIGTERM');
    for (const p of [daemon, ...last]) await waitFor(() => !isAlive(p), { what: `pid ${p} to end` });
  });
}
