// selfMonitor: restarts with backoff, resets after readiness, orderly
// shutdown. Real monitor and worker processes; small backoffs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, runNode, isAlive, waitFor } from './helpers.mjs';
import { selfMonitor, isMonitored, backoffDelay } from '../dist/monitor.mjs';

const { reaper, dir } = fileScope('monitor-test-');

let runs = 0;
async function monitorRun(plan, extra = {}) {
  const n = ++runs;
  const env = {
    ...process.env,
    MON_PLAN: plan.join(','),
    MON_COUNTER: join(dir, `counter-${n}`),
    MON_MARKER: join(dir, `marker-${n}`),
    ...extra,
  };
  delete env.MON_TEST_STATUS;
  const r = await runNode(join(fixtures, 'monitor-app.cjs'), [], { env, reaper, timeout: 60000 });
  const events = [...r.stdout.matchAll(/^EVENT (.*)$/gm)].map((m) => JSON.parse(m[1]));
  for (const e of events) if (e.pid) reaper.add(e.pid);
  for (const e of events) if (e.pid) assert.equal(isAlive(e.pid), false, `worker ${e.pid} left running`);
  return { ...r, events, marker: env.MON_MARKER };
}

test('a worker that crashes before reporting is restarted with growing delays; readiness resets the count', async () => {
  const r = await monitorRun(['crash', 'crash', 'crash', 'ready-exit', 'crash', 'ready-stay'], { MON_ABORT_ON_READY: '2' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /REJECTED enough/);
  const types = r.events.map((e) => e.type);
  assert.deepEqual(types, [
    'start', 'exit', 'backoff',
    'start', 'exit', 'backoff',
    'start', 'exit', 'backoff',
    'start', 'ready', 'exit',            // ready, then exits: started again at once
    'start', 'exit', 'backoff',          // round counter was reset: 50 ms again
    'start', 'ready', 'shutdown', 'exit', 'stopped',
  ]);
  const backoffs = r.events.filter((e) => e.type === 'backoff').map((e) => e.delay);
  assert.deepEqual(backoffs, [50, 100, 200, 50]);
  const crashes = r.events.filter((e) => e.type === 'exit' && !e.ready);
  assert.deepEqual(crashes.map((e) => e.code).slice(0, 4), [3, 3, 3, 3]);
  // Each restart came no sooner than its backoff (a lower bound only).
  for (let i = 0; i < r.events.length; i++) {
    const e = r.events[i];
    if (e.type !== 'backoff') continue;
    const next = r.events.slice(i).find((x) => x.type === 'start');
    assert.ok(next.t - e.t >= e.delay - 1, `restart after ${next.t - e.t} ms, backoff ${e.delay}`);
  }
  // The ready-exit worker ended with code 0 and was flagged ready.
  assert.ok(r.events.some((e) => e.type === 'exit' && e.ready && e.code === 0));
});

test('backoff is capped at maxBackoff', async () => {
  const r = await monitorRun(['crash', 'crash', 'crash', 'crash', 'ready-stay'], { MON_ABORT_ON_READY: '1', MON_MIN: '20', MON_MAX: '60' });
  assert.deepEqual(r.events.filter((e) => e.type === 'backoff').map((e) => e.delay), [20, 40, 60, 60]);
  assert.deepEqual(backoffDelay(0), 1000);
  assert.deepEqual([0, 1, 2, 5, 6, 7, 100].map((n) => backoffDelay(n)), [1000, 2000, 4000, 32000, 60000, 60000, 60000]);
});

test('a reported failure counts as a failed start: the worker is stopped and retried', async () => {
  const r = await monitorRun(['fail', 'ready-stay'], { MON_ABORT_ON_READY: '1' });
  const notReady = r.events.find((e) => e.type === 'not-ready');
  assert.equal(notReady.error, 'database unreachable');
  const types = r.events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 5), ['start', 'not-ready', 'shutdown', 'exit', 'backoff']);
});

test('abort sends SIGINT to the worker, whose handler runs, and selfMonitor rejects with the reason', async () => {
  const r = await monitorRun(['ready-stay'], { MON_ABORT_ON_READY: '1' });
  assert.match(r.stdout, /REJECTED enough/);
  const worker = r.events.find((e) => e.type === 'start').pid;
  assert.equal(readFileSync(r.marker, 'utf8'), `SIGINT handled by ${worker}`);
  const exit = r.events.find((e) => e.type === 'exit');
  assert.equal(exit.code, 0);
  assert.deepEqual(r.events.find((e) => e.type === 'shutdown').signal, 'SIGINT');
});

test('a worker that ignores SIGINT is SIGKILLed after shutdownTimeout', async () => {
  const r = await monitorRun(['ready-ignore'], { MON_ABORT_ON_READY: '1', MON_SHUTDOWN_TIMEOUT: '300' });
  const types = r.events.map((e) => e.type);
  assert.deepEqual(types, ['start', 'ready', 'shutdown', 'kill', 'exit', 'stopped']);
  const shutdown = r.events.find((e) => e.type === 'shutdown');
  const kill = r.events.find((e) => e.type === 'kill');
  assert.ok(kill.t - shutdown.t >= 299, `killed after ${kill.t - shutdown.t} ms`);
  assert.equal(r.events.find((e) => e.type === 'exit').signal, 'SIGKILL');
  assert.equal(existsSync(r.marker), false);
});

test("http transport: a forged POST by another local process does not make the monitor kill a healthy worker", async () => {
  const run = monitorRun(['ready-on-usr2', 'ready-stay'], { MON_ABORT_ON_READY: '1', MON_TRANSPORT: 'http' });
  const addrFile = `${join(dir, `marker-${runs}`)}.addr`;
  const line = await waitFor(() => existsSync(addrFile) && readFileSync(addrFile, 'utf8'), { what: 'the worker\'s address' });
  const [pid, address] = line.split(' ');
  reaper.add(Number(pid));
  // Anyone on the machine can find the port; only the worker knows the path.
  const { port } = new URL(address);
  const forged = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: 'forged failure' });
  try {
    process.kill(Number(pid), 'SIGUSR2');  // now the worker reports ready
  } catch {
    // killed because of the forged failure: the assertions below say so
  }
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.events.map((e) => e.type), ['start', 'ready', 'shutdown', 'exit', 'stopped']);
  assert.equal(r.events[0].pid, Number(pid), 'the first worker became ready');
  assert.equal(forged.status, 404);
  assert.match(address, /^http:\/\/127\.0\.0\.1:\d+\/[\w-]{22,}$/, 'a token in the path');
});

test('a pipe receiver of the monitor named only by address in the environment reaches the worker', async () => {
  const r = await monitorRun(['ready-stay'], { MON_ABORT_ON_READY: '1', MON_EXTRA_RECEIVER: '1' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^EXTRA REPORT true$/m, 'the worker could report to it');
  assert.match(r.stdout, /^EXTRA ready$/m);
  assert.deepEqual(r.events.map((e) => e.type), ['start', 'ready', 'shutdown', 'exit', 'stopped']);
});

test('isMonitored reads the variable; bad options are rejected before anything starts', async () => {
  process.env.MON_TEST_X = '';
  assert.equal(isMonitored('MON_TEST_X'), false);
  process.env.MON_TEST_X = 'fd:3';
  assert.equal(isMonitored('MON_TEST_X'), true);
  delete process.env.MON_TEST_X;
  assert.equal(isMonitored('MON_TEST_X'), false);
  assert.throws(() => isMonitored(''), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => isMonitored(5), { code: 'ERR_INVALID_ARG_TYPE' });
  const bad = [
    ['', {}, 'ERR_INVALID_ARG_VALUE'],
    ['A=B', {}, 'ERR_INVALID_ARG_VALUE'],
    [undefined, {}, 'ERR_INVALID_ARG_TYPE'],
    ['K', { minBackoff: 100, maxBackoff: 50 }, 'ERR_OUT_OF_RANGE'],
    ['K', { minBackoff: -1 }, 'ERR_OUT_OF_RANGE'],
    ['K', { shutdownTimeout: '10' }, 'ERR_INVALID_ARG_TYPE'],
    ['K', { shutdownSignal: 'SIGNOPE' }, 'ERR_UNKNOWN_SIGNAL'],
    ['K', { onEvent: 'x' }, 'ERR_INVALID_ARG_TYPE'],
    ['K', { signal: {} }, 'ERR_INVALID_ARG_TYPE'],
    ['K', null, 'ERR_INVALID_ARG_TYPE'],
  ];
  const { childPids } = await import('../dist/posix.mjs');
  const before = childPids();
  for (const [key, opts, code] of bad) {
    await assert.rejects(selfMonitor(key, opts), { code }, `${key} ${JSON.stringify(opts)}`);
  }
  assert.deepEqual(childPids(), before, 'nothing was started');
  // In a monitored child selfMonitor resolves at once.
  process.env.MON_TEST_Y = 'fd:9';
  await selfMonitor('MON_TEST_Y');
  delete process.env.MON_TEST_Y;
});

test("issue 22: a sockets[] entry with an unknown key is refused, naming the key meant; workers: a word other than 'auto'/'max' names both", async () => {
  const { childPids } = await import('../dist/posix.mjs');
  const before = childPids();
  // Aborted already: should the check let an option through, nothing is started either.
  const signal = AbortSignal.abort(new Error('not refused'));
  await assert.rejects(selfMonitor('MON_TEST_K', { signal, sockets: [{ name: 'web', port: 0, hots: '127.0.0.1' }] }), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: "The property 'options.sockets[0].hots' is not an option (did you mean 'options.sockets[0].host'?). Received '127.0.0.1'",
  });
  await assert.rejects(selfMonitor('MON_TEST_K', { signal, sockets: [{ name: 'web', zzzzzzzz: 1 }] }), {
    code: 'ERR_INVALID_ARG_VALUE', message: /'options\.sockets\[0\]\.zzzzzzzz' is not an option \(the options are: name, port, host, backlog\)/,
  });
  await assert.rejects(selfMonitor('MON_TEST_K', { signal, workers: 'many' }), {
    code: 'ERR_INVALID_ARG_VALUE', message: /'options\.workers' must be an integer from 1 to 4096, 'auto' or 'max'\. Received 'many'/,
  });
  await assert.rejects(selfMonitor('MON_TEST_K', { signal, workers: 0 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.deepEqual(childPids(), before, 'nothing was started');
  // Valid: in a monitored child selfMonitor then resolves at once.
  process.env.MON_TEST_Z = 'http://127.0.0.1:9/x';
  try {
    await selfMonitor('MON_TEST_Z', { workers: 'max', sockets: [{ name: 'web', port: 0, host: '127.0.0.1', backlog: 8 }] });
  } finally {
    delete process.env.MON_TEST_Z;
  }
});

test('with daemonize: the daemon is the monitor, its child the worker; stopping the daemon stops both', async () => {
  const { root } = await import('./helpers.mjs');
  const { procStat, waitFor } = await import('./helpers.mjs');
  const state = join(dir, 'combined-state');
  const r = await runNode(join(root, 'examples', 'monitor.ts'), ['--background', '--self-monitor', `--state=${state}`], {
    nodeArgs: ['--import', 'tsx'], cwd: root, reaper, timeout: 60000,
  });
  assert.equal(r.code, 0, r.stderr);
  const daemon = Number(/daemon started: PID (\d+)/.exec(r.stdout)[1]);
  reaper.add(daemon);
  const [worker] = readFileSync(state, 'utf8').trim().split(' ').map(Number);
  reaper.add(worker);
  assert.equal(procStat(worker).ppid, daemon, 'the worker is the monitor\'s child');
  assert.notEqual(procStat(daemon).ppid, r.pid, 'the daemon is not the foreground\'s child');
  assert.notEqual(procStat(daemon).session, daemon, 'the daemon is not a session leader');
  assert.equal(procStat(daemon).ttyNr, 0);
  process.kill(daemon, 'SIGTERM');
  await waitFor(() => !isAlive(worker) && !isAlive(daemon), { what: 'monitor and worker to stop' });
});

test('a worker that exits right after report() is not restarted forever: the budget ends it (default 10 in 60 s)', async () => {
  const r = await monitorRun(['ready-exit']);
  assert.match(r.stdout, /^REJECTED the worker was restarted 11 times within 60000 ms \(maxRestarts 10\): giving up$/m);
  assert.equal(r.events.filter((e) => e.type === 'start').length, 11);
  assert.equal(r.events.at(-1).type, 'gave-up');
});
