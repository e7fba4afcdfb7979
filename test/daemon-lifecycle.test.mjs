// daemonize(): what happens around the wait for readiness — a foreground
// that dies while it waits, a daemon that dies before it is ready (its
// stderr), unknown option keys, `node -e` programs.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reaper, fixtures, root, isAlive, procStat, procEnv, procCwd, procFds, runNode, waitFor } from './helpers.mjs';
import { daemonApp, daemonBaseEnv, daemonGate, DAEMON_ENV_KEY, failureLine, processEnded } from './daemon-helpers.mjs';
import { daemonize } from '../dist/index.mjs';
import { childPids } from '../dist/posix.mjs';

const app = daemonApp;
const ENV_KEY = DAEMON_ENV_KEY;
const reaper = new Reaper();
const tmp = realpathSync(mkdtempSync(join(tmpdir(), 'posix-daemon-lifecycle-')));

after(async () => {
  await reaper.killAll();
  rmSync(tmp, { recursive: true, force: true });
});

const baseEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  USER: 'posix-daemon-tester',
};

function run(mode, opts = {}, rest = {}) {
  return runNode(app, [mode, JSON.stringify(opts)], { env: baseEnv, reaper, ...rest });
}

const failure = failureLine;

const gate = () => daemonGate(reaper);

const ended = processEnded;

describe('a foreground that dies while it waits takes its daemon with it (issue 16, item 16)', () => {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL']) {
    test(`${signal} to the waiting foreground: the daemon does not stay`, async () => {
      const g = await gate();
      const fg = run('hang', { gatePort: g.port });
      const d = await g.next();
      const fgPid = procStat(d.pid).ppid;
      reaper.add(fgPid);
      assert.match(readFileSync(`/proc/${fgPid}/cmdline`, 'latin1'), /daemon-app\.mjs/);
      process.kill(fgPid, signal);
      const r = await fg;
      assert.equal(r.signal, signal, 'the foreground died of the signal, as it would have');
      await ended(d.pid);
      assert.equal(isAlive(d.pid), false);
      d.destroy();
    });
  }

  test('an uncaught exception in the waiting foreground: the daemon does not stay', async () => {
    const g = await gate();
    const fg = run('hang', { gatePort: g.port, throwOnSigusr1: true });
    const d = await g.next();
    const fgPid = procStat(d.pid).ppid;
    reaper.add(fgPid);
    process.kill(fgPid, 'SIGUSR1');
    const r = await fg;
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the foreground crashed/);
    await ended(d.pid);
    d.destroy();
  });

  test('a daemon with its own SIGTERM handler gets to run it (a clean exit)', async () => {
    const out = join(tmp, 'term-handler.log');
    const g = await gate();
    const fg = run('term-handler', { gatePort: g.port, stdout: out });
    const d = await g.next();
    const fgPid = procStat(d.pid).ppid;
    reaper.add(fgPid);
    d.end('go\n');
    // Wait until the handler is installed: it runs after the gate.
    await new Promise((r) => d.on('close', r));
    process.kill(fgPid, 'SIGINT');
    await fg;
    await ended(d.pid);
    assert.match(readFileSync(out, 'utf8'), /clean exit on SIGTERM/);
  });

  test('once ready, the daemon no longer depends on the foreground (no watcher, no extra fd)', async () => {
    const r = await run('ok');
    assert.equal(r.code, 0, r.stderr);
    const pid = reaper.add(Number(/^PID (\d+)$/m.exec(r.stdout)[1]));
    assert.ok(isAlive(pid));
    const env = procEnv(pid);
    // The lifeline rides at the end of the key's value it was started with.
    const line = JSON.parse(Buffer.from(env[ENV_KEY].split(';posix-daemon-lifeline=')[1], 'base64url').toString());
    // The foreground is gone (it exited after "ready"): the daemon let go of it.
    await waitFor(() => procFds(pid)[line.fd] === undefined, { what: 'the lifeline to be closed' });
    assert.ok(isAlive(pid), 'and the daemon goes on');
  });
});

describe('a daemon that dies before it is ready leaves its last stderr lines in the error (item 17)', () => {
  test('an uncaught exception at start-up: err.stderr and the message show it', async () => {
    const r = await run('crash');
    assert.equal(r.code, 1);
    const e = failure(r);
    assert.equal(e.code, 'ERR_DAEMON_EXITED');
    assert.equal(e.exitCode, 1);
    assert.match(e.stderr, /Error: database unreachable at start-up/);
    assert.match(e.stderr, /start-up line 50/);
    assert.doesNotMatch(e.stderr, /start-up line 1\n/, 'only the last lines are kept');
    assert.match(e.message, /exited with code 1 before it was ready/);
    assert.match(e.message, /database unreachable at start-up/);
  });

  test('with a stderr file of the user, the file has it all and nothing is captured', async () => {
    const log = join(tmp, 'crash.err');
    const r = await run('crash', { stderr: log });
    const e = failure(r);
    assert.equal(e.stderr, undefined);
    assert.match(readFileSync(log, 'utf8'), /start-up line 1\n[^]*database unreachable/);
  });

  test('a ready daemon writes its stderr to /dev/null afterwards, as before', async () => {
    const r = await run('ok');
    assert.equal(r.code, 0, r.stderr);
    const pid = reaper.add(Number(/^PID (\d+)$/m.exec(r.stdout)[1]));
    // fd 2 is put back on /dev/null once the foreground said "ready".
    await waitFor(() => procFds(pid)['2'] === '/dev/null', { what: 'stderr back on /dev/null' });
  });
});

describe('unknown option keys (item 18)', () => {
  test('daemonize({ pidfile }) rejects, naming the key and the likely one', async () => {
    const before = childPids(process.pid);
    await assert.rejects(daemonize({ envKey: 'POSIX_DAEMON_TEST_UNUSED', pidfile: '/tmp/x.pid' }), (err) => {
      assert.equal(err.code, 'ERR_INVALID_ARG_VALUE');
      assert.ok(err instanceof TypeError);
      assert.match(err.message, /options\.pidfile/);
      assert.match(err.message, /pidFile/);
      return true;
    });
    assert.deepEqual(childPids(process.pid), before, 'nothing launched');
  });

  test('a key unlike any option is named without a guess', async () => {
    await assert.rejects(daemonize({ envKey: 'POSIX_DAEMON_TEST_UNUSED', zzzzzzz: 1 }), (err) => {
      assert.equal(err.code, 'ERR_INVALID_ARG_VALUE');
      assert.match(err.message, /options\.zzzzzzz/);
      assert.doesNotMatch(err.message, /did you mean/);
      return true;
    });
  });
});

describe('`node -e` programs (item 23)', () => {
  // A project that depends on posix-daemon: the package linked into node_modules.
  const project = join(tmp, 'project');
  mkdirSync(join(project, 'node_modules'), { recursive: true });
  symlinkSync(root, join(project, 'node_modules', 'posix-daemon'));
  const programs = {
    esm: ['--input-type=module', '-e', `
      import { daemonize, report } from 'posix-daemon';
      const r = await daemonize({ envKey: 'EVAL_DAEMON' });
      if (r.foreground) { console.log('PID ' + r.pid); process.exit(0); }
      await report(process.env.EVAL_DAEMON);
      setInterval(() => {}, 1 << 30);`],
    cjs: ['-e', `
      const { daemonize, report } = require('posix-daemon');
      daemonize({ envKey: 'EVAL_DAEMON' }).then(async (r) => {
        if (r.foreground) { console.log('PID ' + r.pid + ' ' + process.argv.slice(1).join(',')); process.exit(0); }
        require('node:fs').writeFileSync(process.argv[1], process.argv.slice(1).join(','));
        await report(process.env.EVAL_DAEMON);
        setInterval(() => {}, 1 << 30);
      });`],
  };
  for (const [kind, nodeArgs] of Object.entries(programs)) {
    test(`${kind}: the daemon runs the same code and arguments, in '/'`, async () => {
      const marker = join(tmp, `eval-${kind}.args`);
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, [...nodeArgs, marker, 'two'], { cwd: project, env: baseEnv });
      reaper.add(child.pid);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      const code = await new Promise((r) => child.on('close', r));
      assert.equal(code, 0, stderr + stdout);
      const pid = reaper.add(Number(/^PID (\d+)/m.exec(stdout)[1]));
      assert.ok(isAlive(pid));
      assert.equal(procCwd(pid), '/', "the daemon's directory is '/' once it runs");
      if (kind === 'cjs') assert.equal(readFileSync(marker, 'utf8'), `${marker},two`);
    });
  }
});

describe('unknown option keys, everywhere in the public API (item 18)', async () => {
  const posix = await import('../dist/posix.mjs');
  const ar = await import('../dist/autorestart.mjs');
  const sd = await import('../dist/systemd.mjs');
  const { init } = await import('../dist/init.mjs');
  const { receiver, stopDaemon } = await import('../dist/index.mjs');
  const aborted = AbortSignal.abort(new Error('never started'));
  // Each call would do something (or nothing, silently) if the key were ignored;
  // the aborted signals keep restarts from ever running.
  const cases = {
    'fork plan': [() => posix.fork({ file: '/bin/true', argss: ['x'] }), 'plan.argss', 'plan.args'],
    'fork inner plan': [() => posix.fork({ setsid: true, fork: { file: '/bin/true', stdoi: 'ignore' } }), 'plan.fork.stdoi', 'plan.fork.stdio'],
    execve: [() => posix.execve(process.execPath, [process.execPath, '-e', 'process.exit(7)'], process.env, { keepfds: [] }), 'options.keepfds', 'options.keepFds'],
    waitAsync: [() => posix.waitAsync(process.pid, { reff: false }), 'options.reff', 'options.ref'],
    spawnDetached: [() => posix.spawnDetached('/bin/true', [], { cdw: '/' }), 'options.cdw', 'options.cwd'],
    receiver: [() => receiver({ transprot: 'http' }), 'options.transprot', 'options.transport'],
    stopDaemon: [() => stopDaemon(2 ** 31 - 1, { timout: 1 }), 'options.timout', 'options.timeout'],
    init: [() => init({ forcce: true }), 'options.forcce', 'options.force'],
    startWatchdog: [() => sd.startWatchdog({ signa: aborted }), 'options.signa', 'options.signal'],
    cleanUpChildZombies: [() => ar.cleanUpChildZombies({ quite: true }), 'options.quite', 'options.quiet'],
    restartViaExec: [() => ar.restartViaExec({ signal: aborted, keepfds: [] }), 'options.keepfds', 'options.keepFds'],
    restartOnSignal: [() => ar.restartOnSignal('SIGUSR2', { signal: aborted, sever: [] }), 'options.sever', 'options.servers'],
    restartOnChange: [() => ar.restartOnChange({ signal: aborted, onerror: () => {} }), 'options.onerror', 'options.onError'],
    notifyOnChange: [() => ar.notifyOnChange({ signal: aborted, path: ['x'] }), 'options.path', 'options.paths'],
    notifyOnSighup: [() => ar.notifyOnSighup({ sigal: aborted }), 'options.sigal', 'options.signal'],
  };
  for (const [what, [call, key, guess]] of Object.entries(cases)) {
    test(`${what}: ${key} → ERR_INVALID_ARG_VALUE naming ${guess}`, async () => {
      await assert.rejects(async () => call(), (err) => {
        assert.equal(err.code, 'ERR_INVALID_ARG_VALUE', err.message);
        assert.ok(err.message.includes(`'${key}'`), err.message);
        assert.ok(err.message.includes(`did you mean '${guess}'`), err.message);
        return true;
      });
    });
  }
});

describe("one builder of this program's argv (item 28)", () => {
  test('restartViaExec of a `node -e` program keeps its arguments as they were', async () => {
    const code = `
      const { restartViaExec } = require('posix-daemon/autorestart');
      if (!process.env.RESTARTED) {
        process.env.RESTARTED = '1';
        restartViaExec();
      } else {
        console.log(JSON.stringify({ pid: process.pid, argv: process.argv.slice(1) }));
      }`;
    const r = await runNode('-e', [code, 'a', 'b c'], { cwd: join(tmp, 'project'), env: baseEnv, reaper });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.pid, r.pid, 'restarted in place');
    assert.deepEqual(out.argv, ['a', 'b c']);
  });
});
