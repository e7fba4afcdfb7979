/**
 * The 'pipe' transport: an anonymous pipe whose write end the child
 * inherits under the same fd number (address `fd:N`); one line, written
 * atomically:
 *   `ready\n`                      the child is ready
 *   `error <JSON string>\n`        the child failed; JSON keeps newlines intact
 *   `error <JSON object>\n`        the same, for an Error with a code: `message`
 *                                  and its wire properties (code, errno, syscall…)
 * EOF without a line: every writer is gone (the child died first).
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, writeSync } from 'node:fs';
import * as net from 'node:net';
import { debuglog } from 'node:util';
import { pipe, setCloexec } from '../posix';
import { closeQuietly, NO_SHARED_STAT } from '../fdfile';
import { BaseReceiver, eofError, REPORTED_PREFIX, reportedError, type Outcome, type Receiver, type WireProps } from './common';

const debug = debuglog('posix-daemon');

/** Longest pipe line: POSIX guarantees atomic pipe writes up to PIPE_BUF (>= 512; 4096 on Linux). */
const MAX_LINE = 4096;

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

/**
 * @internal In the process a readiness pipe was handed to (daemonize's
 * daemon, a monitor's worker): the pipe `address` (fd:N, not reported to
 * yet) names is made close-on-exec. A program this process starts before
 * it reports then cannot report for it (`sh -c 'echo ready >
 * /proc/self/fd/N'`), nor keep the pipe open after it died (no EOF).
 * Only a pipe above stdio: the address comes from the environment.
 * Returns its fd, or undefined.
 */
export function protectInheritedPipe(address: string): number | undefined {
  if (address.startsWith(REPORTED_PREFIX)) return undefined;
  const m = /^fd:(\d{1,10})$/.exec(address);
  if (m === null) return undefined;
  const fd = Number(m[1]);
  try {
    if (fd > 2 && fd <= 2 ** 31 - 1 && fstatSync(fd, NO_SHARED_STAT).isFIFO()) {
      setCloexec(fd, true);
      return fd;
    }
  } catch (err) {
    debug('initstatus: readiness fd %d: %s', fd, (err as Error).message);
  }
  return undefined;
}

/** @internal daemonize(), in the daemon: `address` (fd:N) is a readiness pipe we inherited. */
export function adoptInheritedPipe(address: string, fd: number): void {
  inheritedPipes.set(address, fd);
}

/** report() went out (reportToFd closed the fd): no child inherits it any more. */
export function forgetInheritedPipe(address: string): void {
  inheritedPipes.delete(address);
}

/** @internal The fd of an inherited readiness pipe not reported to yet, for a child to inherit. */
export function inheritedPipeFd(address: string): number | undefined {
  return inheritedPipes.get(address);
}

export class PipeReceiver extends BaseReceiver {
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
      const msg = JSON.parse(line.slice(6)) as unknown;
      if (typeof msg === 'string') return { ok: false, error: new Error(msg) };
      if (typeof msg === 'object' && msg !== null && typeof (msg as { message?: unknown }).message === 'string') {
        return { ok: false, error: reportedError((msg as { message: string }).message, msg) };
      }
    } catch {
      // fall through
    }
  }
  return { ok: false, error: new Error(`malformed initialization status: ${JSON.stringify(line.slice(0, 200))}`) };
}

/**
 * The status line: `ready`, or `error` with the message as a JSON string, or,
 * when the Error has wire properties, a JSON object of both (bounded: their
 * values are short; the message is cut to what is left of the line).
 */
function statusLine(message: string | null, props: WireProps | null): string {
  if (message === null) return 'ready\n';
  if (props === null) {
    const line = `error ${JSON.stringify(message)}\n`;
    if (Buffer.byteLength(line) <= MAX_LINE) return line;
    // Cut the message so the line stays one atomic, non-blocking write.
    return `error ${JSON.stringify(fitJson(message, MAX_LINE - Buffer.byteLength('error ""\n')))}\n`;
  }
  const rest = JSON.stringify(props).slice(1);  // `"code":…}` after `{"message":"…",`
  // Long paths (escaped) would crowd the message out: then the message alone.
  if (Buffer.byteLength(rest) > MAX_LINE / 2) return statusLine(message, null);
  const line = `error ${JSON.stringify({ message, ...props })}\n`;
  if (Buffer.byteLength(line) <= MAX_LINE) return line;
  const room = MAX_LINE - Buffer.byteLength(`error {"message":"",${rest}\n`);
  return `error {"message":${JSON.stringify(fitJson(message, Math.max(0, room)))},${rest}\n`;
}

/** Writes the line to the pipe on `fd` (inherited), then closes our copy. */
export function reportToFd(fd: number, message: string | null, props: WireProps | null = null): 'delivered' | 'gone' | 'failed' {
  try {
    // After an exec the number may belong to some other file: only a pipe
    // (or FIFO) can be our receiver.
    if (!fstatSync(fd, NO_SHARED_STAT).isFIFO()) {
      debug('initstatus report: fd %d is not a pipe, not reporting', fd);
      return 'failed';
    }
  } catch (err) {
    debug('initstatus report: fd %d: %s', fd, (err as Error).message);
    return 'gone';
  }
  const line = statusLine(message, props);
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


