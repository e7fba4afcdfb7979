// Shared by the workers tests and bench/workers.mjs: a monitored service
// started as a real process, and a keep-alive HTTP load that counts every
// failed request.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { fixtures } from './helpers.mjs';

/** Starts test/fixtures/workers-app.cjs; lines are parsed as they come. */
export function startService(env, { script = join(fixtures, 'workers-app.cjs'), reaper } = {}) {
  const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  reaper?.add(child.pid);
  const svc = {
    child,
    pid: child.pid,
    events: [],
    lines: [],
    stderr: '',
    waiters: [],
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
    /** Resolves with the first line (past or future) matching `re`, after `from` lines. */
    line(re, { from = 0 } = {}) {
      const found = svc.lines.slice(from).find((l) => re.test(l));
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        svc.waiters.push({ re, resolve });
        svc.exited.then(() => setImmediate(() => reject(new Error(`service exited before a line matching ${re}\n${svc.lines.join('\n')}\n${svc.stderr}`))));
      });
    },
    event(pred, opts) {
      return svc.line(/^EVENT /, opts).then(() => svc.waitEvent(pred));
    },
    waitEvent(pred) {
      const hit = svc.events.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        svc.waiters.push({ pred, resolve });
        svc.exited.then(() => setImmediate(() => reject(new Error(`service exited before the event\n${svc.lines.join('\n')}\n${svc.stderr}`))));
      });
    },
  };
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      svc.lines.push(l);
      let ev;
      if (l.startsWith('EVENT ')) {
        ev = JSON.parse(l.slice(6));
        svc.events.push(ev);
        if (ev.pid) reaper?.add(ev.pid);
      }
      const m = /^WORKER (\d+)/.exec(l);
      if (m) reaper?.add(Number(m[1]));
      svc.waiters = svc.waiters.filter((w) => {
        if (w.re && w.re.test(l)) { w.resolve(l); return false; }
        if (w.pred && ev && w.pred(ev)) { w.resolve(ev); return false; }
        return true;
      });
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d) => { svc.stderr += d; });
  return svc;
}

/**
 * `concurrency` loops of keep-alive GETs until `signal` aborts. Counts
 * served requests per answering PID (the body's first word), failures with
 * their error codes, and the slowest request.
 */
export async function load(port, { concurrency = 8, signal, path = '/' } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const stats = { ok: 0, failed: 0, errors: {}, byPid: {}, bodies: {}, maxLatency: 0 };
  const one = () => new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; });
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (ms > stats.maxLatency) stats.maxLatency = ms;
        if (res.statusCode === 200) {
          stats.ok++;
          const pid = body.split(' ')[0];
          stats.byPid[pid] = (stats.byPid[pid] ?? 0) + 1;
          stats.bodies[body.split(' ')[1]] = (stats.bodies[body.split(' ')[1]] ?? 0) + 1;
        } else {
          stats.failed++;
          stats.errors[`HTTP ${res.statusCode}`] = (stats.errors[`HTTP ${res.statusCode}`] ?? 0) + 1;
        }
        resolve();
      });
      res.on('error', (err) => { stats.failed++; stats.errors[err.code ?? err.message] = (stats.errors[err.code ?? err.message] ?? 0) + 1; resolve(); });
    });
    req.on('error', (err) => {
      stats.failed++;
      stats.errors[err.code ?? err.message] = (stats.errors[err.code ?? err.message] ?? 0) + 1;
      resolve();
    });
  });
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (!signal.aborted) await one();
  }));
  agent.destroy();
  return stats;
}
