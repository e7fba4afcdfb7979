/**
 * The daemon's own readiness, for a monitor that runs in it (issue 22,
 * item 7). daemonize() in the daemon says which variable holds its address;
 * selfMonitor() reports there once every worker slot is ready (or reports
 * its failure if the workers cannot come up), so that the README's
 * `daemonize()` and `selfMonitor({ workers })` compose without wiring
 * `onEvent` by hand. A report the program makes itself comes first and
 * makes this one a no-op (the address then reads `reported:…`).
 */
import { debuglog } from 'node:util';
import { report, REPORTED_PREFIX } from './initstatus';

const debug = debuglog('posix-daemon');

let daemonKey: string | undefined;

/** @internal daemonize(), in the daemon: `envKey` holds our readiness address. */
export function setDaemonKey(envKey: string): void {
  daemonKey = envKey;
}

/** The daemon's readiness address while it has not reported yet; undefined otherwise (and in any other process). */
export function pendingDaemonAddress(): string | undefined {
  if (daemonKey === undefined) return undefined;
  const v = process.env[daemonKey];
  if (v === undefined || v === '' || v.startsWith(REPORTED_PREFIX)) return undefined;
  return v;
}

/** Reports the daemon ready (`status` null) or failed, if it has not reported yet. Never throws. */
export async function reportDaemon(status: Error | null, skip?: (address: string) => boolean): Promise<void> {
  const address = pendingDaemonAddress();
  if (address === undefined || skip?.(address) === true) return;
  debug('daemonize: the monitor reports the daemon %s', status === null ? 'ready' : `failed: ${status.message}`);
  try {
    await report(address, status);
  } catch (err) {
    debug('daemonize: reporting for the daemon: %s', (err as Error).message);
  }
}
