// A restart under load, 100 ms at a time: how many requests complete in
// each 100 ms after the restart signal, and their worst latency, with the
// moments each process reaches (preflight started, up; old image draining;
// exec; new image's first line, up; bridge gone). Averaged over every
// restart of the run. For deciding the bridge's schedule by measurement
// (issue 24), and for the note under `npm run bench`'s row 8.
//   node bench/restart-timeline.mjs [--node PATH] [--seconds 15] [--every 1000] [--no-preflight] [--json]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, median, put } from './restart-load.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const BUCKET = 100;

/**
 * Runs the restart-load server under 16 keep-alive connections for
 * `seconds`, sending SIGHUP every `every` ms (once the previous restart is
 * through), and returns the per-bucket timeline and the marks.
 */
export async function timeline({ node = process.execPath, seconds = 15, every = 1000, preflight = true, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-tl-'));
  put(dir, 'version.cjs', 'exports.version = 0;\n');
  const port = await freePort();
  const child = spawn(node, [join(root, 'bench', 'fixtures', 'restart-load-server.cjs')], {
    env: { ...process.env, ...env, BENCH_DIR: dir, BENCH_PORT: String(port), BENCH_LIB: join(root, 'dist', 'autorestart.js'),
      BENCH_PREFLIGHT: preflight ? '1' : '0', BENCH_TIMELINE: '1' },
    stdio: ['ignore', 'pipe', 'inherit'], detached: true,
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  try {
    const t0 = Date.now();
    while (!/^READY /m.test(out)) {
      if (Date.now() - t0 > 30_000 || child.exitCode !== null) throw new Error(`server did not start: ${out}`);
      await sleep(20);
    }
    const autocannon = require('autocannon');
    const done = [];   // [epoch ms of completion, latency ms]
    const inst = autocannon({ url: `http://127.0.0.1:${port}/`, connections: 16, duration: seconds });
    inst.on('response', (_client, _status, _bytes, latency) => done.push([Date.now(), latency]));
    const finished = new Promise((resolve) => inst.on('done', resolve));
    const signals = [];
    let running = true;
    const loop = (async () => {
      await sleep(every);
      for (let n = 1; running; n++) {
        const t = Date.now();
        put(dir, 'version.cjs', `exports.version = ${n};\n`);
        signals.push(t);
        process.kill(child.pid, 'SIGHUP');
        while (running && !new RegExp(`^READY ${n} ${child.pid} `, 'm').test(out)) await sleep(5);
        await sleep(Math.max(0, every - (Date.now() - t)));
      }
    })();
    const result = await finished;
    running = false;
    await loop;
    // Only restarts whose whole window lies inside the run.
    const end = done.length ? done[done.length - 1][0] : 0;
    const windows = signals.filter((t) => t + every <= end);
    const n = Math.ceil(every / BUCKET);
    const count = Array.from({ length: n }, () => 0);
    const worst = Array.from({ length: n }, () => 0);
    for (const [t, latency] of done) {
      // The latest restart at or before t.
      let w = -1;
      for (let i = 0; i < windows.length && windows[i] <= t; i++) w = i;
      if (w < 0 || t - windows[w] >= every) continue;
      const b = Math.floor((t - windows[w]) / BUCKET);
      count[b]++;
      worst[b] = Math.max(worst[b], latency);
    }
    // The marks of each window, relative to its signal: the first of each kind.
    const marks = [...out.matchAll(/MARK (\d+) (\S+) ([\d.]+)/g)].map((m) => ({ pid: Number(m[1]), event: m[2], t: Number(m[3]) }));
    const perWindow = windows.map((s) => {
      const inside = marks.filter((m) => m.t >= s - 5 && m.t < s + every);
      const at = (pred) => inside.find(pred)?.t - s;
      const server = child.pid;
      return {
        preflightStart: at((m) => m.pid !== server && m.event === 'exec'),
        preflightUp: at((m) => m.pid !== server && m.event === 'up'),
        draining: at((m) => m.pid === server && m.event === 'draining'),
        exec: at((m) => m.pid === server && m.event === 'exec'),
        firstLine: at((m) => m.pid === server && m.event === 'first-line'),
        up: at((m) => m.pid === server && m.event === 'up'),
        preflightExit: at((m) => m.pid !== server && m.event === 'exit'),
      };
    });
    const markMedians = Object.fromEntries(Object.keys(perWindow[0] ?? {}).map((k) => {
      const xs = perWindow.map((w) => w[k]).filter((x) => Number.isFinite(x));
      return [k, xs.length ? Math.round(median(xs)) : null];
    }));
    return {
      restarts: windows.length, every, bucket: BUCKET,
      perBucket: count.map((c, i) => ({ from: i * BUCKET, served: Math.round(c / Math.max(1, windows.length)), maxMs: worst[i] })),
      marks: markMedians,
      total: { served: result.requests.total, failed: result.errors + result.timeouts + result.non2xx, p99: result.latency.p99, max: result.latency.max },
    };
  } finally {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The timeline as a Markdown table. */
export function timelineTable(tl) {
  const m = tl.marks;
  const at = (from) => Object.entries(m).filter(([, t]) => t !== null && t >= from && t < from + tl.bucket).map(([k]) => k).join(', ');
  let md = `| ms after SIGHUP | requests done (mean of ${tl.restarts}) | worst latency | what happens |\n| --- | --- | --- | --- |\n`;
  for (const b of tl.perBucket) md += `| ${b.from}-${b.from + tl.bucket} | ${b.served} | ${Math.round(b.maxMs)} ms | ${at(b.from)} |\n`;
  return md;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : dflt;
  };
  const env = Object.fromEntries(process.argv.flatMap((a, i) => (process.argv[i - 1] === '--env' ? [a.split('=')] : [])));
  const tl = await timeline({ node: arg('--node', process.execPath), seconds: Number(arg('--seconds', 15)),
    every: Number(arg('--every', 1000)), preflight: !process.argv.includes('--no-preflight'), env });
  if (process.argv.includes('--json')) console.log(JSON.stringify(tl));
  else console.log(`${timelineTable(tl)}\nmarks (median ms after SIGHUP): ${JSON.stringify(tl.marks)}\ntotal: ${JSON.stringify(tl.total)}`);
}
