// Start-up of a container's program under each init: from spawning
// `unshare --pid --fork --mount-proc <entry>` to the program's READY line
// (the same fixture as the init tests, one idle program), median of N runs.
//   npm run build && node bench/init-startup.mjs [runs]
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { initImagePath } from '../dist/init.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const prog = join(root, 'test', 'fixtures', 'init-prog.mjs');
const runs = Number(process.argv[2] ?? 7);
const node = process.execPath;
const withInit = { FIXTURE_INIT: '{}' };

const entries = [
  ['tini', ['/usr/bin/tini', '--', node, prog, 'signals', 'SIGTERM'], {}, existsSync('/usr/bin/tini')],
  ['init() in the program', [node, prog, 'signals', 'SIGTERM'], withInit, true],
  ['posix-daemon-init (node bin)', [node, join(root, 'dist', 'init-command.js'), '--', node, prog, 'signals', 'SIGTERM'], {}, true],
  ['node --import posix-daemon/init/auto', [node, '--import', pathToFileURL(join(root, 'dist', 'init-auto.js')).href, prog, 'signals', 'SIGTERM'], {}, true],
  ['the init image as ENTRYPOINT', [initImagePath, '--', node, prog, 'signals', 'SIGTERM'], {}, true],
];

function once(args, env) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    let seen = false;
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      if (!seen && out.includes('READY')) {
        seen = true;
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        // The namespace's PID 1 (unshare's only child) ends it all.
        const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'latin1').trim();
        const pid1 = Number(kids.split(' ')[0]);
        if (!(pid1 > 1)) throw new Error(`no PID 1 under unshare ${child.pid}: ${JSON.stringify(kids)}`);
        child.on('exit', () => resolve(ms));
        process.kill(pid1, 'SIGTERM');
      }
    });
    child.on('error', reject);
  });
}

console.log(`| entry (PID 1) | start to the program's READY, median of ${runs} |\n| --- | --- |`);
for (const [name, args, env, have] of entries) {
  if (!have) continue;
  const ms = [];
  for (let i = 0; i < runs; i++) ms.push(await once(args, env));
  ms.sort((a, b) => a - b);
  console.log(`| ${name} | ${ms[Math.floor(ms.length / 2)].toFixed(0)} ms |`);
}
