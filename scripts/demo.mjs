// npm run demo: the whole library in well under a minute, narrated.
// 1. daemonize a small HTTP server (double fork, readiness report)
// 2. fetch from it
// 3. edit its file: it restarts itself in place (same PID, new response)
// 4. show the daemon's process facts from /proc
// 5. stop it cleanly and show that nothing is left
import { mkdtempSync, writeFileSync, readFileSync, rmSync, readlinkSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (m) => pathToFileURL(join(root, 'dist', m)).href;
// Bold only on a terminal that takes colours (hasColors() honours NO_COLOR,
// FORCE_COLOR and TERM); a pipe or a file gets plain text.
const bold = process.stdout.isTTY && process.stdout.hasColors?.() ? (s) => `\x1b[1m${s}\x1b[0m` : (s) => s;
const say = (s) => console.log(`${bold('==>')} ${s}`);
const info = (s) => console.log(`    ${s}`);

if (process.platform !== 'linux') {
  console.log('The demo reads /proc: run it on Linux.');
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'posix-daemon-demo-'));
const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const serverFile = join(dir, 'server.mjs');
const stateFile = join(dir, 'state.json');

const serverSource = (version) => `// demo server, ${version}
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { daemonize, report } from '${dist('index.mjs')}';
import { restartOnChange, listen, isBridge } from '${dist('autorestart.mjs')}';

const r = await daemonize({ envKey: 'DEMO_DAEMON', timeout: 20000 });
if (r.foreground) {
  console.log('daemon ready, PID ' + r.pid);
  process.exit(0);
}
const server = http.createServer((req, res) => res.end('${version} from PID ' + process.pid + '\\n'));
const { inherited } = await listen(server, { port: ${port}, host: '127.0.0.1' });
// A restart first runs the new code as a preflight child (then a bridge
// that serves while this PID execs): only the daemon itself writes its state.
if (!isBridge()) writeFileSync(${JSON.stringify(stateFile)}, JSON.stringify({ pid: process.pid, inherited, version: '${version}' }));
await report(process.env.DEMO_DAEMON);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
// Restart in place when this file changes; the listening socket is handed
// over to the new image, so no request is refused meanwhile.
restartOnChange({ servers: [server] });
`;

const get = async () => (await fetch(`http://127.0.0.1:${port}/`)).text();
let pid;
try {
  writeFileSync(serverFile, serverSource('v1'));
  say(`Starting ${serverFile} as a daemon`);
  info('daemonize(): fork -> setsid -> fork -> execve; the foreground waits for the readiness report');
  const out = execFileSync(process.execPath, [serverFile], { encoding: 'utf8' }).trim();
  info(`foreground said: "${out}" and exited`);
  pid = Number(/PID (\d+)/.exec(out)[1]);

  say(`Fetching http://127.0.0.1:${port}/`);
  info(`-> ${(await get()).trim()}`);

  say('The daemon, as /proc sees it');
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  info(`PID ${pid}, parent ${f[1]} (not the foreground), session ${f[3]} (not its own PID: not a session leader)`);
  info(`controlling tty: ${f[4] === '0' ? 'none' : f[4]}, cwd: ${readlinkSync(`/proc/${pid}/cwd`)}, stdin: ${readlinkSync(`/proc/${pid}/fd/0`)}`);

  say('Editing server.mjs (v1 -> v2): it restarts itself in place');
  writeFileSync(serverFile, serverSource('v2'));
  info('the new code starts first as a preflight child; it serves (as a bridge) while this PID execs');
  const state = () => { try { return JSON.parse(readFileSync(stateFile, 'utf8')); } catch { return {}; } };
  for (let i = 0; i < 400 && state().version !== 'v2'; i++) await sleep(50);
  let body = '';
  for (let i = 0; i < 200 && body !== `v2 from PID ${pid}\n`; i++) {
    body = await get().catch(() => '');
    if (body !== `v2 from PID ${pid}\n`) await sleep(50);
  }
  const st = state();
  info(`-> ${body.trim()}`);
  info(`same PID: ${st.pid === pid ? 'yes' : 'NO'} (${st.pid}); listening socket inherited across execve: ${st.inherited}`);

  say('Stopping the daemon with SIGTERM');
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && isRunning(pid); i++) await sleep(25);
  info(isRunning(pid) ? `PID ${pid} is STILL running` : `PID ${pid} is gone`);
  // The bridge of the restart drains and exits once the new image is up.
  const leftover = () => execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(serverFile));
  let left = leftover();
  for (let i = 0; i < 200 && left.length > 0; i++) {
    await sleep(50);
    left = leftover();
  }
  info(left.length === 0 ? 'no process of the demo is left' : `left over: ${left.join('; ')}`);
} finally {
  if (pid && isRunning(pid)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

function isRunning(p) {
  if (!existsSync(`/proc/${p}/stat`)) return false;
  const s = readFileSync(`/proc/${p}/stat`, 'latin1');
  return s.slice(s.lastIndexOf(')') + 2)[0] !== 'Z';
}
