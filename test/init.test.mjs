// init(): a real PID 1 in a real PID namespace (unshare), compared with tini
// and with plain node as PID 1.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Reaper, fixtures, isAlive, procStat } from './helpers.mjs';
import { noNamespace, noTini, start as startLines, namespaceInit as nsInit } from './init-helpers.mjs';
import { init } from '../dist/init.mjs';

const app = join(fixtures, 'init-app.mjs');
const reaper = new Reaper();
after(() => reaper.killAll());

const start = (cmd, args) => startLines(reaper, cmd, args);
const namespaceInit = (unsharePid) => nsInit(reaper, unsharePid);

const runners = {
  ours: (ending) => ['unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, app, 'ours', ending]],
  tini: (ending) => ['unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', '/usr/bin/tini', '--', process.execPath, app, 'tini', ending]],
  plain: (ending) => ['unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, app, 'plain', ending]],
};

describe('as PID 1 of a PID namespace', { skip: noNamespace }, () => {
  for (const [name, skip] of [['ours', false], ['tini', noTini], ['plain', false]]) {
    test(`${name}: orphans, a child's exit code, SIGTERM to PID 1, the container's status`, { skip }, async () => {
      const run = start(...runners[name]('code'));
      const report = JSON.parse((await run.line('REPORT ')).slice(7));
      assert.equal(report.childCode, 7, 'the child_process child keeps its real exit code');
      if (name === 'plain') {
        // The problem: node as PID 1 reaps nothing.
        assert.equal(report.ppid, 0);
        assert.equal(report.zombieOrphans, 5, 'plain node leaves every orphan a zombie');
      } else {
        assert.notEqual(report.pid, 1, 'the program runs under an init');
        assert.equal(report.ppid, 1);
        assert.equal(report.zombieOrphans, 0);
        assert.equal(report.zombies, 0);
      }
      await run.line('WAITING');
      const pid1 = await namespaceInit(run.child.pid);
      if (name === 'ours') {
        assert.equal(readFileSync(`/proc/${pid1}/comm`, 'latin1').trim(), 'node-init');
        assert.equal(procStat(pid1).state !== 'Z', true);
      }
      process.kill(pid1, 'SIGTERM');
      await run.line('SIGTERM');
      const { code } = await run.exited;
      assert.equal(code, 42, `the container's status is the program's (stderr: ${run.stderr()})`);
    });
  }

  for (const [name, skip] of [['ours', false], ['tini', noTini]]) {
    test(`${name}: a program killed by signal N gives the container status 128+N`, { skip }, async () => {
      const run = start(...runners[name]('signal'));
      await run.line('WAITING');
      process.kill(await namespaceInit(run.child.pid), 'SIGTERM');
      const { code } = await run.exited;
      assert.equal(code, 128 + 9);
    });
  }

  test('ours: an in-place restart (execve, same PID) keeps running under the init', async () => {
    const run = start(...runners.ours('exec'));
    const report = JSON.parse((await run.line('REPORT ')).slice(7));
    await run.line('WAITING');
    process.kill(await namespaceInit(run.child.pid), 'SIGTERM');
    const [, pid, ppid] = (await run.line('EXECED ')).split(' ').map(Number);
    assert.equal(pid, report.pid, 'same PID after execve');
    assert.equal(ppid, 1);
    assert.equal((await run.exited).code, 5);
  });
});

describe('with force outside a namespace', () => {
  for (const stubborn of [false, true]) {
    test(`what the program leaves behind${stubborn ? ' (ignoring SIGTERM)' : ''} is signalled and reaped; the exit code is the program's`, async () => {
      const run = start(process.execPath, [app, 'force', 'leave', stubborn ? 'stubborn' : '']);
      const report = JSON.parse((await run.line('REPORT ')).slice(7));
      reaper.add(report.pid);  // the init's child: killing the init alone would orphan it
      assert.equal(report.ppid, run.child.pid, 'the init keeps the PID it was started with');
      assert.equal(report.zombies, 0);
      const initPid = run.child.pid;
      assert.equal(readFileSync(`/proc/${initPid}/comm`, 'latin1').trim(), 'node-init');
      await run.line('WAITING');
      process.kill(initPid, 'SIGTERM');  // forwarded to the program
      const left = reaper.add(Number((await run.line('LEFT ')).slice(5)));
      const { code } = await run.exited;
      assert.equal(code, 3);
      assert.equal(isAlive(left), false, 'the process the program left behind is gone');
      assert.equal(procStat(left), null, 'and reaped');
    });
  }

  test('an in-place restart of the program stays under the init (the marker names our parent)', async () => {
    const run = start(process.execPath, [app, 'force', 'exec']);
    const report = JSON.parse((await run.line('REPORT ')).slice(7));
    reaper.add(report.pid);
    await run.line('WAITING');
    process.kill(run.child.pid, 'SIGTERM');
    const [, pid, ppid] = (await run.line('EXECED ')).split(' ').map(Number);
    assert.equal(pid, report.pid);
    assert.equal(ppid, run.child.pid, 'init() in the new image did not start a second init');
    assert.equal((await run.exited).code, 5);
  });
});

test('not PID 1 and no force: init() resolves at once and does nothing', async () => {
  const before = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'latin1');
  assert.equal(await init(), undefined);
  assert.equal(readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'latin1'), before);
  await assert.rejects(init({ force: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(init({ shutdownTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
});
