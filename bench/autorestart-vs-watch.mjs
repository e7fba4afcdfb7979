// Change → restart latency: posix-daemon/autorestart (exec in place) next to
// `node --watch` (kill + respawn), on the same file and machine.
// Measured from the moment writeFileSync returns to the moment the new
// process/image prints its "ready" line on stdout.
//   npm run build:ts && node bench/autorestart-vs-watch.mjs [runs]
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;
const runs = Number(process.argv[2] ?? 9);

const source = (variant, n) => `${variant.header}
import { createServer } from 'node:http';
createServer(() => {}).listen(0);  // something that keeps it alive, like a real server
console.log('ready ${n} ' + process.pid);
`;

const variants = [
  { name: 'autorestart (default: debounce 100 ms + node --check)', args: [], header: `import { restartOnChange } from ${JSON.stringify(lib)};\nrestartOnChange();` },
  { name: 'autorestart (debounce 100 ms, check: false)', args: [], header: `import { restartOnChange } from ${JSON.stringify(lib)};\nrestartOnChange({ check: false });` },
  { name: 'autorestart (debounce 20 ms, check: false)', args: [], header: `import { restartOnChange } from ${JSON.stringify(lib)};\nrestartOnChange({ check: false, debounce: 20 });` },
  { name: 'node --watch', args: ['--watch'], header: '' },
];

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

for (const v of variants) {
  const dir = mkdtempSync(join(tmpdir(), 'ar-bench-'));
  const file = join(dir, 'app.mjs');
  writeFileSync(file, source(v, 0));
  const child = spawn(process.execPath, [...v.args, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  let waiting = null;
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) {
      const m = buf.slice(0, i).match(/ready (\d+) (\d+)/);
      if (m && waiting && Number(m[1]) === waiting.n) waiting.resolve({ t: performance.now(), pid: Number(m[2]) });
    }
  });
  const ready = (n) => new Promise((resolve) => { waiting = { n, resolve }; });
  const first = await ready(0);
  const times = [];
  const pids = new Set([first.pid]);
  for (let n = 1; n <= runs; n++) {
    await sleep(500);
    const p = ready(n);
    const t0 = performance.now();
    writeFileSync(file, source(v, n));
    const r = await p;
    times.push(r.t - t0);
    pids.add(r.pid);
  }
  console.log(`${v.name}: median ${median(times).toFixed(0)} ms, min ${Math.min(...times).toFixed(0)}, ` +
    `max ${Math.max(...times).toFixed(0)} (${runs} runs; ${pids.size === 1 ? 'same PID throughout' : `${pids.size} different PIDs`})`);
  child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
