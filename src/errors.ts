// Errors shaped like Node's own, so callers can branch on `err.code` the same
// way they do for fs or child_process failures.
import { inspect, getSystemErrorName, getSystemErrorMap } from 'node:util';

type NodeError<E extends Error> = E & { code: string };

function withCode<E extends Error>(err: E, code: string): NodeError<E> {
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  return err as NodeError<E>;
}

/**
 * An Error with `code` (and any other own properties), for this library's
 * own failures: ERR_RESTART_REFUSED, ERR_MONITOR_RESTART_LIMIT, ETIMEDOUT...
 */
export function codedError<P extends object = object>(message: string, code: string, props?: P,
  options?: { cause?: unknown }): NodeError<Error> & P {
  const err = withCode(options === undefined ? new Error(message) : new Error(message, options), code);
  return Object.assign(err, props) as NodeError<Error> & P;
}

const classRegExp = /^([A-Z][a-z0-9]*)+$/;
const kTypes = ['string', 'function', 'number', 'object', 'Function', 'Object', 'boolean', 'bigint', 'symbol'];

/** Node's `determineSpecificType`: how a received value is shown in messages. */
export function describeReceived(value: unknown): string {
  if (value === null) return 'Received null';
  if (value === undefined) return 'Received undefined';
  switch (typeof value) {
    case 'bigint': return `Received type bigint (${value}n)`;
    case 'number':
      if (Object.is(value, -0)) return 'Received type number (-0)';
      return `Received type number (${value})`;
    case 'boolean': return `Received type boolean (${value})`;
    case 'symbol': return `Received type symbol (${String(value)})`;
    case 'function': return `Received function ${(value as Function).name}`;
    case 'object': {
      const ctor = (value as object).constructor as { name?: string } | undefined;
      if (ctor && typeof ctor.name === 'string' && ctor.name !== '') return `Received an instance of ${ctor.name}`;
      return `Received ${inspect(value, { depth: -1 })}`;
    }
    case 'string': {
      let s = value as string;
      if (s.length > 28) s = `${s.slice(0, 25)}...`;
      if (!s.includes("'")) return `Received type string ('${s}')`;
      return `Received type string (${JSON.stringify(s)})`;
    }
    default: return `Received ${inspect(value)}`;
  }
}

function kind(name: string): string {
  return name.includes('.') ? 'property' : 'argument';
}

/** ERR_INVALID_ARG_TYPE, with Node's wording. */
export function invalidArgType(name: string, expected: string | string[], actual: unknown): NodeError<TypeError> {
  const list = Array.isArray(expected) ? expected : [expected];
  const types: string[] = [];
  const instances: string[] = [];
  const other: string[] = [];
  for (const e of list) {
    if (kTypes.includes(e)) types.push(e.toLowerCase());
    else if (classRegExp.test(e)) instances.push(e);
    else other.push(e);
  }
  const parts: string[] = [];
  if (types.length > 0) {
    parts.push(types.length > 1 ? `one of type ${joinOr(types)}` : `of type ${types[0]}`);
  }
  if (instances.length > 0) {
    parts.push(instances.length > 1 ? `an instance of ${joinOr(instances)}` : `an instance of ${instances[0]}`);
  }
  if (other.length > 0) parts.push(other.length > 1 ? `one of ${joinOr(other)}` : other[0]);
  const msg = `The "${name}" ${kind(name)} must be ${parts.join(' or ')}. ${describeReceived(actual)}`;
  return withCode(new TypeError(msg), 'ERR_INVALID_ARG_TYPE');
}

function joinOr(items: string[]): string {
  if (items.length <= 2) return items.join(' or ');
  return `${items.slice(0, -1).join(', ')}, or ${items[items.length - 1]}`;
}

/** ERR_INVALID_ARG_VALUE, with Node's wording. */
export function invalidArgValue(name: string, value: unknown, reason = 'is invalid'): NodeError<TypeError> {
  let shown = inspect(value);
  if (shown.length > 128) shown = `${shown.slice(0, 128)}...`;
  const msg = `The ${kind(name)} '${name}' ${reason}. Received ${shown}`;
  return withCode(new TypeError(msg), 'ERR_INVALID_ARG_VALUE');
}

function addNumericalSeparator(val: string): string {
  let res = '';
  let i = val.length;
  const start = val[0] === '-' ? 1 : 0;
  for (; i >= start + 4; i -= 3) res = `_${val.slice(i - 3, i)}${res}`;
  return `${val.slice(0, i)}${res}`;
}

/** ERR_OUT_OF_RANGE, with Node's wording. */
export function outOfRange(name: string, range: string, received: unknown): NodeError<RangeError> {
  let shown: string;
  if (Number.isInteger(received) && Math.abs(received as number) > 2 ** 32) {
    shown = addNumericalSeparator(String(received));
  } else if (typeof received === 'bigint') {
    shown = `${received}n`;
  } else {
    shown = inspect(received);
  }
  const msg = `The value of "${name}" is out of range. It must be ${range}. Received ${shown}`;
  return withCode(new RangeError(msg), 'ERR_OUT_OF_RANGE');
}

export function unknownSignal(signal: unknown): NodeError<TypeError> {
  return withCode(new TypeError(`Unknown signal: ${String(signal)}`), 'ERR_UNKNOWN_SIGNAL');
}

/**
 * ERR_ACCESS_DENIED as Node's permission model throws it for a child
 * process (process.execve, child_process.spawn without --allow-child-process).
 */
export function accessDenied(resource: string): NodeError<Error> & { permission: string; resource: string } {
  const err = new Error('Access to this API has been restricted. Use --allow-child-process to manage permissions.') as
    Error & { permission: string; resource: string };
  withCode(err, 'ERR_ACCESS_DENIED');
  err.permission = 'ChildProcess';
  err.resource = resource;
  return err as NodeError<Error> & { permission: string; resource: string };
}

export function workerUnsupported(what: string): NodeError<TypeError> {
  return withCode(new TypeError(`${what} is not supported in workers`), 'ERR_WORKER_UNSUPPORTED_OPERATION');
}

export function featureUnavailable(what: string): NodeError<TypeError> {
  return withCode(new TypeError(`The feature ${what} is unavailable on the current platform, which is being used to run Node.js`),
    'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM');
}

/** An AbortError like the ones node:timers/promises and fs reject with. */
export function abortError(reason?: unknown): Error {
  const err = new Error('The operation was aborted', reason === undefined ? undefined : { cause: reason });
  err.name = 'AbortError';
  return withCode(err, 'ABORT_ERR');
}

/**
 * A system error as Node's fs functions build them:
 * "ENOENT: no such file or directory, execve '/x'" with errno < 0.
 */
export function errnoException(errno: number, syscall: string, path?: string): NodeJS.ErrnoException {
  const uvErr = errno > 0 ? -errno : errno;
  const code = getSystemErrorName(uvErr);
  const desc = getSystemErrorMap().get(uvErr)?.[1] ?? 'unknown error';
  let msg = `${code}: ${desc}, ${syscall}`;
  if (path !== undefined) msg += ` '${path}'`;
  const err = new Error(msg) as NodeJS.ErrnoException;
  err.errno = uvErr;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
}
