/**
 * The one lifecycle of this process: every server that serves here, and the
 * phase the process is in. Restart, preflight, bridge, guard, graceful
 * shutdown, the monitor and systemd read it and move it; none of them keeps
 * a list of servers of its own.
 *
 * Servers. Every `net.Server` (so every `http`, Express and Fastify server)
 * that starts listening in this thread once the library is loaded is known
 * here, however it was made to listen: `listen()`, a plain
 * `server.listen(port)`, `listen({ fd })` on a socket from `listenFds()`,
 * `listen(handle)`. One wrapper of `net.Server.prototype.listen` sees them
 * all (it also lets sockets.ts point a plain listen at a handed-over
 * socket). A server stays known while it listens, and while a drain of it
 * is under way: a SIGTERM that comes during a restart's drain waits for
 * that drain instead of finding nothing listening and exiting at once.
 *
 * Phases: starting → up → (reloading → draining → up)* → stopping.
 * - starting: until the program is up: ready(), an image a restart started
 *   took its sockets, or (a first start) a server listens;
 * - reloading: a restart is checking the new version (the preflight);
 * - draining: the servers stop accepting before the exec;
 * - stopping: gracefulShutdown began. Final: no restart starts, and one in
 *   progress gives up before its exec.
 * Each change is published on the diagnostics channel
 * `posix-daemon:lifecycle` as `{ phase, previous, reason }`.
 */
import { Server as NetServer } from 'node:net';
import type { Server } from 'node:net';
import { channel } from 'node:diagnostics_channel';
import { debuglog } from 'node:util';

const debug = debuglog('posix-daemon');

export type Phase = 'starting' | 'up' | 'reloading' | 'draining' | 'stopping';

/** Published on every phase change. */
export const LIFECYCLE_CHANNEL = 'posix-daemon:lifecycle';
const phaseChannel = channel(LIFECYCLE_CHANNEL);

let current: Phase = 'starting';

/** The phase this process is in. */
export function phase(): Phase {
  return current;
}

/** Whether gracefulShutdown began: nothing may restart any more. */
export function isStopping(): boolean {
  return current === 'stopping';
}

/** Moves the process to `next`; stopping is final. */
export function enterPhase(next: Phase, reason: string): void {
  const previous = current;
  if (previous === next || previous === 'stopping') return;
  current = next;
  debug('lifecycle: %s -> %s (%s)', previous, next, reason);
  if (phaseChannel.hasSubscribers) phaseChannel.publish({ phase: next, previous, reason });
}

/** Up, unless something later (a reload, a stop) is already under way. */
export function markUp(reason: string): void {
  if (current === 'starting') enterPhase('up', reason);
}

// ---------------------------------------------------------------------------
// Servers.

interface Known {
  /** The drain under way (stop accepting, let in-flight requests finish), if any. */
  drain?: Promise<void>;
}

const servers = new Map<Server, Known>();
const watched = new WeakSet<Server>();
/** Servers of the library's own (a readiness receiver): never drained as the program's. */
const internal = new WeakSet<Server>();

/**
 * Whether a server that listens marks a first start up. Not in an image a
 * restart started: that one is up once it took every handed-over socket.
 */
let upOnListen = true;
export function upWhenListening(yes: boolean): void {
  upOnListen = yes;
}

/** The library's own server: not the program's, never drained by gracefulShutdown. */
export function markInternal(server: Server): void {
  internal.add(server);
  servers.delete(server);
}

/** Knows `server` from now on (it listens, or is about to). */
export function addServer(server: Server): void {
  if (internal.has(server)) return;
  if (!servers.has(server)) {
    servers.set(server, {});
    trackResponses(server);
  }
  watch(server);
}

/**
 * Listens to `server` once for good: each time it starts listening it is
 * known (a server can close and listen again: a failed exec's resume), and
 * once closed for good (not listening, no drain left) it is forgotten.
 */
function watch(server: Server): void {
  if (watched.has(server)) return;
  watched.add(server);
  server.on('listening', () => {
    if (internal.has(server)) return;
    addServer(server);
    for (const fn of onListening) fn(server);
    if (upOnListen) markUp('a server listens');
  });
  server.on('close', () => {
    if (!server.listening && servers.get(server)?.drain === undefined) servers.delete(server);
  });
}

/** Every server that serves here: listening, or draining. */
export function knownServers(): Server[] {
  return [...servers].filter(([s, k]) => s.listening || k.drain !== undefined).map(([s]) => s);
}

/** Hooks run when a server starts listening (sockets.ts: was its fd inherited?). */
const onListening: Array<(server: Server) => void> = [];
export function whenServerListens(fn: (server: Server) => void): void {
  onListening.push(fn);
}

/**
 * What sockets.ts does to a plain listen(...) call (take a handed-over
 * socket instead of binding anew): the arguments to use, or undefined.
 */
let rewriteListen: ((server: Server, args: unknown[]) => unknown[] | undefined) | undefined;
export function setListenRewrite(fn: (server: Server, args: unknown[]) => unknown[] | undefined): void {
  rewriteListen = fn;
}

/** net.Server.prototype.listen as Node has it. */
export const originalListen = NetServer.prototype.listen as (this: Server, ...args: unknown[]) => Server;

function listenKnown(this: Server, ...args: unknown[]): Server {
  // Before Node's own 'listening' listener: a callback given to listen()
  // that closes the server at once (the monitor's bind) sees it known.
  if (!internal.has(this)) watch(this);
  return originalListen.apply(this, rewriteListen?.(this, args) ?? args);
}

// One wrapper, whoever loads first; a second copy of the library (CJS and
// ESM share this module, two installed copies would not) wraps it again,
// which only registers each server twice in two separate lists.
NetServer.prototype.listen = listenKnown as typeof NetServer.prototype.listen;

// ---------------------------------------------------------------------------
// Responses and the drain.

interface HttpLike {
  closeIdleConnections?: () => void;
  closeAllConnections?: () => void;
}

interface DrainableResponse {
  shouldKeepAlive: boolean;
  headersSent: boolean;
  once(event: 'finish' | 'close', cb: () => void): unknown;
}

/** Responses not finished yet, per known HTTP server. */
const inFlight = new WeakMap<Server, Set<DrainableResponse>>();

/**
 * Keeps the set of `server`'s unfinished responses (HTTP servers; a no-op
 * for others), so that a drain can tell the requests already in flight to
 * close their connection too, not only the ones that come after it.
 */
export function trackResponses(server: Server): void {
  if (inFlight.has(server)) return;
  const set = new Set<DrainableResponse>();
  inFlight.set(server, set);
  server.prependListener('request' as 'connection', ((_req: unknown, res: DrainableResponse) => {
    set.add(res);
    res.once('finish', () => set.delete(res));
    res.once('close', () => set.delete(res));
  }) as never);
}

/**
 * Stops `server` accepting and resolves once its connections ended: in-flight
 * requests finish (answered with "Connection: close"), idle keep-alive
 * connections close; after `timeout` ms the rest are closed. A drain already
 * under way (a restart's, when SIGTERM comes) is joined, not started again.
 */
export function drain(server: Server, timeout: number): Promise<void> {
  const known = servers.get(server);
  if (known?.drain !== undefined) return known.drain;
  if (!server.listening) return Promise.resolve();
  if (!internal.has(server)) addServer(server);
  const entry = servers.get(server);
  const run = drainOnce(server, timeout).finally(() => {
    if (entry !== undefined && entry.drain === run) entry.drain = undefined;
    if (!server.listening) servers.delete(server);
  });
  if (entry !== undefined) entry.drain = run;
  return run;
}

function drainOnce(server: Server, timeout: number): Promise<void> {
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
    for (const res of inFlight.get(server) ?? []) onRequest(undefined, res);
    // net.Server's close, not http.Server's: Node >= 19's http close() also
    // closes idle connections at once, with exactly that race.
    // 'close' comes once every connection has ended.
    NetServer.prototype.close.call(server, () => {
      if (timer) clearTimeout(timer);
      server.removeListener('request' as 'connection', onRequest as never);
      resolve();
    });
    timer = setTimeout(() => {
      debug('drain: timed out after %d ms; closing remaining connections', timeout);
      server.removeListener('request' as 'connection', onRequest as never);
      http.closeIdleConnections?.();
      http.closeAllConnections?.();
      resolve();
    }, timeout);
  });
}

/** Closes idle keep-alive connections of every given server (the end of gracefulShutdown's idle grace). */
export function closeIdle(list: Server[]): void {
  for (const s of list) (s as unknown as HttpLike).closeIdleConnections?.();
}

/** Closes every connection of the given servers (a deadline passed). */
export function closeAll(list: Server[]): void {
  for (const s of list) (s as unknown as HttpLike).closeAllConnections?.();
}
