/**
 * The readiness variables (`envKey`s) of daemonize() and selfMonitor():
 * their validation, and whose they are.
 *
 * A daemon or a worker is told it is one by its envKey. Left in process.env,
 * the key went to every program it started: a `child_process.fork(__filename)`
 * of the daemon took itself for the daemon (issue 22, item 24). Removing it
 * outright is not possible: `report(process.env[envKey])` reads it later, and
 * an in-place restart (execve, same PID) must see it to stay the daemon. So
 * this process stamps the keys it was given with its PID
 * (`POSIX_DAEMON_KEYS=<pid>;<key>,<key>`), and a process that inherits them
 * from another removes them (and the stamp) when this module loads, before
 * the program reads them. Kept: the same PID (an exec'd image), and children
 * the library starts with the keys on purpose: a monitor's worker (it is
 * told so in POSIX_DAEMON_WORKER, by its parent) and a restart's preflight
 * (POSIX_DAEMON_BRIDGE, by its parent); those stamp the keys as theirs.
 */
import { invalidArgValue } from '../errors';
import { validateCString } from '../validators';
import { inBridge } from '../restart-role';
import { BRIDGE_ENV } from '../restart-env';

export const KEYS_ENV = 'POSIX_DAEMON_KEYS';
/** Set for a worker by its monitor (see worker.ts); read here without loading the monitor. */
const WORKER_ENV = 'POSIX_DAEMON_WORKER';

export function validateEnvKey(envKey: unknown): asserts envKey is string {
  validateCString(envKey, 'envKey', { allowEmpty: false });
  if (envKey.includes('=')) throw invalidArgValue('envKey', envKey, "must not contain '='");
}

/** The keys this process owns (stamped with its PID in KEYS_ENV). */
const owned = new Set<string>();

/** A key that can be listed: the list's separators are ',' and ';'. */
const LISTABLE = /^[^=\0,;]{1,1024}$/;

function stamp(): void {
  if (owned.size === 0) delete process.env[KEYS_ENV];
  else process.env[KEYS_ENV] = `${process.pid};${[...owned].join(',')}`;
}

/** Whether `pid`, which gave us the keys, started us with them on purpose. */
function startedWithKeys(pid: number): boolean {
  if (pid !== process.ppid || pid <= 1) return false;
  if (inBridge()) return true;
  // Read as the bridge and the worker read them (they may load after us).
  return process.env[WORKER_ENV] !== undefined || process.env[BRIDGE_ENV]?.startsWith(`${pid};`) === true;
}

/** At load: the keys another process stamped are removed, unless we are meant to have them. */
function sortInherited(): void {
  const value = process.env[KEYS_ENV];
  if (value === undefined) return;
  const m = /^([1-9]\d{0,9});(.*)$/.exec(value);
  const keys = m === null ? [] : m[2].split(',').filter((k) => LISTABLE.test(k)).slice(0, 64);
  const pid = m === null ? 0 : Number(m[1]);
  if (pid === process.pid || startedWithKeys(pid)) {
    for (const k of keys) if (process.env[k] !== undefined) owned.add(k);
  } else {
    // Not for us: a program the owner started, which must not take itself
    // for the daemon or a worker, nor report in its name.
    for (const k of keys) delete process.env[k];
  }
  stamp();
}

sortInherited();

/**
 * daemonize() in the daemon, selfMonitor()/isMonitored() in a worker: this
 * process was given `envKey`; programs it starts do not inherit it (unless
 * the library starts them with it on purpose).
 */
export function claimEnvKey(envKey: string): void {
  if (!LISTABLE.test(envKey) || owned.has(envKey)) return;
  owned.add(envKey);
  stamp();
}
