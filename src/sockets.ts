/**
 * Listening sockets that survive an in-place restart, and systemd's socket
 * activation.
 *
 * Two ways in, read once when this module loads:
 * - systemd's protocol (sd_listen_fds(3)): sockets at fds 3, 4, ... and
 *   LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES, from systemd, from
 *   `systemd-socket-activate`, or from any single-threaded launcher.
 * - our own hand-over across `restartViaExec`: the sockets stay at the fd
 *   numbers they had (moving them to 3, 4, ... in a running Node process
 *   would dup2 over fds libuv owns: on Node 20 fd 4 is its signal pipe) and
 *   POSIX_DAEMON_LISTEN_FDS=<pid>;<fd>=<name>;... describes them.
 *
 * Neither is trusted: the PID must be this process, and each fd must really
 * be a listening stream socket (fstat, SO_TYPE, SO_ACCEPTCONN) and not the
 * inspector's (the only listening socket Node itself may hold when this
 * module loads). Accepted fds are made close-on-exec (Node's startup does it
 * for every inherited fd already; an earlier module may have undone it), so
 * a `child_process` does not inherit them, and the variables are removed
 * from `process.env`.
 */
import { isIP } from 'node:net';
import type { Server, ListenOptions } from 'node:net';
import { debuglog } from 'node:util';
import { addon } from './native';
import {
  addServer, drain, setListenRewrite, upWhenListening, whenServerListens,
} from './lifecycle';
import { dup } from './posix';
import { HANDOFF_ENV } from './restart-env';
import { invalidArgType, invalidArgValue } from './errors';
import {
  isValidFdName, listeningServerFd, validateDuration, validateFdName, validateObject, validateOptionKeys, validateServer,
} from './validators';

const debug = debuglog('posix-daemon');

/** sd_listen_fds(3)'s first fd. */
const LISTEN_FDS_START = 3;
export { HANDOFF_ENV };
const MAX_SOCKETS = 4096;

export interface InheritedSocket {
  fd: number;
  /** From LISTEN_FDNAMES (systemd's default is 'unknown') or from the image before. */
  name: string;
  family: 'IPv4' | 'IPv6' | 'unix' | 'other';
  /** IP address it is bound to (IPv4/IPv6). */
  address?: string;
  /** Port it is bound to (IPv4/IPv6). */
  port?: number;
  /** Unix socket path ("\0..." for the abstract namespace). */
  path?: string;
}

/**
 * systemd's rule for FileDescriptorName= (fdname_is_valid): 1 to 255
 * printable ASCII characters, no ':' (the LISTEN_FDNAMES separator).
 */
function isThisProcess(pid: string | undefined): boolean {
  return pid !== undefined && /^[1-9][0-9]*$/.test(pid) && Number(pid) === process.pid;
}

/** The port of Node's inspector, when it listens (`--inspect`); asked when needed (loading it costs 1 ms). */
function inspectorPort(): number | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const url = (require('node:inspector') as { url(): string | undefined }).url();
    return url === undefined ? undefined : Number(new URL(url).port) || undefined;
  } catch {
    return undefined;  // Node built without the inspector
  }
}

/** The fd as an inherited listening socket, or undefined (with a debuglog line why not). */
function adopt(fd: number, name: string, source: string): InheritedSocket | undefined {
  let info;
  try {
    info = addon.socketInfo(fd);
  } catch (err) {
    debug('%s: fd %d: %s: ignored', source, fd, (err as Error).message);
    return undefined;
  }
  if (info === null || info.type !== 'stream' || !info.listening) {
    debug('%s: fd %d is not a listening stream socket (%j): ignored', source, fd, info);
    return undefined;
  }
  // process.debugPort first: asking the inspector loads it, and only that port can be its.
  if (info.port !== undefined && info.port === process.debugPort && info.port === inspectorPort()) {
    debug('%s: fd %d is the inspector\'s socket: ignored', source, fd);
    return undefined;
  }
  // Ours now: no child started from here on inherits it by accident.
  addon.setCloexec(fd, true);
  const out: InheritedSocket = { fd, name, family: info.family };
  if (info.address !== undefined) out.address = info.address;
  if (info.port !== undefined) out.port = info.port;
  if (info.path !== undefined) out.path = info.path;
  return out;
}

function readSystemdEnv(env: NodeJS.ProcessEnv): InheritedSocket[] {
  const { LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES } = env;
  if (LISTEN_PID === undefined && LISTEN_FDS === undefined) return [];
  if (!isThisProcess(LISTEN_PID)) {
    debug('listenFds: LISTEN_PID=%s is not this process (%d): ignored', LISTEN_PID, process.pid);
    return [];
  }
  const n = LISTEN_FDS !== undefined && /^[0-9]+$/.test(LISTEN_FDS) ? Number(LISTEN_FDS) : NaN;
  if (!(n >= 1 && n <= MAX_SOCKETS)) {
    debug('listenFds: LISTEN_FDS=%s: ignored', LISTEN_FDS);
    return [];
  }
  const names = LISTEN_FDNAMES === undefined ? [] : LISTEN_FDNAMES.split(':');
  const out: InheritedSocket[] = [];
  for (let i = 0; i < n; i++) {
    const name = names[i] !== undefined && isValidFdName(names[i]) ? names[i] : 'unknown';
    const s = adopt(LISTEN_FDS_START + i, name, 'LISTEN_FDS');
    if (s) out.push(s);
  }
  return out;
}

/**
 * Whom a hand-over is meant for: `<pid>` is this very process (an exec kept
 * the PID); `P<pid>` is a child of `<pid>` (a restart's preflight/bridge,
 * forked with the sockets before the exec, when its own PID was not known).
 */
function isMeantForUs(who: string | undefined): boolean {
  if (who === undefined || !who.startsWith('P')) return isThisProcess(who);
  const parent = who.slice(1);
  return /^[1-9][0-9]*$/.test(parent) && process.ppid > 1 && Number(parent) === process.ppid;
}

function readHandoffEnv(value: string | undefined): InheritedSocket[] {
  if (value === undefined) return [];
  const [pid, ...items] = value.split(';');
  if (!isMeantForUs(pid)) {
    debug('listenFds: %s names PID %s, not this process (%d): ignored', HANDOFF_ENV, pid, process.pid);
    return [];
  }
  const out: InheritedSocket[] = [];
  for (const item of items.slice(0, MAX_SOCKETS)) {
    // `~`: a spare (the image before did not serve it either): passed on,
    // but not waited for.
    const m = /^(~?)([0-9]{1,9})=(.*)$/.exec(item);
    let name = '';
    try {
      name = m ? decodeURIComponent(m[3]) : '';
    } catch {
      // keeps '' and is refused below
    }
    if (!m || !isValidFdName(name)) {
      debug('listenFds: %s item %j: ignored', HANDOFF_ENV, item);
      continue;
    }
    const s = adopt(Number(m[2]), name, HANDOFF_ENV);
    if (s) out.push(s);
    if (s && m[1] === '') handed.add(s.fd);
  }
  return out;
}

/** Fds handed over by the image before (or the parent of a bridge) and not taken yet. */
const handed = new Set<number>();
const handedWaiters: Array<() => void> = [];

function readInherited(): InheritedSocket[] {
  const env = process.env;
  const systemd = readSystemdEnv(env);
  const own = readHandoffEnv(env[HANDOFF_ENV]);
  // Meant for this process only: children must not misread them.
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  delete env[HANDOFF_ENV];
  const seen = new Set<number>();
  const out = [...systemd, ...own].filter((s) => !seen.has(s.fd) && seen.add(s.fd));
  if (out.length > 0) debug('listenFds: inherited %j', out);
  return out;
}

/** Inherited sockets not taken by listen() yet. Read when the module loads. */
let inherited: InheritedSocket[] = readInherited();

// ---------------------------------------------------------------------------
// Plain `server.listen(port)` (Express's `app.listen(port)`, Fastify's
// `app.listen()`) in an image a restart started: the address is already
// bound, by the very socket handed over, so binding anew fails with
// EADDRINUSE. While handed-over sockets are waiting, a listen() on the
// address of one of them takes it instead (lifecycle.ts owns the one
// wrapper of net.Server.prototype.listen and asks here).

/** What a plain listen(...) call asks for, as Node reads its arguments; undefined for fds and handles. */
function plainListenRequest(args: unknown[]): { options: ListenOptions; callback?: unknown } | undefined {
  const last = args[args.length - 1];
  const callback = typeof last === 'function' ? last : undefined;
  const a = callback === undefined ? args : args.slice(0, -1);
  const first = a[0];
  if (first !== null && typeof first === 'object') {
    const o = first as ListenOptions & { fd?: unknown; _handle?: unknown; handle?: unknown };
    if (o.fd !== undefined || o._handle !== undefined || o.handle !== undefined) return undefined;
    if (o.port === undefined && o.path === undefined) return undefined;
    return { options: o, callback };
  }
  const port = typeof first === 'number' ? first : typeof first === 'string' && /^[0-9]+$/.test(first) ? Number(first) : undefined;
  if (port !== undefined) {
    const host = typeof a[1] === 'string' ? a[1] : undefined;
    const backlog = a.find((x, i) => i > 0 && typeof x === 'number') as number | undefined;
    return { options: { port, host, backlog }, callback };
  }
  if (typeof first === 'string') return { options: { path: first, backlog: typeof a[1] === 'number' ? a[1] : undefined }, callback };
  return undefined;
}

function listenTakingHanded(server: Server, args: unknown[]): unknown[] | undefined {
  const req = handed.size === 0 ? undefined : plainListenRequest(args);
  const hit = req === undefined ? undefined
    : inherited.find((s) => handed.has(s.fd) && addressMatches(req.options, s));
  if (req === undefined || hit === undefined) return undefined;
  taken(hit);
  if (hit.name !== 'unknown') serverNames.set(server, hit.name);
  debug('listen: a plain listen(%j) takes the handed-over fd %d (%s)', req.options, hit.fd, hit.name);
  const { backlog, signal } = req.options as ListenOptions & { signal?: AbortSignal };
  return [{ fd: hit.fd, backlog, signal }, ...(req.callback ? [req.callback] : [])];
}

if (handed.size > 0) {
  setListenRewrite(listenTakingHanded);
  // An image a restart started is up once it took its sockets, not at its first listen.
  upWhenListening(false);
}

// However a server came to listen on an inherited socket (`listen({ fd })`
// with an fd from listenFds(), `listen(handle)`), it took it: a restart's
// preflight counts it, and the socket is no longer listed as free.
whenServerListens((server) => {
  const fd = (server as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  const hit = fd === undefined ? undefined : inherited.find((s) => s.fd === fd);
  if (hit === undefined) return;
  debug('listen: a server listens on the inherited fd %d (%s)', hit.fd, hit.name);
  if (hit.name !== 'unknown' && !serverNames.has(server)) serverNames.set(server, hit.name);
  taken(hit);
});

/** The name each server's socket travels under across a restart (sticky). */
const serverNames = new WeakMap<Server, string>();

/** Whether sockets were handed to this image by a restart (or to this bridge by its parent). */
export function socketsWereHanded(): boolean {
  return handed.size > 0 || handedTaken > 0;
}
let handedTaken = 0;

/**
 * Resolves once every socket handed over by the restart that started this
 * image has been taken by a server (`listen()`, or a plain `server.listen()`
 * on the same address): the image is then "up". At once when none is left.
 */
export function handedSocketsTaken(): Promise<void> {
  if (handed.size === 0) return Promise.resolve();
  return new Promise((resolve) => handedWaiters.push(resolve));
}

function taken(s: InheritedSocket): void {
  inherited = inherited.filter((x) => x !== s);
  if (handed.delete(s.fd)) {
    handedTaken++;
    if (handed.size === 0) for (const w of handedWaiters.splice(0)) w();
  }
}

/**
 * Sockets this process holds without a server (a monitor's, which its
 * workers accept on): handOffServers passes them on to the next image too.
 */
const held = new Map<number, string>();

/** Keeps `fd` (a listening socket, no server of ours on it) across restartViaExec under `name`. */
export function holdAcrossExec(fd: number, name: string): void {
  held.set(fd, name);
}

/** Forgets an fd given to holdAcrossExec (it is being closed). */
export function releaseHeld(fd: number): void {
  held.delete(fd);
}

/**
 * Takes an inherited socket that matches `options` (by name, else by
 * address) out of the list, for a process that holds it without a server.
 */
export function takeInherited(options: ListenOptions & { name?: string }): InheritedSocket | undefined {
  const hit = findInherited(options);
  // Taken like a server's (a handed socket counts as taken for the restart).
  if (hit !== undefined) taken(hit);
  return hit;
}

/**
 * The listening sockets this process inherited (from systemd or from the
 * image it replaced) and that `listen()` has not taken yet. Only real
 * listening stream sockets are listed; anything else is ignored (see
 * `NODE_DEBUG=posix-daemon`).
 */
export function listenFds(): InheritedSocket[] {
  return inherited.map((s) => ({ ...s }));
}

function derivedName(server: Server): string {
  const addr = server.address();
  if (addr === null) throw invalidArgValue('server', server, 'must be listening');
  if (typeof addr === 'string') return `unix_${addr.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  return `tcp_${addr.port}`;
}

/**
 * The name a server's socket travels under across a restart: the name it
 * was inherited or listened under (names are sticky), else `tcp_<port>` or
 * `unix_<path>`.
 */
export function socketName(server: Server): string {
  return serverNames.get(server) ?? derivedName(server);
}

function normalizeIp(host: string): string | undefined {
  const v = isIP(host);
  if (v === 4) return host;
  if (v !== 6) return undefined;
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

function hostMatches(host: string | undefined, s: InheritedSocket): boolean {
  if (host === undefined || host === '' || host === '0.0.0.0' || host === '::') return true;
  const bound = s.address === undefined ? undefined : normalizeIp(s.address);
  if (bound === undefined) return false;
  if (host === 'localhost') return /^127\./.test(bound) || bound === '::1';
  const want = normalizeIp(host);
  return want !== undefined && (bound === want || bound === `::ffff:${want}`);
}

function addressMatches(options: ListenOptions, s: InheritedSocket): boolean {
  if (options.path !== undefined) return s.family === 'unix' && s.path === options.path;
  const port = options.port === undefined ? NaN : Number(options.port);
  if (!(port > 0)) return false;  // port 0 asks for a new one
  return (s.family === 'IPv4' || s.family === 'IPv6') && s.port === port && hostMatches(options.host, s);
}

function findInherited(options: ListenOptions & { name?: string }): InheritedSocket | undefined {
  if (options.name !== undefined) {
    const byName = inherited.find((s) => s.name === options.name);
    if (byName) return byName;
  }
  return inherited.find((s) => addressMatches(options, s));
}

/** net.Server's listen options (Node 18 to 26), and our `name`. */
const LISTEN_OPTION_KEYS = [
  'port', 'host', 'path', 'backlog', 'exclusive', 'readableAll', 'writableAll', 'ipv6Only', 'signal', 'reusePort', 'name',
];

export interface ListenResult {
  /** Whether an inherited socket was taken over (else a new one was bound). */
  inherited: boolean;
  /** The inherited fd taken over. */
  fd?: number;
  /** The name the socket travels under across restarts. */
  name: string;
}

/**
 * `server.listen(options)`, except that when this process inherited a
 * matching socket the server takes it over (`listen({ fd })`) instead of
 * binding anew: the same code serves a first start, a start by systemd
 * socket activation and a restart in place. A socket matches by `name`, or
 * failing that by its actual local address: the unix `path`, or the `port`
 * with `host` (omitted, '0.0.0.0' or '::' match any address on that port).
 * Resolves once listening.
 */
export function listen(server: Server, options: ListenOptions & { name?: string }): Promise<ListenResult> {
  validateServer(server, 'server', 'listen');
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', LISTEN_OPTION_KEYS);
  if (options.name !== undefined) validateFdName(options.name, 'options.name');
  const hit = findInherited(options);
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const done = (): void => {
      server.removeListener('error', onError);
      // A name systemd gave (FileDescriptorName=) wins; else the caller's.
      const name = hit !== undefined && hit.name !== 'unknown' ? hit.name : options.name ?? hit?.name;
      if (name !== undefined) serverNames.set(server, name);
      addServer(server);
      resolve({ inherited: hit !== undefined, ...(hit ? { fd: hit.fd } : {}), name: socketName(server) });
    };
    if (hit !== undefined) {
      taken(hit);
      debug('listen: %j takes inherited fd %d (%s)', options.name ?? options.port ?? options.path, hit.fd, hit.name);
      server.listen({ fd: hit.fd, backlog: options.backlog }, done);
    } else {
      const { name: _drop, ...rest } = options;
      server.listen(rest, done);
    }
  });
}

export interface ServerHandoffEntry {
  server: Server;
  /** Overrides the sticky name (see socketName). */
  name?: string;
}

export interface Handoff {
  /** The fds the new image must inherit (they keep their numbers). */
  keepFds: number[];
  /** Variables for the new image (undefined = remove). */
  env: Record<string, string | undefined>;
  /** The exec failed: the servers listen again on their sockets. */
  resume(): Promise<void>;
}

/**
 * Prepares listening servers for an exec without refusing or resetting
 * anyone: keeps a duplicate of each listening fd (so the socket, and the
 * connections queued on it, stay open), stops accepting, lets in-flight
 * requests finish and idle keep-alive connections close (at most
 * `drainTimeout` ms, then the rest are closed), and returns what execve
 * needs to pass the sockets on. Inherited sockets no server took yet are
 * passed on too. No fd is moved: each keeps its number.
 */
export async function handOffServers(servers: Array<Server | ServerHandoffEntry>, drainTimeout: number): Promise<Handoff> {
  validateDuration(drainTimeout, 'options.drainTimeout');
  const entries = serverEntries(servers);
  // Duplicates first (close-on-exec until the very exec): from here on the
  // sockets outlive their server objects.
  const dups = entries.map((e) => dup(e.fd, LISTEN_FDS_START));
  await Promise.all(entries.map((e) => drain(e.server, drainTimeout)));
  const passed = [
    ...entries.map((e, i) => ({ fd: dups[i], name: e.name })),
    ...inheritedToPass(),
    ...[...held].map(([fd, name]) => ({ fd, name })),
  ];
  return {
    keepFds: passed.map((p) => p.fd),
    env: {
      LISTEN_FDS: undefined,
      LISTEN_PID: undefined,
      LISTEN_FDNAMES: undefined,
      [HANDOFF_ENV]: handoffValue(String(process.pid), passed),
    },
    async resume() {
      await Promise.all(entries.map((e, i) => new Promise<void>((resolve, reject) => {
        e.server.once('error', reject);
        e.server.listen({ fd: dups[i] }, () => {
          e.server.removeListener('error', reject);
          serverNames.set(e.server, e.name);
          resolve();
        });
      })));
    },
  };
}

/** A socket a restart passes on; `spare`: nobody served it, so the next image is not expected to take it. */
export interface PassedSocket { fd: number; name: string; spare?: boolean }

/** The inherited sockets no server took: still expected when they were handed to us, else spares. */
function inheritedToPass(): PassedSocket[] {
  return inherited.map((s) => ({ fd: s.fd, name: s.name, spare: !handed.has(s.fd) }));
}

/** The value of HANDOFF_ENV for `who` (a PID, or `P<pid>` for a child of that PID). */
export function handoffValue(who: string, passed: PassedSocket[]): string | undefined {
  return passed.length === 0 ? undefined
    : [who, ...passed.map((p) => `${p.spare ? '~' : ''}${p.fd}=${encodeURIComponent(p.name)}`)].join(';');
}

/**
 * The listening sockets a restart passes on, as they are now (no drain, no
 * duplicate): each server's own fd under its name, and the inherited
 * sockets no server took. What a preflight child is started with.
 */
export function currentSockets(servers: Array<Server | ServerHandoffEntry>): PassedSocket[] {
  return [...serverEntries(servers).map((e) => ({ fd: e.fd, name: e.name })), ...inheritedToPass()];
}

function serverEntries(servers: Array<Server | ServerHandoffEntry>): Array<{ server: Server; name: string; fd: number }> {
  return servers.map((s, i) => {
    const e = (s as ServerHandoffEntry).server !== undefined ? s as ServerHandoffEntry : { server: s as Server };
    validateServer(e.server, `options.servers[${i}]`, 'close', s);
    const fd = listeningServerFd(e.server, `options.servers[${i}]`);
    if (e.name !== undefined) validateFdName(e.name, `options.servers[${i}].name`);
    return { server: e.server, name: e.name ?? socketName(e.server), fd };
  });
}
