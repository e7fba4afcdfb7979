/**
 * A handle on a process that need not be our child: signals go through a
 * pidfd, so they can never reach an unrelated process that was given the
 * same PID after this one ended (issue 10, item 10).
 *
 * Where there is no pidfd (Linux < 5.3, macOS, some seccomp profiles) the
 * handle falls back to kill(2) on the number and to checking for the PID
 * every 50 ms to learn that it ended: the one place this library polls,
 * because such a kernel has nothing to tell it. `kind` says which.
 */
import { closeSync } from 'node:fs';
import { addon, type RawProcessHandle } from './native';
import { errnoException } from './errors';
import { toSignalNumber, validateInteger } from './validators';

// Pidfds of processes this thread has just started without being their
// parent (nested fork plans, spawnDetached), opened by their parent
// intermediate while the PID was certainly theirs. The first openProcess(pid)
// in the same turn of the event loop takes it instead of opening the PID
// again, which after the daemon ended and init reaped it could be anyone's
// (issue 16, item 10). Closed at the end of the turn if nobody took it:
// after that a caller that asks for the PID may mean whoever has it now.
const started = new Map<number, RawProcessHandle>();
let sweep: NodeJS.Immediate | undefined;

/** @internal fork()'s pidfd for `pid`; the handle owns it from here on. */
export function adoptStartedPidfd(pid: number, pidfd: number): void {
  let raw: RawProcessHandle;
  try {
    raw = new addon.ProcessHandle(pid, pidfd);
  } catch {
    closeSync(pidfd);
    return;
  }
  started.get(pid)?.close();
  started.set(pid, raw);
  sweep ??= setImmediate(() => {
    sweep = undefined;
    for (const r of started.values()) r.close();
    started.clear();
  }).unref();
}

export class ProcessHandle {
  /** The PID this handle was opened on. */
  readonly pid: number;
  /** 'pidfd' (the process is pinned) or 'pid' (fallback: a bare number). */
  readonly kind: 'pidfd' | 'pid';
  #raw: RawProcessHandle | null;
  #exited: Promise<void> | null = null;
  #closed = false;
  #poll: NodeJS.Timeout | undefined;

  /** @internal use openProcess() */
  constructor(pid: number, raw: RawProcessHandle | null) {
    this.pid = pid;
    this.#raw = raw;
    this.kind = raw === null ? 'pid' : 'pidfd';
  }

  /**
   * Sends `signal` (name or number; 0 tests for existence). Returns true
   * when sent, false when the process has already ended. Throws EPERM etc.
   */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const sig = signal === 0 ? 0 : toSignalNumber(signal, 'signal');
    if (this.#closed) throw errnoException(9 /* EBADF */, 'kill');
    if (this.#raw !== null) return this.#raw.kill(sig);
    try {
      process.kill(this.pid, sig);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
      throw err;
    }
  }

  /**
   * Resolves once the process has ended (for a child of ours: once it is a
   * zombie or reaped). Keeps the event loop alive while pending.
   */
  get exited(): Promise<void> {
    if (this.#exited !== null) return this.#exited;
    this.#exited = new Promise<void>((resolve) => {
      if (this.#raw !== null) {
        this.#raw.watch(resolve);
        return;
      }
      const check = (): void => {
        this.#poll = undefined;
        if (this.#gone()) {
          resolve();
          return;
        }
        // close() stops it: like the pidfd watch, it ends with the handle.
        if (!this.#closed) this.#poll = setTimeout(check, 50);
      };
      check();
    });
    return this.#exited;
  }

  #gone(): boolean {
    try {
      process.kill(this.pid, 0);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
    return false;
  }

  /** Releases the pidfd. Further kill() calls throw EBADF. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#poll);
    this.#raw?.close();
    this.#raw = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a handle on `pid`. Throws ESRCH (code 'ESRCH', syscall
 * 'pidfd_open') when no such process exists. From here on the handle refers
 * to that process only, even if the number is later reused.
 */
export function openProcess(pid: number): ProcessHandle {
  validateInteger(pid, 'pid', 1, 2 ** 31 - 1);
  const fresh = started.get(pid);
  if (fresh !== undefined) {
    started.delete(pid);  // the first caller takes it
    return new ProcessHandle(pid, fresh);
  }
  let raw: RawProcessHandle | null = null;
  try {
    raw = new addon.ProcessHandle(pid);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOSYS' && code !== 'EPERM' && code !== 'EINVAL') throw err;
    // No pidfds here: a bare PID, checked now.
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') throw errnoException(3, 'kill');
    }
  }
  return new ProcessHandle(pid, raw);
}
