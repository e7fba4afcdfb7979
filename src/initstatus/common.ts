/**
 * What the initstatus transports share: the Receiver contract, the state
 * machine every receiver runs (first outcome wins), and its errors.
 */
import { debuglog } from 'node:util';
import { validateAbortSignal } from '../validators';

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

/**
 * An address as debug lines show it: an http(s) receiver's path is its
 * secret (whoever reads a log must not be able to post a status), so only
 * `scheme://host:port/…` is shown; `fd:N` and the like are not secret.
 */
export function loggable(address: string): string {
  const m = /^(https?:\/\/[^/]*)\/./i.exec(address);
  return m !== null ? `${m[1]}/…` : address;
}

/** Prefix written over an address in process.env once a report went out. */
export const REPORTED_PREFIX = 'reported:';

export function closedError(): Error {
  // Go's receiver fails with os.ErrClosed, whose text is "file already closed".
  const err = new Error('file already closed: the initstatus receiver was closed before a status arrived');
  Object.defineProperty(err, 'code', { value: 'ERR_INITSTATUS_CLOSED', enumerable: true, writable: true, configurable: true });
  return err;
}

export function eofError(): Error {
  const err = new Error('the child exited before it reported its initialization status');
  Object.defineProperty(err, 'code', { value: 'ERR_INITSTATUS_EOF', enumerable: true, writable: true, configurable: true });
  return err;
}

export type Outcome = { ok: true } | { ok: false; error: unknown };

/**
 * The properties of a reported Error that travel with its message: a
 * child's `listen EADDRINUSE` must reach its parent as an error it can test
 * (`err.code === 'EADDRINUSE'`), not only as text (issue 22, item 20). Each
 * with the type (and a bound on the size) Node gives it; anything else is
 * dropped, on both sides: the child is not trusted.
 */
const WIRE_PROPS: Record<string, (v: unknown) => boolean> = {
  code: (v) => typeof v === 'string' && /^[A-Za-z0-9_]{1,64}$/.test(v),
  errno: (v) => Number.isSafeInteger(v),
  syscall: (v) => typeof v === 'string' && /^[A-Za-z0-9_]{1,32}$/.test(v),
  address: (v) => typeof v === 'string' && v.length <= 256,
  port: (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535,
  path: (v) => typeof v === 'string' && v.length <= 1024,
  dest: (v) => typeof v === 'string' && v.length <= 1024,
};

export type WireProps = Record<string, string | number>;

/** The wire properties of `value` (a reported Error, or what arrived), or null if it has none. */
export function wireProps(value: unknown): WireProps | null {
  if (typeof value !== 'object' || value === null) return null;
  const out: WireProps = {};
  let any = false;
  for (const [k, ok] of Object.entries(WIRE_PROPS)) {
    let v: unknown;
    try {
      v = (value as Record<string, unknown>)[k];
    } catch {
      continue;  // a throwing getter of the caller's
    }
    if (v !== undefined && ok(v)) {
      out[k] = v as string | number;
      any = true;
    }
  }
  return any ? out : null;
}

/** The Error a reported failure becomes in the parent: its message, and the wire properties that came with it. */
export function reportedError(message: string, props: unknown): Error {
  const err = new Error(message);
  const p = wireProps(props);
  if (p !== null) {
    for (const [k, v] of Object.entries(p)) {
      Object.defineProperty(err, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
  }
  return err;
}

/**
 * The state both transports share: the first outcome wins, waiters are
 * settled from it, and the loop is only held open while someone waits.
 */
export abstract class BaseReceiver implements Receiver {
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
    debug('initstatus %s %s: %s', this.transport, loggable(this.address), o.ok ? 'ready' : String((o as { error: unknown }).error));
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

