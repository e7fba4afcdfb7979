// cleanUpChildZombies after a real in-place restart: the children of the
// previous image (one exits at once, one a bit later, one ignores SIGHUP)
// are all reaped, nothing stays a zombie, and a child_process child of the
// new image still gets its own exit code.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Reaper, fixtures, zombieChildren, isAlive, waitFor } from './helpers.mjs';
import { App } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

test('children of the old image are reaped after an exec restart; the new image\'s own child keeps its exit code', async () => {
  const app = new App([join(fixtures, 'autorestart-zombies.mjs')], { reaper, env: { ...process.env, AR_GEN: '0' } });
  const g0 = JSON.parse((await app.nextLine(/^\{"gen":0.*$/, 'generation 0'))[0]);
  for (const pid of [g0.quick, g0.slow, g0.stubborn]) reaper.add(pid);
  const g1 = JSON.parse((await app.nextLine(/^\{"gen":1.*$/, 'generation 1'))[0]);
  assert.equal(g1.pid, g0.pid, 'same PID after the restart');
  assert.equal(g1.handoverVisible, null, 'the hand-over variable was consumed');
  reaper.add(g1.own);

  const done = JSON.parse((await app.nextLine(/^\{"report".*$/, 'cleanup report'))[0]);
  const byPid = new Map(done.report.map((r) => [r.pid, r]));
  assert.deepEqual(byPid.get(g0.quick), { pid: g0.quick, exitCode: 3, signal: null });
  assert.deepEqual(byPid.get(g0.slow), { pid: g0.slow, exitCode: 0, signal: null });
  // It ignored SIGHUP, so it was still there for the next step.
  assert.deepEqual(byPid.get(g0.stubborn), { pid: g0.stubborn, exitCode: null, signal: 'SIGINT' });
  assert.equal(done.report.length, 3);
  assert.ok(!byPid.has(g1.own), 'the new image\'s own child was not touched');
  assert.deepEqual(done.ownExit, { code: 42, signal: null }, 'child_process saw the real exit code');
  assert.deepEqual(done.again, [], 'a second call has nothing left to do');

  const log = done.log.join('\n');
  assert.match(log, /^\[autorestart\.CleanUpZombies\] /m);
  assert.match(log, new RegExp(`child ${g0.stubborn} still running after 300 ms, sending SIGHUP`));
  assert.match(log, new RegExp(`child ${g0.stubborn} still running after 600 ms, sending SIGINT`));
  assert.doesNotMatch(log, /sending SIGTERM/);
  assert.doesNotMatch(log, new RegExp(`${g0.quick} still running`));

  assert.deepEqual(zombieChildren(app.pid), [], 'no zombie left');
  for (const pid of [g0.quick, g0.slow, g0.stubborn, g1.own]) assert.equal(isAlive(pid), false);
  assert.ok(isAlive(app.pid));
});

test('without cleanup, a child that ends after the exec stays a zombie (why cleanup exists)', async () => {
  // Control experiment: restart via exec and never call cleanUpChildZombies.
  // Also shows that a program without a main script (-e) restarts too.
  const app = new App(['--input-type=module', '-e', `
    import { restartViaExec } from 'posix-daemon/autorestart';
    import { spawn } from 'node:child_process';
    if (!process.env.AR_GEN) {
      process.env.AR_GEN = '1';
      const c = spawn('/bin/sleep', ['0.3'], { stdio: 'ignore' });
      console.log('child ' + c.pid);
      restartViaExec();
    } else {
      console.log('restarted ' + process.pid);
      setInterval(() => {}, 1 << 30);
    }
  `], { reaper, cwd: join(fixtures, '..'), env: { ...process.env, AR_GEN: '' } });
  const child = Number((await app.nextLine(/^child (\d+)$/))[1]);
  reaper.add(child);
  assert.equal(Number((await app.nextLine(/^restarted (\d+)$/))[1]), app.pid);
  // Nobody in the new image knows this PID: once it exits, it stays a zombie.
  await waitFor(() => zombieChildren(app.pid).includes(child), { what: 'the zombie' });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(zombieChildren(app.pid), [child], 'still a zombie: nothing reaps it');
});

for (const order of ['load-first', 'spawn-first']) {
  test(`a forged ${'POSIX_DAEMON_EXEC_CHILDREN'} never touches the program's own child (library loaded ${order === 'load-first' ? 'before' : 'after'} the spawn)`, async () => {
    // The variable names the next few thousand PIDs: whatever PID the
    // program's child gets, it is in the list.
    const probe = spawnSync('/bin/true');
    const first = probe.pid;
    const range = Array.from({ length: 3000 }, (_, i) => first + i).join(',');
    const app = new App([join(fixtures, 'autorestart-zombies-hostile.mjs'), order, String(first)], {
      reaper, env: { ...process.env, POSIX_DAEMON_EXEC_CHILDREN: range },
    });
    const out = JSON.parse((await app.nextLine(/^\{.*$/, 'the report'))[0]);
    reaper.add(out.own);
    assert.equal(out.listed, true, 'the child\'s PID was in the forged list');
    assert.deepEqual(out.report, [], 'nothing reaped');
    assert.deepEqual(out.exit, { code: 42, signal: null }, 'child_process saw the real exit code');
    assert.doesNotMatch(out.log.join('\n'), /sending SIGTERM|reaped child/);
    await app.exited;
  });
}
