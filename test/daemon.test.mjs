// daemonize(): real double-forked daemons, checked through /proc.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  Reaper, fixtures, root, isAlive, zombieChildren, procStat, procEnv, procFds, procCwd, procStatus, runNode, straceCalls, waitFor,
} from './helpers.mjs';
import { daemonize } from '../dist/index.mjs';
import { childPids, getsid } from '../dist/posix.mjs';

const app = join(fixtures, 'daemon-app.mjs');
const ENV_KEY = 'POSIX_DAEMON_TEST_DAEMON';
const reaper = new Reaper();
const everyPid = new Set();
const tmp = mkdtempSync(join(tmpdir(), 'posix-daemon-test-'));

function track(pid) {
  everyPid.add(pid);
  return reaper.add(pid);
}

after(async () => {
  await reaper.killAll();
  rmSync(tmp, { recursive: true, force: true });
  const left = [...everyPid].filter(isAlive);
  assert.deepEqual(left, [], 'no daemon may outlive the tests');
});

/** The foreground's environment: known PATH/HOME/USER plus a variable that must not leak. */
const baseEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  USER: 'posix-daemon-tester',
  LEAK_ME: 'secret',
};

function run(mode, opts = {}, { env = baseEnv, ...rest } = {}) {
  return runNode(app, [mode, JSON.stringify(opts)], { env, reaper, ...rest }).then((r) => {
    for (const m of r.stdout.matchAll(/^(?:PID|ERROR) (\d+)/gm)) if (Number(m[1]) > 0) track(Number(m[1]));
    return r;
  });
}

function daemonPid(stdout) {
  const m = /^PID (\d+)$/m.exec(stdout);
  assert.ok(m, `expected a PID line, got: ${stdout}`);
  return Number(m[1]);
}

function failure(r) {
  const m = /^ERROR (\d+) (.*)$/m.exec(r.stdout);
  assert.ok(m, `expected an ERROR line, got: ${r.stdout} ${r.stderr}`);
  return { pid: Number(m[1]), ...JSON.parse(m[2]) };
}

/**
 * Problems if `pid` still holds the readiness pipe it inherited as `fd`.
 * The number alone does not say: once closed it may be taken again, by a new
 * socket or by Node's own pipes (Node 26 opens more of them, some late). So
 * the fd must be gone, or be some other pipe: not `pipe` when that is known,
 * else one whose other end this process holds too (the readiness pipe's read
 * end was the foreground's).
 */
function readinessStillHeld(pid, fd, pipe) {
  const fds = procFds(pid);
  if (pipe !== undefined) {
    const held = Object.entries(fds).filter(([, t]) => t === pipe).map(([n]) => n);
    return held.length ? `${pipe} still open as fd ${held.join(', ')}` : null;
  }
  const t = fds[fd];
  if (t === undefined) return null;
  const pair = Object.values(fds).filter((x) => x === t).length >= 2;
  return pair ? null : `fd ${fd} is still ${t}`;
}

/** A loopback server the daemon calls back before it reports: lets a test hold the daemon at a point. */
async function gate() {
  const conns = [];
  let notify;
  const server = createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d) => {
      buf += d;
      const m = /DAEMON (\d+)\n/.exec(buf);
      if (m && !s.pid) {
        s.pid = track(Number(m[1]));
        conns.push(s);
        notify?.();
      }
    });
    s.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  return {
    port: server.address().port,
    async next() {
      if (conns.length === 0) await new Promise((r) => { notify = r; });
      const s = conns.shift();
      return { pid: s.pid, go: () => s.end('go\n') };
    },
  };
}

describe('foreground', () => {
  test('resolves with the PID only after the report; the daemon is a proper daemon', async () => {
    const g = await gate();
    const fg = run('ok', { gatePort: g.port });
    const d = await g.next();
    // Held before its report: the foreground is still waiting. While it
    // waits it is a subreaper, so the daemon is re-parented to it.
    const fgPid = procStat(d.pid).ppid;
    track(fgPid);
    assert.ok(isAlive(fgPid), 'foreground waits for the report');
    // The readiness pipe as the daemon holds it before reporting.
    // (In /proc, the value the daemon was started with: the lifeline follows the address.)
    const readinessFd = /^fd:(\d+);posix-daemon-lifeline=/.exec(procEnv(d.pid)[ENV_KEY])?.[1];
    const readinessPipe = procFds(d.pid)[readinessFd];
    assert.match(readinessPipe ?? '', /^pipe:\[\d+\]$/, `fd ${readinessFd} is the readiness pipe`);
    assert.match(readFileSync(`/proc/${fgPid}/cmdline`, 'latin1'), /daemon-app\.mjs/);
    d.go();
    const r = await fg;
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r.stdout);
    assert.equal(pid, d.pid);
    assert.ok(isAlive(pid), 'the daemon keeps running after the foreground exits');

    const st = procStat(pid);
    assert.notEqual(st.ppid, fgPid, 'parent is not the foreground');
    assert.notEqual(st.ppid, process.pid);
    assert.notEqual(st.session, pid, 'not a session leader (double fork)');
    assert.notEqual(st.pgrp, pid, 'not a process group leader');
    assert.notEqual(st.session, getsid(0), 'a new session');
    assert.equal(st.ttyNr, 0, 'no controlling terminal');
    assert.equal(procCwd(pid), '/');
    // The foreground may see the report before the daemon's report() has
    // closed its end: the daemon calls back once report() has returned (on a
    // new socket, which may well take the freed fd number: Node 26's own
    // pipes did too).
    const reported = await g.next();
    assert.equal(reported.pid, pid);
    reported.go();
    // Until it is ready its stderr goes to a file the foreground reads if it
    // dies; once the foreground said "ready", back to /dev/null.
    await waitFor(() => procFds(pid)['2'] === '/dev/null', { what: 'stderr back on /dev/null' });
    const fds = procFds(pid);
    for (const fd of ['0', '1', '2']) assert.equal(fds[fd], '/dev/null', `fd ${fd}`);
    const env = procEnv(pid);
    // As in Go: nothing but these (the lifeline rides in the key's value).
    assert.deepEqual(Object.keys(env).sort(), ['HOME', 'PATH', ENV_KEY, 'USER'].sort());
    assert.equal(env.USER, baseEnv.USER);
    assert.equal(env.PATH, baseEnv.PATH);
    assert.match(env[ENV_KEY], /^fd:\d+;posix-daemon-lifeline=[\w-]+$/, 'the readiness pipe address, then the lifeline');
    // The readiness pipe's write end was closed after the report.
    assert.ok(env[ENV_KEY].startsWith(`fd:${readinessFd};`));
    assert.equal(readinessStillHeld(pid, readinessFd, readinessPipe), null, 'closed after reporting');
  });

  test('options: env object, cwd, umask, stdout/stderr appended to files', async () => {
    const out = join(tmp, 'out.log');
    const errLog = join(tmp, 'err.log');
    writeFileSync(out, 'line before\n');
    const dir = realpathSync(tmp);
    const r = await run('ok', { env: { ONLY: 'this' }, cwd: dir, umask: 0o027, stdout: out, stderr: errLog });
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r.stdout);
    const env = procEnv(pid);
    // Exactly the object, plus envKey and where its log files are (for reopenLogs).
    assert.deepEqual(Object.keys(env).sort(), ['ONLY', 'POSIX_DAEMON_LOGS', ENV_KEY].sort());
    assert.deepEqual(JSON.parse(env.POSIX_DAEMON_LOGS), { 1: out, 2: errLog });
    assert.equal(procCwd(pid), dir);
    assert.equal(procStatus(pid).Umask, '0027');
    const fds = procFds(pid);
    assert.equal(fds['0'], '/dev/null');
    assert.equal(fds['1'], out);
    assert.equal(fds['2'], errLog);
    // It reported after writing, so the lines are there now.
    assert.equal(readFileSync(out, 'utf8'), 'line before\nhello from the daemon\n');
    assert.equal(readFileSync(errLog, 'utf8'), 'daemon stderr line\n');
  });

  test("env: 'inherit' passes the whole environment plus envKey", async () => {
    const r = await run('ok', { env: 'inherit' });
    assert.equal(r.code, 0, r.stderr);
    const env = procEnv(daemonPid(r.stdout));
    assert.equal(env.LEAK_ME, 'secret');
    assert.deepEqual(Object.keys(env).sort(), [...Object.keys(baseEnv), ENV_KEY].sort());
  });

  test('an fd the foreground made inheritable reaches the daemon only through keepFds', async () => {
    const file = join(tmp, 'inheritable.txt');
    writeFileSync(file, 'x');
    const without = await run('ok', { inheritFile: file });
    assert.equal(without.code, 0, without.stderr);
    assert.match(without.stdout, /^INHERITABLE \d+$/m);
    const leaked = Object.values(procFds(daemonPid(without.stdout))).filter((t) => t === file);
    assert.deepEqual(leaked, [], 'not inherited by default');

    const kept = await run('ok', { inheritFile: file, keepInherited: true });
    assert.equal(kept.code, 0, kept.stderr);
    const fd = /^INHERITABLE (\d+)$/m.exec(kept.stdout)[1];
    assert.equal(procFds(daemonPid(kept.stdout))[fd], file, 'kept under the same number');
  });

  test('a daemon that reports an error: the foreground rejects with its message, the daemon is gone', async () => {
    const r = await run('fail');
    assert.equal(r.code, 1);
    const e = failure(r);
    assert.equal(e.message, 'database unreachable');
    assert.ok(e.pid > 0);
    assert.equal(isAlive(e.pid), false, 'killed and reaped by the foreground');
  });

  test('a daemon that exits with code 3 before reporting: the rejection says so', async () => {
    const r = await run('exit3');
    assert.equal(r.code, 1);
    const e = failure(r);
    assert.match(e.message, /exited with code 3 before it was ready/);
    assert.equal(e.code, 'ERR_DAEMON_EXITED');
    assert.equal(isAlive(e.pid), false);
  });

  test('a daemon that hangs is killed when the timeout passes', async () => {
    const r = await run('hang', { timeout: 1500 });
    assert.equal(r.code, 1);
    const e = failure(r);
    assert.equal(e.code, 'ETIMEDOUT');
    assert.match(e.message, /did not report readiness within 1500 ms/);
    assert.equal(isAlive(e.pid), false, 'no orphan left running');
  });

  test('a daemon that hangs is killed when the signal aborts', async () => {
    const g = await gate();
    const fg = run('hang', { gatePort: g.port, abortOnSigusr2: true });
    const d = await g.next();
    const fgPid = procStat(d.pid).ppid;
    track(fgPid);
    process.kill(fgPid, 'SIGUSR2');
    const r = await fg;
    assert.equal(r.code, 1, r.stderr);
    const e = failure(r);
    assert.equal(e.name, 'AbortError');
    assert.equal(e.code, 'ABORT_ERR');
    assert.equal(e.cause, 'aborted by SIGUSR2');
    assert.equal(e.pid, 0);  // an AbortError carries no pid: check the one we know
    assert.equal(isAlive(d.pid), false, 'no orphan left running');
  });

  test('http transport (Go-compatible envValue + ready): ready and early death', async () => {
    const ok = await run('ok', { transport: 'http' });
    assert.equal(ok.code, 0, ok.stderr);
    const env = procEnv(daemonPid(ok.stdout));
    assert.match(env[ENV_KEY], /^http:\/\/127\.0\.0\.1:\d+\/[\w-]{22,};posix-daemon-lifeline=[\w-]+$/);

    // No pipe EOF here: the exit status comes from being its subreaper.
    const dead = await run('exit3', { transport: 'http' });
    assert.equal(dead.code, 1);
    assert.match(failure(dead).message, /exited with code 3/);
  });
});

test("Go's example, ported literally: envValue: rx.address + ready: rx.wait with the default (pipe) receiver", async () => {
  const r = await runNode(join(fixtures, 'daemon-go-example.mjs'), ['--background'], { env: baseEnv, reaper });
  const m = /^PID (\d+)$/m.exec(r.stdout);
  if (m) track(Number(m[1]));
  assert.equal(r.code, 0, r.stderr);
  assert.ok(m, r.stdout);
  const pid = Number(m[1]);
  assert.ok(isAlive(pid), 'the daemon runs');
  const env = procEnv(pid);
  // The pipe address, as given (the lifeline follows it in the value it was started with).
  const readinessFd = /^fd:(\d+);posix-daemon-lifeline=[\w-]+$/.exec(env.DAEMONIZE_ENVKEY)?.[1];
  assert.ok(readinessFd, env.DAEMONIZE_ENVKEY);
  // It inherited the write end under that number, and report() closed it,
  // right after the write the foreground waited for: wait for the close
  // (issue 16, item 29; the number may be reused at once, as Node 26 does).
  await waitFor(() => readinessStillHeld(pid, readinessFd) === null, { what: 'the daemon to close the readiness fd' });
  assert.notEqual(procStat(pid).session, pid, 'a proper daemon');
  process.kill(pid, 'SIGINT');  // <-ctx.Done()
  await waitFor(() => !isAlive(pid), { what: 'the daemon to end on SIGINT' });
});

test("Go's example with -background -self-monitor, ported literally: the worker reports to the foreground and to the monitor", async () => {
  const script = join(fixtures, 'daemon-go-monitor-example.mjs');
  // Should it fail, the daemon would keep restarting its worker: find every
  // copy of the program by its command line, so the reaper stops them all.
  after(() => {
    for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(script)) track(Number(p));
      } catch {
        // gone
      }
    }
  });
  const r = await runNode(script, ['--background', '--self-monitor'], { env: baseEnv, reaper });
  const m = /^PID (\d+)$/m.exec(r.stdout);
  if (m) track(Number(m[1]));
  assert.equal(r.code, 0, r.stderr);
  assert.ok(m, r.stdout);
  const daemon = Number(m[1]);
  // The foreground heard from the worker: it is running, the monitor's child.
  const [worker] = childPids(daemon);
  assert.ok(worker, 'the monitor has a worker');
  track(worker);
  assert.ok(isAlive(daemon) && isAlive(worker));
  const readinessFd = procEnv(worker).DAEMONIZE_ENVKEY.slice(3);
  // report() writes "ready\n" and then closes the fd: the foreground can read
  // the line, print and exit, and we can get here, before the worker's close()
  // ran (issue 16, item 29: seen on a loaded machine). Wait for the close.
  // The monitor inherited the same pipe under the same number: that names it.
  const pipe = procFds(daemon)[readinessFd];
  await waitFor(() => readinessStillHeld(worker, readinessFd, pipe?.startsWith('pipe:') ? pipe : undefined) === null,
    { what: 'the worker to close the readiness fd' });
  // The worker inherited the daemon's stderr capture (it was started before
  // the daemon was ready); its daemonize() let go of it: /dev/null, not a
  // deleted file that grows for as long as it runs.
  await waitFor(() => procFds(worker)['2'] === '/dev/null', { what: "the worker's stderr on /dev/null" });
  assert.equal(procFds(daemon)['2'], '/dev/null');
  process.kill(daemon, 'SIGINT');  // the monitor stops its worker (SIGINT), then exits
  await waitFor(() => !isAlive(daemon) && !isAlive(worker), { what: 'monitor and worker to stop' });
});

test('Go shape with a pipe receiver: a daemon that dies early is reported with its exit status', async () => {
  const r = await run('exit3', { transport: 'pipe' });
  assert.equal(r.code, 1);
  const e = failure(r);
  assert.equal(e.code, 'ERR_DAEMON_EXITED');
  assert.match(e.message, /exited with code 3 before it was ready/);
});

test("NODE_OPTIONS preloads named relative to the foreground's directory work in the daemon", async () => {
  // A directory with a space: the absolute paths must be quoted NODE_OPTIONS-style.
  const dir = realpathSync(mkdtempSync(join(tmp, 'node options ')));
  for (const ext of ['cjs', 'mjs']) {
    writeFileSync(join(dir, `setup.${ext}`), ext === 'cjs'
      ? "require('node:fs').appendFileSync(__dirname + '/preloaded.log', `cjs ${process.pid}\\n`);\n"
      : "import { appendFileSync } from 'node:fs';\n" +
        "appendFileSync(new URL('./preloaded.log', import.meta.url), `mjs ${process.pid}\\n`);\n");
  }
  const nodeOptions = '--require "./setup.cjs"  --import=./setup.mjs';
  const r = await run('ok', {}, { env: { ...baseEnv, NODE_OPTIONS: nodeOptions }, cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const pid = daemonPid(r.stdout);
  const log = readFileSync(join(dir, 'preloaded.log'), 'utf8');
  assert.match(log, new RegExp(`^cjs ${pid}$`, 'm'), 'the --require preload ran in the daemon');
  assert.match(log, new RegExp(`^mjs ${pid}$`, 'm'), 'the --import preload ran in the daemon');
  const env = procEnv(pid);
  assert.deepEqual(Object.keys(env).sort(), ['HOME', 'NODE_OPTIONS', 'PATH', ENV_KEY, 'USER'].sort());
  // Parsed and re-serialised: the path with a space quoted, the URL (%20) not.
  assert.equal(env.NODE_OPTIONS,
    `--require "${join(dir, 'setup.cjs')}" --import=${pathToFileURL(join(dir, 'setup.mjs')).href}`);
  assert.equal(procCwd(pid), '/');
});

describe('after success', () => {
  test('a foreground that does not call exit ends by itself (nothing holds it open)', async () => {
    const r = await run('ok', { afterReady: 'return' });
    assert.equal(r.signal, null, 'ended by itself');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(isAlive(daemonPid(r.stdout)));
  });

  test('a foreground that keeps running reaps the daemon: no zombie', async () => {
    const fg = spawn(process.execPath, [app, 'ok', JSON.stringify({ afterReady: 'stay' })],
      { env: baseEnv, stdio: ['ignore', 'pipe', 'inherit'] });
    const fgPid = track(fg.pid);
    let out = '';
    fg.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    const closed = new Promise((resolve) => fg.on('close', resolve));
    const pid = track(Number((await waitFor(() => /^PID (\d+)$/m.exec(out), { what: 'PID line' }))[1]));
    // Ready and still running: the daemon stays its child (adopted while
    // the foreground was a subreaper), so the foreground must reap it.
    assert.equal(procStat(pid).ppid, fgPid);
    await waitFor(() => out.includes('SUBREAPER'), { what: 'SUBREAPER line' });
    assert.match(out, /^SUBREAPER false$/m, 'the subreaper flag is restored');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => procStat(pid) === null, { what: 'the daemon to be reaped, not left a zombie' });
    assert.deepEqual(zombieChildren(fgPid), []);
    assert.ok(isAlive(fgPid), 'the foreground is still running');
    fg.kill('SIGKILL');
    await closed;
  });
});

test('examples/daemon.ts runs under tsx and daemonizes (the --import is resolved for cwd /)', async () => {
  const r = await runNode(join(root, 'examples', 'daemon.ts'), ['--background'],
    { env: baseEnv, nodeArgs: ['--import', 'tsx'], cwd: root, reaper });
  const m = /daemon started: PID (\d+)/.exec(r.stdout);
  assert.ok(m, r.stdout + r.stderr);
  const pid = track(Number(m[1]));
  assert.equal(r.code, 0, r.stderr);
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
  assert.equal(argv[1], '--import');
  assert.match(argv[2], /^file:\/\/\/.*\/tsx\/.*loader\.mjs$/);
  assert.equal(argv[3], join(root, 'examples', 'daemon.ts'));
  assert.equal(argv[4], '--background');
  assert.equal(procCwd(pid), '/');
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !isAlive(pid), { what: 'the example daemon to stop on SIGTERM' });
});

describe('background', () => {
  test('a process that already has envKey stays in the background: no second daemon', async () => {
    for (const value of ['reported:fd:7', 'fd:9', 'http://127.0.0.1:1/']) {
      const r = await run('ok-exit', {}, { env: { ...baseEnv, [ENV_KEY]: value } });
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /PID/, `value ${value}: no daemon started`);
    }
  });
});

test('strace: fork/clone → setsid → fork/clone → execve', async (t) => {
  const strace = ['/usr/bin/strace', '/bin/strace'].find(existsSync);
  if (!strace) {
    t.skip('strace is not installed (.ci/run installs it)');
    return;
  }
  const log = join(tmp, 'strace.log');
  // 'ok-exit': the daemon ends after reporting, so strace (which follows it) ends too.
  const r = spawnSync(strace, ['-f', '-qq', '-s', '4096', '-o', log, '-e', 'trace=clone,clone3,fork,vfork,setsid,execve',
    process.execPath, app, 'ok-exit', '{}'], { env: baseEnv, encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  const pid = daemonPid(r.stdout);
  track(pid);

  const lines = straceCalls(log);
  const isProcessClone = (l) => /^(clone3?|fork|vfork)\(/.test(l.text) && !l.text.includes('CLONE_THREAD') &&
    /= (\d+)$/.test(l.text);
  const childOf = (l) => Number(/= (\d+)$/.exec(l.text)[1]);

  const foreground = lines.find((l) => l.text.startsWith('execve(')).pid;
  const i1 = lines.findIndex((l) => l.pid === foreground && isProcessClone(l));
  assert.ok(i1 >= 0, 'the foreground forks');
  const middle = childOf(lines[i1]);
  const i2 = lines.findIndex((l, i) => i > i1 && l.pid === middle && /^setsid\(\)\s*= \d+/.test(l.text));
  assert.ok(i2 > i1, 'the first child calls setsid');
  const i3 = lines.findIndex((l, i) => i > i2 && l.pid === middle && isProcessClone(l));
  assert.ok(i3 > i2, 'then forks again');
  assert.equal(childOf(lines[i3]), pid, 'the grandchild is the daemon');
  const i4 = lines.findIndex((l, i) => i > i3 && l.pid === pid && l.text.startsWith('execve('));
  assert.ok(i4 > i3, 'the grandchild execs');
  assert.ok(lines[i4].text.includes(app), 'the same main script');
  assert.equal(lines.findIndex((l) => l.pid === pid && l.text.startsWith('setsid(')), -1,
    'the daemon itself never calls setsid: it is not a session leader');
});

describe('validation', () => {
  const key = 'POSIX_DAEMON_TEST_UNUSED_KEY';
  const cases = [
    [undefined, 'ERR_INVALID_ARG_TYPE'],
    [null, 'ERR_INVALID_ARG_TYPE'],
    ['opts', 'ERR_INVALID_ARG_TYPE'],
    [{}, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: 5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: '' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: 'A=B' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: 'A\0B' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, envValue: '' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, envValue: 7 }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, envValue: 'a\0b' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, envValue: 'v', ready: 'yes' }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, ready: async () => {} }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, signal: {} }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, timeout: '5' }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, timeout: -1 }, 'ERR_OUT_OF_RANGE'],
    [{ envKey: key, timeout: Infinity }, 'ERR_OUT_OF_RANGE'],
    [{ envKey: key, env: 'all' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, env: 5 }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, env: { A: 1 } }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, cwd: '' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, cwd: 3 }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, umask: '022' }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, umask: 0o1000 }, 'ERR_OUT_OF_RANGE'],
    [{ envKey: key, stdout: 1 }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, stderr: '' }, 'ERR_INVALID_ARG_VALUE'],
    [{ envKey: key, keepFds: 'x' }, 'ERR_INVALID_ARG_TYPE'],
    [{ envKey: key, keepFds: [1] }, 'ERR_OUT_OF_RANGE'],
  ];
  for (const [options, code] of cases) {
    const label = (() => {
      try {
        return JSON.stringify(options, (k, v) => (typeof v === 'function' ? '[Function]' : v)) ?? String(options);
      } catch {
        return String(options);
      }
    })();
    test(`${label} → ${code}, nothing launched`, async () => {
      const before = childPids(process.pid);
      await assert.rejects(daemonize(options), (err) => {
        assert.equal(err.code, code);
        assert.ok(err instanceof (code === 'ERR_OUT_OF_RANGE' ? RangeError : TypeError));
        return true;
      });
      assert.deepEqual(childPids(process.pid), before);
    });
  }

  test('an already aborted signal rejects with an AbortError, nothing launched', async () => {
    const before = childPids(process.pid);
    await assert.rejects(daemonize({ envKey: key, signal: AbortSignal.abort('no') }), { name: 'AbortError', cause: 'no' });
    assert.deepEqual(childPids(process.pid), before);
  });
});
