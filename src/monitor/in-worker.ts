/**
 * The worker's side of selfMonitor: it ends promptly on the signal its
 * monitor stops it with.
 *
 * A worker runs the same program as its monitor, so it installs the same
 * signal listeners: the README's `process.on('SIGINT', () => ac.abort())`
 * only aborts a controller that nothing in the worker waits on, and with a
 * listener installed Node no longer dies of SIGINT. The monitor's SIGINT
 * then did nothing and the worker was SIGKILLed after shutdownTimeout
 * (issue 16, item 15). So the worker drains the servers that took the
 * monitor's sockets (listen()) and exits 0 on those signals, unless the
 * program set up its own gracefulShutdown(), which then takes them over.
 */
import { implicitShutdown } from '../graceful';
import { protectInheritedPipe } from '../initstatus';
import { toSignalNumber, signalName } from '../validators';
import { WORKER_ENV } from './worker';

let info: { slot: number } | undefined;
let done = false;

/**
 * Reads (once) what the monitor told this worker, and installs its stop.
 * The readiness pipe `envKey` names goes close-on-exec first (as in a
 * daemon): a program the worker starts must not report for it, nor hide
 * its death by holding the pipe open (issue 22, item 21).
 */
export function setUpWorker(envKey: string): void {
  protectInheritedPipe(process.env[envKey] ?? '');
  if (done) return;
  done = true;
  const value = process.env[WORKER_ENV];
  delete process.env[WORKER_ENV];
  if (value === undefined) return;
  // Untrusted: anything malformed leaves the worker as it was.
  const m = /^(\d{1,6});(SIG[A-Z0-9+]{1,10});(\d{1,10})$/.exec(value);
  if (!m) return;
  let stop: NodeJS.Signals;
  try {
    stop = signalName(toSignalNumber(m[2], WORKER_ENV)) as NodeJS.Signals;
  } catch {
    return;
  }
  if (stop === 'SIGKILL' || stop === 'SIGSTOP') return;
  info = { slot: Number(m[1]) };
  // The monitor's grace ends in SIGKILL: finish a little before it.
  const timeout = Number(m[3]);
  implicitShutdown([...new Set<NodeJS.Signals>([stop, 'SIGINT', 'SIGTERM'])], Math.max(0, timeout - Math.min(500, timeout / 10)));
}

/** In a worker of a selfMonitor: its slot (0 .. workers-1); otherwise undefined. */
export function workerSlot(): number | undefined {
  return info?.slot;
}
