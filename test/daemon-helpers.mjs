// What the daemonize() test files share: the fixture app, the foreground's
// environment, its ERROR line, and a gate the daemon reports its PID to.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fixtures } from './helpers.mjs';
import { openProcess } from '../dist/index.mjs';

export const daemonApp = join(fixtures, 'daemon-app.mjs');
export const DAEMON_ENV_KEY = 'POSIX_DAEMON_TEST_DAEMON';

/** The foreground's environment: known PATH/HOME/USER plus a variable that must not leak. */
export const daemonBaseEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  USER: 'posix-daemon-tester',
  LEAK_ME: 'secret',
};

/** The foreground's "ERROR <pid> <json>" line, parsed. */
export function failureLine(r) {
  const m = /^ERROR (\d+) (.*)$/m.exec(r.stdout);
  assert.ok(m, `expected an ERROR line, got: ${r.stdout} ${r.stderr}`);
  return { pid: Number(m[1]), ...JSON.parse(m[2]) };
}

/**
 * The daemon connects here before it does what its mode says: the test
 * learns its PID (registered with `reaper`) while the foreground waits.
 */
export async function daemonGate(reaper) {
  const waiting = [];
  const conns = [];
  const server = createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('error', () => {});
    s.on('data', (d) => {
      buf += d;
      const m = /DAEMON (\d+)\n/.exec(buf);
      if (m && !s.pid) {
        s.pid = reaper.add(Number(m[1]));
        const w = waiting.shift();
        if (w) w(s);
        else conns.push(s);
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  return {
    port: server.address().port,
    next: () => (conns.length > 0 ? Promise.resolve(conns.shift()) : new Promise((r) => waiting.push(r))),
  };
}

/**
 * Resolves once `pid` has ended (a pidfd: no polling). The limit is a safety
 * net so that a daemon that stays fails the test instead of hanging it.
 */
export function processEnded(pid, limit = 20000) {
  let h;
  try {
    h = openProcess(pid);
  } catch (err) {
    if (err.code === 'ESRCH') return Promise.resolve();
    throw err;
  }
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`process ${pid} is still running`)), limit);
  });
  return Promise.race([h.exited, late]).finally(() => { clearTimeout(timer); h.close(); });
}
