// selfMonitor and the worker's process tree: each worker leads its own
// process group, stopping the worker stops what it started, and a monitor
// stopped by a signal nobody listens for does not leave the group behind.
// Real processes, checked through /proc; real ports.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fixtures, freePort, Reaper, isAlive, procStat, waitFor } from './helpers.mjs';
import { join } from 'node:path';

const app = join(fixtures, 'monitor-pgroup.cjs');
const reaper = new Reaper();
after(() => reaper.killAll());

/**
 * Starts the monitor the way a shell starts a job: leading its own process
 * group (a terminal's Ctrl-C goes to that group).
 */
function startMonitor(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.MON_PGROUP_STATUS;
  const child = spawn(process.execPath, [app], { env, detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(child.pid);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    out += d;
    reaper.watchOutput(d);
    for (const m of d.matchAll(/(?:GRANDCHILD|WORKER) (\d+)/g)) reaper.add(Number(m[1]));
  });
  // 'close' (stdout drained) normally; a worker left running would hold the
  // pipe open forever, so 'exit' plus a grace period is the safety net.
  const closed = new Promise((r) => {
    child.on('close', (code, signal) => r({ code, signal }));
    child.on('exit', (code, signal) => setTimeout(() => r({ code, signal }), 5000).unref());
  });
  return {
    child,
    closed,
    get out() { return out; },
    async worker() {
      const m = await waitFor(() => /^WORKER (\d+) GRANDCHILD (\d+)$/m.exec(out), { what: 'the worker and its grandchild' });
      await waitFor(() => out.includes('"type":"ready"'), { what: 'ready' });
      return { worker: Number(m[1]), grandchild: Number(m[2]) };
    },
  };
}

/** Live members of process group `pgid`. */
function groupMembers(pgid) {
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => {
    const st = procStat(pid);
    return st !== null && st.state !== 'Z' && st.pgrp === pgid;
  });
}

test('the worker leads its own process group; on abort the whole group is stopped, grandchildren included', async () => {
  const m = startMonitor({ MON_WIRE: '1' });
  const { worker, grandchild } = await m.worker();
  assert.equal(procStat(worker).pgrp, worker, 'the worker leads a group');
  assert.equal(procStat(grandchild).pgrp, worker, 'its child is in it');
  assert.notEqual(procStat(m.child.pid).pgrp, worker, 'the monitor is not');
  process.kill(m.child.pid, 'SIGTERM');
  const { code } = await m.closed;
  assert.equal(code, 0);
  assert.match(m.out, /REJECTED stopped by SIGTERM/);
  assert.equal(isAlive(worker), false);
  assert.equal(isAlive(grandchild), false, 'no orphaned grandchild (sleep 1000) is left');
  assert.deepEqual(groupMembers(worker), []);
});

test('a grandchild that ignores the shutdown signal and holds a port is killed; a fresh monitor binds the port again', async () => {
  const port = await freePort();
  const env = { MON_WIRE: '1', MON_PORT: String(port), MON_STUBBORN: '1', MON_SHUTDOWN_TIMEOUT: '300' };
  const m = startMonitor(env);
  const { worker, grandchild } = await m.worker();
  assert.match(m.out, new RegExp(`GRANDCHILD ${grandchild} LISTENING`));
  process.kill(m.child.pid, 'SIGTERM');
  assert.equal((await m.closed).code, 0);
  // The worker exited on SIGINT at once; the grandchild ignored it and was
  // killed when shutdownTimeout had passed.
  assert.equal(isAlive(worker), false);
  assert.equal(isAlive(grandchild), false, 'the stubborn grandchild is gone');
  assert.deepEqual(groupMembers(worker), []);

  const again = startMonitor({ ...env, MON_ABORT_ON_READY: '1' });
  const second = await again.worker();
  assert.match(again.out, new RegExp(`GRANDCHILD ${second.grandchild} LISTENING`), 'the port is free again');
  assert.equal((await again.closed).code, 0);
  assert.equal(isAlive(second.grandchild), false);
});

for (const how of ['SIGINT to the monitor\'s group (a terminal\'s Ctrl-C)', 'SIGTERM to the monitor (kill PID)', 'SIGHUP to the monitor (the terminal closed)']) {
  const sig = how.slice(0, how.indexOf(' '));
  test(`no signal listener: ${how} stops the worker group, then the monitor dies of ${sig}`, async () => {
    const m = startMonitor({});
    const { worker, grandchild } = await m.worker();
    if (sig === 'SIGINT') process.kill(-m.child.pid, sig);  // the monitor's group: not the worker's
    else process.kill(m.child.pid, sig);
    const { signal } = await m.closed;
    assert.equal(signal, sig, 'the monitor ends as the signal would have ended it');
    const shutdown = /^EVENT (.*"type":"shutdown".*)$/m.exec(m.out);
    assert.ok(shutdown, m.out);
    assert.equal(JSON.parse(shutdown[1]).signal, sig, 'the worker group got the same signal');
    assert.equal(isAlive(worker), false, 'the worker is not left running');
    assert.equal(isAlive(grandchild), false, 'nor its child');
    assert.deepEqual(groupMembers(worker), []);
  });
}

test('a worker that crashes leaving a grandchild on its port: the grandchild is stopped before the next worker starts', async () => {
  const port = await freePort();
  // The first worker's grandchild listens, then the test kills the worker
  // with SIGKILL (a crash): the monitor must clear the group, or the next
  // worker's grandchild would get EADDRINUSE.
  const m = startMonitor({ MON_WIRE: '1', MON_PORT: String(port), MON_SHUTDOWN_TIMEOUT: '300' });
  const first = await m.worker();
  process.kill(first.worker, 'SIGKILL');
  await waitFor(() => (m.out.match(/^WORKER /gm) ?? []).length === 2, { what: 'the second worker' });
  assert.equal(isAlive(first.grandchild), false);
  const lines = [...m.out.matchAll(/^GRANDCHILD (\d+) (\w+)$/gm)].map((x) => x[2]);
  assert.deepEqual(lines, ['LISTENING', 'LISTENING']);
  process.kill(m.child.pid, 'SIGTERM');
  assert.equal((await m.closed).code, 0);
});
