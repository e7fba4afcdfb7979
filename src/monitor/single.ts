/**
 * One worker (no `workers` option): Go's `daemon/monitor` loop. The monitor
 * starts the program again as its child, waits for its readiness report,
 * and restarts it with exponential backoff when it fails to start or dies;
 * after a successful report the round counter goes back to 0 and a worker
 * that ends is started again at once (as in Go), within the restart budget.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { codedError } from '../errors';
import { isExitedError } from '../launch';
import { backoffDelay } from '../monitor';
import { endRemains, startWorker, stopWorker, type Worker, type WorkerContext } from './worker';
import type { MonitorEvent } from './types';

export interface SingleConfig {
  ctx: WorkerContext;
  minBackoff: number;
  maxBackoff: number;
  maxRestarts: number;
  restartWindow: number;
  emit(event: MonitorEvent): void;
  received(): NodeJS.Signals | null;
  /** Ends the monitor the way the stop requires (rethrows the reason). */
  stopped(): never;
}

const ABORTED = Symbol('aborted');

export async function runSingle(cfg: SingleConfig, signal: AbortSignal): Promise<never> {
  const { ctx, emit } = cfg;
  if (signal.aborted) cfg.stopped();
  let round = 0;
  let restarts: number[] = [];
  for (;;) {
    let worker: Worker;
    try {
      worker = await startWorker(ctx, 0);
    } catch (err) {
      // The program could not even be started (fds exhausted, binary gone):
      // that is a failed round like any other.
      emit({ type: 'start-failed', round, error: err as Error });
      spend();
      if (!(await backoff())) cfg.stopped();
      continue;
    }
    emit({ type: 'start', pid: worker.pid, round });
    const pgid = worker.pid;  // it leads its own group (fork plan setpgid)

    const notReady = await worker.ready({ signal }).then(() => null, (err: Error) => err);
    if (notReady === null) {
      emit({ type: 'ready', pid: worker.pid });
      round = 0;
      if (await untilAborted(worker.exited, signal) === ABORTED) await shutdown(worker);
      else await endRemains(pgid, ctx.shutdownName, ctx.shutdownTimeout);
      await exitEvent(worker, true);
      if (signal.aborted) cfg.stopped();
      spend();
      continue;  // as in Go: a child that ends after readiness is started again at once
    }
    if (signal.aborted) {
      await shutdown(worker);
      await exitEvent(worker, false);
      cfg.stopped();
    }
    if (!isExitedError(notReady)) {
      // A reported failure: the worker may still be running; it is not
      // ready, so it is stopped before the next attempt.
      emit({ type: 'not-ready', pid: worker.pid, error: notReady });
      if (worker.status === null) await shutdown(worker);
    }
    await worker.exited;
    await endRemains(pgid, ctx.shutdownName, ctx.shutdownTimeout);
    await exitEvent(worker, false);
    spend();
    if (!(await backoff())) cfg.stopped();
  }

  /** Counts a restart; throws ERR_MONITOR_RESTART_LIMIT once more than maxRestarts fall in restartWindow. */
  function spend(): void {
    const now = Date.now();
    restarts = restarts.filter((t) => t > now - cfg.restartWindow);
    restarts.push(now);
    if (restarts.length <= cfg.maxRestarts) return;
    const err = codedError(`the worker was restarted ${restarts.length} times within ${cfg.restartWindow} ms ` +
      `(maxRestarts ${cfg.maxRestarts}): giving up`, 'ERR_MONITOR_RESTART_LIMIT');
    emit({ type: 'gave-up', error: err });
    throw err;
  }

  async function exitEvent(worker: Worker, ready: boolean): Promise<void> {
    const r = await worker.exited;
    emit({ type: 'exit', pid: worker.pid, code: r?.exitCode ?? null, signal: r?.signal ?? null, ready });
  }

  /** Sleeps the backoff of this round; false if aborted meanwhile. */
  async function backoff(): Promise<boolean> {
    const ms = backoffDelay(round, cfg.minBackoff, cfg.maxBackoff);
    emit({ type: 'backoff', delay: ms, round });
    round++;
    try {
      await delay(ms, undefined, { signal });
      return true;
    } catch {
      return false;
    }
  }

  function shutdown(worker: Worker): Promise<void> {
    return stopWorker(worker, cfg.received() ?? ctx.shutdownName, ctx.shutdownTimeout, {
      shutdown: (pid, sig) => emit({ type: 'shutdown', pid, signal: sig }),
      kill: (pid) => emit({ type: 'kill', pid }),
    });
  }
}

/**
 * `p`'s value, or ABORTED if `signal` aborts first. The abort listener is
 * removed either way: a monitor runs for months and restarts its child many
 * times, and must not pile listeners on the caller's signal.
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | typeof ABORTED> {
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
