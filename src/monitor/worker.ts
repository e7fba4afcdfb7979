/**
 * One worker process, as the monitor sees it: started by a fork plan in
 * its own process group with a readiness receiver (launch()), or adopted
 * from the image before a restartViaExec; stopped through its group.
 */
import { isMainThread } from '../main-thread';
import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { fork, waitAsync, type Wait4Result } from '../posix';
import { receiver } from '../initstatus';
import { launch, type Launched, type ReadyOptions } from '../launch';
import { endGroupRemains } from '../process-group';
import { programArgv } from '../relaunch';

const debug = debuglog('posix-daemon');

/** The variable a worker reads its monitor's stop signal and timeout from: "<slot>;<signal>;<timeout ms>". */
export const WORKER_ENV = 'POSIX_DAEMON_WORKER';

export interface WorkerContext {
  envKey: string;
  transport: 'pipe' | 'http';
  shutdownName: NodeJS.Signals;
  shutdownTimeout: number;
  /** Variables the worker gets besides the monitor's environment (undefined: removed). */
  env(slot: number): Record<string, string | undefined>;
  /** Fds the worker inherits besides its readiness pipe (the monitor's sockets). */
  keepFds: number[];
}

export function mainCommand(): { file: string; args: string[] } {
  return { file: process.execPath, args: programArgv() };
}

/** The monitor's side of a worker: a launched child or one adopted after an exec. */
export interface Worker extends Pick<Launched, 'pid' | 'exited' | 'kill'> {
  readonly status: Wait4Result | null;
  ready(options?: ReadyOptions): Promise<void>;
}

/** A fresh receiver, and the program started again with its address (plus any pending pipe receiver named in the environment). */
export async function startWorker(ctx: WorkerContext, slot: number): Promise<Worker> {
  const { file, args } = mainCommand();
  const rx = await receiver({ transport: ctx.transport });
  const env: Record<string, string> = {};
  const extra = {
    ...ctx.env(slot),
    [WORKER_ENV]: `${slot};${ctx.shutdownName};${ctx.shutdownTimeout}`,
    [ctx.envKey]: rx.address,
  };
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) if (v !== undefined) env[k] = v;
  return launch({
    what: 'worker',
    // Its own process group: what it starts is stopped with it. A monitor
    // that dies without stopping its workers (SIGKILL, OOM kill) leaves no
    // worker behind either: the kernel sends each the shutdown signal.
    spawn: (keepFds) => fork({
      file, args, stdio: 'inherit', env, keepFds: [...keepFds, ...ctx.keepFds], setpgid: true,
      ...(process.platform === 'linux' && isMainThread() ? { deathSignal: ctx.shutdownName } : {}),
    }),
    killTarget: (pid) => -pid,
    receiver: rx,
    addresses: Object.values(env),
  });
}

/** A worker of the image before: our child (checked by the caller), already ready, leading its own group. */
export function adoptWorker(pid: number): Worker {
  let status: Wait4Result | null = null;
  let gone = false;
  const exited = waitAsync(pid).then((r) => {
    status = r;
    return r;
  }, (err: Error) => {
    debug('monitor: cannot wait for adopted worker %d: %s', pid, err.message);
    gone = true;
    return null;
  });
  return {
    pid,
    exited,
    get status() { return status; },
    ready: async () => {},
    kill(signal: NodeJS.Signals | number = 'SIGKILL'): boolean {
      // Unreaped, so its PID and group ID are still its own.
      if (status !== null || gone) return false;
      try {
        process.kill(-pid, signal);
        return true;
      } catch {
        return false;
      }
    },
  };
}

export interface StopHooks {
  shutdown(pid: number, signal: NodeJS.Signals): void;
  kill(pid: number): void;
}

const TIMED_OUT = Symbol('timed out');

/**
 * `signal` to the worker's group, then SIGKILL to the group after
 * `timeout`; resolves once the worker is reaped and nothing of its group
 * is left.
 */
export async function stopWorker(w: Worker, signal: NodeJS.Signals, timeout: number, hooks: StopHooks): Promise<void> {
  hooks.shutdown(w.pid, signal);
  w.kill(signal);  // false if already gone: the wait below returns at once
  const timer = new AbortController();
  const outcome = await Promise.race([w.exited,
    delay(timeout, TIMED_OUT, { signal: timer.signal }).catch(() => null)]);
  timer.abort();
  if (outcome === TIMED_OUT) {
    hooks.kill(w.pid);
    w.kill('SIGKILL');
  }
  await w.exited;
  // Members that ignored the signal already got it with the group.
  await endRemains(w.pid, null, timeout);
}

/** After the worker ended: what it started in its group is stopped too (they would hold its ports). */
export async function endRemains(pgid: number, sig: NodeJS.Signals | null, timeout: number): Promise<void> {
  const n = await endGroupRemains(pgid, sig, timeout);
  if (n > 0) debug('monitor: ended %d process(es) left in the group of worker %d', n, pgid);
}

/** A worker's resident set size in bytes (/proc/PID/status VmRSS), or null. */
export function rssOf(pid: number): number | null {
  try {
    const m = /^VmRSS:\s*(\d+)\s*kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}
