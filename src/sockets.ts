/**
 * Listening sockets that survive an in-place restart, in systemd's
 * socket-activation convention: the sockets sit at fds 3, 4, ... and
 * LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES describe them. One mechanism
 * serves both a restart via execve (same PID, so LISTEN_PID stays true) and a
 * process started by systemd with `Sockets=` units.
 */
import { Server as NetServer } from 'node:net';
import type { Server, ListenOptions } from 'node:net';
import { debuglog } from 'node:util';
import { dup, setCloexec } from './posix';
import { invalidArgType, invalidArgValue } from './errors';
import { validateDuration, validateObject } from './validators';

const debug = debuglog('posix-daemon');

/** sd_listen_fds(3)'s first fd. */
const LISTEN_FDS_START = 3;

export interface InheritedSocket {
  fd: number;
  /** From LISTEN_FDNAMES; systemd's default is 'unknown'. */
  name: string;
}

let inherited: InheritedSocket[] | undefined;

/**
 * The sockets this process inherited (from systemd or from the image it
 * replaced). The first call reads LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES,
 * ignores them unless LISTEN_PID is this process (they were meant for
 * someone else), removes them from the environment so children don't
 * misread them, and makes the fds close-on-exec again. Later calls return
 * the same list, minus sockets already taken by `listen()`.
 */
export function listenFds(): InheritedSocket[] {
  if (inherited === undefined) inherited = readListenEnv();
  return inherited.slice();
}

function readListenEnv(): InheritedSocket[] {
  const { LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES } = process.env;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  if (LISTEN_PID === undefined || LISTEN_FDS === undefined) return [];
  if (Number(LISTEN_PID) !== process.pid) {
    debug('listenFds: LISTEN_PID=%s is not us (%d): ignored', LISTEN_PID, process.pid);
    return [];
  }
  const n = Number(LISTEN_FDS);
  if (!Number.isInteger(n) || n <= 0 || n > 4096) return [];
  const names = LISTEN_FDNAMES === undefined ? [] : LISTEN_FDNAMES.split(':');
  const out: InheritedSocket[] = [];
  for (let i = 0; i < n; i++) {
    const fd = LISTEN_FDS_START + i;
    try {
      setCloexec(fd, true);
    } catch (err) {
      debug('listenFds: fd %d: %s', fd, (err as Error).message);
      continue;
    }
    out.push({ fd, name: names[i] || 'unknown' });
  }
  debug('listenFds: inherited %j', out);
  return out;
}

/** The name a server's socket travels under across a restart. */
export function socketName(server: Server): string {
  const addr = server.address();
  if (addr === null) throw invalidArgValue('server', server, 'must be listening');
  if (typeof addr === 'string') return `unix_${addr.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  return `tcp_${addr.port}`;
}

function nameFor(options: ListenOptions & { name?: string }): string | undefined {
  if (options.name !== undefined) return options.name;
  if (options.path !== undefined) return `unix_${options.path.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  if (options.port !== undefined && Number(options.port) !== 0) return `tcp_${options.port}`;
  return undefined;
}

/**
 * `server.listen(options)`, except that when this process inherited a
 * socket for the same name (`options.name`, or derived from `port`/`path`),
 * the server takes that socket over with `listen({ fd })` instead of binding
 * anew: the same code serves a first start and a restart in place.
 * Resolves with whether an inherited socket was used.
 */
export function listen(server: Server, options: ListenOptions & { name?: string }): Promise<{ inherited: boolean; fd?: number }> {
  if (server === null || typeof server !== 'object' || typeof server.listen !== 'function') {
    throw invalidArgType('server', 'net.Server', server);
  }
  validateObject(options as unknown, 'options');
  const name = nameFor(options);
  const all = listenFds();
  const hit = name === undefined ? undefined : all.find((s) => s.name === name);
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const done = (result: { inherited: boolean; fd?: number }) => (): void => {
      server.removeListener('error', onError);
      resolve(result);
    };
    if (hit !== undefined) {
      inherited = inherited!.filter((s) => s !== hit);
      debug('listen: %s on inherited fd %d', name, hit.fd);
      server.listen({ fd: hit.fd, backlog: options.backlog }, done({ inherited: true, fd: hit.fd }));
    } else {
      const { name: _drop, ...rest } = options;
      server.listen(rest, done({ inherited: false }));
    }
  });
}

export interface ServerHandoffEntry {
  server: Server;
  name?: string;
}

export interface Handoff {
  /** `[duplicate, 3 + i]` pairs for execve's moveFds. */
  moveFds: Array<[number, number]>;
  /** LISTEN_* variables for the new image. */
  env: Record<string, string>;
  /** The exec failed: the servers listen again on their sockets. */
  resume(): Promise<void>;
}

interface HandleWithFd { fd?: number }

/**
 * Prepares listening servers for an exec without refusing or resetting
 * anyone: keeps a duplicate of each listening fd (so the socket, and the
 * connections queued on it, stay open), stops accepting, lets in-flight
 * requests finish and idle keep-alive connections close (at most
 * `drainTimeout` ms, then the rest are closed), and returns what execve
 * needs to pass the sockets on at fds 3, 4, ...
 */
export async function handOffServers(servers: Array<Server | ServerHandoffEntry>, drainTimeout: number): Promise<Handoff> {
  validateDuration(drainTimeout, 'options.drainTimeout');
  const entries = servers.map((s, i) => {
    const e = (s as ServerHandoffEntry).server !== undefined ? s as ServerHandoffEntry : { server: s as Server };
    if (!e.server || typeof e.server.close !== 'function') throw invalidArgType(`options.servers[${i}]`, 'net.Server', s);
    const handle = (e.server as unknown as { _handle?: HandleWithFd })._handle;
    if (!e.server.listening || handle?.fd === undefined || handle.fd < 0) {
      throw invalidArgValue(`options.servers[${i}]`, '[Server]', 'must be listening on a socket of its own');
    }
    return { server: e.server, name: e.name ?? socketName(e.server), fd: handle.fd };
  });
  // Duplicates first: from here on the sockets outlive their server objects.
  const dups = entries.map((e) => dup(e.fd, LISTEN_FDS_START + entries.length));
  await Promise.all(entries.map((e) => drain(e.server, drainTimeout)));
  const names = entries.map((e) => e.name);
  return {
    moveFds: dups.map((fd, i) => [fd, LISTEN_FDS_START + i] as [number, number]),
    env: {
      LISTEN_FDS: String(entries.length),
      LISTEN_PID: String(process.pid),
      LISTEN_FDNAMES: names.join(':'),
    },
    async resume() {
      await Promise.all(entries.map((e, i) => new Promise<void>((resolve, reject) => {
        e.server.once('error', reject);
        e.server.listen({ fd: dups[i] }, () => {
          e.server.removeListener('error', reject);
          resolve();
        });
      })));
    },
  };
}

interface HttpLike {
  closeIdleConnections?: () => void;
  closeAllConnections?: () => void;
}

interface DrainableResponse {
  shouldKeepAlive: boolean;
  headersSent: boolean;
  once(event: 'finish', cb: () => void): unknown;
}

function drain(server: Server, timeout: number): Promise<void> {
  return new Promise((resolve) => {
    const http = server as unknown as HttpLike;
    let timer: NodeJS.Timeout | undefined;
    // Closing an idle keep-alive connection races the client's next request
    // on it (the client sees ECONNRESET), so connections are not closed from
    // this side: every response during the drain says "Connection: close"
    // and the server ends the connection after it, which the client expects.
    const onRequest = (_req: unknown, res: DrainableResponse): void => {
      if (!res.headersSent) res.shouldKeepAlive = false;
    };
    server.prependListener('request' as 'connection', onRequest as never);
    // net.Server's close, not http.Server's: Node >= 19's http close() also
    // closes idle connections at once, with exactly that race.
    // 'close' comes once every connection has ended.
    NetServer.prototype.close.call(server, () => {
      if (timer) clearTimeout(timer);
      server.removeListener('request' as 'connection', onRequest as never);
      resolve();
    });
    timer = setTimeout(() => {
      debug('handoff: drain timed out after %d ms; closing remaining connections', timeout);
      server.removeListener('request' as 'connection', onRequest as never);
      http.closeIdleConnections?.();
      http.closeAllConnections?.();
      resolve();
    }, timeout);
  });
}
