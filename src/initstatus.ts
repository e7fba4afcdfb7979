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
 * Pipe line protocol (one line, UTF-8, at most PIPE_BUF bytes so the write is
 * atomic and never blocks on an empty pipe):
 *   `ready\n`                      the child is ready
 *   `error <JSON string>\n`        the child failed; JSON keeps newlines intact
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, constants as fsConstants, fstatSync, openSync, writeSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { debuglog } from 'node:util';
import { pipe } from './posix';
import { abortError, invalidArgType, invalidArgValue } from './errors';
import { validateAbortSignal, validateObject, validateOptionKeys } from './validators';
import { notifyError, ready as notifyReady } from './systemd';

const debug = debuglog('posix-daemon');

/** Where a reported status goes; created by the parent, its `address` handed to the child. */
export interface Receiver {
  readonly transport: 'pipe' | 'http';
  /** 'fd:N' (pipe) or 'http://127.0.0.1:PORT/TOKEN' (http): the string to put in the child's environment. */
  readonly address: string;
  /** pipe: the write-end fd the child must inherit under the SAME number (fork plan keepFds: [rx.childFd]); null for http. */
  readonly childFd: number | null;
  /** Parent calls this right after the child was launched: closes the parent's own copy of the write end so EOF means "every writer is gone". No-op for http. */
  childStarted(): void;
  /** Resolves on "ready"; rejects with Error(message) for a reported failure, with an error saying the child exited before it reported on EOF, with signal.reason on abort, with an ERR_INITSTATUS_CLOSED error (Go: os.ErrClosed "file already closed") if close() was called. */
  wait(signal?: AbortSignal): Promise<void>;
  /** Stops listening. A still-waiting wait() rejects with ERR_INITSTATUS_CLOSED. Idempotent. */
  close(): void;
}

export interface ReceiverOptions {
  /** 'pipe' (default) or 'http'. */
  transport?: 'pipe' | 'http';
  /** Aborting ends the receiver: wait() then rejects with `signal.reason` (Go: the context's cause). */
  signal?: AbortSignal;
}

/** Prefix written over an address in process.env once a report went out. */
export const REPORTED_PREFIX = 'reported:';

/**
 * The address of a program that daemonize() did not detach because a
 * service manager runs it: report() then tells the service manager
 * (`READY=1`, or `STATUS=`/`ERRNO=` for a failure) over `$NOTIFY_SOCKET`.
 */
export const SERVICE_MANAGER_ADDRESS = 'sd_notify:';

/** Longest pipe line: POSIX guarantees atomic pipe writes up to PIPE_BUF (>= 512; 4096 on Linux). */
const MAX_LINE = 4096;
/** A report over HTTP gives up after this long, so report() can never hang. */
const HTTP_REPORT_TIMEOUT_MS = 10_000;
/** A status body larger than this is cut: it is a message, not a payload. */
const MAX_HTTP_BODY = 64 * 1024;
/** Random bytes in the HTTP receiver's path: 192 bits, far beyond guessing. */
const TOKEN_BYTES = 24;

/**
 * The longest prefix of `buf` that is at most `max` bytes and does not end in
 * the middle of a UTF-8 sequence (a split character would decode as U+FFFD).
 */
function utf8Prefix(buf: Buffer, max: number): Buffer {
  if (buf.length <= max) return buf;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) to the lead byte of the
  // character the cut falls in, and cut before it.
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--;
  return buf.subarray(0, end);
}

/**
 * The longest prefix of `text`, cut between characters (never inside a
 * surrogate pair), whose JSON string form takes at most `max` bytes without
 * its quotes. Escapes make that form longer than the text, so it is counted
 * character by character; it stops at the limit, so a huge message costs no
 * more than a short one.
 */
function fitJson(text: string, max: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of text) {
    bytes += Buffer.byteLength(JSON.stringify(ch)) - 2;
    if (bytes > max) break;
    end += ch.length;
  }
  return text.slice(0, end);
}

function closedError(): Error {
  // Go's receiver fails with os.ErrClosed, whose text is "file already closed".
  const err = new Error('file already closed: the initstatus receiver was closed before a status arrived');
  Object.defineProperty(err, 'code', { value: 'ERR_INITSTATUS_CLOSED', enumerable: true, writable: true, configurable: true });
  return err;
}

function eofError(): Error {
  const err = new Error('the child exited before it reported its initialization status');
  Object.defineProperty(err, 'code', { value: 'ERR_INITSTATUS_EOF', enumerable: true, writable: true, configurable: true });
  return err;
}

type Outcome = { ok: true } | { ok: false; error: unknown };

/**
 * The state both transports share: the first outcome wins, waiters are
 * settled from it, and the loop is only held open while someone waits.
 */
abstract class BaseReceiver implements Receiver {
  abstract readonly transport: 'pipe' | 'http';
  abstract readonly address: string;
  abstract readonly childFd: number | null;
  protected outcome: Outcome | null = null;
  private waiters = new Set<{ resolve(): void; reject(e: unknown): void }>();
  private closed = false;

  constructor(private readonly ownerSignal: AbortSignal | undefined) {
    ownerSignal?.addEventListener('abort', this.onOwnerAbort, { once: true });
  }

  private onOwnerAbort = (): void => {
    this.settle({ ok: false, error: this.ownerSignal?.reason });
  };

  childStarted(): void {}

  /** Holds the loop open (true) or lets it go (false). */
  protected abstract setRef(on: boolean): void;
  /** Releases the OS resources. */
  protected abstract teardown(): void;

  protected settle(o: Outcome): void {
    if (this.outcome !== null) return;  // first status wins
    this.outcome = o;
    debug('initstatus %s %s: %s', this.transport, this.address, o.ok ? 'ready' : String((o as { error: unknown }).error));
    this.ownerSignal?.removeEventListener('abort', this.onOwnerAbort);
    this.teardown();
    for (const w of this.waiters) {
      if (o.ok) w.resolve();
      else w.reject(o.error);
    }
    this.waiters.clear();
    this.setRef(false);
  }

  wait(signal?: AbortSignal): Promise<void> {
    validateAbortSignal(signal, 'signal');
    return new Promise<void>((resolve, reject) => {
      if (this.outcome !== null) {
        if (this.outcome.ok) resolve();
        else reject(this.outcome.error);
        return;
      }
      if (this.closed) {
        reject(closedError());
        return;
      }
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        if (this.waiters.size === 0) this.setRef(false);
        reject(signal?.reason);
      };
      const waiter = {
        resolve: (): void => { signal?.removeEventListener('abort', onAbort); resolve(); },
        reject: (e: unknown): void => { signal?.removeEventListener('abort', onAbort); reject(e); },
      };
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.setRef(true);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.outcome === null) {
      // Not an outcome of the child: a later wait() says "closed", not a status.
      this.ownerSignal?.removeEventListener('abort', this.onOwnerAbort);
      const err = closedError();
      for (const w of this.waiters) w.reject(err);
      this.waiters.clear();
      this.setRef(false);
    }
    this.teardown();
  }
}

/**
 * Pipe receivers of this process whose write end is still ours (before
 * childStarted()), by address: daemonize() and selfMonitor() are handed only
 * an address (Go's shape), and must know that `fd:N` is a pipe the child has
 * to inherit.
 */
const livePipes = new Map<string, PipeReceiver>();

/**
 * The pipe receiver of this process with this address whose write end the
 * child still has to inherit, if any. The launcher keeps `childFd` for the
 * child and calls `childStarted()` once it runs.
 * @internal used by daemonize() and selfMonitor()
 */
export function pendingPipeReceiver(address: string): Receiver | undefined {
  return livePipes.get(address);
}

/**
 * Readiness pipes this process inherited and has not reported to yet, by
 * address (daemonize() in the daemon registers its own). A monitor started in
 * the daemon hands them on to its worker, whose environment names them, so
 * that the worker can report to the foreground as in Go.
 */
const inheritedPipes = new Map<string, number>();

/** @internal daemonize(), in the daemon: `address` (fd:N) is a readiness pipe we inherited. */
export function adoptInheritedPipe(address: string, fd: number): void {
  inheritedPipes.set(address, fd);
}

/** @internal The fd of an inherited readiness pipe not reported to yet, for a child to inherit. */
export function inheritedPipeFd(address: string): number | undefined {
  return inheritedPipes.get(address);
}

class PipeReceiver extends BaseReceiver {
  readonly transport = 'pipe' as const;
  readonly address: string;
  readonly childFd: number | null;
  private writeFd: number | null;
  private socket: net.Socket | null;
  private buffered = '';

  constructor(signal: AbortSignal | undefined) {
    super(signal);
    // Both ends are close-on-exec: only a child that names the write end in
    // keepFds gets it, so no unrelated program can hold the pipe open.
    const [readFd, writeFd] = pipe();
    this.writeFd = writeFd;
    this.childFd = writeFd;
    this.address = `fd:${writeFd}`;
    livePipes.set(this.address, this);
    // A libuv pipe handle: readable without a thread, and unref-able so a
    // receiver nobody waits on never holds the process open.
    const socket = new net.Socket({ fd: readFd, readable: true, writable: false, allowHalfOpen: true });
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('end', () => this.settle({ ok: false, error: eofError() }));
    socket.on('error', (err) => this.settle({ ok: false, error: err }));
    socket.unref();
  }

  private onData(chunk: string): void {
    if (this.outcome !== null) return;
    this.buffered += chunk;
    const nl = this.buffered.indexOf('\n');
    if (nl === -1) {
      if (this.buffered.length > MAX_LINE) this.settle({ ok: false, error: new Error('malformed initialization status: line too long') });
      return;
    }
    const line = this.buffered.slice(0, nl);
    this.settle(parseLine(line));
  }

  override childStarted(): void {
    this.closeWriteEnd();
  }

  private closeWriteEnd(): void {
    if (this.writeFd === null) return;
    if (livePipes.get(this.address) === this) livePipes.delete(this.address);
    closeSync(this.writeFd);
    this.writeFd = null;
  }

  protected setRef(on: boolean): void {
    if (on) this.socket?.ref();
    else this.socket?.unref();
  }

  protected teardown(): void {
    this.socket?.destroy();
    this.socket = null;
    this.closeWriteEnd();
  }
}

function parseLine(line: string): Outcome {
  if (line === 'ready') return { ok: true };
  if (line.startsWith('error ')) {
    try {
      const msg = JSON.parse(line.slice(6));
      if (typeof msg === 'string') return { ok: false, error: new Error(msg) };
    } catch {
      // fall through
    }
  }
  return { ok: false, error: new Error(`malformed initialization status: ${JSON.stringify(line.slice(0, 200))}`) };
}

class HttpReceiver extends BaseReceiver {
  readonly transport = 'http' as const;
  readonly childFd = null;
  address = '';
  private server: http.Server | null;
  /** The only path that may deliver a status: `/` + a random token. */
  private readonly path = Buffer.from(`/${randomBytes(TOKEN_BYTES).toString('base64url')}`, 'latin1');

  constructor(signal: AbortSignal | undefined) {
    super(signal);
    this.server = http.createServer((req, res) => this.onRequest(req, res));
    this.server.unref();
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = this.server!;
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        const { port } = server.address() as net.AddressInfo;
        this.address = `http://127.0.0.1:${port}${this.path.toString('latin1')}`;
        resolve();
      });
    });
  }

  /** Constant time: how much of a guess matched must not show in the timing. */
  private isOurPath(url: string | undefined): boolean {
    const got = Buffer.from(url ?? '', 'latin1');
    return got.length === this.path.length && timingSafeEqual(got, this.path);
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!this.isOurPath(req.url)) {
      // Not the child (it was told the token): no status, the wait goes on.
      debug('initstatus http %s: %s to an unknown path: 404', this.address.replace(/\/[^/]*$/, '/…'), req.method);
      res.writeHead(404, { 'Content-Length': '0', Connection: 'close' }).end();
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { Allow: 'POST', Connection: 'close' }).end();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (size < MAX_HTTP_BODY) chunks.push(c);
      size += c.length;
    });
    req.on('end', () => {
      const body = utf8Prefix(Buffer.concat(chunks), MAX_HTTP_BODY).toString('utf8');
      res.writeHead(200, { 'Content-Length': '0', Connection: 'close' }).end();
      this.settle(body === '' ? { ok: true } : { ok: false, error: new Error(body) });
    });
    req.on('error', () => res.destroy());
  }

  protected setRef(on: boolean): void {
    if (on) this.server?.ref();
    else this.server?.unref();
  }

  protected teardown(): void {
    // Stop accepting; the connection that delivered the status closes itself
    // after its response (Connection: close).
    this.server?.close();
    this.server?.closeIdleConnections();
    this.server = null;
  }
}

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

/** sd_notify: false from the systemd helpers means NOTIFY_SOCKET is unset or nobody took it. */
function reportToServiceManager(status: Error | string | null): 'delivered' | 'gone' {
  const sent = status === null ? notifyReady() : notifyError(status);
  return sent ? 'delivered' : 'gone';
}

function reportToFd(fd: number, message: string | null): 'delivered' | 'gone' | 'failed' {
  try {
    // After an exec the number may belong to some other file: only a pipe
    // (or FIFO) can be our receiver.
    if (!fstatSync(fd).isFIFO()) {
      debug('initstatus report: fd %d is not a pipe, not reporting', fd);
      return 'failed';
    }
  } catch (err) {
    debug('initstatus report: fd %d: %s', fd, (err as Error).message);
    return 'gone';
  }
  let line = message === null ? 'ready\n' : `error ${JSON.stringify(message)}\n`;
  if (message !== null && Buffer.byteLength(line) > MAX_LINE) {
    // Cut the message so the line stays one atomic, non-blocking write.
    line = `error ${JSON.stringify(fitJson(message, MAX_LINE - Buffer.byteLength('error ""\n')))}\n`;
  }
  // Write through a fresh non-blocking open file description of the same
  // pipe (Linux /proc), so a full pipe gives EAGAIN instead of blocking
  // forever, and a pipe without a reader gives ENXIO at once.
  let wfd = fd;
  let reopened = false;
  if (process.platform === 'linux') {
    try {
      wfd = openSync(`/proc/self/fd/${fd}`, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);  // libuv adds O_CLOEXEC
      reopened = true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENXIO') {
        closeQuietly(fd);
        return 'gone';
      }
      // No /proc: write to the fd itself (the line fits one atomic write).
    }
  }
  let result: 'delivered' | 'gone' | 'failed' = 'delivered';
  try {
    writeSync(wfd, line);
  } catch (err) {
    // Node ignores SIGPIPE, so a vanished reader is EPIPE here.
    const code = (err as NodeJS.ErrnoException).code;
    debug('initstatus report: write to fd %d: %s', fd, code);
    result = code === 'EPIPE' ? 'gone' : 'failed';
  }
  if (reopened) closeQuietly(wfd);
  // Our copy must go, or the parent never sees EOF once we die.
  closeQuietly(fd);
  return result;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function reportToUrl(address: string, message: string | null): Promise<'delivered' | 'gone' | 'failed'> {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    debug('initstatus report: not a URL: %s', address);
    return Promise.resolve('failed');
  }
  const mod = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : null;
  if (mod === null) {
    debug('initstatus report: unsupported address %s', address);
    return Promise.resolve('failed');
  }
  // The receiver cuts a body over the cap: cut it here, on a character
  // boundary, so what arrives is valid UTF-8 whoever receives it.
  const body = utf8Prefix(Buffer.from(message ?? '', 'utf8'), MAX_HTTP_BODY);
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: 'delivered' | 'gone' | 'failed'): void => {
      if (!done) {
        done = true;
        resolve(r);
      }
    };
    const req = mod.request(url, {
      method: 'POST',
      agent: false,
      headers: { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(body.length) },
      timeout: HTTP_REPORT_TIMEOUT_MS,
    }, (res) => {
      res.resume();
      const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300;
      if (!ok) debug('initstatus report: %s answered %d', address, res.statusCode);
      finish(ok ? 'delivered' : 'failed');
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      debug('initstatus report: POST %s: %s', address, err.code ?? err.message);
      finish(err.code === 'ECONNREFUSED' ? 'gone' : 'failed');
    });
    req.end(body);
  });
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
  if (address.startsWith(REPORTED_PREFIX) || delivered.has(address)) {
    debug('initstatus report: %s already reported, not reporting again', address);
    return false;
  }
  const message = statusMessage(status);
  let result: 'delivered' | 'gone' | 'failed';
  const m = /^fd:(\d+)$/.exec(address);
  if (address === SERVICE_MANAGER_ADDRESS) {
    result = reportToServiceManager(status ?? null);
  } else if (m !== null) {
    const fd = Number(m[1]);
    result = Number.isSafeInteger(fd) && fd <= 2 ** 31 - 1 ? reportToFd(fd, message) : 'failed';
  } else {
    result = await reportToUrl(address, message);
  }
  // A receiver that is gone will not come back: don't try again later (and
  // never write to whatever reuses the fd number or port).
  if (result !== 'failed') markReported(address);
  inheritedPipes.delete(address);  // reportToFd closed it
  return result === 'delivered';
}
