/**
 * The 'http' transport, wire-compatible with Go: a loopback HTTP server
 * whose path carries an unguessable token; the first POST to that path
 * wins; an empty body means ready, a non-empty body is the error message.
 * Anything else gets 404 and changes nothing.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';
import { debuglog } from 'node:util';
import { BaseReceiver, loggable, reportedError, type WireProps } from './common';

const debug = debuglog('posix-daemon');

/** A report over HTTP gives up after this long, so report() can never hang. */
const HTTP_REPORT_TIMEOUT_MS = 10_000;
/** A status body larger than this is cut: it is a message, not a payload. */
const MAX_HTTP_BODY = 64 * 1024;
/**
 * The wire properties of a reported Error (code, errno…) as base64url JSON:
 * a header, so that the body stays Go's wire format (the message alone) and
 * a Go receiver, which ignores the header, sees no difference.
 */
const PROPS_HEADER = 'x-posix-daemon-error';
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

export class HttpReceiver extends BaseReceiver {
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
      debug('initstatus http %s: %s to an unknown path: 404', loggable(this.address), req.method);
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
      this.settle(body === '' ? { ok: true } : { ok: false, error: reportedError(body, headerProps(req.headers[PROPS_HEADER])) });
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

function headerProps(value: string | string[] | undefined): unknown {
  if (typeof value !== 'string' || value.length > 8192) return null;
  try {
    return JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

/** POSTs the status to the receiver at `address` (bounded by a timeout). */
export function reportToUrl(address: string, message: string | null, props: WireProps | null = null): Promise<'delivered' | 'gone' | 'failed'> {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    debug('initstatus report: not a URL: %s', loggable(address));
    return Promise.resolve('failed');
  }
  const mod = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : null;
  if (mod === null) {
    debug('initstatus report: unsupported address %s', loggable(address));
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
      headers: {
        'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(body.length),
        ...(message !== null && props !== null ? { [PROPS_HEADER]: Buffer.from(JSON.stringify(props)).toString('base64url') } : {}),
      },
      timeout: HTTP_REPORT_TIMEOUT_MS,
    }, (res) => {
      res.resume();
      const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300;
      if (!ok) debug('initstatus report: %s answered %d', loggable(address), res.statusCode);
      finish(ok ? 'delivered' : 'failed');
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      debug('initstatus report: POST %s: %s', loggable(address), err.code ?? err.message);
      finish(err.code === 'ECONNREFUSED' ? 'gone' : 'failed');
    });
    req.end(body);
  });
}

