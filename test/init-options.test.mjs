// init() at tini's and dumb-init's level (issue 19 §4): every signal tini
// forwards, the program's process group (tini -g), exit-status remapping
// (tini -e), signal rewriting (dumb-init -r), the warning outside PID 1
// without a subreaper, job-control stops (dumb-init). Each check runs
// side by side with the tool that has the feature, the same program.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Reaper, fixtures, procStat, root, waitFor } from './helpers.mjs';
import { noNamespace, noTini, noDumbInit, start, namespaceInit, parseReady } from './init-helpers.mjs';
import { constants } from 'node:os';
import { init, initImageOptions } from '../dist/init.mjs';

const osSignals = constants.signals;

const prog = join(fixtures, 'init-prog.mjs');
const reaper = new Reaper();
after(() => reaper.killAll());
const env = (options) => ({ ...process.env, FIXTURE_INIT: JSON.stringify(options) });
const ns = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc'];

/** Runs the program as PID 1's child: under init(options), or under a tool's command line. */
function underInit(who, options, toolArgs, progArgs) {
  if (who === 'ours') return start(reaper, ns[0], [...ns.slice(1), process.execPath, prog, ...progArgs], { env: env(options) });
  return start(reaper, ns[0], [...ns.slice(1), ...toolArgs, process.execPath, prog, ...progArgs]);
}

// tini's forwarded set (everything but SIGCHLD and the synchronous faults);
// the last one ends the program.
const SIGNALS = ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGPIPE', 'SIGALRM', 'SIGSTKFLT', 'SIGURG',
  'SIGXCPU', 'SIGXFSZ', 'SIGVTALRM', 'SIGPROF', 'SIGIO', 'SIGPWR', 'SIGWINCH', 'SIGCONT', 'SIGTSTP', 'SIGTERM'];

describe('as PID 1 of a PID namespace', { skip: noNamespace }, () => {
  for (const [who, skip] of [['ours', false], ['tini', noTini]]) {
    test(`${who}: every signal tini forwards reaches the program`, { skip }, async () => {
      const run = underInit(who, {}, ['/usr/bin/tini', '--'], ['signals', ...SIGNALS]);
      await run.line('READY ');
      const pid1 = await namespaceInit(reaper, run.child.pid);
      for (const sig of SIGNALS) {
        process.kill(pid1, sig);
        await run.line(`GOT ${sig}`);
      }
      assert.equal((await run.exited).code, 42, run.stderr());
    });

    test(`${who}: signalGroup / -g forwards to the program's whole process group`, { skip }, async () => {
      const run = underInit(who, { signalGroup: true }, ['/usr/bin/tini', '-g', '--'], ['group']);
      await run.line('READY ');
      await run.line('CHILD READY');
      const pid1 = await namespaceInit(reaper, run.child.pid);
      process.kill(pid1, 'SIGUSR1');
      await run.line('GOT SIGUSR1');
      await run.line('CHILD GOT SIGUSR1');
      process.kill(pid1, 'SIGTERM');
      assert.equal((await run.exited).code, 42, run.stderr());
    });

    test(`${who}: remapExitCodes { 143: 0 } / -e 143: a program ended by SIGTERM ends the container with 0`, { skip }, async () => {
      const run = underInit(who, { remapExitCodes: { 143: 0 } }, ['/usr/bin/tini', '-e', '143', '--'], ['die']);
      await run.line('READY ');
      process.kill(await namespaceInit(reaper, run.child.pid), 'SIGTERM');
      assert.equal((await run.exited).code, 0, run.stderr());
    });
  }

  test('ours without signalGroup: only the program gets the signal (tini without -g)', async () => {
    const run = underInit('ours', {}, [], ['group']);
    await run.line('READY ');
    await run.line('CHILD READY');
    const pid1 = await namespaceInit(reaper, run.child.pid);
    process.kill(pid1, 'SIGUSR1');
    await run.line('GOT SIGUSR1');
    process.kill(pid1, 'SIGTERM');
    assert.equal((await run.exited).code, 42, run.stderr());
    assert.equal(run.lines.includes('CHILD GOT SIGUSR1'), false);
  });

  for (const [who, skip] of [['ours', false], ['dumb-init', noDumbInit]]) {
    test(`${who}: rewriteSignals { SIGTERM: 'SIGQUIT', SIGHUP: null } / -r 15:3 -r 1:0`, { skip }, async () => {
      const run = underInit(who, { rewriteSignals: { SIGTERM: 'SIGQUIT', SIGHUP: null } },
        ['/usr/bin/dumb-init', '-r', '15:3', '-r', '1:0'], ['signals', 'SIGQUIT', 'SIGTERM', 'SIGHUP', 'SIGUSR1']);
      await run.line('READY ');
      const pid1 = await namespaceInit(reaper, run.child.pid);
      process.kill(pid1, 'SIGHUP');   // dropped
      process.kill(pid1, 'SIGTERM');  // arrives as SIGQUIT
      await run.line('GOT SIGQUIT');
      process.kill(pid1, 'SIGUSR1');  // unchanged; signals from one sender arrive in order
      await run.line('GOT SIGUSR1');
      assert.equal(run.lines.includes('GOT SIGHUP'), false, 'SIGHUP was dropped');
      assert.equal(run.lines.includes('GOT SIGTERM'), false, 'SIGTERM was rewritten');
      process.kill(pid1, 'SIGINT');   // no handler: the program dies of it
      assert.equal((await run.exited).code, 130, run.stderr());
    });
  }
});

describe('outside PID 1 (force)', () => {
  test('a warning when neither PID 1 nor a subreaper (as tini warns); none by default (subreaper)', async () => {
    for (const [subreaper, warns] of [[false, true], [true, false]]) {
      const run = start(reaper, process.execPath, [prog, 'die'], { env: env({ force: true, subreaper }) });
      const ready = parseReady(await run.line('READY '));
      reaper.add(ready.pid);
      process.kill(run.child.pid, 'SIGTERM');
      assert.equal((await run.exited).code, 143);
      assert.equal(/not PID 1 and not a child subreaper/.test(run.stderr()), warns, run.stderr());
    }
  });

  for (const [who, skip] of [['ours', false], ['dumb-init', noDumbInit]]) {
    test(`${who}: SIGTSTP stops the program and the init with it (job control); SIGCONT resumes both`, { skip }, async () => {
      const run = who === 'ours'
        ? start(reaper, process.execPath, [prog, 'die'], { env: env({ force: true }) })
        : start(reaper, '/usr/bin/dumb-init', [process.execPath, prog, 'die']);
      const ready = parseReady(await run.line('READY '));
      reaper.add(ready.pid);
      const initPid = run.child.pid;
      process.kill(initPid, 'SIGTSTP');
      await waitFor(() => procStat(ready.pid)?.state === 'T' && procStat(initPid)?.state === 'T',
        { what: 'the program and the init stopped' });
      process.kill(initPid, 'SIGCONT');
      await waitFor(() => procStat(ready.pid)?.state !== 'T' && procStat(initPid)?.state !== 'T',
        { what: 'both running again' });
      process.kill(initPid, 'SIGTERM');
      assert.equal((await run.exited).code, 143, run.stderr());
    });
  }
});

// Issue 22, item 20: a received SIGTSTP/TTIN/TTOU rewritten to a signal
// that stops nothing still stops the init (dumb-init's
// test_default_rewrites_can_be_overriden_with_setsid_enabled, same map),
// and SIGCONT resumes it and reaches the program. TTIN → TERM last: the
// program exits on it, and the init still stops first.
const JOB_REWRITES = [['SIGTSTP', 'SIGHUP'], ['SIGTTOU', 'SIGINT'], ['SIGTTIN', 'SIGTERM']];
for (const [who, skip] of [['ours', false], ['dumb-init', noDumbInit]]) {
  test(`${who}: a job-control signal rewritten to another (TTIN→TERM...) is forwarded and stops the init; SIGCONT resumes it`, { skip }, async () => {
    const progArgs = [prog, 'signals', 'SIGHUP', 'SIGINT', 'SIGCONT', 'SIGTERM'];
    const rewriteSignals = Object.fromEntries(JOB_REWRITES);
    const run = who === 'ours'
      ? start(reaper, process.execPath, progArgs, { env: env({ force: true, rewriteSignals }) })
      : start(reaper, '/usr/bin/dumb-init',
        [...JOB_REWRITES.flatMap(([f, t]) => ['-r', `${osSignals[f]}:${osSignals[t]}`]), process.execPath, ...progArgs]);
    const ready = parseReady(await run.line('READY '));
    reaper.add(ready.pid);
    const initPid = run.child.pid;
    const count = (l) => run.lines.filter((x) => x === l).length;
    for (const [i, [from, to]] of JOB_REWRITES.entries()) {
      process.kill(initPid, from);
      await run.line(`GOT ${to}`);
      await waitFor(() => procStat(initPid)?.state === 'T', { what: `the init stopped after ${from}` });
      if (to !== 'SIGTERM') assert.notEqual(procStat(ready.pid)?.state, 'T', 'the program did not stop');
      process.kill(initPid, 'SIGCONT');
      if (to !== 'SIGTERM') await waitFor(() => count('GOT SIGCONT') === i + 1, { what: 'SIGCONT forwarded' });
      await waitFor(() => procStat(initPid) === null || procStat(initPid).state !== 'T', { what: 'the init running again' });
    }
    assert.equal((await run.exited).code, 42, run.stderr());
  });
}

test('posix-daemon-init --help / -h: the usage on stdout, exit 0; an unknown option: exit 2', { skip: process.platform !== 'linux' && 'Linux' }, () => {
  const cmd = join(root, 'dist', 'init-command.js');
  for (const flag of ['--help', '-h']) {
    const r = spawnSync(process.execPath, [cmd, flag], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: posix-daemon-init \[options\] \[--\] program/);
    assert.match(r.stdout, /-r S:R/);
    assert.equal(r.stderr, '');
  }
  const bad = spawnSync(process.execPath, [cmd, '--nope', 'true'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown option --nope/);
  // Fault signals and SIGCHLD are never forwarded: the image refuses a rewrite of one.
  const fault = spawnSync(process.execPath, [cmd, '-r', 'SYS:HUP', 'true'], { encoding: 'utf8' });
  assert.equal(fault.status, 2);
  assert.match(fault.stderr, /is never forwarded/);
});

test('the options are validated as Node validates', async () => {
  await assert.rejects(init({ signalGroup: 1 }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(init({ subreaper: 'no' }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(init({ remapExitCodes: { 300: 0 } }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(init({ remapExitCodes: { 143: -1 } }), { code: 'ERR_OUT_OF_RANGE' });
  await assert.rejects(init({ rewriteSignals: { SIGNOPE: 'SIGTERM' } }), { code: 'ERR_UNKNOWN_SIGNAL' });
  await assert.rejects(init({ rewriteSignals: { SIGKILL: 'SIGTERM' } }), { code: 'ERR_INVALID_ARG_VALUE' });
  // Never forwarded by the init: a rewrite would do nothing (issue 22, item 20).
  for (const sig of ['SIGSYS', 'SIGSEGV', 'SIGCHLD', 'SIGABRT']) {
    await assert.rejects(init({ rewriteSignals: { [sig]: 'SIGHUP' } }), { code: 'ERR_INVALID_ARG_VALUE', message: /never|forwards/ }, sig);
  }
  assert.deepEqual(initImageOptions({ shutdownTimeout: 100, signalGroup: true, remapExitCodes: { 143: 0 }, rewriteSignals: { SIGTERM: 'SIGQUIT', SIGHUP: null } }),
    ['-t', '100', '-s', '-g', '-e', '143:0', '-r', '15:3', '-r', '1:0']);
});
