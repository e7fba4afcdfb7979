/**
 * posix-daemon/systemd: talk to systemd (or any service manager speaking
 * sd_notify(3)) without libsystemd and without a subprocess.
 *
 * Each call sends one datagram from this process itself over an AF_UNIX
 * SOCK_DGRAM socket to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
 * namespace): systemd takes the sender's PID from the kernel and ignores
 * processes it does not expect, so a helper process could not do it for us.
 * A call returns `true` when the datagram was sent, or queued to be sent in
 * order, and `false` when `NOTIFY_SOCKET` is unset (not under a service
 * manager) or delivery failed (logged with `NODE_DEBUG=posix-daemon`);
 * delivery problems never throw, bad arguments do. A call never blocks: when
 * the manager's queue is full the datagram waits in ours, and a libuv poll
 * on the connected socket sends it (and those queued after it, in order)
 * as soon as the kernel says there is room (issue 22, item 14).
 */
import { markUp } from './lifecycle';
import type { Server } from 'node:net';
import { constants as osConstants } from 'node:os';
import { debuglog } from 'node:util';
import { closeSync } from 'node:fs';
import { addon, type RawNotifySocket } from './native';
import { readyReached } from './restart-role';
import { invalidArgType, invalidArgValue, outOfRange } from './errors';
import {
  listeningServerFd, validateAbortSignal, validateDuration, validateFdList, validateFdName, validateInteger, validateObject,
  validateOptionKeys, validateServer, validateString,
} from './validators';

const debug = debuglog('posix-daemon');

/** A field value: strings as they are, true/false as 1/0, numbers in decimal. */
export type NotifyValue = string | number | bigint | boolean;
/** `{ READY: 1, STATUS: 'Serving' }`; undefined values are left out. */
export type NotifyFields = Record<string, NotifyValue | undefined>;

function formatValue(value: unknown, name: string): string {
  switch (typeof value) {
    case 'string':
      if (/[\n\0]/.test(value)) throw invalidArgValue(name, value, 'must not contain a newline or a null byte');
      return value;
    case 'boolean':
      return value ? '1' : '0';
    case 'bigint':
      return value.toString();
    case 'number':
      if (!Number.isFinite(value)) throw invalidArgValue(name, value, 'must be a finite number');
      return String(value);
    default:
      throw invalidArgType(name, ['string', 'number', 'bigint', 'boolean'], value);
  }
}

function format(fields: unknown): string {
  if (typeof fields === 'string') {
    if (fields.includes('\0')) throw invalidArgValue('fields', fields, 'must be a string without null bytes');
    if (fields === '') throw invalidArgValue('fields', fields, 'must not be empty');
    return fields;
  }
  validateObject(fields, 'fields');
  const lines: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw invalidArgValue('fields', key, 'must have variable-like keys ([A-Za-z_][A-Za-z0-9_]*)');
    }
    lines.push(`${key}=${formatValue(value, `fields.${key}`)}`);
  }
  if (lines.length === 0) throw invalidArgValue('fields', fields, 'must have at least one field');
  return lines.join('\n');
}

interface Pending {
  address: string;
  message: string;
  /** Our own duplicates of the caller's fds: the caller may close theirs. */
  fds?: number[];
}

// Datagrams the manager had no room for yet, oldest first, and the socket
// that waits for room (one at a time: order is kept).
const pending: Pending[] = [];
let waiting: { socket: RawNotifySocket; address: string } | undefined;
let drained: Array<() => void> = [];
// A bound on what a manager that never reads can make us hold. A manager
// that reads at all drains far faster than a service notifies.
const MAX_PENDING = 1024;

function closeFds(fds: number[] | undefined): void {
  for (const fd of fds ?? []) {
    try {
      closeSync(fd);
    } catch {
      // already gone
    }
  }
}

/** `socket`, watched for room by flush(); closed if it cannot be. */
function watched(socket: RawNotifySocket, address: string): { socket: RawNotifySocket; address: string } {
  try {
    socket.watch(flush);
  } catch (err) {
    socket.close();
    throw err;
  }
  return { socket, address };
}

/** Sends what is pending, in order, while the manager has room. Never throws. */
function flush(): void {
  while (pending.length > 0) {
    const head = pending[0];
    try {
      if (waiting !== undefined && waiting.address !== head.address) {
        waiting.socket.close();
        waiting = undefined;
      }
      if (waiting === undefined) waiting = watched(new addon.NotifySocket(head.address), head.address);
      if (!waiting.socket.send(head.message, head.fds)) return;  // still full: the poll calls again
      debug('systemd: notified %j (fds %j), after waiting', head.message, head.fds ?? []);
    } catch (err) {
      debug('systemd: notify %j to %s failed: %s', head.message, head.address, (err as Error).message);
      // The next datagram connects afresh (the manager may be back).
      waiting?.socket.close();
      waiting = undefined;
    }
    pending.shift();
    closeFds(head.fds);
  }
  waiting?.socket.close();
  waiting = undefined;
  const waiters = drained;
  drained = [];
  for (const resolve of waiters) resolve();
}

function enqueue(address: string, message: string, fds: number[] | undefined): boolean {
  // One WATCHDOG=1 waiting says all that another would.
  if (message === 'WATCHDOG=1' && pending.some((p) => p.message === message && p.address === address)) return true;
  if (pending.length >= MAX_PENDING) {
    debug('systemd: notify %j to %s dropped: %d datagrams already wait for the manager', message, address, pending.length);
    return false;
  }
  let dups: number[] | undefined;
  if (fds !== undefined) {
    dups = [];
    try {
      for (const fd of fds) dups.push(addon.dup(fd, 3));
    } catch (err) {
      closeFds(dups);
      debug('systemd: notify %j (fds %j) to %s failed: %s', message, fds, address, (err as Error).message);
      return false;
    }
  }
  pending.push({ address, message, fds: dups });
  debug('systemd: notify %j: the manager\'s queue is full; queued (%d waiting)', message, pending.length);
  return true;
}

/**
 * One datagram to NOTIFY_SOCKET, with `fds` attached (SCM_RIGHTS) when
 * given. true: sent, or queued behind a full manager queue (sent in order
 * as soon as there is room); false: unset, or undeliverable.
 */
function send(message: string, fds?: number[]): boolean {
  const address = process.env.NOTIFY_SOCKET;
  if (address === undefined || address === '') return false;
  // Behind what already waits: never ahead of it.
  if (pending.length > 0) return enqueue(address, message, fds);
  let socket: RawNotifySocket | undefined;
  try {
    socket = new addon.NotifySocket(address);
    if (socket.send(message, fds)) {
      socket.close();
      debug('systemd: notified %j (fds %j)', message, fds ?? []);
      return true;
    }
  } catch (err) {
    socket?.close();
    debug('systemd: notify %j (fds %j) to %s failed: %s', message, fds ?? [], address, (err as Error).message);
    return false;
  }
  if (!enqueue(address, message, fds)) {
    socket.close();
    return false;
  }
  try {
    waiting = watched(socket, address);
  } catch (err) {
    // No poll handle (the environment is ending): nobody would send it.
    closeFds(pending.pop()?.fds);
    debug('systemd: notify %j to %s failed: %s', message, address, (err as Error).message);
    return false;
  }
  return true;
}

/**
 * @internal Resolves once no datagram waits for the manager's queue (at
 * once when none does), or after `timeoutMs` at most (a manager that never
 * reads). restartViaExec waits for it before the exec, which would lose
 * them.
 */
export function notificationsSent(timeoutMs: number): Promise<void> {
  if (pending.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    // setTimeout takes at most 2^31-1 ms (a longer one fires at once).
    const timer = setTimeout(resolve, Math.min(timeoutMs, 2 ** 31 - 1)).unref();
    drained.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Sends `fields` (an object, or a preformatted "KEY=value\nKEY=value"
 * string) in one datagram. See sd_notify(3) for the fields systemd knows.
 */
export function notify(fields: NotifyFields | string): boolean {
  return send(format(fields));
}

function validateText(value: unknown, name: string): asserts value is string {
  validateString(value, name);
  formatValue(value, name);
}

/** `READY=1` (and `STATUS=`): startup, or a reload, is complete. */
export function ready(status?: string): boolean {
  if (status !== undefined) validateText(status, 'status');
  // An image a restart started is up (see restart-role.ts).
  if (!readyReached()) return false;
  markUp('ready()');
  return send(format({ READY: 1, STATUS: status }));
}

/**
 * `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC, which a
 * Type=notify-reload unit requires, or `systemctl reload` never returns).
 * Complete the reload with `ready()`. restartViaExec sends it just before
 * the exec; the new image's `ready()` completes it.
 */
export function reloading(): boolean {
  if (!process.env.NOTIFY_SOCKET) return false;
  return send(format({ RELOADING: 1, MONOTONIC_USEC: addon.monotonicUsec() }));
}

/** `STOPPING=1`: the service is shutting down. */
export function stopping(): boolean {
  return send('STOPPING=1');
}

/** `STATUS=<text>`: a one-line status shown by `systemctl status`. */
export function status(text: string): boolean {
  validateText(text, 'text');
  return send(format({ STATUS: text }));
}

/** `MAINPID=<pid>`: the service's main process is now `pid`. */
export function mainPid(pid: number): boolean {
  validateInteger(pid, 'pid', 1, 2 ** 31 - 1);
  return send(format({ MAINPID: pid }));
}

/**
 * Reports a failure: `STATUS=<message>` and, when the error has one,
 * `ERRNO=<n>` (from `err.errno` or `err.code`). For a startup that failed.
 */
export function notifyError(error: unknown): boolean {
  if (!(error instanceof Error) && typeof error !== 'string') throw invalidArgType('error', ['Error', 'string'], error);
  const message = (typeof error === 'string' ? error : error.message).replace(/[\r\n\0]+/g, ' ');
  const fields: NotifyFields = { STATUS: message };
  const { errno, code } = (typeof error === 'string' ? {} : error) as { errno?: unknown; code?: unknown };
  if (typeof errno === 'number' && Number.isInteger(errno) && errno !== 0) {
    fields.ERRNO = Math.abs(errno);
  } else if (typeof code === 'string' && code in osConstants.errno) {
    fields.ERRNO = (osConstants.errno as Record<string, number>)[code];
  }
  return send(format(fields));
}

/**
 * Whether a service manager started this process: `NOTIFY_SOCKET` (it
 * listens for notifications) or `INVOCATION_ID` (systemd set it for this
 * unit run). Such a process must not fork away from it (daemonize does not
 * detach there).
 */
export function underServiceManager(env: NodeJS.ProcessEnv = process.env): boolean {
  validateObject(env as unknown, 'env');
  if (!env.NOTIFY_SOCKET && !env.INVOCATION_ID) return false;
  // Every descendant of a unit inherits both variables (a shell or a CI
  // runner inside a service). systemd >= 248 names the process it started
  // in SYSTEMD_EXEC_PID: when it is there and is someone else, the service
  // manager did not start us.
  const execPid = env.SYSTEMD_EXEC_PID;
  return execPid === undefined || execPid === '' || execPid === String(process.pid);
}

/**
 * The watchdog interval in microseconds (`WATCHDOG_USEC`), when the
 * watchdog is meant for this process (`WATCHDOG_PID` unset or this PID);
 * otherwise 0. Send `WATCHDOG=1` at least every half of it.
 */
export function watchdogInterval(): number {
  const { WATCHDOG_USEC, WATCHDOG_PID } = process.env;
  if (WATCHDOG_USEC === undefined || WATCHDOG_USEC === '') return 0;
  if (!/^[1-9][0-9]{0,15}$/.test(WATCHDOG_USEC) || !Number.isSafeInteger(Number(WATCHDOG_USEC))) {
    debug('systemd: WATCHDOG_USEC=%j is not a valid interval: no watchdog', WATCHDOG_USEC);
    return 0;
  }
  if (WATCHDOG_PID !== undefined && WATCHDOG_PID !== '' && WATCHDOG_PID !== String(process.pid)) {
    debug('systemd: WATCHDOG_PID=%s is not this process (%d): no watchdog', WATCHDOG_PID, process.pid);
    return 0;
  }
  return Number(WATCHDOG_USEC);
}

export interface StartWatchdogOptions {
  /** Stops the pings. */
  signal?: AbortSignal;
}

let watchdog: { timer: NodeJS.Timeout; stop: () => void } | undefined;

/**
 * Sends `WATCHDOG=1` now and every half `watchdogInterval()` from an
 * unref'd timer (it never keeps the process alive), until the returned
 * function is called or `signal` aborts. Does nothing when the interval is
 * 0. At most one such timer runs: a second call returns the same stop.
 * After a restart via exec the new image starts it again.
 */
export function startWatchdog(options: StartWatchdogOptions = {}): () => void {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['signal']);
  validateAbortSignal(options.signal, 'options.signal');
  const { signal } = options;
  const usec = watchdogInterval();
  if (usec === 0 || signal?.aborted) return () => {};
  if (watchdog === undefined) {
    const everyMs = Math.min(Math.max(1, Math.floor(usec / 2000)), 2 ** 31 - 1);
    const ping = (): void => void send('WATCHDOG=1');
    const timer = setInterval(ping, everyMs).unref();
    const stop = (): void => {
      clearInterval(timer);
      if (watchdog?.timer === timer) watchdog = undefined;
    };
    watchdog = { timer, stop };
    debug('systemd: watchdog every %d ms', everyMs);
    ping();
  }
  const { stop } = watchdog;
  signal?.addEventListener('abort', stop, { once: true });
  return stop;
}

/**
 * `EXTEND_TIMEOUT_USEC=`: asks systemd for `ms` more milliseconds, counted
 * from now, before it gives up on the start (TimeoutStartSec=), reload or
 * stop in progress. For a slow start: call it again before the time runs
 * out, then `ready()`. systemd ignores it outside a start, reload or stop.
 */
export function extendTimeout(ms: number): boolean {
  validateDuration(ms, 'ms');
  if (ms === 0 || ms > Number.MAX_SAFE_INTEGER / 1000) throw outOfRange('ms', `> 0 && <= ${Math.floor(Number.MAX_SAFE_INTEGER / 1000)}`, ms);
  return send(format({ EXTEND_TIMEOUT_USEC: Math.ceil(ms * 1000) }));
}

/**
 * `FDSTORE=1` + `FDNAME=<name>` with the fds attached: systemd keeps
 * duplicates of them in the unit's file descriptor store (the unit needs
 * `FileDescriptorStoreMax=` > 0) and passes them to the service's next
 * start, after a `systemctl restart` or a crash, in `LISTEN_FDS` under
 * `LISTEN_FDNAMES=<name>`, where `listen()` finds them by name. Storing the
 * same open socket again is harmless: systemd keeps one copy. Returns false
 * (nothing sent) when `NOTIFY_SOCKET` is unset or delivery failed.
 */
export function storeFds(fds: number | number[], name: string): boolean {
  const list = typeof fds === 'number' ? [fds] : fds;
  validateFdList(list, 'fds', 0);
  if (list.length === 0 || list.length > 253) throw invalidArgValue('fds', fds, 'must hold 1 to 253 fds');
  validateFdName(name, 'name');
  return send(format({ FDSTORE: 1, FDNAME: name }), list);
}


/**
 * Stores a listening server's socket in systemd's file descriptor store
 * (`storeFds`) under `name`, by default the name it travels under across
 * restarts (`socketName(server)`: the name given to `listen()`, else
 * `tcp_<port>` / `unix_<path>`). After a `systemctl restart` or a crash the
 * new process's `listen(server, { name })` takes the same socket, so the
 * port is never closed and connections queued meanwhile are served.
 */
export function storeSocket(server: Server, name?: string): boolean {
  validateServer(server, 'server', 'address');
  const fd = listeningServerFd(server, 'server');
  if (name === undefined) {
    // Loaded here, not at the top: loading sockets.ts takes LISTEN_FDS from
    // the environment, which a program using only sd_notify may want itself.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    name = (require('./sockets') as typeof import('./sockets')).socketName(server);
  }
  validateFdName(name, 'name');
  return storeFds([fd], name);
}

/**
 * `FDSTOREREMOVE=1` + `FDNAME=<name>`: systemd closes every stored fd of
 * that name (the next start no longer gets them).
 */
export function removeStoredFds(name: string): boolean {
  validateFdName(name, 'name');
  return send(format({ FDSTOREREMOVE: 1, FDNAME: name }));
}
