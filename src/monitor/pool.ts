/**
 * Many workers: N slots, each running one copy of the program as today's
 * single worker does (own process group, readiness report, backoff); the
 * monitor owns the listening sockets; rolling reloads replace one slot at a
 * time; a restart budget ends a slot's crash loop (the other slots serve
 * on; the monitor ends once every slot gave up); maxMemory replaces a
 * worker through the same roll.
 */
import { enterPhase, markUp, phase } from '../lifecycle';
import { setTimeout as delay } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { ready as sdReady, reloading as sdReloading, status as sdStatus, startWatchdog, notifyError } from '../systemd';
import { isExitedError } from '../launch';
import { restartOnChange } from '../autorestart/on-change';
import { abortError, codedError } from '../errors';
import { backoffDelay } from '../monitor';
import { closeSockets, openSockets, workerHandoff, type HeldSocket } from './sockets';
import { adoptWorker, endRemains, rssOf, startWorker, stopWorker, type Worker, type WorkerContext } from './worker';
import { describeWorkers, forgetWorkers, takeHandedWorkers, MONITOR_WORKERS_ENV } from './handover';
import type { MonitorEvent, MonitorSocket, SelfMonitorOptions } from './types';

const debug = debuglog('posix-daemon');

export interface PoolConfig {
  envKey: string;
  workers: number;
  sockets: MonitorSocket[];
  transport: 'pipe' | 'http';
  shutdownName: NodeJS.Signals;
  shutdownTimeout: number;
  minBackoff: number;
  maxBackoff: number;
  maxRestarts: number;
  restartWindow: number;
  readyTimeout: number;
  maxMemory: number;
  memoryInterval: number;
  restartOnChange: SelfMonitorOptions['restartOnChange'];
  emit(event: MonitorEvent): void;
  /** The stop signal the monitor received itself (forwarded to the workers), if any. */
  received(): NodeJS.Signals | null;
}

interface Slot {
  index: number;
  current: Worker | null;
  /** Ready since; false while starting. */
  ready: boolean;
  /** A restart (after a crash or failed start) is under way. */
  restarting: boolean;
  /** A roll is replacing this slot's worker: a crash of the old one is not restarted. */
  replacing: boolean;
  /** The start under way outside a roll (first start, restart), until it is ready or failed. */
  starting: Promise<unknown> | null;
  round: number;
  restarts: number[];
  /** The slot spent its restart budget (this error): no more restarts, until a reload tries it again. */
  failed: Error | null;
}

function restartLimitError(slot: number, n: number, window: number, max: number): Error {
  return codedError(`worker slot ${slot} was restarted ${n} times within ${window} ms (maxRestarts ${max}): giving up`,
    'ERR_MONITOR_RESTART_LIMIT', { slot });
}

export class Pool {
  private slots: Slot[] = [];
  private held: HeldSocket[] = [];
  /** Every worker process not yet reaped (current, starting, draining). */
  private live = new Set<Worker>();
  private stopping = false;
  private fatal: Error | null = null;
  private allReadyOnce = false;
  private rollChain: Promise<void> = Promise.resolve();
  private pendingFull: Promise<void> | null = null;
  private ctx!: WorkerContext;
  private readonly wake = new AbortController();
  private readonly memoryQueued = new Set<Slot>();

  constructor(private readonly cfg: PoolConfig, private readonly stop: AbortSignal) {}

  workers(): Array<{ slot: number; pid: number; ready: boolean }> {
    return this.slots.filter((s) => s.current !== null).map((s) => ({ slot: s.index, pid: s.current!.pid, ready: s.ready }));
  }

  sockets(): Array<{ name: string; fd: number; port?: number; address?: string }> {
    return this.held.map(({ name, fd, port, address }) => ({ name, fd, port, address }));
  }

  /** Runs until stopped (rejects with the stop reason) or every slot spent its budget (rejects with the last slot's error). */
  async run(): Promise<void> {
    const { cfg } = this;
    this.held = await openSockets(cfg.sockets);
    const handoff = workerHandoff(this.held);
    this.ctx = {
      envKey: cfg.envKey,
      transport: cfg.transport,
      shutdownName: cfg.shutdownName,
      shutdownTimeout: cfg.shutdownTimeout,
      keepFds: this.held.map((s) => s.fd),
      // UV_TCP_SINGLE_ACCEPT: libuv accepts one connection per wake-up and
      // yields, so a burst of connections is less likely to all go to the
      // worker that woke first (the README has what it measured).
      // The monitor is the unit's main process and speaks for the service
      // (READY=1 for all workers, the watchdog): a worker's STOPPING=1
      // during a roll would tell systemd the whole service stops.
      env: () => ({
        ...handoff, [MONITOR_WORKERS_ENV]: undefined, UV_TCP_SINGLE_ACCEPT: process.env.UV_TCP_SINGLE_ACCEPT ?? '1',
        NOTIFY_SOCKET: undefined, WATCHDOG_USEC: undefined, WATCHDOG_PID: undefined,
      }),
    };
    for (let i = 0; i < cfg.workers; i++) {
      this.slots.push({
        index: i, current: null, ready: false, restarting: false, replacing: false, starting: null, round: 0, restarts: [], failed: null,
      });
    }
    const stopWatchdog = startWatchdog({ signal: this.stop });
    const onStop = (): void => this.wake.abort();
    this.stop.addEventListener('abort', onStop, { once: true });
    if (this.stop.aborted) onStop();
    let memoryTimer: NodeJS.Timeout | undefined;
    try {
      const adopted = this.adopt();
      for (const slot of this.slots) if (slot.current === null) void this.restart(slot, false);
      if (cfg.maxMemory > 0) {
        // RSS has no kernel notification short of a memory cgroup per
        // worker: read /proc at an interval (a few hundred bytes per worker).
        memoryTimer = setInterval(() => this.checkMemory(), cfg.memoryInterval);
        memoryTimer.unref();
      }
      if (cfg.restartOnChange) this.watchOwnCode();
      if (adopted > 0) void this.reload('exec').catch(() => {});
      // Wait for the end: a stop, or every slot's budget spent.
      await new Promise<void>((resolve) => {
        if (this.wake.signal.aborted) resolve();
        this.wake.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } finally {
      clearInterval(memoryTimer);
      this.stop.removeEventListener('abort', onStop);
      stopWatchdog();
      await this.shutdownAll();
      closeSockets(this.held);
      forgetWorkers();
    }
    if (this.fatal && !this.stop.aborted) throw this.fatal;
    throw this.stop.reason ?? abortError();
  }

  /** Takes over the workers of the image before an exec; returns how many. */
  private adopt(): number {
    let n = 0;
    for (const h of takeHandedWorkers()) {
      const w = adoptWorker(h.pid);
      this.live.add(w);
      void w.exited.then(() => this.live.delete(w));
      const slot = this.slots[h.slot];
      if (slot === undefined || slot.current !== null || !h.ready) {
        // Fewer slots now, or a worker that was still starting: not kept.
        void this.retire(w, slot?.index);
        continue;
      }
      slot.current = w;
      slot.ready = true;
      n++;
      this.cfg.emit({ type: 'adopted', slot: slot.index, pid: w.pid });
      this.watch(slot, w);
    }
    if (n > 0) this.changed();
    return n;
  }

  private emitSlot(e: MonitorEvent, slot: number): void {
    this.cfg.emit({ ...e, slot } as MonitorEvent);
  }

  /** "3/4 workers ready", and the slots that gave up: "; slot 2 gave up". */
  private statusText(): string {
    const failed = this.slots.filter((s) => s.failed !== null).map((s) => s.index);
    const text = `${this.slots.filter((s) => s.ready).length}/${this.slots.length} workers ready`;
    return failed.length === 0 ? text : `${text}; slot${failed.length > 1 ? 's' : ''} ${failed.join(', ')} gave up`;
  }

  /**
   * State changed: the exec hand-over, STATUS=, READY=1 the first time
   * every slot that has not given up is ready (the service is up: those
   * slots serve; STATUS= names the others).
   */
  private changed(): void {
    const readyCount = this.slots.filter((s) => s.ready).length;
    describeWorkers(this.slots.filter((s) => s.current !== null).map((s) => ({ slot: s.index, pid: s.current!.pid, ready: s.ready })));
    if (this.stopping) return;
    const text = this.statusText();
    if (readyCount === this.slots.length) this.cfg.emit({ type: 'all-ready', workers: readyCount });
    const live = this.slots.filter((s) => s.failed === null).length;
    if (!this.allReadyOnce && readyCount > 0 && readyCount === live) {
      this.allReadyOnce = true;
      markUp('every worker slot is ready');
      sdReady(text);
      return;
    }
    sdStatus(text);
  }

  /**
   * Counts a restart of `slot`; false once its budget is spent: the slot
   * gives up (as pm2 stops only the failing instance) and the others serve
   * on. The monitor ends when every slot has given up.
   */
  private spend(slot: Slot): boolean {
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => t > now - this.cfg.restartWindow);
    slot.restarts.push(now);
    if (slot.restarts.length <= this.cfg.maxRestarts) return true;
    const err = restartLimitError(slot.index, slot.restarts.length, this.cfg.restartWindow, this.cfg.maxRestarts);
    slot.failed = err;
    this.cfg.emit({ type: 'gave-up', slot: slot.index, error: err });
    notifyError(err);
    if (this.slots.every((s) => s.failed !== null)) {
      this.fatal ??= err;
      this.wake.abort();
    } else {
      debug('monitor: worker slot %d gave up; %s', slot.index, this.statusText());
      this.changed();
    }
    return false;
  }

  /** Starts one worker for `slot` and waits until it is ready; the error if it was not (it is stopped then). */
  private async startOne(slot: Slot, round: number): Promise<Worker | Error> {
    let w: Worker;
    try {
      w = await startWorker(this.ctx, slot.index);
    } catch (err) {
      this.emitSlot({ type: 'start-failed', round, error: err as Error }, slot.index);
      return err as Error;
    }
    this.live.add(w);
    void w.exited.then(() => this.live.delete(w));
    this.emitSlot({ type: 'start', pid: w.pid, round }, slot.index);
    const notReady = await w.ready({ signal: this.wake.signal, timeout: this.cfg.readyTimeout })
      .then(() => null, (err: Error) => err);
    if (notReady === null) {
      this.emitSlot({ type: 'ready', pid: w.pid }, slot.index);
      return w;
    }
    if (!isExitedError(notReady) && !this.wake.signal.aborted) {
      this.emitSlot({ type: 'not-ready', pid: w.pid, error: notReady }, slot.index);
    }
    await this.retire(w, slot.index, false);
    return notReady;
  }

  /** (Re)starts `slot` until a worker is ready, with backoff; `afterCrash` counts against the budget at once. */
  private async restart(slot: Slot, afterCrash: boolean): Promise<void> {
    if (slot.restarting) return;
    slot.restarting = true;
    try {
      if (afterCrash) {
        if (!this.spend(slot)) return;
        if (!(await this.backoff(slot))) return;
      }
      while (!this.wake.signal.aborted && slot.current === null) {
        const attempt = this.startOne(slot, slot.round);
        slot.starting = attempt;
        const r = await attempt;
        slot.starting = null;
        if (!(r instanceof Error)) {
          if (this.wake.signal.aborted) {
            await this.retire(r, slot.index);
            return;
          }
          slot.current = r;
          slot.ready = true;
          slot.round = 0;
          this.watch(slot, r);
          this.changed();
          return;
        }
        if (this.wake.signal.aborted) return;
        if (!this.spend(slot)) return;
        slot.round++;
        if (!(await this.backoff(slot, slot.round - 1))) return;
      }
    } finally {
      slot.restarting = false;
    }
  }

  private async backoff(slot: Slot, round = slot.round): Promise<boolean> {
    const ms = backoffDelay(round, this.cfg.minBackoff, this.cfg.maxBackoff);
    this.emitSlot({ type: 'backoff', delay: ms, round }, slot.index);
    try {
      await delay(ms, undefined, { signal: this.wake.signal });
      return true;
    } catch {
      return false;
    }
  }

  /** When the slot's current worker ends on its own: a crash, restarted with backoff. */
  private watch(slot: Slot, w: Worker): void {
    void w.exited.then(async (r) => {
      if (slot.current !== w) return;  // retired by a roll: retire() reports it
      slot.current = null;
      slot.ready = false;
      // A roll replacing this slot installs its new worker itself (asked now: it may be done by the time the group is cleaned up).
      const replaced = slot.replacing;
      await endRemains(w.pid, this.cfg.shutdownName, this.cfg.shutdownTimeout);
      this.emitSlot({ type: 'exit', pid: w.pid, code: r?.exitCode ?? null, signal: r?.signal ?? null, ready: true }, slot.index);
      if (this.stopping || this.wake.signal.aborted) return;
      this.changed();
      if (!replaced && slot.current === null) void this.restart(slot, true);
    });
  }

  /** Drains and stops a worker that is no longer (or never was) the slot's current one. */
  private async retire(w: Worker, slot: number | undefined, wasReady = true): Promise<void> {
    const emit = (e: MonitorEvent): void => (slot === undefined ? this.cfg.emit(e) : this.emitSlot(e, slot));
    const signal = this.cfg.received() ?? this.cfg.shutdownName;
    if (w.status === null) {
      await stopWorker(w, signal, this.cfg.shutdownTimeout, {
        shutdown: (pid, sig) => emit({ type: 'shutdown', pid, signal: sig }),
        kill: (pid) => emit({ type: 'kill', pid }),
      });
    } else {
      await w.exited;
      await endRemains(w.pid, this.cfg.shutdownName, this.cfg.shutdownTimeout);
    }
    const r = await w.exited;
    emit({ type: 'exit', pid: w.pid, code: r?.exitCode ?? null, signal: r?.signal ?? null, ready: wasReady });
  }

  /**
   * A rolling reload of all slots (or of `only`): one slot at a time, a new
   * worker is started and must become ready before the old one is drained
   * and stopped. The first new worker that fails ends the roll (it
   * rejects); the slots not reached keep their old workers. Rolls run one
   * after the other; a full reload requested while one is waiting to run
   * joins it.
   */
  reload(reason: string, only?: Slot[]): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the monitor is stopping'));
    if (only === undefined && this.pendingFull !== null) return this.pendingFull;
    const run = this.rollChain.catch(() => {}).then(() => this.roll(reason, only));
    this.rollChain = run;
    // Until it starts, further full reloads join it; once it runs, a new
    // request queues a new roll (new code may have arrived meanwhile).
    if (only === undefined) this.pendingFull = run;
    return run;
  }

  private async roll(reason: string, only?: Slot[]): Promise<void> {
    if (only === undefined) this.pendingFull = null;
    if (this.stopping || this.wake.signal.aborted) throw new Error('the monitor is stopping');
    this.cfg.emit({ type: 'reload', reason });
    enterPhase('reloading', `rolling reload: ${reason}`);
    sdReloading();
    for (const slot of only ?? this.slots) {
      if (this.wake.signal.aborted) break;
      // A worker spawned before this reload (the program may have changed
      // since, e.g. a SIGHUP right after the monitor started) is replaced
      // too, once it is up.
      if (slot.current === null && slot.starting !== null) await slot.starting.catch(() => {});
      if (this.wake.signal.aborted) break;
      const old = slot.current;
      // A slot that gave up gets one try with the new code: a reload is how a fix arrives.
      const revive = slot.failed !== null && !slot.restarting;
      // A slot without a worker is restarting (backoff): its next start runs the new code.
      if (!revive && (old === null || slot.restarting)) continue;
      slot.replacing = true;
      let fresh: Worker | Error;
      try {
        fresh = await this.startOne(slot, 0);
      } finally {
        slot.replacing = false;
      }
      if (fresh instanceof Error) {
        if (this.wake.signal.aborted) break;
        const error = Object.assign(new Error(`reload stopped at worker slot ${slot.index}: ${fresh.message}`), { cause: fresh, slot: slot.index });
        this.cfg.emit({ type: 'reload-failed', slot: slot.index, error });
        // A slot that gave up stays so (its failed try costs no budget).
        if (!revive && slot.current === null && !this.wake.signal.aborted) void this.restart(slot, true);
        backUp('the rolling reload failed');
        sdReady(`reload failed: ${error.message.replace(/[\r\n]+/g, ' ')}; ${this.statusText()}`);
        throw error;
      }
      if (this.wake.signal.aborted) {
        await this.retire(fresh, slot.index);
        break;
      }
      // The old one may have ended meanwhile (a crash during the start: its
      // exit was reported and, the slot being replaced, not restarted).
      const oldGone = slot.current !== old;
      if (revive) {
        slot.failed = null;
        slot.restarts = [];
        slot.round = 0;
      }
      slot.current = fresh;
      slot.ready = true;
      this.watch(slot, fresh);
      this.changed();
      if (old !== null && !oldGone) await this.retire(old, slot.index);
    }
    if (this.wake.signal.aborted) throw new Error('the monitor is stopping');
    this.cfg.emit({ type: 'reload-done', workers: this.slots.length });
    backUp('the rolling reload is done');
    sdReady(this.statusText());
  }

  private checkMemory(): void {
    if (this.stopping) return;
    for (const slot of this.slots) {
      const w = slot.current;
      if (w === null || !slot.ready || slot.replacing || this.memoryQueued.has(slot)) continue;
      const rss = rssOf(w.pid);
      if (rss === null || rss <= this.cfg.maxMemory) continue;
      this.cfg.emit({ type: 'memory', slot: slot.index, pid: w.pid, rss });
      this.memoryQueued.add(slot);  // no second replacement while this one waits
      void this.reload('memory', [slot]).catch((err: Error) => debug('monitor: memory replacement: %s', err.message))
        .finally(() => this.memoryQueued.delete(slot));
    }
  }

  /** restartOnChange for the monitor itself: its workers survive the exec, the new image rolls them. */
  private watchOwnCode(): void {
    const o = this.cfg.restartOnChange === true ? {} : this.cfg.restartOnChange || {};
    void restartOnChange({
      ...o,
      signal: this.wake.signal,
      // A roll in progress finishes first: its new worker's readiness pipe would not survive the exec.
      beforeRestart: async (signal) => {
        await Promise.race([this.rollChain.catch(() => {}), new Promise((r) => signal.addEventListener('abort', r, { once: true }))]);
        this.changed();  // the hand-over, written last
        if (typeof o.beforeRestart === 'function') await o.beforeRestart(signal);
      },
    }).catch((err: Error) => {
      if (err.name !== 'AbortError') debug('monitor: restartOnChange ended: %s', err.message);
    });
  }

  /** Every worker gets the stop signal (the one the monitor received, else shutdownSignal); resolves once all are reaped. */
  private async shutdownAll(): Promise<void> {
    this.stopping = true;
    const jobs: Promise<void>[] = [];
    for (const slot of this.slots) {
      const w = slot.current;
      if (w === null) continue;
      slot.current = null;
      slot.ready = false;
      jobs.push(this.retire(w, slot.index));
    }
    // Workers still starting or draining: stopped by their owners' paths; wait for them all.
    await Promise.all(jobs);
    await Promise.all([...this.live].map((w) => w.exited));
  }
}

/** The end of a rolling reload: the monitor is up again (unless it is stopping). */
function backUp(reason: string): void {
  if (phase() === 'reloading') enterPhase('up', reason);
}
