/**
 * posix-daemon/monitor: keep a copy of the program running. A port of Go's
 * `daemon/monitor`: the monitor starts the program again as its child, waits
 * for its readiness report, and restarts it with exponential backoff when it
 * fails to start or dies.
 */
import { debuglog } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { fork } from './posix';
import { receiver } from './initstatus';
import { isExitedError, launch, type Launched } from './launch';
import { endGroupRemains } from './process-group';
import { abortError, invalidArgValue, outOfRange } from './errors';
import {
  signalName, toSignalNumber, validateAbortSignal, validateChildProcessAllowed, validateCString, validateDuration,
  validateFunction, validateInteger, validateObject,
} from './validators';

const debug = debuglog('posix-daemon');

/** What the monitor reports through `onEvent` (and `NODE_DEBUG=posix-daemon`). */
export type MonitorEvent =
  | { type: 'start'; pid: number; round: number }
  | { type: 'start-failed'; round: number; error: Error }
  | { type: 'ready'; pid: number }
  | { type: 'not-ready'; pid: number; error: Error }
  | { type: 'exit'; pid: number; code: number | null; signal: NodeJS.Signals | null; ready: boolean }
  | { type: 'backoff'; delay: number; round: number }
  | { type: 'shutdown'; pid: number; signal: NodeJS.Signals }
  | { type: 'kill'; pid: number }
  | { type: 'stopped'; reason: unknown };

export interface SelfMonitorOptions {
  /** Aborting stops the monitor: the child is shut down and selfMonitor rejects with the reason. */
  signal?: AbortSignal;
  /** Sent to the child on abort. Default 'SIGINT', as in Go. */
  shutdownSignal?: NodeJS.Signals | number;
  /** Then SIGKILL if it has not exited after this many ms. Default 10 000. */
  shutdownTimeout?: number;
  /** First delay after a failed start, doubled each failed round. Default 1000 ms. */
  minBackoff?: number;
  /** Upper bound of the delay. Default 60 000 ms. */
  maxBackoff?: number;
  /** Called for every start, readiness, exit, backoff and shutdown step. */
  onEvent?: (event: MonitorEvent) => void;
  /** Readiness transport for the child: 'pipe' (default) or 'http'. */
  transport?: 'pipe' | 'http';
}

function validateEnvKey(envKey: unknown): asserts envKey is string {
  validateCString(envKey, 'envKey', { allowEmpty: false });
  if (envKey.includes('=')) throw invalidArgValue('envKey', envKey, "must not contain '='");
}

/** True in the monitored child: `envKey` is set and non-empty. */
export function isMonitored(envKey: string): boolean {
  validateEnvKey(envKey);
  const v = process.env[envKey];
  return v !== undefined && v !== '';
}

/** Delay before round `round` (0-based): min(minBackoff * 2^round, maxBackoff). */
export function backoffDelay(round: number, minBackoff = 1000, maxBackoff = 60_000): number {
  validateInteger(round, 'round', 0); validateDuration(minBackoff, 'minBackoff'); validateDuration(maxBackoff, 'maxBackoff');
  return Math.min(minBackoff * 2 ** Math.min(round, 52), maxBackoff);
}

function mainCommand(): { file: string; args: string[] } {
  const script = process.argv[1];
  const args = [...process.execArgv];
  if (script !== undefined) args.push(script);
  args.push(...process.argv.slice(2));
  return { file: process.execPath, args };
}

/**
 * In the monitored child (`envKey` set), resolves at once: the child then
 * reports readiness with `initstatus.report(process.env[envKey])`.
 *
 * In the monitor, loops until `options.signal` aborts: starts the program
 * again (same execPath, execArgv, script and arguments, the full environment
 * plus `envKey=<readiness address>`, stdio inherited), waits for its report;
 * on failure, or if it dies first, waits min(minBackoff * 2^round,
 * maxBackoff) and starts it again; after a successful report the round
 * counter goes back to 0 and the monitor waits for the child to end (then
 * starts it again). On abort the child gets `shutdownSignal`, then SIGKILL
 * after `shutdownTimeout`, and selfMonitor rejects with the abort reason.
 */
export async function selfMonitor(envKey: string, options: SelfMonitorOptions = {}): Promise<void> {
  validateEnvKey(envKey);
  validateObject(options as unknown, 'options');
  const {
    signal, shutdownSignal = 'SIGINT', shutdownTimeout = 10_000, minBackoff = 1000, maxBackoff = 60_000,
    onEvent, transport = 'pipe',
  } = options;
  validateAbortSignal(signal, 'options.signal');
  const shutdownName = signalName(toSignalNumber(shutdownSignal, 'options.shutdownSignal')) as NodeJS.Signals;
  validateDuration(shutdownTimeout, 'options.shutdownTimeout');
  validateDuration(minBackoff, 'options.minBackoff');
  validateDuration(maxBackoff, 'options.maxBackoff');
  if (maxBackoff < minBackoff) {
    throw outOfRange('options.maxBackoff', `>= options.minBackoff (${minBackoff})`, maxBackoff);
  }
  if (onEvent !== undefined) validateFunction(onEvent, 'options.onEvent');
  if (transport !== 'pipe' && transport !== 'http') {
    throw invalidArgValue('options.transport', transport, "must be 'pipe' or 'http'");
  }

  if (isMonitored(envKey)) return;
  validateChildProcessAllowed(process.execPath);

  // One signal for everything below: the caller's, or a stop signal that
  // reached the monitor while nobody else listens for it (see below).
  const stop = new AbortController();
  const onCallerAbort = (): void => stop.abort(signal!.reason);
  signal?.addEventListener('abort', onCallerAbort, { once: true });
  if (signal?.aborted) onCallerAbort();
  const signals = stopOnSignals((sig) => {
    const reason = new Error(`selfMonitor received ${sig}`) as Error & { code: string; signal: NodeJS.Signals };
    reason.code = 'ERR_MONITOR_SIGNALED';
    reason.signal = sig;
    stop.abort(reason);
  });
  try {
    await run(stop.signal);
  } finally {
    signal?.removeEventListener('abort', onCallerAbort);
    signals.uninstall();
  }
  return;

  async function run(signal: AbortSignal): Promise<void> {

  const emit = (event: MonitorEvent): void => {
    debug('monitor: %j', event);
    if (onEvent) {
      try {
        onEvent(event);
      } catch (err) {
        debug('monitor: onEvent threw: %s', err);
      }
    }
  };
  const stopped = (): never => {
    emit({ type: 'stopped', reason: signal.reason });
    const received = signals.received;
    if (received !== null) {
      // The worker group is gone; now end as the signal would have ended us
      // (a shell sees "killed by SIGINT"), unless someone listens by now.
      signals.uninstall();
      if (process.listenerCount(received) === 0) process.kill(process.pid, received);
    }
    throw signal.reason ?? abortError();
  };
  if (signal?.aborted) stopped();

  const { file, args } = mainCommand();
  let round = 0;
  for (;;) {
    let worker: Launched;
    try {
      worker = await startWorker();
    } catch (err) {
      // The program could not even be started (fds exhausted, binary gone):
      // that is a failed round like any other.
      emit({ type: 'start-failed', round, error: err as Error });
      if (!(await backoff())) stopped();
      continue;
    }
    emit({ type: 'start', pid: worker.pid, round });
    const pgid = worker.pid;  // it leads its own group (fork plan setpgid)

    const notReady = await worker.ready({ signal }).then(() => null, (err: Error) => err);
    if (notReady === null) {
      emit({ type: 'ready', pid: worker.pid });
      round = 0;
      if (await untilAborted(worker.exited, signal) === ABORTED) await shutdown(worker);
      else await endRemains(pgid);
      await exitEvent(worker, true);
      if (signal?.aborted) stopped();
      continue;  // as in Go: a child that ends after readiness is started again at once
    }
    if (signal?.aborted) {
      await shutdown(worker);
      await exitEvent(worker, false);
      stopped();
    }
    if (!isExitedError(notReady)) {
      // A reported failure: the worker may still be running; it is not
      // ready, so it is stopped before the next attempt.
      emit({ type: 'not-ready', pid: worker.pid, error: notReady });
      if (worker.status === null) await shutdown(worker);
    }
    await worker.exited;
    await endRemains(pgid);
    await exitEvent(worker, false);
    if (!(await backoff())) stopped();
  }

  /** A fresh receiver, and the program started again with its address (plus any pending pipe receiver named in the environment). */
  async function startWorker(): Promise<Launched> {
    const rx = await receiver({ transport });
    const env = { ...(process.env as Record<string, string>), [envKey]: rx.address };
    return launch({
      what: 'worker',
      // Its own process group: what it starts is stopped with it.
      spawn: (keepFds) => fork({ file, args, stdio: 'inherit', env, keepFds, setpgid: true }),
      killTarget: (pid) => -pid,
      receiver: rx,
      addresses: Object.values(env),
    });
  }

  async function exitEvent(worker: Launched, ready: boolean): Promise<void> {
    const r = await worker.exited;
    emit({ type: 'exit', pid: worker.pid, code: r?.exitCode ?? null, signal: r?.signal ?? null, ready });
  }

  /** Sleeps the backoff of this round; false if aborted meanwhile. */
  async function backoff(): Promise<boolean> {
    const ms = backoffDelay(round, minBackoff, maxBackoff);
    emit({ type: 'backoff', delay: ms, round });
    round++;
    try {
      await delay(ms, undefined, { signal });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * shutdownSignal (or the stop signal the monitor received) to the worker's
   * process group, then SIGKILL to the group after shutdownTimeout; resolves
   * once the worker is reaped and nothing of its group is left.
   */
  async function shutdown(worker: Launched): Promise<void> {
    const name = signals.received ?? shutdownName;
    emit({ type: 'shutdown', pid: worker.pid, signal: name });
    worker.kill(name);  // false if already gone: the wait below returns at once
    const timer = new AbortController();
    const outcome = await Promise.race([worker.exited,
      delay(shutdownTimeout, TIMED_OUT, { signal: timer.signal }).catch(() => null)]);
    timer.abort();
    if (outcome === TIMED_OUT) {
      emit({ type: 'kill', pid: worker.pid });
      worker.kill('SIGKILL');
    }
    await worker.exited;
    // Members that ignored the signal already got it with the group.
    await endRemains(worker.pid, null);
  }

  /** After the worker ended: what it started in its group is stopped too (they would hold its ports). */
  async function endRemains(pgid: number, sig: NodeJS.Signals | null = shutdownName): Promise<void> {
    const n = await endGroupRemains(pgid, sig, shutdownTimeout);
    if (n > 0) debug('monitor: ended %d process(es) left in the group of worker %d', n, pgid);
  }
  }
}

/**
 * While the monitor runs: SIGINT, SIGTERM and SIGHUP that nobody else
 * listens for stop it the orderly way. Without this, such a signal would
 * kill the monitor at once and leave its worker's group running: the worker
 * leads its own group, so a terminal's Ctrl-C (sent to the terminal's
 * foreground group) and a hangup reach only the monitor. With a listener of
 * the caller's (the documented `ac.abort()` wiring) this stays out of the way.
 */
function stopOnSignals(onStop: (sig: NodeJS.Signals) => void): { received: NodeJS.Signals | null; uninstall(): void } {
  const listeners: Array<[NodeJS.Signals, () => void]> = [];
  const state = {
    received: null as NodeJS.Signals | null,
    uninstall(): void {
      for (const [sig, fn] of listeners) process.removeListener(sig, fn);
      listeners.length = 0;
    },
  };
  for (const sig of STOP_SIGNALS) {
    const fn = (): void => {
      if (process.listenerCount(sig) > 1) return;  // the caller handles it
      if (state.received !== null) return;  // a second Ctrl-C: already stopping
      debug('monitor: %s with no other listener: stopping the worker group', sig);
      state.received = sig;
      onStop(sig);
    };
    process.on(sig, fn);
    listeners.push([sig, fn]);
  }
  return state;
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

const ABORTED = Symbol('aborted');
const TIMED_OUT = Symbol('timed out');


/**
 * `p`'s value, or ABORTED if `signal` aborts first. The abort listener is
 * removed either way: a monitor runs for months and restarts its child many
 * times, and must not pile listeners on the caller's signal.
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof ABORTED> {
  if (!signal) return p;
  if (signal.aborted) return Promise.resolve(ABORTED);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => resolve(ABORTED);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    }, (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}
