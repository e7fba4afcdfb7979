// The interaction matrix: each way users serve (library listen(), a plain
// server.listen(port), listen({ fd }) from listenFds(), Express, Fastify)
// against each lifecycle operation and fault, under keep-alive clients.
// One app, written into a temp dir per cell, configured by its environment.
import http from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { putFile, root, startNode, waitFor } from './helpers.mjs';

export const SERVES = ['listen', 'plain', 'fd', 'express', 'fastify'];

const dist = (name) => pathToFileURL(join(root, 'dist', name)).href;

/** The app: MATRIX_SERVE picks how it listens, MATRIX_TRIGGER what restarts it. */
export function appSource() {
  return `import http from 'node:http';
import { createRequire } from 'node:module';
import { listen, listenFds, restartOnChange, restartOnSignal, restartViaExec } from '${dist('autorestart.mjs')}';
import { gracefulShutdown, selfMonitor } from '${dist('monitor.mjs')}';
import { report } from '${dist('initstatus.mjs')}';
import { version } from './version.mjs';
const require = createRequire(${JSON.stringify(join(root, 'package.json'))});
const { MATRIX_SERVE: serve, MATRIX_TRIGGER: trigger = 'none', MATRIX_WORKERS: workers } = process.env;
const port = Number(process.env.MATRIX_PORT);
const host = '127.0.0.1';

if (process.env.MATRIX_DAEMON) {
  // The README's daemon, composed with its workers: the foreground returns
  // once every worker is ready.
  const { daemonize } = await import('${dist('index.mjs')}');
  const r = await daemonize({ envKey: 'MATRIX_DAEMON_KEY', timeout: 30000, env: 'inherit' });
  if (r.foreground) {
    console.log('DAEMON pid ' + r.pid);
    process.exit(0);
  }
}
gracefulShutdown({ timeout: 8000 });
if (workers) {
  await selfMonitor('MATRIX_WORKER', {
    workers: Number(workers), sockets: [{ name: 'web', port, host }], reloadOn: 'SIGHUP',
    shutdownTimeout: 8000,
  });
}
const body = () => 'v' + version + ' pid ' + process.pid + '\\n';
// /slow answers after 1.5 s: a request in flight when a stop or a restart comes.
const later = (url, fn) => (url.startsWith('/slow') ? setTimeout(fn, 1500) : fn());
const handler = (req, res) => later(req.url, () => res.end(body()));
let server;
if (serve === 'listen') {
  server = http.createServer(handler);
  await listen(server, { port, host, name: 'web' });
} else if (serve === 'plain') {
  server = http.createServer(handler);
  await new Promise((resolve) => server.listen(port, host, resolve));
} else if (serve === 'fd') {
  const [inherited] = listenFds();
  server = http.createServer(handler);
  await new Promise((resolve) => (inherited ? server.listen({ fd: inherited.fd }, resolve) : server.listen(port, host, resolve)));
} else if (serve === 'express') {
  const app = require('express')();
  app.use((req, res) => later(req.url, () => res.send(body())));
  await new Promise((resolve) => { server = app.listen(port, host, resolve); });
} else if (serve === 'fastify') {
  const app = require('fastify')();
  app.get('/*', (req) => new Promise((resolve) => later(req.url, () => resolve(body()))));
  await app.listen({ port, host });
  server = app.server;
}
if (process.env.MATRIX_WORKER) await report(process.env.MATRIX_WORKER);
if (process.env.NOTIFY_SOCKET) (await import('${dist('systemd.mjs')}')).ready();
const options = { servers: [server] };
if (process.env.MATRIX_PREFLIGHT_TIMEOUT) options.preflightTimeout = Number(process.env.MATRIX_PREFLIGHT_TIMEOUT);
// The README's pattern, the promise dropped: a refusal must not end the service.
if (trigger === 'call') process.on('SIGUSR2', () => restartViaExec(options));
if (trigger === 'signal') restartOnSignal('SIGUSR2', options);
if (trigger === 'change') restartOnChange(options);
console.log('READY v' + version + ' pid ' + process.pid);
`;
}

/** A version module: `v` answers; `fault` breaks it the way a bad release does. */
export function versionSource(v, fault) {
  switch (fault) {
    case 'throw-before-listen': return `throw new Error('boom in v${v}');\n`;
    case 'syntax-error': return `export const version = (${v};\n`;
    case 'exit-0': return `process.exit(0);\n`;
    // A timer keeps the loop alive: a bare unsettled top-level await ends the process (exit 13).
    case 'never-ready': return `setInterval(() => {}, 1 << 30);\nawait new Promise(() => {});\nexport const version = ${v};\n`;
    case 'throw-after-listen':
      return `setTimeout(() => { throw new Error('boom after listen in v${v}'); }, 100).unref();\nexport const version = ${v};\n`;
    default: return `export const version = ${v};\n`;
  }
}

/** Writes the app into `dir` at version 1 and starts it. */
export function startApp(dir, { serve, trigger = 'none', port, workers, reaper, env = {} }) {
  writeFileSync(join(dir, 'app.mjs'), appSource());
  writeFileSync(join(dir, 'version.mjs'), versionSource(1));
  const run = startNode(join(dir, 'app.mjs'), {
    cwd: dir, reaper,
    env: {
      ...process.env, MATRIX_SERVE: serve, MATRIX_TRIGGER: trigger, MATRIX_PORT: String(port),
      ...(workers ? { MATRIX_WORKERS: String(workers) } : {}), ...env,
    },
  });
  return run;
}

export function setVersion(dir, v, fault) {
  putFile(dir, 'version.mjs', versionSource(v, fault));
}

/** One GET: { status, body } or { error }. */
export function get(port, path = '/', agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (error) => resolve({ error }));
    });
    req.on('error', (error) => resolve({ error }));
    req.setTimeout(20000, () => req.destroy(new Error('request timed out')));
  });
}

/**
 * `connections` keep-alive clients sending requests in a loop until stop():
 * `ok`, `failed` (with error codes), and the newest answer per PID.
 */
export function loadClients(port, connections = 10) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const state = { ok: 0, failed: 0, errors: {}, last: '', versions: new Map(), running: true };
  const one = async () => {
    while (state.running) {
      const r = await get(port, '/', agent);
      if (r.status === 200) {
        state.ok++;
        state.last = r.body;
        const m = /^v(\d+) pid (\d+)/.exec(r.body);
        if (m) state.versions.set(Number(m[2]), Number(m[1]));
      } else {
        state.failed++;
        const code = r.error?.code ?? r.error?.message ?? `HTTP ${r.status}`;
        state.errors[code] = (state.errors[code] ?? 0) + 1;
      }
    }
  };
  const loops = Array.from({ length: connections }, one);
  state.stop = async () => {
    state.running = false;
    await Promise.all(loops);
    agent.destroy();
    return state;
  };
  return state;
}

/** Resolves once `n` answers in a row came from version `v` (of `pid`, when given). */
export async function waitServing(port, v, { pid, n = 1, what } = {}) {
  let streak = 0;
  let last;
  await waitFor(async () => {
    const r = await get(port);
    last = r.status === 200 ? r.body : r.error?.code ?? r.error?.message ?? r.status;
    const m = r.status === 200 ? /^v(\d+) pid (\d+)/.exec(r.body) : null;
    streak = m && Number(m[1]) === v && (pid === undefined || Number(m[2]) === pid) ? streak + 1 : 0;
    return streak >= n;
  }, { timeout: 30000, interval: 25, what: () => `${typeof what === 'function' ? what() : what ?? `v${v} serving${pid ? ` from pid ${pid}` : ''}`} (last answer: ${JSON.stringify(last)})` });
}

/** Waits for the process to end; { code, signal }. */
export async function ended(run, timeout = 20000) {
  let status;
  run.exited.then((s) => { status = s; });
  await waitFor(() => status, { timeout, what: () => `pid ${run.child.pid} to exit; stderr: ${run.err.slice(-2000)}` });
  return status;
}

/** The PIDs whose parent is `pid` (from /proc). */
export function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The matrix printed as a table, ✓/✗ per cell. */
export function table(title, rows, columns, cells) {
  const lines = [`| ${title} | ${columns.join(' | ')} |`, `| --- |${columns.map(() => ' --- |').join('')}`];
  for (const r of rows) {
    lines.push(`| ${r} | ${columns.map((c) => {
      const v = cells.get(`${r}|${c}`);
      return v === undefined ? '' : v ? '✓' : '✗';
    }).join(' | ')} |`);
  }
  return lines.join('\n');
}
