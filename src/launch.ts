/**
 * launch(): start a child process, then wait until it is ready, or it died
 * (and how), or the caller gave up (abort, timeout). The one shape both
 * daemonize() (its daemon) and selfMonitor() (each worker) are built on;
 * what to do on failure (SIGKILL, or a polite shutdown first) stays with
 * them, through `kill()` and `exited`.
 *
 * Readiness comes from a receiver (the child inherits its pipe's write end)
 * or from a caller's check (Go's ReadyFunc). Pipe receivers of this process
 * that the child is told about only by address (Go's shape: `envValue:
 * rx.address`) are recognised and handed to the child too.
 */
import { debuglog } from 'node:util';
import { waitAsync, type Wait4Result } from './posix';
import { inheritedPipeFd, pendingPipeReceiver, type Receiver } from './initstatus';
import { abortError, codedError } from './errors';
import { openProcess, type ProcessHandle } from './process-handle';

const debug = debuglog('posix-daemon');

/** Go's ReadyFunc: `signal` is aborted (with the reason) if the child dies first, times out or the caller aborts. */
export type ReadyCheck = (signal: AbortSignal) => Promise<void> | void;

export interface LaunchSpec {
  /** What the child is called in messages and error codes: 'daemon' → "daemon (pid N) …", ERR_DAEMON_EXITED. */
  what: string;
  /**
   * Starts the child with these fds kept open under the same numbers (the
   * readiness pipes), and returns its PID. The child should be ours to wait
   * on; where it cannot be (a daemon where there are no subreapers), return
   * `{ pid, child: false }`: `exited` then resolves null once it is gone, and
   * kill() goes through a process handle (pidfd) opened at once.
   */
  spawn(keepFds: number[]): number | { pid: number; child: boolean };
  /** Readiness over this receiver, owned by the launch: closed once ready() settled, or if spawn fails. */
  receiver?: Receiver;
  /** Or readiness by the caller's check; the caller owns whatever it waits on. */
  check?: ReadyCheck;
  /**
   * Addresses the child is given (environment values): those that name a
   * pipe receiver of this process whose write end is still ours are handed
   * to the child (kept fd, then childStarted()), so that its report arrives;
   * a readiness pipe this process inherited is kept for the child too.
   */
  addresses?: Iterable<string>;
  /**
   * Where kill() sends signals, given the PID: the process itself by default,
   * or its process group (`(pid) => -pid` for a child that leads its own
   * group). Only for our own children: see Child.kill().
   */
  killTarget?: (pid: number) => number;
}

export interface ReadyOptions {
  /** Aborting stops waiting: ready() rejects with an AbortError (cause: the reason). */
  signal?: AbortSignal;
  /** Milliseconds (0: no limit); then ready() rejects with a TimeoutError (code ETIMEDOUT). */
  timeout?: number;
}

/** A started child. Nothing is killed behind the caller's back: on failure, the caller decides. */
export interface Launched {
  readonly pid: number;
  /** Its real wait status once it ended (and was reaped); null if that cannot be known (not our child). */
  readonly exited: Promise<Wait4Result | null>;
  /** The wait status, once `exited` has it. */
  readonly status: Wait4Result | null;
  /**
   * Resolves once the child reported ready. Rejects with the child's reported
   * error, with an ERR_<WHAT>_EXITED error saying how it ended if it died
   * first (`pid`, `exitCode`, `signalCode`), with a TimeoutError, or with an
   * AbortError. Call it once.
   */
  ready(options?: ReadyOptions): Promise<void>;
  /** Sends `signal` (default SIGKILL) to the kill target; false once the child was reaped (its PID may be reused) or is gone. */
  kill(signal?: NodeJS.Signals | number): boolean;
  /** Stops `exited` from holding the event loop open; the child is still reaped whenever it ends. */
  unref(): void;
}

/** The ERR_<WHAT>_EXITED error: the child ended before it was ready. */
export function exitedError(what: string, pid: number, r: Wait4Result): Error {
  const how = r.signal !== null ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`;
  const err = new Error(`${what} (pid ${pid}) ${how} before it was ready`) as Error & {
    code: string; pid: number; exitCode: number | null; signalCode: string | null;
  };
  err.code = `ERR_${what.toUpperCase()}_EXITED`;
  err.pid = pid;
  err.exitCode = r.exitCode;
  err.signalCode = r.signal;
  Object.defineProperty(err, kExited, { value: true });
  return err;
}

const kExited = Symbol('exited before ready');

/** Whether ready() failed because the child died first (not a report, an abort or a timeout). */
export function isExitedError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && kExited in err;
}

function timeoutError(what: string, pid: number, ms: number): Error {
  const err = codedError(`${what} (pid ${pid}) did not report readiness within ${ms} ms`, 'ETIMEDOUT', { pid });
  err.name = 'TimeoutError';
  return err;
}

function isEof(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ERR_INITSTATUS_EOF';
}

/** Starts the child (spec.spawn) with its readiness channel. Throws what spawn throws. */
export function launch(spec: LaunchSpec): Launched {
  const handed: Receiver[] = [];
  if (spec.receiver !== undefined) handed.push(spec.receiver);
  for (const address of spec.addresses ?? []) {
    const rx = pendingPipeReceiver(address);
    if (rx !== undefined && !handed.includes(rx)) handed.push(rx);
  }
  const keepFds = handed.flatMap((rx) => (rx.childFd === null ? [] : [rx.childFd]));
  // A readiness pipe we inherited (we are a daemon, the child its worker):
  // the child may report to it too; our copy stays, we may report as well.
  for (const address of spec.addresses ?? []) {
    const fd = inheritedPipeFd(address);
    if (fd !== undefined && !keepFds.includes(fd)) keepFds.push(fd);
  }
  let pid: number;
  let handle: ProcessHandle | null = null;
  try {
    const spawned = spec.spawn(keepFds);
    pid = typeof spawned === 'number' ? spawned : spawned.pid;
    if (typeof spawned !== 'number' && !spawned.child) {
      // Not our child: once it ends, init reaps it and its PID is free for
      // anyone. Pin it now, while the number is known to be right (it cannot
      // have reported yet, so it is very young), and signal only through the
      // pin (issue 10, item 10).
      try {
        handle = openProcess(pid);
      } catch (err) {
        debug('launch: cannot open a handle on %s %d: %s', spec.what, pid, (err as Error).message);
      }
    }
  } catch (err) {
    spec.receiver?.close();
    throw err;
  }
  // Our copies of the write ends go: EOF then means every writer is gone.
  for (const rx of handed) rx.childStarted();
  debug('launch: %s pid %d started (keeps fds %j)', spec.what, pid, keepFds);
  return new Child(spec, pid, handle);
}

class Child implements Launched {
  status: Wait4Result | null = null;
  readonly exited: Promise<Wait4Result | null>;
  private resolveExited!: (r: Wait4Result | null) => void;
  /** False once we know no status will come (not our child, or the wait failed). */
  private statusCanCome = true;
  private watch: AbortController | null = null;

  constructor(private readonly spec: LaunchSpec, readonly pid: number, private handle: ProcessHandle | null) {
    this.exited = new Promise((resolve) => { this.resolveExited = resolve; });
    if (handle === null) {
      this.watchExit(true);
    } else {
      // Not our child: no status will come, but the pidfd says when it is gone.
      this.statusCanCome = false;
      void handle.exited.then(() => this.dropHandle());
    }
  }

  private dropHandle(): void {
    this.handle?.close();
    this.handle = null;
    this.resolveExited(null);
  }

  private watchExit(ref: boolean): void {
    const watch = new AbortController();
    this.watch = watch;
    waitAsync(this.pid, { signal: watch.signal, ref }).then((r) => {
      this.status = r;
      debug('launch: %s %d ended: %o', this.spec.what, this.pid, { code: r.exitCode, signal: r.signal });
      this.resolveExited(r);
    }, (err: Error) => {
      if (watch.signal.aborted) return;  // re-armed by unref()
      debug('launch: cannot wait for %s %d: %s', this.spec.what, this.pid, err.message);
      this.statusCanCome = false;
      this.resolveExited(null);
    });
  }

  unref(): void {
    // A pidfd watch cannot be unref'd: give the handle up (kill() then returns false).
    if (this.handle !== null) this.dropHandle();
    if (this.status !== null || !this.statusCanCome) return;
    this.watch?.abort();
    this.watchExit(false);
  }

  kill(signal: NodeJS.Signals | number = 'SIGKILL'): boolean {
    if (this.handle !== null) {
      try {
        return this.handle.kill(signal);
      } catch (err) {
        debug('launch: kill %s %d %s: %s', this.spec.what, this.pid, signal, (err as Error).message);
        return false;
      }
    }
    // Our child: until we reap it, its PID (and, for a group leader, its
    // process group ID) cannot be given to anyone else, so a bare kill() is
    // as safe as a pidfd. Once reaped (status set) we never use the number.
    // A child we could not wait on and hold no handle for is not signalled.
    if (this.status !== null || !this.statusCanCome) return false;
    const target = this.spec.killTarget?.(this.pid) ?? this.pid;
    try {
      process.kill(target, signal);
      return true;
    } catch (err) {
      debug('launch: kill %d %s: %s', target, signal, (err as Error).message);
      return false;
    }
  }

  async ready({ signal, timeout = 0 }: ReadyOptions = {}): Promise<void> {
    const { what, receiver } = this.spec;
    const pid = this.pid;
    // `stop` ends the wait for any reason and is the signal the check gets.
    const stop = new AbortController();
    void this.exited.then((r) => {
      if (r !== null) stop.abort(exitedError(what, pid, r));
    });
    const onAbort = (): void => stop.abort(abortError(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const timer = timeout > 0 ? setTimeout(() => stop.abort(timeoutError(what, pid, timeout)), timeout) : undefined;
    const stopped = new Promise<never>((_, reject) => {
      if (stop.signal.aborted) reject(stop.signal.reason);
      stop.signal.addEventListener('abort', () => reject(stop.signal.reason), { once: true });
    });
    stopped.catch(() => {});
    const check: ReadyCheck = receiver !== undefined ? (s) => receiver.wait(s) : this.spec.check ?? (() => {});
    try {
      // The check may ignore its signal: the race makes sure we stop anyway.
      await Promise.race([this.checked(check, stop.signal), stopped]);
      if (stop.signal.aborted) throw stop.signal.reason;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      receiver?.close();
    }
  }

  private async checked(check: ReadyCheck, signal: AbortSignal): Promise<void> {
    try {
      await check(signal);
    } catch (err) {
      // EOF on a readiness pipe comes a moment before the exit status: wait
      // for the status (it says how the child ended), if one can still come.
      if (isEof(err) && this.statusCanCome && !signal.aborted) {
        await Promise.race([this.exited, new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => resolve(), { once: true });
        })]);
      }
      if (signal.aborted) throw signal.reason;
      // Our receiver made this error: say which child it came from.
      if (this.spec.receiver !== undefined && err instanceof Error && !('pid' in err)) Object.assign(err, { pid: this.pid });
      throw err;
    }
  }
}
