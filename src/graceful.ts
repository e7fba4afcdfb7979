/**
 * gracefulShutdown(): the orderly end of a service process on SIGTERM (or
 * the signals given), for a single server process, a worker and a monitor
 * alike:
 *
 *   signal → STOPPING=1 (under systemd) → wait `delay` → stop accepting →
 *   in-flight requests finish → idle keep-alive connections close → what
 *   else registered to stop (a monitor's workers) stops → exit 0;
 *   at `timeout`: every connection is closed and the process exits 1.
 *
 * `delay` is for Kubernetes, which removes a pod's endpoints concurrently
 * with sending SIGTERM (kubernetes#67592): for a moment after SIGTERM new
 * connections still arrive, and a server that stopped accepting at once
 * would refuse them.
 */
import type { Server } from 'node:net';
import { debuglog } from 'node:util';
import { closeAll, closeIdle, drain, enterPhase, knownServers, trackResponses } from './lifecycle';
import { stopping } from './systemd';
import {
  signalName, toSignalNumber, validateArray, validateBoolean, validateDuration, validateFunction, validateObject,
  validateOptionKeys, validateServer,
} from './validators';

const debug = debuglog('posix-daemon');

export interface GracefulShutdownOptions {
  /**
   * Servers to drain. Default: every server that serves in this process at
   * the time of the signal, however it listens (`listen()`, a plain
   * `server.listen()`, Express, Fastify, `listen({ fd })`), and every
   * server a restart is draining at that moment.
   */
  servers?: Server[];
  /** Signals that start the shutdown. Default ['SIGTERM', 'SIGINT']. */
  signals?: Array<NodeJS.Signals | number>;
  /** Milliseconds to keep serving after the signal, before anything stops. Default 0. */
  delay?: number;
  /** Milliseconds from the signal until everything is forced closed and the process exits 1. Default 10 000. */
  timeout?: number;
  /** Runs once the servers drained (close a database); awaited within `timeout`. */
  onShutdown?: () => unknown;
  /** Exit once done (default true); false: only drain and run the hooks (the promise of shutdown() says when). */
  exit?: boolean;
}

export interface GracefulShutdownHandle {
  /** Aborted when the shutdown starts (pass it on: `selfMonitor(key, { signal })`, fetches, timers). */
  readonly signal: AbortSignal;
  /** Starts the shutdown now (as the signal would); resolves when it is done (before the exit). */
  shutdown(reason?: unknown): Promise<void>;
  /** Removes the signal listeners (no shutdown). */
  uninstall(): void;
}

/**
 * What else must stop before the process may exit (a running selfMonitor
 * registers its workers' shutdown here). Each gets the deadline's signal.
 */
type Participant = (deadline: AbortSignal, exiting: boolean) => Promise<void>;
const participants = new Set<Participant>();

/** Registers a participant; returns its removal. Internal (selfMonitor). */
export function addShutdownParticipant(p: Participant): () => void {
  participants.add(p);
  return () => participants.delete(p);
}

/**
 * Stops accepting on `servers` and lets them drain (lifecycle.ts's drain:
 * a drain already under way, a restart's, is joined); idle connections
 * close after `idleGrace`.
 */
export async function drainServers(servers: Server[], timeout: number, idleGrace: number): Promise<void> {
  // drain() answers requests on keep-alive connections with "Connection:
  // close" and leaves idle ones alone for a moment: closing a connection the
  // client is just sending a request on costs that request. After the grace,
  // connections still idle are closed.
  const idle = setTimeout(() => closeIdle(servers), Math.min(idleGrace, timeout));
  try {
    await Promise.all(servers.map((s) => drain(s, timeout)));
  } finally {
    clearTimeout(idle);
  }
}

/**
 * The shutdown a worker gets from selfMonitor on its monitor's stop signals
 * when the program sets up none of its own. A program's own
 * gracefulShutdown() replaces it, and listens for those signals too: the
 * monitor stops its workers with them.
 */
const kWorker = Symbol('a worker: its monitor speaks to systemd');
let implicit: { handle: GracefulShutdownHandle; signals: NodeJS.Signals[] } | undefined;
/** Adds signals to the program's own gracefulShutdown (the last one set up). */
let explicit: ((signals: NodeJS.Signals[]) => void) | undefined;

/** Installs the implicit shutdown (selfMonitor, in a worker). */
export function implicitShutdown(signals: NodeJS.Signals[], timeout: number): void {
  if (implicit !== undefined) return;
  // The program set up its own already: it hears the monitor's signals too.
  if (explicit !== undefined) {
    explicit(signals);
    return;
  }
  implicit = { handle: gracefulShutdown({ signals, timeout, [kWorker]: true } as GracefulShutdownOptions), signals };
}

/** The keys of GracefulShutdownOptions, for validateOptionKeys. */
const GRACEFUL_KEY_SET: Record<keyof GracefulShutdownOptions, true> = {
  servers: true, signals: true, delay: true, timeout: true, onShutdown: true, exit: true,
};
const GRACEFUL_KEYS = Object.keys(GRACEFUL_KEY_SET);

export function gracefulShutdown(options: GracefulShutdownOptions = {}): GracefulShutdownHandle {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', GRACEFUL_KEYS);
  const { servers, signals = ['SIGTERM', 'SIGINT'], delay = 0, timeout = 10_000, onShutdown, exit = true } = options;
  if (servers !== undefined) {
    validateArray(servers, 'options.servers');
    servers.forEach((s, i) => validateServer(s, `options.servers[${i}]`));
  }
  validateArray(signals, 'options.signals');
  let names = [...new Set(signals.map((s, i) => signalName(toSignalNumber(s, `options.signals[${i}]`)) as NodeJS.Signals))];
  validateDuration(delay, 'options.delay');
  validateDuration(timeout, 'options.timeout');
  if (onShutdown !== undefined) validateFunction(onShutdown, 'options.onShutdown');
  validateBoolean(exit, 'options.exit');
  // Only valid options replace the shutdown a worker got from selfMonitor:
  // a throw above leaves it handling the monitor's signals.
  if (implicit !== undefined) {
    const { handle, signals: monitorSignals } = implicit;
    implicit = undefined;
    handle.uninstall();
    names = [...new Set([...names, ...monitorSignals])];
  }
  // From now on: a drain must reach the requests in flight when it starts.
  for (const s of servers ?? []) trackResponses(s);

  const ac = new AbortController();
  let done: Promise<void> | undefined;
  const listeners: Array<[NodeJS.Signals, () => void]> = [];
  let addSignals: ((signals: NodeJS.Signals[]) => void) | undefined;
  const uninstall = (): void => {
    for (const [sig, fn] of listeners) process.removeListener(sig, fn);
    listeners.length = 0;
    if (explicit === addSignals) explicit = undefined;
  };

  const run = async (reason: unknown): Promise<void> => {
    const started = Date.now();
    debug('gracefulShutdown: %s', reason instanceof Error ? reason.message : reason);
    // A worker stopping is not the service stopping.
    if (!(options as { [kWorker]?: boolean })[kWorker]) stopping();
    // No restart starts from here on, and one under way gives up before its exec.
    enterPhase('stopping', reason instanceof Error ? reason.message : String(reason));
    ac.abort(reason);
    const deadline = new AbortController();
    let forced = false;
    const force = setTimeout(() => {
      forced = true;
      debug('gracefulShutdown: not done within %d ms: closing every connection', timeout);
      deadline.abort(new Error(`graceful shutdown timed out after ${timeout} ms`));
      closeAll(servers ?? knownServers());
      if (exit) process.exit(1);
    }, timeout);
    try {
      if (delay > 0) await new Promise((r) => setTimeout(r, Math.min(delay, timeout)));
      const left = Math.max(0, timeout - (Date.now() - started));
      await Promise.all([
        // The drain's own deadline comes after ours: a cut connection is a forced end (exit 1).
        drainServers(servers ?? knownServers(), left + 1000, 1000),
        ...[...participants].map((p) => p(deadline.signal, exit).catch((err: Error) => debug('gracefulShutdown: %s', err.message))),
      ]);
      if (onShutdown) await onShutdown();
    } finally {
      uninstall();
      if (!forced) clearTimeout(force);
    }
    if (forced) return;
    debug('gracefulShutdown: done in %d ms', Date.now() - started);
    if (exit) process.exit(0);
  };

  const shutdown = (reason: unknown = new Error('shutdown requested')): Promise<void> => {
    done ??= run(reason);
    return done;
  };
  const listenTo = (sig: NodeJS.Signals): void => {
    if (listeners.some(([s]) => s === sig)) return;
    const fn = (): void => {
      // A second signal while shutting down: the first shutdown goes on.
      void shutdown(Object.assign(new Error(`received ${sig}`), { code: 'ERR_SHUTDOWN_SIGNALED', signal: sig }))
        .catch((err: Error) => {
          debug('gracefulShutdown: %s', err.message);
          if (exit) process.exit(1);
        });
    };
    process.on(sig, fn);
    listeners.push([sig, fn]);
  };
  for (const sig of names) listenTo(sig);
  if (!(options as { [kWorker]?: boolean })[kWorker]) {
    addSignals = (more) => { for (const sig of more) listenTo(sig); };
    explicit = addSignals;
  }
  return { signal: ac.signal, shutdown, uninstall };
}
