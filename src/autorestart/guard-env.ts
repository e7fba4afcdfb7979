/**
 * How the guard reaches the next image: in NODE_OPTIONS, not on its command
 * line. `ps`, `pgrep -f` and anything else that matches the command line
 * see the program as the user started it, after any number of restarts.
 * NODE_OPTIONS preloads run before those of the command line, and the guard
 * puts the program's own NODE_OPTIONS back (or removes it) as its first act:
 * the program and its children never see it.
 */
import { join } from 'node:path';
import { serializeNodeOptions } from '../node-options';

/** The preload that guards an image started by a restart (see guard.ts). */
export const GUARD_PATH = join(__dirname, 'guard.js');

/** What the guard puts before the program's own NODE_OPTIONS (the path quoted if it has a space). */
const PREFIX = serializeNodeOptions(['--require', GUARD_PATH]);

/** NODE_OPTIONS of the next image: the guard, then the program's own value (undefined: it had none). */
export function guardedNodeOptions(own: string | undefined): string {
  return own === undefined ? PREFIX : `${PREFIX} ${own}`;
}

/**
 * Puts the program's own NODE_OPTIONS back into process.env (the guard's
 * first act). Only a value guardedNodeOptions() made is touched.
 */
export function restoreNodeOptions(): void {
  const value = process.env.NODE_OPTIONS;
  if (value === PREFIX) delete process.env.NODE_OPTIONS;
  else if (value?.startsWith(`${PREFIX} `)) process.env.NODE_OPTIONS = value.slice(PREFIX.length + 1);
}

/** Whether `env` (the next image's) starts the guard. */
export function startsGuard(env: Record<string, string | undefined>): boolean {
  const value = env.NODE_OPTIONS;
  return value === PREFIX || (value?.startsWith(`${PREFIX} `) ?? false);
}

/** The held signals' numbers, for native/hold.c (which removes the variable). */
export const HOLD_ENV = 'POSIX_DAEMON_HOLD';
/**
 * native/hold.c's build: `posix_daemon_hold.so` (a local build) or
 * `posix_daemon_hold.<libc>.so` (a prebuild). The exec puts it first in
 * LD_PRELOAD.
 */
export const HOLD_BASE = 'posix_daemon_hold';
/** Whether an LD_PRELOAD entry names hold.c's build (what hold.c itself matches). */
export function isHoldPath(entry: string): boolean {
  return /\/posix_daemon_hold(\.(glibc|musl))?\.so$/.test(entry);
}

/**
 * What hold.c undoes before Node's main, when it did not run (an exec in
 * secure mode, a node with file capabilities, ignores LD_PRELOAD): the
 * program and its children must never load it or see its variable.
 */
export function restoreHoldEnv(): void {
  if (process.env[HOLD_ENV] === undefined) return;
  delete process.env[HOLD_ENV];
  const value = process.env.LD_PRELOAD;
  if (value === undefined) return;
  const n = value.search(/[ :]/);
  const first = n === -1 ? value : value.slice(0, n);
  if (!isHoldPath(first)) return;
  if (n === -1) delete process.env.LD_PRELOAD;
  else process.env.LD_PRELOAD = value.slice(n + 1);
}
