// The program scripts/test-container.mjs runs in every container, the same
// file whatever PID 1 is. It calls init() first thing, as the README says: as
// PID 1 (the "ours" column) that makes posix-daemon the container's init;
// under tini or dumb-init it is not PID 1 and init() does nothing. Only the
// "node" column (plain node as PID 1, no init at all) sets APP_NO_INIT=1.
//
//   node /app/app.mjs <scenario>
// Scenarios: main (orphans, child code, forwarded signals, SIGTERM → 43),
// ignore (SIGTERM ignored), nohandler, exit42, segv. Every line it prints
// starts with a word the harness waits for.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { init } from 'posix-daemon/init';

if (process.env.APP_NO_INIT !== '1') await init();

const scenario = process.argv[2];
const say = (word, data) => console.log(data === undefined ? word : `${word} ${JSON.stringify(data)}`);

const state = (pid) => {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return null;  // gone: reaped by whoever is its parent now
  }
};

// An orphan ends as a zombie of PID 1; it goes away only if PID 1 reaps it.
// Wait until every orphan has gone, or (when nobody reaps) for 3 s after the
// last one became a zombie.
async function orphansLeft(pids) {
  let allDeadSince = null;
  for (;;) {
    const states = pids.map(state);
    if (states.every((s) => s === null)) return 0;
    if (states.every((s) => s === null || s === 'Z')) {
      allDeadSince ??= Date.now();
      if (Date.now() - allDeadSince > 3000) return states.filter((s) => s === 'Z').length;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

if (scenario === 'segv') {
  process.kill(process.pid, 'SIGSEGV');
  // Reached only where the signal was dropped (plain node as PID 1).
  say('SURVIVED-SIGSEGV');
  process.exit(1);
}

if (scenario === 'main' || scenario === 'exit42') {
  // 5 orphans: each `sh` exits at once and leaves its `sleep` to PID 1.
  const orphans = [];
  for (let i = 0; i < 5; i++) {
    orphans.push(Number(spawnSync('sh', ['-c', 'sleep 0.1 & echo $!'], { encoding: 'utf8' }).stdout.trim()));
  }
  // A child of the program's own: its exit code must reach the program, not the init.
  const childCode = await new Promise((resolve) => spawn('sh', ['-c', 'exit 7']).on('exit', resolve));
  let rootfsWritable;
  try {
    writeFileSync('/app/probe', '');
    unlinkSync('/app/probe');
    rootfsWritable = true;
  } catch (err) {
    rootfsWritable = err.code;
  }
  say('REPORT', {
    pid: process.pid, uid: process.getuid(), gid: process.getgid(), childCode, rootfsWritable,
    zombieOrphans: await orphansLeft(orphans),
  });
}

switch (scenario) {
  case 'main':
    for (const sig of ['SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH']) process.on(sig, () => say('GOT', sig));
    process.on('SIGTERM', () => process.exit(43));
    break;
  case 'ignore':
    process.on('SIGTERM', () => say('IGNORED', 'SIGTERM'));
    break;
  case 'nohandler':
    break;
  case 'exit42':
    process.exit(42);
    break;
  default:
    throw new Error(`unknown scenario ${scenario}`);
}
say('WAITING');
setInterval(() => {}, 1 << 30);
