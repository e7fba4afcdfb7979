// daemonize(): issue 22's items on the daemon and its readiness, each
// reproduced with real daemons, checked through /proc, real sockets and files.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import http from 'node:http';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, freePort, isAlive, procEnv, procStat, runNode, waitFor } from './helpers.mjs';
import { daemonApp, daemonBaseEnv, daemonGate, DAEMON_ENV_KEY, failureLine, processEnded } from './daemon-helpers.mjs';
import { childPids } from '../dist/posix.mjs';

const app = daemonApp;
const ENV_KEY = DAEMON_ENV_KEY;
const { reaper, dir } = fileScope('posix-daemon-issue22-');
const tmp = realpathSync(dir);

const baseEnv = daemonBaseEnv;

function run(mode, opts = {}, { env = baseEnv, ...rest } = {}) {
  return runNode(app, [mode, JSON.stringify(opts)], { env, reaper, ...rest });
}

function daemonPid(r) {
  const m = /^PID (\d+)$/m.exec(r.stdout);
  assert.ok(m, `expected a PID line, got: ${r.stdout} ${r.stderr}`);
  return reaper.add(Number(m[1]));
}

const failure = failureLine;

const ended = processEnded;

const gate = () => daemonGate(reaper);

async function stop(pid) {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  await ended(pid);
}

describe('item 10: a foreground that dies while it waits leaves no PID file', () => {
  for (const signal of ['SIGINT', 'SIGKILL']) {
    test(`${signal} to the foreground waiting for a not-ready daemon: no PID file is left behind`, async () => {
      const pidFile = join(tmp, `fg-${signal}.pid`);
      const g = await gate();
      const fg = run('hang', { gatePort: g.port, pidFile });
      const d = await g.next();
      const fgPid = reaper.add(procStat(d.pid).ppid);
      // The daemon holds the file, with its own PID, while the foreground waits.
      assert.equal(readFileSync(pidFile, 'utf8').trim(), String(d.pid));
      process.kill(fgPid, signal);
      const r = await fg;
      assert.equal(r.signal, signal);
      await ended(d.pid);
      assert.equal(existsSync(pidFile), false, 'the PID file is gone with the daemon');
      d.destroy();
    });
  }
});

describe('item 11: NODE_DEBUG reaches the daemon', () => {
  test("NODE_DEBUG=posix-daemon with env: 'minimal': the daemon's own debug lines are in its stderr file", async () => {
    const log = join(tmp, 'debug.err');
    const r = await run('serve', { stderr: log }, { env: { ...baseEnv, NODE_DEBUG: 'posix-daemon' } });
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r);
    assert.equal(procEnv(pid).NODE_DEBUG, 'posix-daemon');
    const lines = readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith(`POSIX-DAEMON ${pid}: `));
    assert.ok(lines.some((l) => /daemonize: .* running in the background/.test(l)), `debug lines of the daemon, got:\n${lines.join('\n')}`);
    assert.equal(procEnv(pid).LEAK_ME, undefined, 'nothing else leaks');
    await stop(pid);
  });
});

describe("item 12: the daemon's environment is PATH, USER, HOME and the key", () => {
  test('no POSIX_DAEMON_LIFELINE in /proc/PID/environ; the lifeline still works', async () => {
    const g = await gate();
    const fg = run('hang', { gatePort: g.port });
    const d = await g.next();
    assert.deepEqual(Object.keys(procEnv(d.pid)).sort(), ['HOME', 'PATH', ENV_KEY, 'USER'].sort());
    // The lifeline is still there: the daemon ends with its foreground.
    const fgPid = reaper.add(procStat(d.pid).ppid);
    process.kill(fgPid, 'SIGKILL');
    await fg;
    await ended(d.pid);
    d.destroy();
  });

  test('a ready daemon: the same four variables', async () => {
    const r = await run('serve');
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r);
    assert.deepEqual(Object.keys(procEnv(pid)).sort(), ['HOME', 'PATH', ENV_KEY, 'USER'].sort());
    await stop(pid);
  });
});

describe("item 20: a daemon's failure keeps its code, and says where its log is", () => {
  async function busyPort() {
    const busy = createServer();
    await new Promise((r) => busy.listen(0, '127.0.0.1', r));
    after(() => busy.close());
    return busy.address().port;
  }

  for (const transport of ['pipe', 'http']) {
    test(`EADDRINUSE reaches the foreground as an error with code, errno, syscall, address and port (${transport})`, async () => {
      const port = await busyPort();
      // The default readiness pipe, or Go's shape with an http receiver.
      const r = await run('listen', { port, ...(transport === 'http' ? { transport } : {}) });
      assert.equal(r.code, 1);
      const e = failure(r);
      assert.equal(e.code, 'EADDRINUSE');
      assert.equal(e.syscall, 'listen');
      assert.equal(typeof e.errno, 'number');
      assert.ok(e.errno < 0);
      assert.equal(e.address, '127.0.0.1');
      assert.equal(e.port, port);
      assert.match(e.message, /EADDRINUSE/);
      assert.equal(isAlive(e.pid), false);
    });
  }

  test('with a stderr file, the error names it (stderrFile and the message)', async () => {
    const port = await busyPort();
    const log = join(tmp, 'eaddrinuse.err');
    const r = await run('listen', { port, stderr: log });
    const e = failure(r);
    assert.equal(e.code, 'EADDRINUSE');
    assert.equal(e.stderrFile, log);
    assert.ok(e.message.includes(log), e.message);
    assert.match(readFileSync(log, 'utf8'), /cannot listen: .*EADDRINUSE/);
    // Also when it dies before a report.
    const crash = failure(await run('crash', { stderr: log }));
    assert.equal(crash.code, 'ERR_DAEMON_EXITED');
    assert.equal(crash.stderrFile, log);
    assert.ok(crash.message.includes(log), crash.message);
  });
});

describe('item 7: daemonize() + selfMonitor({ workers }): the daemon is ready once every worker is', () => {
  const script = join(fixtures, 'daemon-workers.mjs');
  // Should a test fail, the daemon's monitor would keep its workers: find
  // every copy of the program by its command line, so the reaper stops them.
  after(() => {
    for (const p of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
      try {
        if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(script)) reaper.add(Number(p));
      } catch {
        // gone
      }
    }
  });

  function get(port) {
    return new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve(body));
      }).on('error', reject);
    });
  }

  test("the README's two snippets composed: the foreground returns once both workers serve", async () => {
    const port = await freePort();
    const r = await runNode(script, [JSON.stringify({ port, workers: 2 })], { env: baseEnv, reaper });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const pid = daemonPid(r);
    const workers = childPids(pid);
    for (const w of workers) reaper.add(w);
    assert.equal(workers.length, 2, 'two workers, both started before the foreground returned');
    // They serve the monitor's socket now: no retry needed.
    const m = /^hello from (\d+)$/m.exec(await get(port));
    assert.ok(m && workers.includes(Number(m[1])), 'a worker answered');
    await stop(pid);
    for (const w of workers) await ended(w);
  });

  test("a pool that cannot come up: the foreground rejects with the monitor's error and nothing is left", async () => {
    const port = await freePort();
    const r = await runNode(script, [JSON.stringify({ port, workers: 2, fail: 'exit', maxRestarts: 1 })], { env: baseEnv, reaper });
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
    const e = failure(r);
    assert.equal(e.code, 'ERR_MONITOR_RESTART_LIMIT', e.message);
    assert.match(e.message, /giving up/);
    await ended(e.pid);
  });
});

describe('item 24: no readiness secret where it does not belong', () => {
  test('NODE_DEBUG=posix-daemon never prints the HTTP receiver\'s token (foreground nor daemon)', async () => {
    const log = join(tmp, 'http-debug.err');
    const r = await run('ok', { transport: 'http', stderr: log }, { env: { ...baseEnv, NODE_DEBUG: 'posix-daemon' } });
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r);
    const token = /^http:\/\/127\.0\.0\.1:\d+\/([A-Za-z0-9_-]{20,})/.exec(procEnv(pid)[ENV_KEY])?.[1];
    assert.ok(token, procEnv(pid)[ENV_KEY]);
    assert.match(r.stderr, /POSIX-DAEMON \d+: initstatus http http:\/\/127\.0\.0\.1:\d+\/…: ready/, 'the receiver logs, without its token');
    assert.equal(r.stderr.includes(token), false, `the foreground's debug lines hold the token:\n${r.stderr}`);
    assert.equal(readFileSync(log, 'utf8').includes(token), false, "the daemon's debug lines hold the token");
    await stop(pid);
  });
});

describe("item 24: the readiness variables are not inherited by the program's own children", () => {
  test("a daemon's child_process.fork(__filename) does not take itself for the daemon", async () => {
    const probeFile = join(tmp, 'fork-probe.json');
    const r = await run('fork-probe', { probeFile });
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r);
    const probe = JSON.parse(await waitFor(() => existsSync(probeFile) && readFileSync(probeFile, 'utf8'), { what: 'the probe' }));
    assert.notEqual(probe.pid, pid);
    assert.equal(probe.key, null, `the child saw ${ENV_KEY}=${probe.key}`);
    await stop(pid);
  });

  test('an in-place exec of the daemon keeps the key: the new image is still the daemon', async () => {
    const probeFile = join(tmp, 'exec-probe.json');
    const r = await run('exec-probe', { probeFile });
    assert.equal(r.code, 0, r.stderr);
    const pid = daemonPid(r);
    const probe = JSON.parse(await waitFor(() => existsSync(probeFile) && readFileSync(probeFile, 'utf8'), { what: 'the probe' }));
    assert.equal(probe.pid, pid, 'the same process');
    assert.equal(probe.foreground, false);
    assert.match(probe.key, /^reported:fd:\d+$/);
    await stop(pid);
  });

  test("a worker's child_process.fork(__filename) sees neither the worker's key nor the daemon's", async () => {
    const script = join(fixtures, 'daemon-workers.mjs');
    const port = await freePort();
    const probeFile = join(tmp, 'worker-probe');
    const r = await runNode(script, [JSON.stringify({ port, workers: 1, probeFile })], { env: baseEnv, reaper });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const pid = daemonPid(r);
    const [worker] = childPids(pid);
    reaper.add(worker);
    const file = `${probeFile}.${worker}`;
    const probe = JSON.parse(await waitFor(() => existsSync(file) && readFileSync(file, 'utf8'), { what: 'the probe' }));
    assert.equal(probe.app, null, `the child saw APP_WORKER=${probe.app}`);
    assert.equal(probe.daemon, null, `the child saw MYAPP_DAEMON=${probe.daemon}`);
    await stop(pid);
    await ended(worker);
  });
});
