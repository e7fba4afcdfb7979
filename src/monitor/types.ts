/** The monitor's public types. */
import type { RestartOnChangeOptions } from '../autorestart/on-change';

/** What the monitor reports through `onEvent` (and `NODE_DEBUG=posix-daemon`). With `workers`, each worker event has its `slot`. */
export type MonitorEvent =
  | { type: 'start'; pid: number; round: number; slot?: number }
  | { type: 'start-failed'; round: number; error: Error; slot?: number }
  | { type: 'ready'; pid: number; slot?: number }
  | { type: 'not-ready'; pid: number; error: Error; slot?: number }
  | { type: 'exit'; pid: number; code: number | null; signal: NodeJS.Signals | null; ready: boolean; slot?: number }
  | { type: 'backoff'; delay: number; round: number; slot?: number }
  | { type: 'shutdown'; pid: number; signal: NodeJS.Signals; slot?: number }
  | { type: 'kill'; pid: number; slot?: number }
  | { type: 'stopped'; reason: unknown }
  /** Every slot has a ready worker (first start, after a roll, after a crash was replaced). */
  | { type: 'all-ready'; workers: number }
  /** A rolling reload begins (`reason`: 'signal', 'call', 'change', 'exec'). */
  | { type: 'reload'; reason: string }
  | { type: 'reload-done'; workers: number }
  /** A new worker failed: the roll stopped there; the old workers go on serving. */
  | { type: 'reload-failed'; slot: number; error: Error }
  /** A worker's RSS went over `maxMemory`: it is replaced through a roll. */
  | { type: 'memory'; slot: number; pid: number; rss: number }
  /** Workers of the image before a restartViaExec, taken over. */
  | { type: 'adopted'; slot: number; pid: number }
  /**
   * A restart budget is spent. The single worker: the monitor stops with
   * `error`. With `workers`: that slot is left empty (the others serve on,
   * STATUS= names it) until a reload tries it again; the monitor stops with
   * `error` once every slot gave up.
   */
  | { type: 'gave-up'; slot?: number; error: Error };

export interface MonitorSocket {
  /** The name workers ask for: `listen(server, { name })` (a systemd FileDescriptorName). */
  name: string;
  /** TCP port (0: any free port; see `monitor.sockets()` for the one bound). */
  port?: number;
  /** Address to bind; default '0.0.0.0'... as net.Server.listen (all addresses). */
  host?: string;
  /** listen(2) backlog; default 511, as Node. */
  backlog?: number;
}

export interface SelfMonitorOptions {
  /** Aborting stops the monitor: the workers are shut down and selfMonitor rejects with the reason. */
  signal?: AbortSignal;
  /** Sent to a worker's group to stop it. Default 'SIGINT', as in Go. */
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
  /**
   * Restart budget (systemd's StartLimitBurst): more than `maxRestarts`
   * restarts of one slot within `restartWindow` ms give that slot up
   * (ERR_MONITOR_RESTART_LIMIT, event `gave-up`); the monitor ends with
   * that error once no slot is left. Default 10 (Infinity: no limit).
   */
  maxRestarts?: number;
  /** Default 60 000 ms. */
  restartWindow?: number;
  /** How many workers: a number, or 'auto' (the CPUs this process may use, see availableCpus()); 'max' (pm2's word) is 'auto'. Default: one, as before. */
  workers?: number | 'auto' | 'max';
  /** Listening sockets the monitor owns and hands to every worker. */
  sockets?: MonitorSocket[];
  /** A signal that starts a rolling reload of the workers (e.g. 'SIGHUP'). */
  reloadOn?: NodeJS.Signals | number;
  /** How long a new worker may take to report ready, in ms (0: no limit). Default 60 000 in a roll, none otherwise. */
  readyTimeout?: number;
  /** A worker whose RSS exceeds this many bytes is replaced through a roll (drained first). */
  maxMemory?: number;
  /** How often RSS is read from /proc, in ms. Default 5000. */
  memoryInterval?: number;
  /**
   * Restart the monitor in place (restartViaExec) when the program's files
   * change; the workers survive the exec and are then rolled onto the new
   * code. `true` or restartOnChange's options (watching and checking).
   */
  restartOnChange?: boolean | Omit<RestartOnChangeOptions, 'signal' | 'servers' | 'keepFds' | 'env'>;
}

/** What selfMonitor returns: a promise (settles when the monitor stops) with the monitor's controls. */
export interface MonitorPromise extends Promise<void> {
  /** A rolling reload; resolves once every slot runs a new worker, rejects with the error of the one that failed. In a worker: rejects. */
  reload(): Promise<void>;
  /** The workers now: slot, PID, ready. */
  workers(): Array<{ slot: number; pid: number; ready: boolean }>;
  /** The sockets the monitor holds (with the port bound). */
  sockets(): Array<{ name: string; fd: number; port?: number; address?: string }>;
}
