/**
 * Node's module compile cache across a restart. The preflight and the new
 * image start the same code one after the other: the preflight compiles
 * and writes the cache once it is up, the new image reads it. Only with
 * Node's own API (`module.enableCompileCache`, Node >= 22.8); older Nodes
 * start without, as before.
 *
 * The guard of each such process turns the cache on as its first act, with
 * the directory the restart chose: no NODE_COMPILE_CACHE in the program's
 * environment, so its children do not inherit one it never asked for.
 */
import { lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { debuglog } from 'node:util';

const debug = debuglog('posix-daemon');

type CompileCacheApi = {
  enableCompileCache?(dir?: string): { status: number; message?: string; directory?: string };
  getCompileCacheDir?(): string | undefined;
  flushCompileCache?(): void;
  constants?: { compileCacheStatus?: Record<string, number> };
};
const nodeModule = require('node:module') as CompileCacheApi;

/** Whether this Node can turn the cache on from JavaScript. */
export const compileCacheSupported = typeof nodeModule.enableCompileCache === 'function';

/**
 * Node writes its compile cache at exit, and an exec is no exit (nor is a
 * bridge's long wait): write it now. Returns the directory in use, if any.
 */
export function flushCompileCache(): string | undefined {
  const dir = nodeModule.getCompileCacheDir?.();
  if (!dir) return undefined;
  try {
    nodeModule.flushCompileCache?.();
  } catch (err) {
    debug('compile cache: flushing: %s', (err as Error).message);
  }
  return dir;
}

/**
 * The directory the next images use: the one this image already uses (the
 * user's NODE_COMPILE_CACHE, say), else one of our own under the temporary
 * directory, made by this user, mode 0700. A directory there that another
 * user made, or that others can write, is not used: the cache holds code
 * that V8 runs.
 */
export function compileCacheDir(): string | undefined {
  if (!compileCacheSupported) return undefined;
  // Node answers with its own subfolder for this Node build (v26.12.1-x64-
  // <hash>-<uid>) appended; enableCompileCache() appends it again.
  const inUse = nodeModule.getCompileCacheDir?.();
  if (inUse) return basename(inUse).startsWith(`v${process.versions.node}-`) ? dirname(inUse) : inUse;
  const uid = process.getuid?.() ?? 0;
  const dir = join(tmpdir(), `posix-daemon-compile-cache-${uid}`);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      debug('compile cache: %s: %s', dir, (err as Error).message);
      return undefined;
    }
  }
  const st = lstatSync(dir, { throwIfNoEntry: false });
  if (st === undefined || !st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    debug('compile cache: %s is not a private directory of this user: no cache', dir);
    return undefined;
  }
  return dir;
}

/** The guard's first act in a preflight or a new image: the cache on, in `dir`. */
export function enableCompileCache(dir: string): void {
  if (!compileCacheSupported) return;
  try {
    const r = nodeModule.enableCompileCache!(dir);
    debug('compile cache: %s (status %d%s)', r.directory ?? dir, r.status, r.message ? `: ${r.message}` : '');
  } catch (err) {
    debug('compile cache: enabling: %s', (err as Error).message);
  }
}
