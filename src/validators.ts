// Argument validation with Node's error codes and messages (modelled on
// lib/internal/validators.js), shared by every public entry point.
import { fstatSync } from 'node:fs';
import type { Server } from 'node:net';
import { constants as osConstants } from 'node:os';
import { NO_SHARED_STAT } from './fdfile';
import { accessDenied, errnoException, invalidArgType, invalidArgValue, outOfRange, unknownSignal } from './errors';

export function validateString(value: unknown, name: string): asserts value is string {
  if (typeof value !== 'string') throw invalidArgType(name, 'string', value);
}

/** A string that can travel through execve(2): no NUL bytes. */
export function validateCString(value: unknown, name: string, { allowEmpty = true } = {}): asserts value is string {
  validateString(value, name);
  if (value.includes('\u0000')) throw invalidArgValue(name, value, 'must be a string without null bytes');
  if (!allowEmpty && value === '') throw invalidArgValue(name, value, 'must be a non-empty string');
}

export function validateBoolean(value: unknown, name: string): asserts value is boolean {
  if (typeof value !== 'boolean') throw invalidArgType(name, 'boolean', value);
}

export function validateFunction(value: unknown, name: string): asserts value is Function {
  if (typeof value !== 'function') throw invalidArgType(name, 'Function', value);
}

export function validateObject(value: unknown, name: string): asserts value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidArgType(name, 'Object', value);
  }
}

export function validateArray(value: unknown, name: string): asserts value is unknown[] {
  if (!Array.isArray(value)) throw invalidArgType(name, 'Array', value);
}

export function validateInteger(value: unknown, name: string, min = Number.MIN_SAFE_INTEGER,
  max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value !== 'number') throw invalidArgType(name, 'number', value);
  if (!Number.isInteger(value)) throw outOfRange(name, 'an integer', value);
  if (value < min || value > max) throw outOfRange(name, `>= ${min} && <= ${max}`, value);
}

/** A duration in milliseconds: finite and non-negative. */
export function validateDuration(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number') throw invalidArgType(name, 'number', value);
  if (!Number.isFinite(value) || value < 0) throw outOfRange(name, 'a finite number >= 0', value);
}

export function validateAbortSignal(value: unknown, name: string): asserts value is AbortSignal {
  if (value !== undefined &&
      (value === null || typeof value !== 'object' || !('aborted' in value))) {
    throw invalidArgType(name, 'AbortSignal', value);
  }
}

/** An array of string arguments for execve(2), checked like process.execve. */
export function validateArgs(value: unknown, name: string): asserts value is string[] {
  validateArray(value, name);
  for (let i = 0; i < value.length; i++) {
    const arg = value[i];
    if (typeof arg !== 'string' || arg.includes('\u0000')) {
      throw invalidArgValue(`${name}[${i}]`, arg, 'must be a string without null bytes');
    }
  }
}

/**
 * An environment object turned into "KEY=value" strings, checked like
 * process.execve, and more: a key that is empty or holds '=' cannot be
 * told apart from its value in the new program's environ ("A=B=c" is A
 * with the value "B=c"), so it is refused here as daemonize refuses it.
 */
export function envToArray(env: unknown, name: string): string[] {
  validateObject(env, name);
  const out: string[] = [];
  for (const [key, value] of Object.entries(env)) {
    if (typeof key !== 'string' || typeof value !== 'string' ||
        key.includes('\u0000') || value.includes('\u0000')) {
      throw invalidArgValue(name, env, 'must be an object with string keys and values without null bytes');
    }
    if (key === '' || key.includes('=')) {
      throw invalidArgValue(name, env, `must not have an empty key or a key containing '=' (${JSON.stringify(key)})`);
    }
    out.push(`${key}=${value}`);
  }
  return out;
}

/** A file descriptor list: integers >= 0, no duplicates needed. */
export function validateFdList(value: unknown, name: string, min = 0): asserts value is number[] {
  validateArray(value, name);
  for (let i = 0; i < value.length; i++) validateInteger(value[i], `${name}[${i}]`, min, 2 ** 31 - 1);
}

/**
 * Fds that must be open now: a closed one would make every exec fail with
 * EBADF (from the native fcntl, naming no fd). The error names the option
 * and the fd: `EBADF: bad file descriptor, fstat (options.keepFds[0]: fd 99999)`.
 */
export function validateOpenFds(fds: readonly number[], name: string): void {
  fds.forEach((fd, i) => {
    try {
      fstatSync(fd, NO_SHARED_STAT);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const out = errnoException(e.errno ?? -9, e.syscall ?? 'fstat') as NodeJS.ErrnoException & { fd: number };
      out.message += ` (${name}[${i}]: fd ${fd} is not open)`;
      out.fd = fd;
      throw out;
    }
  });
}

/**
 * Node's permission model (--permission, Node 20's --experimental-permission)
 * without --allow-child-process: nothing may start or replace a program,
 * as process.execve and child_process refuse. `resource`: the program.
 */
export function validateChildProcessAllowed(resource: string): void {
  const permission = (process as { permission?: { has(scope: string): boolean } }).permission;
  if (permission !== undefined && typeof permission.has === 'function' && !permission.has('child')) {
    throw accessDenied(resource);
  }
}

/**
 * A signal a handler can be installed for (`process.on(name)`): a known
 * name or number, not SIGKILL or SIGSTOP (libuv refuses those with a bare
 * EINVAL). Returns the signal's name.
 */
export function toCatchableSignal(value: unknown, name: string): NodeJS.Signals {
  const signo = toSignalNumber(value, name);
  const sig = signalName(signo) as NodeJS.Signals;
  if (sig === 'SIGKILL' || sig === 'SIGSTOP') throw invalidArgValue(name, value, 'must be a signal that can be caught');
  return sig;
}

/** Signal name or number → number, as child_process does it. */
export function toSignalNumber(value: unknown, name: string): number {
  if (typeof value === 'number') {
    const known = Object.values(osConstants.signals).includes(value);
    if (!known) throw unknownSignal(value);
    return value;
  }
  if (typeof value === 'string') {
    const n = (osConstants.signals as Record<string, number>)[value];
    if (n === undefined) throw unknownSignal(value);
    return n;
  }
  throw invalidArgType(name, ['string', 'number'], value);
}

const signalNames = new Map<number, string>();
for (const [n, v] of Object.entries(osConstants.signals)) if (!signalNames.has(v)) signalNames.set(v, n);

export function signalName(signo: number): string | null {
  if (!signo) return null;
  return signalNames.get(signo) ?? `SIG${signo}`;
}

/** The options of an in-place restart (restartViaExec, restartOnChange), once validated. */
export interface ExecOptions {
  env: Record<string, string | undefined> | undefined;
  args: string[] | undefined;
  keepFds: number[];
  retryInterval: number;
  signal: AbortSignal | undefined;
  servers: unknown[];
  drainTimeout: number;
  compileCache: boolean;
}

/**
 * The one check of restartViaExec's options, for every path that leads to
 * it (restartViaExec, restartOnChange, restartOnSignal): what would fail at
 * the exec fails here, before any restart starts. Servers are checked for
 * their shape here; whether they listen, when they are handed over.
 */
export function validateExecOptions(options: unknown): ExecOptions {
  validateObject(options, 'options');
  const o = options as Record<string, unknown>;
  const {
    env, args, keepFds = [], retryInterval = 1000, signal, servers = [], drainTimeout = 5000, compileCache = true,
  } = o;
  if (env !== undefined) envToArray(Object.fromEntries(Object.entries(validatedObject(env, 'options.env'))
    .filter(([, v]) => v !== undefined)), 'options.env');
  if (args !== undefined) validateArgs(args, 'options.args');
  validateFdList(keepFds, 'options.keepFds', 3);
  validateOpenFds(keepFds, 'options.keepFds');
  validateDuration(retryInterval, 'options.retryInterval');
  validateAbortSignal(signal, 'options.signal');
  validateArray(servers, 'options.servers');
  servers.forEach((s, i) => {
    const name = `options.servers[${i}]`;
    const entry = s !== null && typeof s === 'object' && (s as { server?: unknown }).server !== undefined
      ? s as { server: unknown; name?: unknown } : { server: s };
    validateServer(entry.server, name, 'close', s);
    if (entry.name !== undefined) validateString(entry.name, `${name}.name`);
  });
  validateDuration(drainTimeout, 'options.drainTimeout');
  validateBoolean(compileCache, 'options.compileCache');
  return {
    env: env as ExecOptions['env'], args: args as string[] | undefined, keepFds, retryInterval,
    signal: signal as AbortSignal | undefined, servers, drainTimeout, compileCache,
  };
}

function validatedObject(value: unknown, name: string): Record<string, unknown> {
  validateObject(value, name);
  return value;
}

// ---- Unknown option keys (issue 16, item 18) ----
// A misspelt option (`daemonize({ pidfile })`) would otherwise do nothing
// and say nothing. Every options object of the public API goes through this.

/** Edit distance (optimal string alignment: a swap of neighbours is one edit), case-insensitive. */
function editDistance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known key `key` most likely meant, or undefined when none is close enough to be a typo. */
export function likelyOption(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(key, k);
    // A typo: at most a third of the longer name (at least one edit).
    if (d <= Math.max(1, Math.floor(Math.max(key.length, k.length) / 3)) && d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * Throws ERR_INVALID_ARG_VALUE for the first own enumerable key of
 * `options` that is not in `known`, naming it and the likely intended one:
 * "The property 'options.pidfile' is not an option (did you mean
 * 'options.pidFile'?)". Call it after validateObject.
 */
export function validateOptionKeys(options: object, name: string, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const guess = likelyOption(key, known);
    throw invalidArgValue(`${name}.${key}`, (options as Record<string, unknown>)[key],
      guess !== undefined
        ? `is not an option (did you mean '${name}.${guess}'?)`
        : `is not an option (the options are: ${known.join(', ')})`);
  }
}

/** systemd's fdname_is_valid: a FileDescriptorName, as in LISTEN_FDNAMES and FDNAME=. */
export function isValidFdName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && /^[\x20-\x39\x3b-\x7e]+$/.test(name);
}

/** Throws ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE unless `value` is a valid FileDescriptorName. */
export function validateFdName(value: unknown, name: string): asserts value is string {
  validateString(value, name);
  if (!isValidFdName(value)) {
    throw invalidArgValue(name, value, 'must be 1 to 255 printable ASCII characters without ":" (a systemd FileDescriptorName)');
  }
}

/**
 * Throws ERR_INVALID_ARG_TYPE unless `value` looks like a net.Server (an
 * object with the method the caller will use). `received` is what the
 * message shows (a `{ server, name }` entry rather than its server).
 */
export function validateServer(value: unknown, name: string, method: 'close' | 'listen' | 'address' = 'close',
  received: unknown = value): asserts value is Server {
  if (value === null || typeof value !== 'object' || typeof (value as Record<string, unknown>)[method] !== 'function') {
    throw invalidArgType(name, 'net.Server', received);
  }
}

/**
 * The fd of a listening server's own socket, or ERR_INVALID_ARG_VALUE: a
 * server not listening, or listening on a handle with no fd (a cluster
 * worker's, or a pipe name), has nothing to hand over or store.
 */
export function listeningServerFd(server: Server, name: string): number {
  const fd = (server as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (!server.listening || fd === undefined || fd < 0) {
    throw invalidArgValue(name, '[Server]', 'must be listening on a socket of its own');
  }
  return fd;
}
