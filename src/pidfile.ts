/**
 * PID files that cannot lie: a file holds a PID only while its process holds
 * an exclusive lock on it.
 *
 * flock(2), not fcntl(2) record locks: a flock lock belongs to the open file
 * description, so it is inherited across fork() and execve() with the fd.
 * That is what lets daemonize() take the lock in the foreground (a second
 * start fails before anything is launched), hand the very same lock to the
 * daemon through keepFds (no moment where nobody holds it), and lets the
 * daemon keep it through restartViaExec. fcntl locks belong to a process:
 * they are not inherited by fork, and closing *any* fd of the file drops
 * them (a readPidFile() in the daemon itself would unlock it). On Linux NFS
 * flock is emulated with fcntl locks; keep PID files on local filesystems
 * (/run), as everyone does.
 */
import {
  closeSync, constants as fsConstants, fstatSync, fsyncSync, ftruncateSync, lstatSync, openSync, readFileSync,
  readdirSync, readSync, unlinkSync, writeSync,
} from 'node:fs';
import { resolve } from 'node:path';
import { debuglog } from 'node:util';
import { addon } from './native';
import { errnoException, invalidArgValue } from './errors';
import { isFileOnFd, NO_SHARED_STAT } from './fdfile';
import { inBridge } from './restart-role';
import { openProcess } from './process-handle';
import { validateCString, validateDuration, validateInteger, validateObject, validateOptionKeys, toSignalNumber, signalName } from './validators';

const debug = debuglog('posix-daemon');

/** The daemon learns its PID file from this variable: `<fd>:<absolute path>`. */
export const PIDFILE_ENV = 'POSIX_DAEMON_PIDFILE';

export interface PidFileLock {
  /** Absolute path of the PID file. */
  readonly path: string;
  /** The fd holding the lock (close-on-exec; keep it across restartViaExec). */
  readonly fd: number;
  /** The PID written into the file. */
  readonly pid: number;
  /** Removes the file (if it is still ours) and releases the lock. */
  release(): void;
}

type AlreadyRunning = Error & { code: 'ERR_ALREADY_RUNNING'; pid: number | null; path: string };

function alreadyRunning(path: string, pid: number | null, self = false): AlreadyRunning {
  const who = self ? `this process (${pid}) already: release() that lock first`
    : pid === null ? 'another process (its PID is not written yet)' : `process ${pid}`;
  const err = new Error(`Already running: ${path} is locked by ${who}`) as AlreadyRunning;
  Object.defineProperty(err, 'code', { value: 'ERR_ALREADY_RUNNING', enumerable: true, writable: true, configurable: true });
  err.pid = pid;
  err.path = path;
  return err;
}

// fd -> its one lock object (releasing it twice must not close the fd twice).
const held = new Map<number, PidFileLock>();
let exitHookInstalled = false;

/** Is `path` still the file behind `fd`? (lstat: a symlink put there is not ours.) */
function removeIfOurs(fd: number, path: string): void {
  if (!isFileOnFd(fd, path)) return;
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A clean exit removes the file. (A death by signal leaves it behind,
  // unlocked: the next start takes it over.)
  process.on('exit', () => {
    for (const [fd, { path }] of held) removeIfOurs(fd, path);
  });
}

/** The lock on `fd`, registered for the exit hook and heldPidFileFds(). */
function track(path: string, fd: number): PidFileLock {
  const lock = makeLock(path, fd, process.pid);
  held.set(fd, lock);
  installExitHook();
  return lock;
}

function untrack(fd: number): void {
  held.delete(fd);
}

/** The PID written in the file behind `fd`, if it is a well-formed one. */
function readPidFrom(fd: number): number | null {
  const buf = Buffer.alloc(32);
  let n: number;
  try {
    n = readSync(fd, buf, 0, buf.length, 0);
  } catch {
    return null;
  }
  const m = /^([1-9]\d{0,9})\n?$/.exec(buf.toString('latin1', 0, n));
  if (m === null) return null;
  const pid = Number(m[1]);
  return pid <= 2 ** 31 - 1 ? pid : null;
}

/**
 * write the PID, truncate, fsync: in that order, and only under the lock.
 * A failure names the file, as fs errors do for paths (ESPIPE or EINVAL
 * from a /proc or sysfs "file" otherwise says nothing of which one).
 */
function writePid(fd: number, pid: number, path: string): void {
  const text = Buffer.from(`${pid}\n`, 'latin1');
  try {
    writeSync(fd, text, 0, text.length, 0);
    ftruncateSync(fd, text.length);
    fsyncSync(fd);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (typeof e.errno !== 'number' || e.path !== undefined) throw err;
    throw errnoException(e.errno, e.syscall ?? 'write', path);
  }
}

/**
 * Opens (creating it, mode 0644 & ~umask: readable by status tools running
 * as other users; it holds nothing secret) and locks `path`. O_NOFOLLOW: a
 * symlink planted where a root daemon's PID file goes must not make it
 * truncate the link's target. Retries when the file it locked was unlinked
 * by a previous holder meanwhile (it would then lock a file nobody sees).
 */
function openLocked(path: string): { fd: number } {
  for (let attempt = 0; ; attempt++) {
    const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, 0o644);
    try {
      if (!fstatSync(fd, NO_SHARED_STAT).isFile()) throw invalidArgValue('path', path, 'must name a regular file');
      if (!addon.flock(fd, 'ex')) throw alreadyRunning(path, runningPid(fd));
      if (isFileOnFd(fd, path)) return { fd };
      if (attempt >= 10) throw errnoException(11 /* EAGAIN */, 'flock', path);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    closeSync(fd);  // it was unlinked under us: try the new one
  }
}

/** The PID of the holder of the lock on the file behind `fd` (we failed to get it). */
function runningPid(fd: number): number | null {
  const pid = readPidFrom(fd);
  return pid !== null && exists(pid) ? pid : null;
}

function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function validatePath(path: unknown, name: string): string {
  validateCString(path, name, { allowEmpty: false });
  return resolve(path);
}

/**
 * Takes the PID file for this process: open (O_CREAT), exclusive
 * non-blocking flock, then write the PID, truncate, fsync. Throws
 * `ERR_ALREADY_RUNNING` (with `pid` and `path`) when another process holds
 * it. A stale file (its process died) holds no lock and is taken over. The
 * file is removed on a clean exit (process 'exit').
 *
 * The lock survives restartViaExec (same PID): the fd is kept and named in
 * `POSIX_DAEMON_PIDFILE`, and the new image's lockPidFile(path) adopts it
 * instead of failing against its own lock.
 */
export function lockPidFile(path: string): PidFileLock {
  const abs = validatePath(path, 'path');
  // A restart's preflight/bridge runs the program while the service (its
  // parent) holds the lock: it takes none.
  if (inBridge()) {
    debug('pidfile: %s: not locked in a restart\'s preflight/bridge', abs);
    return { path: abs, fd: -1, pid: process.ppid, release(): void {} };
  }
  // A second lock on a file this process holds would be the same lock, and
  // one release() would drop it for both holders: refused, as a second
  // process is. (An image started by restartViaExec adopts its inherited
  // lock below on its first call.)
  for (const lock of held.values()) if (lock.path === abs) throw alreadyRunning(abs, process.pid, true);
  const inherited = adoptPidFile();
  if (inherited !== null && inherited.path === abs) return inherited;
  const { fd } = openLocked(abs);
  try {
    writePid(fd, process.pid, abs);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  const lock = track(abs, fd);
  // For an in-place restart; a child_process child never has the fd (it is
  // close-on-exec), and adoptPidFile() checks the fd is this very file.
  process.env[PIDFILE_ENV] = `${fd}:${abs}`;
  debug('pidfile: %s locked by %d (fd %d)', abs, process.pid, fd);
  return lock;
}

function makeLock(path: string, fd: number, pid: number): PidFileLock {
  let released = false;
  return {
    path, fd, pid,
    release(): void {
      if (released) return;
      released = true;
      removeIfOurs(fd, path);
      untrack(fd);
      closeSync(fd);
    },
  };
}

/**
 * The fds of the PID files this process holds, to keep across an in-place
 * restart: `restartViaExec({ keepFds: [...heldPidFileFds()] })`. The new
 * image calls adoptPidFile() again (the environment still names the file).
 */
export function heldPidFileFds(): number[] {
  return [...held.keys()];
}

/** The file's device and inode as /proc/locks and fdinfo "lock:" lines write them: "MAJ:MIN:INO" (hex, hex, decimal). */
function lockFileId(fd: number): string {
  const st = fstatSync(fd, { bigint: true });
  const dev = st.dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major.toString(16)}:${minor.toString(16)}:${st.ino}`;
}

/**
 * PIDs that lines like "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
 * (from /proc/locks or an fdinfo "lock:" line) name as holding an
 * exclusive flock on file `id`. Waiters ("->") hold nothing.
 */
function exclusiveFlockPids(text: string, id: string): number[] {
  const pids: number[] = [];
  for (const line of text.split('\n')) {
    const f = line.replace(/^lock:/, '').trim().split(/\s+/);
    if (f[1] !== 'FLOCK' || f[3] !== 'WRITE') continue;
    const parts = f[5]?.split(':');
    if (parts?.length !== 3) continue;
    // Leading zeros differ between kernels ("00:2a" or "0:2a"): compare numbers.
    const same = BigInt(`0x${parts[0]}`).toString(16) === id.split(':')[0]
      && BigInt(`0x${parts[1]}`).toString(16) === id.split(':')[1] && parts[2] === id.split(':')[2];
    if (same) pids.push(Number(f[4]));
  }
  return pids;
}

/**
 * Does `pid` hold the exclusive flock on file `id` through an fd of its own?
 * /proc/PID/fdinfo lists the locks held through each fd, so a lock the
 * daemon inherited (daemonize: the foreground took it, and /proc/locks
 * still names the foreground) counts. null: we may not look (another
 * user's process, and we are not root).
 */
function holdsThroughFd(pid: number, id: string): boolean | null {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fdinfo`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? null : false;
  }
  for (const fd of fds) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1');
    } catch {
      continue;  // closed meanwhile
    }
    if (text.includes('lock:') && exclusiveFlockPids(text, id).length > 0) return true;
  }
  return false;
}

/** The real UID `pid` runs as (/proc/PID/status), or null when unknown. */
function processUid(pid: number): number | null {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/**
 * May the PID in this file be believed? (issue 22, item 23: a lock only
 * says *someone* holds the file.) The file must belong to us, to root or
 * to the user the process runs as: anybody can write any PID into a file
 * of theirs in /tmp and lock it. And the lock must be held by that very
 * process: /proc/locks names who took it; an inherited lock is found in
 * the process's own fdinfo. Where we may not look there (another user's
 * daemon, we are not root), a file written by root or by us is believed
 * on the lock alone. Elsewhere (no /proc/locks): the owner, and that some
 * exclusive lock exists.
 */
function heldBy(fd: number, pid: number): boolean {
  const uid = Number(fstatSync(fd, NO_SHARED_STAT).uid);
  const trustedWriter = uid === 0 || uid === process.geteuid?.();
  if (!trustedWriter && uid !== processUid(pid)) {
    debug('pidfile: PID %d is in a file of UID %d, neither ours, root\'s nor its own: not believed', pid, uid);
    return false;
  }
  let locks: string | null = null;
  if (process.platform === 'linux') {
    try {
      locks = readFileSync('/proc/locks', 'latin1');
    } catch {
      locks = null;
    }
  }
  if (locks === null) {
    // Ask for a shared lock and give it back at once.
    if (!addon.flock(fd, 'sh')) return true;
    addon.flock(fd, 'un');
    return false;
  }
  const id = lockFileId(fd);
  const holders = exclusiveFlockPids(locks, id);
  if (holders.length === 0) return false;
  if (holders.includes(pid)) return true;
  const own = holdsThroughFd(pid, id);
  if (own === null) return trustedWriter;
  if (!own) debug('pidfile: PID %d does not hold the lock (held by %j): not believed', pid, holders);
  return own;
}

/**
 * The PID of the process holding `path`, or null: when the file does not
 * exist, is not locked by the process it names (its process is gone: a
 * stale number proves nothing), holds no well-formed PID of a live
 * process, or belongs to a user who may not speak for that process.
 */
export function readPidFile(path: string): number | null {
  const abs = validatePath(path, 'path');
  let fd: number;
  try {
    fd = openSync(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return null;
    throw err;
  }
  try {
    if (!fstatSync(fd, NO_SHARED_STAT).isFile()) return null;
    const pid = readPidFrom(fd);
    if (pid === null || !exists(pid)) return null;
    return heldBy(fd, pid) ? pid : null;
  } finally {
    closeSync(fd);
  }
}

// ---- daemonize({ pidFile }) -------------------------------------------------

/** What the foreground holds while it launches a daemon. */
export interface LaunchPidFile {
  readonly path: string;
  /** Pass to the daemon in keepFds: the daemon inherits the lock itself. */
  readonly fd: number;
  /** Add to the daemon's environment: tells adoptPidFile() which fd and path. */
  readonly env: Readonly<Record<string, string>>;
  /** Writes the daemon's PID as soon as it is known (the daemon writes it again). */
  launched(pid: number): void;
  /** The foreground is done: closes its fd; the daemon's copy keeps the lock. */
  close(): void;
  /** The launch failed (daemon killed/dead): removes the file and releases the lock. */
  abandon(): void;
}

/**
 * For daemonize({ pidFile }), in the foreground, before anything is
 * launched: takes the lock (throws ERR_ALREADY_RUNNING with the running PID)
 * and clears a stale number. Then: spawn with `keepFds: [fd]` and `env`,
 * `launched(pid)`, and `close()` once the daemon is ready, or `abandon()`.
 */
export function lockPidFileForLaunch(path: string): LaunchPidFile {
  const abs = validatePath(path, 'options.pidFile');
  const { fd } = openLocked(abs);
  ftruncateSync(fd, 0);  // whatever number is there is a dead process's
  let closed = false;
  return {
    path: abs,
    fd,
    env: { [PIDFILE_ENV]: `${fd}:${abs}` },
    launched(pid: number): void {
      validateInteger(pid, 'pid', 1, 2 ** 31 - 1);
      if (!closed) writePid(fd, pid, abs);
    },
    close(): void {
      if (closed) return;
      closed = true;
      closeSync(fd);
    },
    abandon(): void {
      if (closed) return;
      closed = true;
      removeIfOurs(fd, abs);
      closeSync(fd);
    },
  };
}

/**
 * For the daemon, first thing: takes over the PID file the foreground
 * locked for it (named by POSIX_DAEMON_PIDFILE, an inherited fd), writes its
 * own PID and removes the file on a clean exit. Returns null when the
 * variable is absent. The variable is not trusted: the fd must be the file
 * at that path, and the lock must be (or become) ours; otherwise it is
 * ignored (null) or, when another process holds the file, ERR_ALREADY_RUNNING.
 */
export function adoptPidFile(): PidFileLock | null {
  const v = process.env[PIDFILE_ENV];
  if (v === undefined) return null;
  const m = /^(\d{1,9}):(\/[^\0]*)$/.exec(v);
  if (m === null) {
    debug('pidfile: ignoring malformed %s=%j', PIDFILE_ENV, v);
    return null;
  }
  const fd = Number(m[1]);
  const path = m[2];
  if (fd < 3 || held.has(fd) || !isFileOnFd(fd, path, { regularFile: true })) {
    const known = held.get(fd);
    if (known !== undefined) return known;
    debug('pidfile: %s does not name an inherited fd of %s; ignored', PIDFILE_ENV, path);
    return null;
  }
  // The same open file description as the foreground's: flock succeeds at
  // once (a no-op). A different one only if nobody holds the file.
  if (!addon.flock(fd, 'ex')) throw alreadyRunning(path, runningPid(fd));
  addon.setCloexec(fd, true);  // an exec'd image got it inheritable: children must not
  writePid(fd, process.pid, path);
  const lock = track(path, fd);
  debug('pidfile: %s adopted by %d (fd %d)', path, process.pid, fd);
  return lock;
}

// ---- stopDaemon ---------------------------------------------------------------

/**
 * Nothing to stop behind `path`: ENOENT (syscall 'open') when there is no
 * such file, else ESRCH saying the file is not held by a running process.
 */
function notRunning(path: string): NodeJS.ErrnoException {
  try {
    lstatSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return errnoException(e.errno ?? -2, 'open', path);
  }
  const err = errnoException(3 /* ESRCH */, 'kill', path);
  err.message = `ESRCH: no such process: ${path} is not locked by a running process`;
  return err;
}

export interface StopDaemonOptions {
  /** Default 'SIGTERM'. */
  signal?: NodeJS.Signals | number;
  /** ms before SIGKILL; default 10000. */
  timeout?: number;
}

export interface StopDaemonResult {
  pid: number;
  signal: NodeJS.Signals;
  /** Whether it took SIGKILL after `timeout`. */
  killed: boolean;
}

/**
 * Stops a daemon by PID file (or PID): signals it through a pidfd, waits for
 * it to be gone (the kernel says so: no polling where there is a pidfd),
 * SIGKILL after `timeout`. With a PID file the pidfd is opened while the
 * file's lock is verified held, before and after, so a reused PID can never
 * be hit. Rejects with ESRCH when nothing is running, ENOENT when there is no
 * such file.
 */
export async function stopDaemon(pidFileOrPid: string | number, options: StopDaemonOptions = {}): Promise<StopDaemonResult> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['signal', 'timeout']);
  const { signal = 'SIGTERM', timeout = 10000 } = options;
  const signo = toSignalNumber(signal, 'options.signal');
  validateDuration(timeout, 'options.timeout');
  let pid: number;
  let handle;
  if (typeof pidFileOrPid === 'number') {
    validateInteger(pidFileOrPid, 'pidFileOrPid', 1, 2 ** 31 - 1);
    pid = pidFileOrPid;
    handle = openProcess(pid);
  } else {
    const path = validatePath(pidFileOrPid, 'pidFileOrPid');
    const first = readPidFile(path);
    if (first === null) throw notRunning(path);
    pid = first;
    try {
      handle = openProcess(pid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw notRunning(path);
      throw err;
    }
    // Still locked, still this PID: the pidfd is the daemon's, not a
    // newcomer's that got the number after it died.
    if (readPidFile(path) !== pid) {
      handle.close();
      throw notRunning(path);
    }
  }
  const name = (signalName(signo) ?? String(signo)) as NodeJS.Signals;
  try {
    if (!handle.kill(signo)) return { pid, signal: name, killed: false };
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((res) => { timer = setTimeout(res, timeout, 'timeout'); });
    const first = await Promise.race([handle.exited, timedOut]);
    clearTimeout(timer);
    if (first !== 'timeout') return { pid, signal: name, killed: false };
    handle.kill('SIGKILL');
    await handle.exited;
    return { pid, signal: name, killed: true };
  } finally {
    handle.close();
  }
}
