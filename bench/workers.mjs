// Many workers, measured in one run on this machine (npm run bench runs it;
// alone: npm run build && node bench/workers.mjs [--quick]):
//   1. throughput on a CPU-bound handler (BENCH_BUSY_MS of CPU per request):
//      selfMonitor with 1 worker, with N workers, pm2 -i N (cluster mode),
//      Node's cluster with N workers; N = availableCpus().count;
//   2. a rolling reload once a second under load: failed requests, served
//      ratio (requests vs the same tool's run without reloads) and the
//      slowest request, ours vs `pm2 reload`;
//   3. the spread of requests over the workers (max/min share).
// pm2 is installed into .cache/pm2 on first use (it is not a dependency).
// Writes its section of BENCHMARKS.md between the workers markers.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import { load } from '../test/workers-helpers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = join(root, 'bench', 'fixtures');
const require = createRequire(import.meta.url);
const autocannon = require('autocannon');
const { availableCpus } = require(join(root, 'dist', 'monitor.js'));
const quick = process.argv.includes('--quick');
const duration = quick ? 4 : 10;
const connections = 16;
const N = Math.max(2, availableCpus().count);
const START = '<!-- workers:start -->';
const END = '<!-- workers:end -->';
const log = (s) => console.error(`bench workers: ${s}`);
const env = { ...process.env, BENCH_BUSY_MS: process.env.BENCH_BUSY_MS ?? '1' };

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** A process in its own group (killed as a group), resolving once it prints `re`. */
function startGroup(args, extraEnv, re = /^READY$/m) {
  const child = spawn(process.execPath, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  let out = '';
  const lines = [];
  child.stdout.setEncoding('utf8').on('data', (d) => {
    out += d;
    for (const l of d.split('\n')) if (l) lines.push(l);
  });
  const ready = new Promise((resolve, reject) => {
    const check = () => { if (re.test(out)) resolve(); };
    child.stdout.on('data', check);
    child.on('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code} before it was ready`)));
  });
  return { child, ready, lines, kill: () => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } } };
}

const ours = async (n, port) => {
  const g = startGroup([join(fixtures, 'workers-service.cjs')], { BENCH_WORKERS: String(n), BENCH_PORT: String(port) });
  await g.ready;
  return { ...g, reload: () => process.kill(g.child.pid, 'SIGHUP'), stop: async () => g.kill() };
};

const cluster = async (n, port) => {
  const g = startGroup([join(fixtures, 'cluster-app.cjs')], { BENCH_WORKERS: String(n), BENCH_PORT: String(port) });
  await g.ready;
  return { ...g, stop: async () => g.kill() };
};

/** pm2 from .cache/pm2 (installed on first use), with a PM2_HOME of its own. */
function pm2Binary() {
  const dir = join(root, '.cache', 'pm2');
  const bin = join(dir, 'node_modules', 'pm2', 'bin', 'pm2');
  if (!existsSync(bin)) {
    log('installing pm2 into .cache/pm2');
    mkdirSync(dir, { recursive: true });
    const r = spawnSync('npm', ['install', '--prefix', dir, '--no-audit', '--no-fund', '--no-save', 'pm2@7'], { stdio: 'inherit' });
    if (r.status !== 0 || !existsSync(bin)) throw new Error('could not install pm2');
  }
  return bin;
}

async function untilServing(port) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      if (r.ok) return;
    } catch { /* not yet */ }
    await sleep(50);
  }
  throw new Error(`nothing serves on ${port}`);
}

const pm2 = async (n, port) => {
  const bin = pm2Binary();
  const home = mkdtempSync(join(tmpdir(), 'bench-pm2-'));
  const name = `bench-${process.pid}`;
  const run = (...args) => spawnSync(process.execPath, [bin, ...args], { env: { ...env, PM2_HOME: home, BENCH_PORT: String(port) }, encoding: 'utf8' });
  const r = run('start', join(fixtures, 'pm2-app.cjs'), '-i', String(n), '--name', name);
  if (r.status !== 0) throw new Error(`pm2 start: ${r.stderr}`);
  await untilServing(port);
  const pm2Pids = () => JSON.parse(run('jlist').stdout || '[]').filter((p) => p.pm2_env?.status === 'online').length;
  for (let i = 0; i < 200 && pm2Pids() < n; i++) await sleep(50);
  return {
    // `pm2 reload` returns once the roll is done: the next one waits for it.
    reload: () => new Promise((resolve) => {
      const c = spawn(process.execPath, [bin, 'reload', name], { env: { ...env, PM2_HOME: home }, stdio: 'ignore' });
      c.on('exit', resolve);
    }),
    stop: async () => {
      run('kill');
      rmSync(home, { recursive: true, force: true });
    },
  };
};

const cannon = (port) => new Promise((resolve, reject) => {
  autocannon({ url: `http://127.0.0.1:${port}/`, connections, duration }, (err, r) => (err ? reject(err) : resolve(r)));
});
const failedOf = (r) => r.errors + r.timeouts + r.non2xx;

/** Starts `n` workers of a contender on a free port, runs `measure(port, svc)` once they settled, stops them. */
async function withService(what, start, n, measure) {
  const port = await freePort();
  log(what);
  const svc = await start(n, port);
  try {
    await sleep(300);
    return await measure(port, svc);
  } finally {
    await svc.stop();
  }
}

const throughput = (name, start, n) => withService(`throughput: ${name}`, start, n, async (port) => {
  const r = await cannon(port);
  return { name, n, rps: r.requests.average, total: r.requests.total, failed: failedOf(r), p99: r.latency.p99, max: r.latency.max };
});

const spread = (name, start, n) => withService(`spread: ${name}`, start, n, async (port) => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), duration * 500);
  const s = await load(port, { concurrency: connections, signal: ac.signal });
  const counts = Object.values(s.byPid);
  while (counts.length < n) counts.push(0);
  const total = counts.reduce((a, b) => a + b, 0);
  const shares = counts.map((c) => c / total);
  return { name, shares, ratio: Math.max(...counts) / Math.max(1, Math.min(...counts)), min: Math.min(...counts) };
});

const reloadUnderLoad = (name, start, n, baseline) => withService(`reload once a second under load: ${name}`, start, n,
  async (port, svc) => {
    const done = cannon(port);
    let stopped = false;
    let reloads = 0;
    const loop = (async () => {
      while (!stopped) {
        await sleep(1000);
        if (stopped) break;
        await svc.reload();
        reloads++;
      }
    })();
    const r = await done;
    stopped = true;
    await loop;
    const rolled = svc.lines ? svc.lines.filter((l) => l === 'RELOADED').length : reloads;
    return { name, failed: failedOf(r), total: r.requests.total, served: r.requests.total / baseline, max: r.latency.max, reloads: rolled,
      errors: { errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx, resets: r.resets ?? 0 } };
  });

const rows = {};
const errors = [];
const attempt = async (key, fn) => {
  try {
    rows[key] = await fn();
  } catch (err) {
    errors.push(`${key}: ${err.message}`);
    log(`${key} failed: ${err.message}`);
  }
};
await attempt('one', () => throughput('posix-daemon, 1 worker', ours, 1));
await attempt('ours', () => throughput(`posix-daemon, ${N} workers`, ours, N));
await attempt('cluster', () => throughput(`Node cluster, ${N} workers`, cluster, N));
await attempt('pm2', () => throughput(`pm2 -i ${N}`, pm2, N));
if (rows.ours) await attempt('reloadOurs', () => reloadUnderLoad('posix-daemon (SIGHUP → rolling reload)', ours, N, rows.ours.total));
if (rows.pm2) await attempt('reloadPm2', () => reloadUnderLoad('pm2 reload', pm2, N, rows.pm2.total));
await attempt('spreadOurs', () => spread('posix-daemon', ours, N));
await attempt('spreadCluster', () => spread('Node cluster', cluster, N));
await attempt('spreadPm2', () => spread('pm2', pm2, N));

const f0 = (x) => (x === undefined ? '—' : x.toFixed(0));
const f2 = (x) => (x === undefined ? '—' : x.toFixed(2));
const lines = [
  START,
  '## Many workers (`selfMonitor({ workers })`)',
  '',
  `Generated by \`node bench/workers.mjs\`${quick ? ' --quick' : ''} on ${new Date().toISOString().slice(0, 10)}: ` +
    `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, availableCpus() ${availableCpus().count}, Node ${process.version}. ` +
    `N = ${N}. Handler: ${env.BENCH_BUSY_MS} ms of CPU per request. autocannon, ${connections} keep-alive connections, ${duration} s per run, one run each.`,
  '',
  '| contender | req/s | p99 latency | max latency | failed |',
  '| --- | --- | --- | --- | --- |',
  ...['one', 'ours', 'cluster', 'pm2'].filter((k) => rows[k]).map((k) => {
    const r = rows[k];
    return `| ${r.name} | ${f0(r.rps)} | ${r.p99} ms | ${r.max} ms | ${r.failed} |`;
  }),
  '',
];
if (rows.one && rows.ours) {
  const scale = rows.ours.rps / (N * rows.one.rps);
  lines.push(`Scaling: ${N} workers = ${f2(scale)} × ${N} × one worker (goal >= 0.9: ${scale >= 0.9 ? 'met' : 'not met'}); ` +
    `vs cluster ${rows.cluster ? f2(rows.ours.rps / rows.cluster.rps) : '—'}x, vs pm2 ${rows.pm2 ? f2(rows.ours.rps / rows.pm2.rps) : '—'}x.`, '');
}
lines.push('| rolling reload once a second under load | reloads done | failed | served (vs no reloads) | max latency |',
  '| --- | --- | --- | --- | --- |');
for (const k of ['reloadOurs', 'reloadPm2']) {
  const r = rows[k];
  if (r) lines.push(`| ${r.name} | ${r.reloads} | ${r.failed} ${r.failed ? JSON.stringify(r.errors) : ''} | ${f2(r.served)}x | ${r.max} ms |`);
}
lines.push('', '| spread over the workers (own load generator, keep-alive) | shares | max/min |', '| --- | --- | --- |');
for (const k of ['spreadOurs', 'spreadCluster', 'spreadPm2']) {
  const r = rows[k];
  if (r) lines.push(`| ${r.name} | ${r.shares.map((s) => `${(s * 100).toFixed(0)}%`).join(' / ')} | ${r.min === 0 ? '∞ (a worker got nothing)' : f2(r.ratio)} |`);
}
if (errors.length) lines.push('', 'Not measured:', ...errors.map((e) => `- ${e}`));
lines.push(END);
const section = lines.join('\n');
console.log(section);
const file = join(root, 'BENCHMARKS.md');
const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
const a = text.indexOf(START);
const b = text.indexOf(END);
writeFileSync(file, a >= 0 && b > a ? text.slice(0, a) + section + text.slice(b + END.length)
  : `${text.replace(/\n*$/, '\n\n')}${section}\n`);
