/**
 * posix-daemon/initstatus: a child process tells its parent "I am ready" or
 * "I failed: <why>", once. A port of Go's `daemon/initstatus`.
 *
 * Two transports:
 * - 'pipe' (default): an anonymous pipe. The child inherits the write end
 *   under the same fd number (address `fd:N`) and writes one line. No port,
 *   no network, and EOF without a line tells the parent that every writer is
 *   gone, i.e. the child died (or closed the pipe) before reporting.
 * - 'http': wire-compatible with Go. A loopback HTTP server whose address
 *   carries an unguessable token in its path; the first POST to that path
 *   wins; an empty body means ready, a non-empty body is the error message.
 *   Anything else gets 404 and changes nothing: any local user can reach a
 *   loopback port, only the child was told the token.
 *
 * One file per transport in ./initstatus/ (pipe, http, sd-notify; common
 * holds the receiver state they share). This file is the public face, and
 * keeps the `dist/initstatus.js` path that package.json exports.
 */
import { markUp } from './lifecycle';
import { debuglog } from 'node:util';
import { abortError, invalidArgType, invalidArgValue } from './errors';
import { validateAbortSignal, validateObject, validateOptionKeys } from './validators';
import { loggable, REPORTED_PREFIX, wireProps, type Receiver, type ReceiverOptions } from './initstatus/common';
import { forgetInheritedPipe, PipeReceiver, reportToFd } from './initstatus/pipe';
import { HttpReceiver, reportToUrl } from './initstatus/http';
import { reportToServiceManager, SERVICE_MANAGER_ADDRESS } from './initstatus/sd-notify';

export { REPORTED_PREFIX } from './initstatus/common';
export type { Receiver, ReceiverOptions } from './initstatus/common';
export { adoptInheritedPipe, inheritedPipeFd, pendingPipeReceiver, protectInheritedPipe } from './initstatus/pipe';
export { SERVICE_MANAGER_ADDRESS } from './initstatus/sd-notify';

const debug = debuglog('posix-daemon');

/**
 * Creates a receiver for one initialization status. Give `rx.address` to the
 * child (usually in its environment); with the pipe transport also let it
 * inherit `rx.childFd` (`keepFds: [rx.childFd]`) and call `rx.childStarted()`
 * after launching it. Never keeps the event loop alive unless `wait()` is
 * pending. Go: `initstatus.Receiver`.
 */
export async function receiver(options: ReceiverOptions = {}): Promise<Receiver> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['transport', 'signal']);
  const { transport = 'pipe', signal } = options;
  if (transport !== 'pipe' && transport !== 'http') {
    if (typeof transport !== 'string') throw invalidArgType('options.transport', 'string', transport);
    throw invalidArgValue('options.transport', transport, "must be 'pipe' or 'http'");
  }
  validateAbortSignal(signal, 'options.signal');
  if (signal?.aborted) throw abortError(signal.reason);
  if (transport === 'pipe') return new PipeReceiver(signal);
  const rx = new HttpReceiver(signal);
  await rx.listen();
  return rx;
}

// Addresses this module instance already reported to: a second report in the
// same image is a no-op even if someone restored the environment variable.
const delivered = new Set<string>();

function statusMessage(status: null | undefined | Error | string): string | null {
  if (status === null || status === undefined) return null;
  if (typeof status === 'string') return status;
  // An Error with an empty message would read as "ready" on the wire.
  return status.message !== '' ? status.message : (status.name || 'Error');
}

function markReported(address: string): void {
  delivered.add(address);
  // A process restarted in place by execve keeps its environment: the marker
  // tells that image it already reported (and daemonize still sees a
  // non-empty value, so the image stays in the background).
  for (const [k, v] of Object.entries(process.env)) {
    if (v === address) process.env[k] = REPORTED_PREFIX + address;
  }
}

/**
 * Sends the initialization status to the parent's receiver: `null`/omitted =
 * ready, an Error or a non-empty string = failure with that message. An empty
 * or missing `address` is a no-op, as in Go. Resolves true if delivered,
 * false if not; never throws for delivery problems and never hangs (pipe:
 * one atomic non-blocking write; http: bounded by a timeout). A second report,
 * or a report from an image restarted in place (the environment variable then
 * reads `reported:<address>`), is a no-op. Throws TypeError only for bad
 * arguments. Go: `initstatus.Report`.
 */
export async function report(address: string | undefined, status?: null | Error | string): Promise<boolean> {
  if (address !== undefined && typeof address !== 'string') throw invalidArgType('address', 'string', address);
  if (status !== undefined && status !== null && typeof status !== 'string' && !(status instanceof Error)) {
    throw invalidArgType('status', ['string', 'Error', 'null'], status);
  }
  if (status === '') throw invalidArgValue('status', status, 'must be null for "ready" or a non-empty message');
  if (address === undefined || address === '') return false;
  // A daemon or a worker that says it is ready is up.
  if (status === undefined || status === null) markUp('reported ready');
  if (address.startsWith(REPORTED_PREFIX) || delivered.has(address)) {
    debug('initstatus report: %s already reported, not reporting again', loggable(address));
    return false;
  }
  const message = statusMessage(status);
  // An Error's code, errno, syscall… go along: the parent gets an error it can test.
  const props = status instanceof Error ? wireProps(status) : null;
  let result: 'delivered' | 'gone' | 'failed';
  const m = /^fd:(\d+)$/.exec(address);
  if (address === SERVICE_MANAGER_ADDRESS) {
    result = reportToServiceManager(status ?? null);
  } else if (m !== null) {
    const fd = Number(m[1]);
    result = Number.isSafeInteger(fd) && fd <= 2 ** 31 - 1 ? reportToFd(fd, message, props) : 'failed';
  } else {
    result = await reportToUrl(address, message, props);
  }
  // A receiver that is gone will not come back: don't try again later (and
  // never write to whatever reuses the fd number or port).
  if (result !== 'failed') markReported(address);
  forgetInheritedPipe(address);  // reportToFd closed it
  return result === 'delivered';
}
