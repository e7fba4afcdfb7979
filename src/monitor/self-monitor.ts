/**
 * selfMonitor(): validation, then the worker's side (resolve at once) or
 * the monitor's (one worker: single.ts; `workers`: pool.ts), with the stop
 * signals and the controls of the returned promise.
 */
import { armRestartSignal } from '../autorestart/exec';
import { debuglog } from 'node:util';
import { abortError, codedError, invalidArgValue, outOfRange } from '../errors';
import { addShutdownParticipant } from '../graceful';
import {
  signalName, toCatchableSignal, toSignalNumber, validateAbortSignal, validateArray, validateChildProcessAllowed,
  validateDuration, validateFunction, validateInteger, validateObject, validateOptionKeys, validateString,
} from '../validators';
import { isMonitored } from '../monitor';
import { reportDaemon } from '../daemon-ready';
import { SERVICE_MANAGER_ADDRESS } from '../initstatus';
import { validateEnvKey } from './env-key';
import { validateWorkers, workerCount } from './cpus';
import { setUpWorker } from './in-worker';
import { Pool } from './pool';
import { runSingle } from './single';
import { MONITOR_WORKERS_ENV } from './handover';
import type { MonitorEvent, MonitorPromise, MonitorSocket, SelfMonitorOptions } from './types';

const debug = debuglog('posix-daemon');

const KNOWN = ['signal', 'shutdownSignal', 'shutdownTimeout', 'minBackoff', 'maxBackoff', 'onEvent', 'transport',
  'maxRestarts', 'restartWindow', 'workers', 'sockets', 'reloadOn', 'readyTimeout', 'maxMemory', 'memoryInterval',
  'restartOnChange'];

/** Every key of MonitorSocket (tsc says which is missing), for validateOptionKeys. */
const SOCKET_KEY_SET: Record<keyof MonitorSocket, true> = { name: true, port: true, host: true, backlog: true };
const SOCKET_KEYS = Object.keys(SOCKET_KEY_SET);

function validateSockets(sockets: unknown): MonitorSocket[] {
  validateArray(sockets, 'options.sockets');
  const names = new Set<string>();
  return sockets.map((s, i) => {
    const n = `options.sockets[${i}]`;
    validateObject(s, n);
    validateOptionKeys(s, n, SOCKET_KEYS);
    const o = s as unknown as MonitorSocket;
    validateString(o.name, `${n}.name`);
    if (!/^[\x20-\x39\x3b-\x7e]{1,255}$/.test(o.name)) {
      throw invalidArgValue(`${n}.name`, o.name, 'must be 1 to 255 printable ASCII characters without ":"');
    }
    if (names.has(o.name)) throw invalidArgValue(`${n}.name`, o.name, 'must be unique');
    names.add(o.name);
    if (o.port !== undefined) validateInteger(o.port, `${n}.port`, 0, 65535);
    if (o.host !== undefined) validateString(o.host, `${n}.host`);
    if (o.backlog !== undefined) validateInteger(o.backlog, `${n}.backlog`, 0, 2 ** 31 - 1);
    return { name: o.name, port: o.port, host: o.host, backlog: o.backlog };
  });
}

/**
 * In the monitored child (`envKey` set), resolves at once: the child then
 * reports readiness with `initstatus.report(process.env[envKey])`, and
 * ends (its servers drained) on the signal its monitor stops it with.
 *
 * In the monitor, runs until `options.signal` aborts (see the README):
 * one worker restarted with backoff, or with `workers` N slots sharing the
 * monitor's `sockets`, rolled one at a time on `reloadOn`, `reload()` and
 * (with `restartOnChange`) a change of the program.
 */
export function selfMonitor(envKey: string, options: SelfMonitorOptions = {}): MonitorPromise {
  let controls: { reload(): Promise<void>; workers(): ReturnType<MonitorPromise['workers']>; sockets(): ReturnType<MonitorPromise['sockets']> } = {
    reload: () => Promise.reject(Object.assign(new Error('selfMonitor: not a monitor (or not running)'), { code: 'ERR_MONITOR_NOT_RUNNING' })),
    workers: () => [],
    sockets: () => [],
  };
  const promise = start(envKey, options, (c) => { controls = c; }) as MonitorPromise;
  promise.reload = () => controls.reload();
  promise.workers = () => controls.workers();
  promise.sockets = () => controls.sockets();
  return promise;
}

async function start(envKey: string, options: SelfMonitorOptions,
  setControls: (c: { reload(): Promise<void>; workers(): Array<{ slot: number; pid: number; ready: boolean }>;
    sockets(): Array<{ name: string; fd: number; port?: number; address?: string }> }) => void): Promise<void> {
  validateEnvKey(envKey);
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', KNOWN);
  const {
    signal, shutdownSignal = 'SIGINT', shutdownTimeout = 10_000, minBackoff = 1000, maxBackoff = 60_000,
    onEvent, transport = 'pipe', maxRestarts = 10, restartWindow = 60_000, workers, sockets = [], reloadOn,
    maxMemory = 0, memoryInterval = 5000, restartOnChange = false,
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
  if (maxRestarts !== Infinity) validateInteger(maxRestarts, 'options.maxRestarts', 0);
  validateDuration(restartWindow, 'options.restartWindow');
  validateWorkers(workers, 'options.workers');
  const socketSpecs = validateSockets(sockets);
  const reloadName = reloadOn === undefined ? undefined : toCatchableSignal(reloadOn, 'options.reloadOn');
  const readyTimeout = options.readyTimeout ?? (workers === undefined ? 0 : 60_000);
  validateDuration(readyTimeout, 'options.readyTimeout');
  if (maxMemory !== 0) validateInteger(maxMemory, 'options.maxMemory', 1);
  validateDuration(memoryInterval, 'options.memoryInterval');
  if (memoryInterval === 0) throw outOfRange('options.memoryInterval', '> 0', memoryInterval);
  if (typeof restartOnChange !== 'boolean') validateObject(restartOnChange, 'options.restartOnChange');
  const pooled = workers !== undefined || socketSpecs.length > 0 || reloadName !== undefined || maxMemory > 0 || restartOnChange !== false;

  if (isMonitored(envKey)) {
    setUpWorker(envKey);
    return;
  }
  validateChildProcessAllowed(process.execPath);

  // One signal for everything below: the caller's, a stop signal that
  // reached the monitor while nobody else listens for it (see below), or a
  // gracefulShutdown() of this process.
  const stop = new AbortController();
  const onCallerAbort = (): void => stop.abort(signal!.reason);
  signal?.addEventListener('abort', onCallerAbort, { once: true });
  if (signal?.aborted) onCallerAbort();
  const signals = stopOnSignals((sig) => {
    stop.abort(codedError(`selfMonitor received ${sig}`, 'ERR_MONITOR_SIGNALED', { signal: sig }));
  });
  // In a daemon that has not reported yet: it is ready once every slot is
  // (issue 22, item 7). A pool under systemd sends READY=1 itself.
  const daemonReadyOn = pooled ? 'all-ready' : 'ready';
  const skipDaemon = (address: string): boolean => pooled && address === SERVICE_MANAGER_ADDRESS;
  const emit = (event: MonitorEvent): void => {
    if (event.type === daemonReadyOn) void reportDaemon(null, skipDaemon);
    debug('monitor: %j', event);
    if (onEvent) {
      try {
        onEvent(event);
      } catch (err) {
        debug('monitor: onEvent threw: %s', err);
      }
    }
  };
  let finished: Promise<unknown> = Promise.resolve();
  // Stopped by gracefulShutdown(), which exits the process next: this
  // promise then never settles, so the code after `await selfMonitor()`
  // (the worker's code) never runs in the monitor, and no rejection ends
  // the process with 1 before the exit with 0.
  let exiting = false;
  const removeParticipant = addShutdownParticipant(async (_deadline, willExit) => {
    exiting = willExit;
    stop.abort(Object.assign(new Error('selfMonitor stopped by gracefulShutdown'), { code: 'ERR_MONITOR_SHUTDOWN' }));
    await finished.catch(() => {});
  });
  let reloadListener: (() => void) | undefined;
  try {
    return await run();
  } catch (err) {
    if (err === NEVER) return new Promise<never>(() => {});
    // The workers never all came up (a spent restart budget, a stop): the
    // daemon's foreground learns why, instead of waiting for its timeout.
    await reportDaemon(err instanceof Error ? err : new Error(String(err)), skipDaemon);
    throw err;
  }

  async function run(): Promise<void> {
  try {
    if (!pooled) {
      const running = runSingle({
        ctx: {
          envKey, transport, shutdownName, shutdownTimeout, keepFds: [],
          env: () => ({ [MONITOR_WORKERS_ENV]: undefined }),
        },
        minBackoff, maxBackoff, maxRestarts, restartWindow, emit,
        received: () => signals.received,
        stopped: () => stopped(stop.signal),
      }, stop.signal);
      finished = running;
      await running;
      return;
    }
    const n = workerCount(workers);
    const pool = new Pool({
      envKey, workers: n, sockets: socketSpecs, transport, shutdownName, shutdownTimeout, minBackoff, maxBackoff,
      maxRestarts, restartWindow, readyTimeout, maxMemory, memoryInterval, restartOnChange, emit,
      received: () => signals.received,
    }, stop.signal);
    setControls({ reload: () => pool.reload('call'), workers: () => pool.workers(), sockets: () => pool.sockets() });
    if (reloadName !== undefined) {
      reloadListener = (): void => {
        pool.reload('signal').catch((err: Error) => debug('monitor: reload on %s: %s', reloadName, err.message));
      };
      process.on(reloadName, reloadListener);
      armRestartSignal(reloadName, true);
    }
    const running = pool.run();
    finished = running;
    try {
      await running;
    } catch (err) {
      if (stop.signal.aborted) stopped(stop.signal);
      emit({ type: 'stopped', reason: err });
      throw err;
    }
  } finally {
    removeParticipant();
    if (reloadListener) {
      process.removeListener(reloadName!, reloadListener);
      armRestartSignal(reloadName!, false);
    }
    signal?.removeEventListener('abort', onCallerAbort);
    signals.uninstall();
  }
  }

  function stopped(s: AbortSignal): never {
    emit({ type: 'stopped', reason: s.reason });
    if (exiting) throw NEVER;
    const received = signals.received;
    if (received !== null) {
      // The workers are gone; now end as the signal would have ended us
      // (a shell sees "killed by SIGINT"), unless someone listens by now.
      signals.uninstall();
      if (process.listenerCount(received) === 0) process.kill(process.pid, received);
    }
    throw s.reason ?? abortError();
  }
}

/**
 * While the monitor runs: SIGINT, SIGTERM and SIGHUP that nobody else
 * listens for stop it the orderly way. Without this, such a signal would
 * kill the monitor at once and leave its workers' groups running: each
 * worker leads its own group, so a terminal's Ctrl-C (sent to the
 * terminal's foreground group) and a hangup reach only the monitor. With a
 * listener of the caller's (the documented `ac.abort()` wiring) this stays
 * out of the way.
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

/** Thrown inside when gracefulShutdown stops the monitor and exits: the promise is left pending. */
const NEVER = Symbol('the process exits');

