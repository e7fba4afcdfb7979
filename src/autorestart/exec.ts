/**
 * The in-place restart itself: execve of the same program under the same PID,
 * with the servers' sockets handed over at the fd numbers they have.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import type { Server } from 'node:net';
import { handOffServers, type Handoff, type ServerHandoffEntry } from '../sockets';
import { ready, reloading } from '../systemd';
import { heldPidFileFds } from '../pidfile';
import { childPids, execve } from '../posix';
import { isSea, mainScript, programArgv } from '../relaunch';
import { abortError, workerUnsupported } from '../errors';
import { validateChildProcessAllowed, validateExecOptions, validateObject, validateOptionKeys } from '../validators';
import { EXEC_CHILDREN_ENV } from './zombies';

const debug = debuglog('posix-daemon');

/** Options of restartViaExec. */
export interface RestartViaExecOptions {
  /** Environment of the new image; default: the current `process.env`, run-time changes included. */
  env?: Record<string, string | undefined>;
  /** Arguments after the main script; default `process.argv.slice(2)`. */
  args?: string[];
  /** Fds (>= 3) the new image inherits; all others are closed by the exec. */
  keepFds?: number[];
  /** Milliseconds between attempts when execve fails; default 1000 (as in Go). */
  retryInterval?: number;
  /** Stops retrying; the promise then rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * Listening servers whose sockets the new image inherits (at the fd
   * numbers they have, under their sticky names; take them over with
   * `listen()`). They are drained first: no new accepts, in-
   * flight requests finish, idle keep-alive connections close. Connections
   * arriving meanwhile wait in the kernel's accept queue.
   */
  servers?: Array<Server | ServerHandoffEntry>;
  /** Longest drain of `servers`, in ms; then remaining connections are closed. Default 5000. */
  drainTimeout?: number;
  /**
   * Start the new image with Node's module compile cache on (Node >= 22.1:
   * NODE_COMPILE_CACHE, the directory already in use or Node's default
   * `<tmpdir>/node-compile-cache`). Default false. Whatever this says, a
   * cache this image has enabled is flushed before the exec (Node >= 22.10):
   * Node writes it only at exit, which an exec skips.
   */
  compileCache?: boolean;
}

/**
 * What restartOnChange adds to a restart: a check of the program's files
 * run after the drain, immediately before the exec. When it throws, the
 * servers resume and the restart is abandoned (not retried): the error is
 * the caller's to report.
 */
export interface ExecHooks {
  verify?: () => void | Promise<void>;
}

type CompileCacheApi = { getCompileCacheDir?(): string | undefined; flushCompileCache?(): void };
const nodeModule = require('node:module') as CompileCacheApi;

export { isSea, mainScript };

/** The pre-exec check failed: give up this restart, do not retry it. */
class VerifyFailed extends Error {}

function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).errno === 'number' &&
    typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * Node writes its compile cache at exit, and an exec is no exit: write it
 * now, so the next image starts from it. Returns the cache directory in use.
 */
function flushCompileCache(): string | undefined {
  const dir = nodeModule.getCompileCacheDir?.();
  if (!dir) return undefined;
  try {
    nodeModule.flushCompileCache?.();
  } catch (err) {
    debug('autorestart: flushing the compile cache: %s', (err as Error).message);
  }
  return dir;
}

/** `main`: the entry file, already checked by the caller (see restartViaExec). */
function execOnce(main: string | undefined, args: readonly string[] | undefined, env: Record<string, string | undefined>,
  keepFds: number[], compileCache = false): never {
  const argv = [process.execPath, ...programArgv({ script: main ?? null, args })];
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && k !== EXEC_CHILDREN_ENV) childEnv[k] = v;
  // Children survive the exec (same PID, still their parent), but the new
  // image cannot know them: hand the list over. childPids() includes any
  // inherited ones not reaped yet, so nothing is lost across several execs.
  const children = childPids();
  if (children.length > 0) childEnv[EXEC_CHILDREN_ENV] = children.join(',');
  const cacheDir = flushCompileCache();
  if (compileCache && childEnv.NODE_COMPILE_CACHE === undefined && nodeModule.getCompileCacheDir) {
    childEnv.NODE_COMPILE_CACHE = cacheDir ?? join(tmpdir(), 'node-compile-cache');
  }
  debug('autorestart: execve %s %j (children handed over: %j)', process.execPath, argv.slice(1), children);
  return execve(process.execPath, argv, childEnv, { keepFds });
}

// The restart in progress, if any: a second trigger (signal, change, call)
// while it drains or retries joins it instead of starting another drain of
// the same servers.
let inFlight: Promise<never> | undefined;

/**
 * Replaces the running image with a fresh one of the same program under the
 * same PID: `process.execPath`, `process.execArgv`, the main script, the
 * arguments and the current `process.env`. Never resolves: on success this
 * image is gone. When execve (or the entry-file check before it) fails, the
 * error is logged with `NODE_DEBUG=posix-daemon` and the exec is retried every
 * `retryInterval` ms; the process keeps running meanwhile. Rejects with an
 * AbortError when `signal` aborts, and at once for invalid arguments. A call
 * while another restart is in progress joins that one (same promise).
 */
/** The keys of RestartViaExecOptions, for validateOptionKeys. */
export const RESTART_VIA_EXEC_KEYS: readonly (keyof RestartViaExecOptions)[] = [
  'env', 'args', 'keepFds', 'retryInterval', 'signal', 'servers', 'drainTimeout', 'compileCache',
];

export async function restartViaExec(options: RestartViaExecOptions = {}): Promise<never> {
  return restartWith(options, {});
}

/** restartViaExec with restartOnChange's hooks. */
export async function restartWith(options: RestartViaExecOptions, hooks: ExecHooks): Promise<never> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', RESTART_VIA_EXEC_KEYS);
  // At once, before any drain or attempt: what would fail every attempt
  // the same way (a closed keepFd, a bad server) is the caller's to fix.
  const { keepFds, retryInterval, drainTimeout, compileCache, ...rest } = validateExecOptions(options);
  const servers = rest.servers as RestartViaExecOptions['servers'] & unknown[];
  if (!isMainThread) throw workerUnsupported('restartViaExec');
  validateChildProcessAllowed(process.execPath);
  if (inFlight) {
    debug('autorestart: a restart is already in progress: joining it');
    return inFlight;
  }
  const run = execLoop(options, { keepFds, retryInterval, servers, drainTimeout, compileCache }, hooks);
  inFlight = run;
  return run.finally(() => {
    if (inFlight === run) inFlight = undefined;
  });
}

async function execLoop(options: RestartViaExecOptions, { keepFds, retryInterval, servers, drainTimeout, compileCache }:
  Required<Pick<RestartViaExecOptions, 'keepFds' | 'retryInterval' | 'servers' | 'drainTimeout' | 'compileCache'>>,
hooks: ExecHooks): Promise<never> {
  const { env, args, signal } = options;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortError(signal.reason);
    let handoff: Handoff | undefined;
    let reloadSent = false;
    try {
      const main = mainScript();
      // execve of node succeeds even when the script is gone, and the new
      // image would then die on "Cannot find module": a missing entry file
      // is an exec failure that leaves this image running. Checked before
      // the drain, so it does not cost the servers a drain on every retry.
      if (main !== undefined) accessSync(main, fsConstants.R_OK);
      // Even with no servers: inherited sockets no listen() took travel on.
      handoff = await handOffServers(servers, drainTimeout);
      // Last look at the program after the hook and the drain, which take
      // time in which a file can break: what is exec'd is what was checked.
      if (hooks.verify) {
        try {
          await hooks.verify();
        } catch (err) {
          throw Object.assign(new VerifyFailed(), { cause: err });
        }
      }
      // Type=notify-reload: the reload starts now; the new image's ready() ends it.
      reloadSent = reloading();
      // The PID-file lock is held by this PID and stays with it.
      execOnce(main, args, { ...(env ?? process.env), ...handoff.env },
        [...new Set([...keepFds, ...handoff.keepFds, ...heldPidFileFds()])], compileCache);
    } catch (err) {
      if (reloadSent) ready(`restart failed (${(err as Error).message}); retrying`);
      if (handoff) {
        // The exec failed: serve again on the very same sockets.
        await handoff.resume().catch((e: Error) => debug('autorestart: resuming servers: %s', e.message));
      }
      // A bad argument (env with a NUL byte, a closed keepFd is EBADF and
      // stays so) would fail the same way forever, but Go retries whatever
      // the error; we only refuse to retry what is not a system error.
      if (err instanceof VerifyFailed) throw err.cause;
      if (!isSystemError(err)) throw err;
      debug('autorestart: exec attempt %d failed: %s; retrying in %d ms', attempt, err.message, retryInterval);
    }
    await sleep(retryInterval, undefined, { signal });
  }
}
