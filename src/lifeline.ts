/**
 * What ties a daemon to the foreground that waits for it, until it is ready
 * (issue 16, items 16, 17 and 23):
 *
 * - The lifeline: a pipe whose read end the daemon inherits. The foreground
 *   writes one byte once the daemon is ready and closes its end; if it dies
 *   first (Ctrl-C, SIGTERM, SIGHUP, an uncaught exception, SIGKILL, the OOM
 *   killer), the kernel closes it and the daemon reads EOF: it then ends
 *   itself, as Go's cancelled context kills a daemon that is not ready.
 *   Why a pipe the daemon watches, and not the foreground catching signals:
 *   it covers every death, SIGKILL included, without installing a handler in
 *   the user's process (a listener changes what SIGINT does) and without an
 *   'exit' hook; PR_SET_PDEATHSIG would not do either, as it fires when the
 *   forking *thread* ends and the daemon is not our child when it starts.
 * - The stderr capture: when the user gave no `stderr` file, the daemon's
 *   fd 2 is an unlinked temporary file instead of /dev/null until it is
 *   ready, so a daemon that dies first leaves its last lines in the error.
 *   A file and not a pipe: nobody reads a pipe once the foreground is gone,
 *   and a write to it would then fail with EPIPE, which kills a Node
 *   process writing to stderr. Once ready, the daemon puts /dev/null on fd 2.
 * - A `node -e` program's daemon starts in the foreground's directory (its
 *   code resolves modules from there) and moves to its own one when
 *   daemonize() runs in it.
 *
 * All of it travels at the end of the envKey's value (`<address>;posix-
 * daemon-lifeline=<base64url JSON>`), not in a variable of its own: the
 * daemon's environment is PATH, USER, HOME and the key, as in Go (issue 22,
 * item 12). daemonize() in the daemon cuts it off, so process.env[envKey]
 * is the address again before the program reads it. It is not trusted: the
 * fd must be a pipe above 2, the capture must be the very (unlinked) file on
 * fd 2, the directory absolute.
 */
import { Socket } from 'node:net';
import { closeSync, fstatSync, mkdtempSync, openSync, readlinkSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { debuglog } from 'node:util';
import { NO_SHARED_STAT, stdioToDevNull } from './fdfile';
import { pipe, setCloexec } from './posix';

const debug = debuglog('posix-daemon');

/** Between the address and the lifeline in the envKey's value. base64url never holds a ';'. */
const LIFELINE_TAG = ';posix-daemon-lifeline=';

/** The byte that says "you are ready, let go". */
const RELEASE = 'r';

/** The temporary directory of a capture file: how a worker recognises one on its fd 2. */
const CAPTURE_DIR_PREFIX = 'posix-daemon-stderr-';

/** How much of the daemon's stderr an error carries. */
const TAIL_LINES = 20;
const TAIL_BYTES = 4096;

interface LifelineInfo {
  fd: number;
  /** `dev:ino` of the capture file on fd 2, if there is one. */
  stderr?: string;
  /** Where the daemon belongs; set when it was started elsewhere (`node -e`). */
  cwd?: string;
}

export interface StderrCapture {
  readonly fd: number;
  readonly id: string;
  /** The last lines written to it (at most TAIL_LINES lines, TAIL_BYTES bytes), '' if none. */
  tail(): string;
  close(): void;
}

/** An unlinked file for the daemon's fd 2 (O_APPEND, readable by us), or null if none can be made. */
export function openStderrCapture(): StderrCapture | null {
  let dir: string;
  try {
    dir = mkdtempSync(join(tmpdir(), CAPTURE_DIR_PREFIX));
  } catch (err) {
    debug('daemonize: no stderr capture (%s)', (err as Error).message);
    return null;
  }
  const path = join(dir, 'stderr');
  let fd: number;
  try {
    fd = openSync(path, 'ax+', 0o600);
  } catch (err) {
    debug('daemonize: no stderr capture (%s)', (err as Error).message);
    rmdirSync(dir);
    return null;
  }
  unlinkSync(path);
  rmdirSync(dir);
  const st = fstatSync(fd, NO_SHARED_STAT);
  let open = true;
  return {
    fd,
    id: `${st.dev}:${st.ino}`,
    tail(): string {
      if (!open) return '';
      const size = fstatSync(fd).size;
      const start = Math.max(0, size - TAIL_BYTES);
      const buf = Buffer.alloc(size - start);
      const n = readSync(fd, buf, 0, buf.length, start);
      let text = buf.subarray(0, n).toString('utf8');
      if (start > 0) text = text.slice(text.indexOf('\n') + 1);  // a whole first line
      const lines = text.replace(/\n$/, '').split('\n');
      return lines.slice(-TAIL_LINES).join('\n');
    },
    close(): void {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** The foreground's end: the environment value for the daemon, and what to do once it is ready or not. */
export interface Lifeline {
  /** Kept open in the daemon under the same number. */
  readonly childFd: number;
  /** The envKey's value for the daemon: `address` with the lifeline after it. */
  carry(address: string): string;
  /** After the launch: our copy of the daemon's end goes. */
  childStarted(): void;
  /** The daemon is ready: tell it to let go. */
  release(): void;
  /** The daemon is not ready and is being killed: just close. */
  close(): void;
}

export function createLifeline(extra: { stderr?: string; cwd?: string }): Lifeline {
  const [readFd, writeFd] = pipe();
  const info: LifelineInfo = { fd: readFd, ...extra };
  let readOpen = true;
  let writeOpen = true;
  const closeRead = (): void => {
    if (readOpen) closeSync(readFd);
    readOpen = false;
  };
  const closeWrite = (): void => {
    if (writeOpen) closeSync(writeFd);
    writeOpen = false;
  };
  return {
    childFd: readFd,
    carry: (address) => `${address}${LIFELINE_TAG}${Buffer.from(JSON.stringify(info)).toString('base64url')}`,
    childStarted: closeRead,
    release(): void {
      closeRead();
      try {
        if (writeOpen) writeSync(writeFd, RELEASE);
      } catch (err) {
        debug('daemonize: releasing the daemon: %s', (err as Error).message);
      }
      closeWrite();
    },
    close(): void {
      closeRead();
      closeWrite();
    },
  };
}

/**
 * In the daemon: the envKey's value as the foreground gave it, split into the
 * readiness address and the lifeline (undefined when there is none, as after
 * an in-place restart, or when the value does not end in one).
 */
export function splitLifeline(value: string): { address: string; lifeline: string | undefined } {
  const i = value.lastIndexOf(LIFELINE_TAG);
  if (i === -1) return { address: value, lifeline: undefined };
  const lifeline = value.slice(i + LIFELINE_TAG.length);
  if (!/^[A-Za-z0-9_-]{1,4096}$/.test(lifeline)) return { address: value, lifeline: undefined };
  return { address: value.slice(0, i), lifeline };
}

function parseInfo(encoded: string): LifelineInfo | null {
  try {
    const v = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as Record<string, unknown>;
    if (typeof v !== 'object' || v === null) return null;
    if (!Number.isInteger(v.fd) || (v.fd as number) <= 2 || (v.fd as number) > 2 ** 31 - 1) return null;
    if (v.stderr !== undefined && (typeof v.stderr !== 'string' || !/^\d+:\d+$/.test(v.stderr))) return null;
    if (v.cwd !== undefined && (typeof v.cwd !== 'string' || !isAbsolute(v.cwd) || v.cwd.includes('\0'))) return null;
    return v as unknown as LifelineInfo;
  } catch {
    return null;
  }
}

/** In the daemon: fd 2 back on /dev/null, if it is still the foreground's capture file. */
function dropStderrCapture(id: string | undefined): void {
  if (id === undefined) return;
  try {
    const st = fstatSync(2, NO_SHARED_STAT);
    if (`${st.dev}:${st.ino}` !== id || st.nlink !== 0n) return;
    stdioToDevNull(2);
    debug('daemonize: stderr back on /dev/null');
  } catch (err) {
    debug('daemonize: putting stderr back on /dev/null: %s', (err as Error).message);
  }
}


/**
 * A process that calls daemonize() as the background without a lifeline of
 * its own, but whose fd 2 is a daemon's capture file: a worker the daemon
 * started before it was ready (Go's -background -self-monitor), which
 * inherited the daemon's fd 2. The daemon itself lets go of the file once
 * ready; the worker would keep writing into the deleted file for as long as
 * it runs. It lets go at once: the file is known only by its name
 * (Linux: /proc/self/fd/2) and by being unlinked.
 */
function dropInheritedCapture(): void {
  if (process.platform !== 'linux') return;
  try {
    const target = readlinkSync('/proc/self/fd/2');
    const m = new RegExp(`/${CAPTURE_DIR_PREFIX}[^/]+/stderr \\(deleted\\)$`).exec(target);
    if (m === null) return;
    const st = fstatSync(2, NO_SHARED_STAT);
    dropStderrCapture(`${st.dev}:${st.ino}`);
  } catch (err) {
    debug('daemonize: checking fd 2: %s', (err as Error).message);
  }
}

let adopted = false;

/**
 * In the daemon (daemonize() found envKey set): take the lifeline over
 * (`lifeline`: what splitLifeline() cut off the envKey's value).
 * `reported()` says whether this process already reported (then an EOF is
 * a foreground that died just after our report, not before it).
 * `abandoned()` runs when the foreground died first, before we end.
 */
export function adoptLifeline(lifeline: string | undefined, reported: () => boolean, abandoned: () => void = () => {}): void {
  if (lifeline === undefined) {
    if (!adopted) dropInheritedCapture();
    return;
  }
  if (adopted) return;
  const info = parseInfo(lifeline);
  if (info === null) {
    debug('daemonize: ignoring a malformed lifeline %j', lifeline);
    return;
  }
  if (info.cwd !== undefined) {
    try {
      process.chdir(info.cwd);
    } catch (err) {
      debug('daemonize: chdir %s: %s', info.cwd, (err as Error).message);
    }
  }
  try {
    if (!fstatSync(info.fd, NO_SHARED_STAT).isFIFO()) throw new Error('not a pipe');
    setCloexec(info.fd, true);
  } catch (err) {
    debug('daemonize: lifeline fd %d: %s', info.fd, (err as Error).message);
    return;
  }
  adopted = true;
  let released = false;
  const line = new Socket({ fd: info.fd, readable: true, writable: false });
  line.unref();  // never what keeps the daemon alive
  line.on('data', () => {
    released = true;
    line.destroy();
    dropStderrCapture(info.stderr);
  });
  line.on('error', (err) => debug('daemonize: lifeline: %s', err.message));
  line.on('end', () => {
    line.destroy();
    if (released) return;
    if (reported()) {
      dropStderrCapture(info.stderr);
      return;
    }
    // The foreground died while it waited: end, as Go's cancelled context
    // would have us killed. SIGTERM first, so a monitor stops its worker
    // group and a handler of the program gets to clean up (the PID file);
    // SIGKILL if we are still here 10 s later.
    debug('daemonize: the foreground died before we were ready: ending');
    try {
      abandoned();
    } catch (err) {
      debug('daemonize: cleaning up: %s', (err as Error).message);
    }
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 10_000).unref();
    process.kill(process.pid, 'SIGTERM');
  });
}
