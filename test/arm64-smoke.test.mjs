// The smoke suite: one real case per area (the addon, fork/exec/wait,
// daemonize, restartViaExec, init), each checked through /proc.
//
// `npm run test:arm64` (scripts/test-arm64.mjs) runs this file on Node's
// arm64 build under qemu-user, in a staged copy of the package that holds
// only the arm64 prebuilds: it sets POSIX_DAEMON_SMOKE_ARCH,
// POSIX_DAEMON_SMOKE_ADDON and POSIX_DAEMON_SMOKE_INIT to what must have
// been loaded and run. `npm test` runs it too, on this machine's Node and
// whatever addon it finds (a few seconds), which keeps the file itself
// tested.
//
// Under qemu-user an emulated process is, for the kernel, qemu running the
// program: another process's /proc/PID/exe is qemu, and its cmdline is
// [qemu's binfmt entry, program file, argv...]. imageOf() reads through
// that. Emulation is slow (node starts in seconds), hence the long limits;
// no case asserts a time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileScope, fixtures, isAlive, procCwd, procEnv, procFds, procStat, waitFor } from './helpers.mjs';
import { noNamespace, namespaceInit, start } from './init-helpers.mjs';
import { addonPath } from '../dist/native.js';
import { initImagePath } from '../dist/init.js';
import { fork, getsid, pipe, waitpid } from '../dist/posix.mjs';
import { readPidFile } from '../dist/index.mjs';

const app = join(fixtures, 'arm64-smoke-app.mjs');
const { reaper, dirs } = fileScope();
const LIMIT = 120_000;  // a safety net per wait (qemu on a loaded machine), never an assertion
const wait = (fn, what) => waitFor(fn, { timeout: LIMIT, interval: 50, what });
const node = realpathSync(process.execPath);

/**
 * The program `pid` runs and its argv, as the kernel sees it, or through
 * qemu-user's binfmt entry when it is emulated. null once it is gone.
 */
function imageOf(pid) {
  let exe;
  let cmdline;
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, -1);
  } catch {
    return null;
  }
  if (!/^qemu-/.test(basename(exe))) return { exe, argv: cmdline, emulated: false };
  // binfmt_misc's P flag (Debian's qemu-user-binfmt: "...-binfmt-P") keeps
  // argv[0] after the file; without it the file stands for argv[0].
  const preserved = cmdline[0].endsWith('-binfmt-P');
  return { exe: cmdline[1], argv: preserved ? cmdline.slice(2) : cmdline.slice(1), emulated: true };
}

/**
 * Starts `cmd`; `line(prefix)` waits for a line of its stdout, and fails at
 * once if the process ends without printing it.
 */
function run(cmd, args) {
  const r = start(reaper, cmd, args);
  let ended = false;
  r.exited.then(() => { ended = true; });
  r.line = (prefix) => wait(() => {
    const found = r.lines.find((l) => l.startsWith(prefix));
    if (found === undefined && ended) throw new Error(`${cmd} ended without printing ${prefix}: ${describe(r)}`);
    return found;
  }, () => `${prefix} (${describe(r)})`);
  return r;
}

const describe = (r) => `stdout: ${r.lines.join(' | ')}; stderr: ${r.stderr()}`;

test('the addon loads: the expected file, mapped in this process, on the expected architecture', () => {
  const arch = process.env.POSIX_DAEMON_SMOKE_ARCH;
  if (arch) assert.equal(process.arch, arch);
  const expected = process.env.POSIX_DAEMON_SMOKE_ADDON;
  if (expected) assert.ok(addonPath.endsWith(expected), `${addonPath} should end with ${expected}`);
  // /proc/self/maps (qemu-user shows the emulated process's own mappings).
  const maps = readFileSync('/proc/self/maps', 'latin1');
  assert.ok(maps.includes(realpathSync(addonPath)), `${addonPath} is mapped in this process`);
});

test('fork with a plan, exec, waitpid: an exit code and a death by signal', { timeout: 4 * LIMIT }, async () => {
  const cwd = realpathSync(dirs.make('pd-smoke-fork-'));
  // The child runs until the test closes its stdin, so /proc can be read meanwhile.
  const [r, w] = pipe();
  const script = "process.stdin.resume().on('end', () => process.exit(7))";
  const pid = reaper.add(fork({
    file: process.execPath,
    args: ['-e', script],
    setsid: true,
    cwd,
    stdio: [r, 1, 2],
    env: { ...process.env, POSIX_DAEMON_SMOKE: 'plan' },
  }));
  closeSync(r);
  // Until it has exec'd, the child is a copy of this process.
  await wait(() => imageOf(pid)?.argv.at(-1) === script, () => `pid ${pid} to exec node (${JSON.stringify(imageOf(pid))})`);
  assert.deepEqual(imageOf(pid), { exe: node, argv: [process.execPath, '-e', script], emulated: imageOf(pid).emulated });
  const st = procStat(pid);
  assert.equal(st.ppid, process.pid);
  assert.equal(st.session, pid, 'setsid: it leads its own session');
  assert.equal(procCwd(pid), cwd);
  assert.equal(procEnv(pid).POSIX_DAEMON_SMOKE, 'plan');
  closeSync(w);
  const status = waitpid(pid);
  assert.equal(status.pid, pid);
  assert.equal(status.exitCode, 7);
  assert.equal(status.signal, null);
  assert.equal(procStat(pid), null, 'reaped');

  const forever = 'setInterval(() => {}, 1 << 30)';
  const sleeper = reaper.add(fork({ file: process.execPath, args: ['-e', forever] }));
  await wait(() => imageOf(sleeper)?.argv.at(-1) === forever, `pid ${sleeper} to exec node`);
  process.kill(sleeper, 'SIGTERM');
  const killed = waitpid(sleeper);
  assert.equal(killed.exitCode, null);
  assert.equal(killed.signal, 'SIGTERM');
  assert.equal(procStat(sleeper), null, 'reaped');
});

test('daemonize: detached (own session, not our child), ready reported, PID file held', { timeout: 4 * LIMIT }, async () => {
  const pidFile = join(realpathSync(dirs.make('pd-smoke-daemon-')), 'smoke.pid');
  const fg = run(process.execPath, [app, 'daemon', pidFile]);
  const pid = reaper.add(Number((await fg.line('PID ')).slice(4)));
  const { code } = await fg.exited;
  assert.equal(code, 0, `the foreground ends once the daemon is ready (${describe(fg)})`);
  assert.ok(isAlive(pid), 'the daemon runs on');
  const st = procStat(pid);
  assert.notEqual(st.ppid, fg.child.pid, 'not the foreground\'s child');
  assert.notEqual(st.ppid, process.pid);
  // getsid(): qemu-user fakes most fields of the emulated process's own /proc/self/stat.
  assert.notEqual(st.session, getsid(0), 'a session of its own');
  assert.notEqual(st.session, pid, 'not a session leader (double fork)');
  assert.equal(imageOf(pid).exe, node, 'the daemon is node');
  assert.deepEqual(imageOf(pid).argv.slice(-3), [app, 'daemon', pidFile]);
  assert.equal(readPidFile(pidFile), pid, 'the PID file names the daemon and is locked');
  assert.ok(Object.values(procFds(pid)).includes(pidFile), 'the daemon holds the PID file open');
  process.kill(pid, 'SIGTERM');
  await wait(() => !isAlive(pid), `daemon ${pid} to end`);
});

test('restartViaExec: a new image under the same PID', { timeout: 4 * LIMIT }, async () => {
  const child = run(process.execPath, [app, 'restart']);
  const pid = child.child.pid;
  const second = await child.line('IMAGE 2 ');
  assert.ok(child.lines.includes(`IMAGE 1 ${pid}`), `the first image ran as ${pid}: ${describe(child)}`);
  assert.equal(second, `IMAGE 2 ${pid} ${process.pid}`, 'the same PID, still our child');
  const image = imageOf(pid);
  assert.equal(image.exe, node, 'still node');
  assert.deepEqual(image.argv.slice(-3), [app, 'restart', '2'], 'the new image\'s command line');
  process.kill(pid, 'SIGTERM');
  assert.deepEqual(await child.exited, { code: 0, signal: null });
});

test('init() as PID 1 of a PID namespace: reaps an orphan, forwards SIGTERM', { skip: noNamespace, timeout: 4 * LIMIT }, async () => {
  const ns = run('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, app, 'init']);
  const [, pid, ppid] = (await ns.line('PROGRAM ')).split(' ').map(Number);
  assert.notEqual(pid, 1, 'the program runs under the init');
  assert.equal(ppid, 1);
  const pid1 = await namespaceInit(reaper, ns.child.pid);
  const image = imageOf(pid1);
  // The init image, run by the kernel (a static image) or by the loader.
  assert.ok(image.exe === initImagePath || image.argv.includes(initImagePath),
    `PID 1 runs ${initImagePath}: ${JSON.stringify(image)}`);
  const expected = process.env.POSIX_DAEMON_SMOKE_INIT;
  if (expected) assert.ok(image.exe.endsWith(expected), `PID 1 runs ${expected}: ${JSON.stringify(image)}`);
  assert.equal(readFileSync(`/proc/${pid1}/comm`, 'latin1').trim(), 'node-init');
  await ns.line('REAPED ');
  process.kill(pid1, 'SIGTERM');
  await ns.line('SIGTERM');
  const { code } = await ns.exited;
  assert.equal(code, 42, `the program's exit code comes out of the namespace (${describe(ns)})`);
});
