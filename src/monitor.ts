/**
 * posix-daemon/monitor: keep copies of the program running. A port of Go's
 * `daemon/monitor` (one worker, restarted with exponential backoff after a
 * failed start), grown to many workers sharing the monitor's sockets, with
 * rolling reloads, a restart budget and graceful shutdown. The pieces live
 * in ./monitor/; this file is the public face (and keeps the
 * `dist/monitor.js` path that package.json exports).
 */
import { claimEnvKey, validateEnvKey } from './monitor/env-key';
import { validateDuration, validateInteger } from './validators';

export { selfMonitor } from './monitor/self-monitor';
export type { MonitorEvent, MonitorPromise, MonitorSocket, SelfMonitorOptions } from './monitor/types';
export { availableCpus } from './monitor/cpus';
export type { CpuCount } from './monitor/cpus';
export { workerSlot } from './monitor/in-worker';
export { gracefulShutdown } from './graceful';
export type { GracefulShutdownHandle, GracefulShutdownOptions } from './graceful';
export { listen, listenFds } from './sockets';

/** True in the monitored child: `envKey` is set and non-empty. */
export function isMonitored(envKey: string): boolean {
  validateEnvKey(envKey);
  const v = process.env[envKey];
  if (v === undefined || v === '') return false;
  claimEnvKey(envKey);  // ours: programs we start must not take themselves for the worker
  return true;
}

/** Delay before round `round` (0-based): min(minBackoff * 2^round, maxBackoff). */
export function backoffDelay(round: number, minBackoff = 1000, maxBackoff = 60_000): number {
  validateInteger(round, 'round', 0);
  validateDuration(minBackoff, 'minBackoff');
  validateDuration(maxBackoff, 'maxBackoff');
  return Math.min(minBackoff * 2 ** Math.min(round, 52), maxBackoff);
}
