// The interaction matrix, part 2: each way of serving against each fault of
// a new version, restarted by the README's `process.on('SIGUSR2', () =>
// restartViaExec({ servers }))` with the promise dropped. Invariants: the
// restart is refused once, on stderr; the old version goes on serving under
// the same PID with 0 failed requests; a fixed version then restarts.
// Then the processes a restart or a monitor starts, killed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileScope, freePort, isAlive, waitFor } from './helpers.mjs';
import {
  SERVES, childrenOf, ended, get, loadClients, setVersion, startApp, table, waitServing,
} from './matrix-helpers.mjs';

const { reaper, dirs } = fileScope();
const cells = new Map();
const FAULTS = ['throw-before-listen', 'syntax-error', 'exit-0', 'never-ready'];
const DEV = ['throws 100 ms after listen (restartOnChange)'];
const KILLS = ['SIGKILL of a preflight', 'SIGKILL of a bridge (refused, then restarts)', 'SIGKILL of a worker mid-roll', 'SIGKILL of the monitor'];
after(() => {
  console.log(`\n${table('fault \\ serving', FAULTS, SERVES, cells)}\n`);
  console.log(`\n${table('development', DEV, SERVES, cells)}\n`);
  console.log(`\n${table('process killed', KILLS, ['listen', 'plain'], cells)}\n`);
});

function cell(row, column, body) {
  test(`${column} × ${row}`, { timeout: 90000 }, async () => {
    cells.set(`${row}|${column}`, false);
    await body();
    cells.set(`${row}|${column}`, true);
  });
}

async function started(serve, options = {}) {
  const dir = dirs.make('pd-matrix-');
  const port = await freePort();
  const app = startApp(dir, { serve, port, reaper, ...options });
  const pid = app.child.pid;
  if (options.workers) {
    await waitFor(() => (app.out.match(/READY v1 pid \d+/g) ?? []).length >= options.workers, { what: () => `the workers; ${app.err}` });
    reaper.watchOutput(app.out.replace(/pid/g, 'PID'));
  } else {
    await waitFor(() => app.out.includes(`READY v1 pid ${pid}`), { what: () => `v1; stderr: ${app.err}` });
  }
  return { dir, port, app, pid };
}

function isPreflight(pid) {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').includes('POSIX_DAEMON_BRIDGE=');
  } catch {
    return false;
  }
}

for (const fault of FAULTS) {
  for (const serve of SERVES) {
    cell(fault, serve, async () => {
      const { dir, port, app, pid } = await started(serve, { trigger: 'call', env: { MATRIX_PREFLIGHT_TIMEOUT: '4000' } });
      const load = loadClients(port);
      try {
        await sleep(200);
        setVersion(dir, 2, fault);
        process.kill(pid, 'SIGUSR2');
        await waitFor(() => app.err.includes('restart refused'), { timeout: 30000, what: () => `the refusal; stderr: ${app.err}` });
        await sleep(300);
        assert.ok(isAlive(pid), `the service ended: ${app.err}`);
        await waitServing(port, 1, { pid, n: 3 });
        // Printed once, as one line of ours.
        assert.equal(app.err.match(/posix-daemon: restart refused/g)?.length, 1, app.err);
        // The fix: the next trigger restarts into it. (On a loaded machine its
        // start may outlast the short preflightTimeout of this test: that is
        // a refusal too, and the next trigger tries again.)
        setVersion(dir, 3);
        for (let attempt = 1; ; attempt++) {
          const refusals = app.err.match(/posix-daemon: restart refused/g).length;
          process.kill(pid, 'SIGUSR2');
          await waitFor(async () => app.err.match(/posix-daemon: restart refused/g).length > refusals ||
            /^v3 /.test((await get(port)).body ?? ''), { timeout: 30000, what: () => `v3 or a refusal; ${app.err}` });
          if (/^v3 /.test((await get(port)).body ?? '') || attempt === 3) break;
        }
        await waitServing(port, 3, { pid, n: 3 });
        await sleep(200);
      } finally {
        await load.stop();
      }
      assert.equal(load.failed, 0, `failed requests: ${JSON.stringify(load.errors)}; stderr: ${app.err.slice(-3000)}`);
      process.kill(pid, 'SIGTERM');
      assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
    });
  }
}

// Development: nodemon waits for the next change after a crash at any time,
// and so does restartOnChange: same PID, sockets kept, the next save restarts.
for (const serve of SERVES) {
  cell(DEV[0], serve, async () => {
    const { dir, port, app, pid } = await started(serve, { trigger: 'change' });
    setVersion(dir, 2, 'throw-after-listen');
    await waitFor(() => app.err.includes('boom after listen in v2'), { timeout: 30000, what: () => `the crash; ${app.err}` });
    await sleep(300);
    assert.ok(isAlive(pid), `the dev loop ended: ${app.err}`);
    setVersion(dir, 3);
    await waitServing(port, 3, { pid, n: 3, what: () => `v3 serving from ${pid}; stdout: ${app.out.slice(-1500)}; stderr: ${app.err.slice(-3000)}` });
    process.kill(pid, 'SIGTERM');
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
  });
}

for (const serve of ['listen', 'plain']) {
  cell('SIGKILL of a preflight', serve, async () => {
    const { dir, port, app, pid } = await started(serve, { trigger: 'call', env: { MATRIX_PREFLIGHT_TIMEOUT: '20000' } });
    const load = loadClients(port);
    try {
      // A version that takes its time: the preflight is killed before it is up.
      setVersion(dir, 2, 'never-ready');
      process.kill(pid, 'SIGUSR2');
      // The preflight: the child started with the bridge's variable (a check
      // of the program may run as a child too).
      const child = await waitFor(() => childrenOf(pid).find(isPreflight), { what: 'the preflight' });
      await sleep(300);
      process.kill(child, 'SIGKILL');
      await waitFor(() => app.err.includes('restart refused'), { what: () => `the refusal; stderr: ${app.err}` });
      await waitServing(port, 1, { pid, n: 3 });
      await waitFor(() => childrenOf(pid).length === 0, { what: 'the preflight reaped' });
    } finally {
      await load.stop();
    }
    assert.equal(load.failed, 0, JSON.stringify(load.errors));
    process.kill(pid, 'SIGTERM');
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
  });

  cell(KILLS[1], serve, async () => {
    const { dir, port, app, pid } = await started(serve, { trigger: 'call' });
    // A request in flight holds the old image's drain: the bridge serves meanwhile.
    const slow = get(port, '/slow');
    await sleep(200);
    setVersion(dir, 2);
    process.kill(pid, 'SIGUSR2');
    const bridge = Number((await waitFor(() => /READY v2 pid (\d+)/.exec(app.out), { what: () => `the bridge; ${app.err}` }))[1]);
    reaper.add(bridge);
    process.kill(bridge, 'SIGKILL');
    // A new version that died after it came up is refused before the exec:
    // this image resumes on the same sockets once its drain is done.
    assert.equal((await slow).status, 200);
    await waitFor(() => app.err.includes('restart refused'), { what: () => `the refusal; ${app.err}` });
    await waitServing(port, 1, { pid, n: 3 });
    await waitFor(() => !isAlive(bridge), { what: 'the bridge reaped' });
    // The next trigger restarts.
    process.kill(pid, 'SIGUSR2');
    await waitServing(port, 2, { pid, n: 3 });
    await waitFor(() => childrenOf(pid).length === 0, { what: 'the new bridge gone' });
    assert.deepEqual(childrenOf(pid), []);
    process.kill(pid, 'SIGTERM');
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
  });

  cell('SIGKILL of a worker mid-roll', serve, async () => {
    const { dir, port, app, pid } = await started(serve, { workers: 2 });
    const load = loadClients(port);
    try {
      setVersion(dir, 2);
      process.kill(pid, 'SIGHUP');
      // The first new worker is up: kill it while the roll goes on.
      const first = await waitFor(() => /READY v2 pid (\d+)/.exec(app.out), { what: () => `a new worker; ${app.err}` });
      process.kill(Number(first[1]), 'SIGKILL');
      // The slot comes back and the roll (or the next one) completes: v2 everywhere.
      process.kill(pid, 'SIGHUP');
      await waitServing(port, 2, { n: 10 });
      await sleep(300);
    } finally {
      await load.stop();
    }
    // A killed worker's connections are cut (it had no chance to drain):
    // what counts is that the service kept serving.
    assert.ok(load.ok > 20, `${load.ok} served`);
    assert.ok(isAlive(pid));
    process.kill(pid, 'SIGTERM');
    assert.deepEqual(await ended(app), { code: 0, signal: null }, app.err);
  });

  cell('SIGKILL of the monitor', serve, async () => {
    const { app, pid } = await started(serve, { workers: 2 });
    const workers = [...app.out.matchAll(/READY v1 pid (\d+)/g)].map((m) => Number(m[1]));
    workers.forEach((w) => reaper.add(w));
    process.kill(pid, 'SIGKILL');
    await ended(app);
    // Nothing left running: the workers die with their monitor.
    for (const w of workers) await waitFor(() => !isAlive(w), { what: `worker ${w} to end` });
  });
}
