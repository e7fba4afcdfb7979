/**
 * A monitor restarting in place (restartViaExec) keeps its workers: they
 * are its children before and after the exec (same PID). The old image
 * describes them in POSIX_DAEMON_MONITOR_WORKERS; the new one adopts only
 * those that cleanUpChildZombies' own checks vouch for (our children when
 * the module loaded, and older than this image), so a forged variable can
 * make it adopt nothing that is not already its child from before.
 */
import { takeInheritedChildren } from '../autorestart/zombies';

export const MONITOR_WORKERS_ENV = 'POSIX_DAEMON_MONITOR_WORKERS';

export interface HandedWorker { slot: number; pid: number; ready: boolean }

/** Read once at load (removed from the environment: workers must not see it). */
const handed: HandedWorker[] = ((): HandedWorker[] => {
  const value = process.env[MONITOR_WORKERS_ENV];
  delete process.env[MONITOR_WORKERS_ENV];
  if (value === undefined) return [];
  const [pid, ...items] = value.split(';');
  if (pid !== String(process.pid)) return [];
  const out: HandedWorker[] = [];
  for (const item of items.slice(0, 4096)) {
    const m = /^(\d{1,6}):([1-9]\d{0,9}):([01])$/.exec(item);
    if (m) out.push({ slot: Number(m[1]), pid: Number(m[2]), ready: m[3] === '1' });
  }
  const ours = new Set(takeInheritedChildren(out.map((w) => w.pid)));
  return out.filter((w) => ours.has(w.pid));
})();

/** The verified workers of the image before (once: a second call gets none). */
export function takeHandedWorkers(): HandedWorker[] {
  return handed.splice(0);
}

/** Writes the current workers where restartViaExec's exec will read the environment. */
export function describeWorkers(workers: HandedWorker[]): void {
  process.env[MONITOR_WORKERS_ENV] = [String(process.pid), ...workers.map((w) => `${w.slot}:${w.pid}:${w.ready ? 1 : 0}`)].join(';');
}

export function forgetWorkers(): void {
  delete process.env[MONITOR_WORKERS_ENV];
}
