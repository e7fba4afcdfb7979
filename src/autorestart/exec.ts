/**
 * The in-place restart itself: execve of the same program under the same PID,
 * with the servers' sockets handed over at the fd numbers they have.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { isMainThread } from '../main-thread';
import type { Server } from 'node:net';
import { currentSockets, handOffServers, type Handoff, type ServerHandoffEntry } from '../sockets';
import { notificationsSent, notify, ready, reloading } from '../systemd';
import { heldPidFileFds } from '../pidfile';
import { childPids, execve } from '../posix';
import { readProcStat } from '../procstat';
import { isSea, mainScript, programArgv, scriptAsGiven } from '../relaunch';
import { abortError, codedError, workerUnsupported } from '../errors';
import { enterPhase, isStopping, phase } from '../lifecycle';
import {
  validateBoolean, validateChildProcessAllowed, validateDuration, validateExecOptions, validateFunction, validateObject,
  validateOptionKeys,
} from '../validators';
import { EXEC_CHILDREN_ENV } from './zombies';
import { isBridge, pendingBridgeHandoff, pendingBridgePid, preflightEnded, startPreflight, type Bridge } from './bridge';
import { envFilePaths, envFileValues } from './env-file';
import { inNodeModules, startedGraph } from './graph';
import { GUARD_ENV, isHoldable, releaseHeldSignal } from './guard-hold';
import { guardedNodeOptions, startsGuard } from './guard-env';
import { holdAcrossExec } from './exec-hold';
import { compileCacheDir, flushCompileCache } from './compile-cache';

export { GUARD_PATH } from './guard-env';
export { GUARD_ENV } from './guard-hold';
/** What restarts the program: the guard of a failed start waits for the same. */
export type GuardTrigger = { trigger: 'change' | 'call' } | { trigger: 'signal'; signal: string };

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
   * Start the preflight and the new image with Node's module compile cache
   * on (Node >= 22.8): the preflight compiles, the new image reads. The
   * directory is the one this image uses, else a private one of this user
   * under the temporary directory. Default true; false starts them without
   * (unless the environment sets NODE_COMPILE_CACHE). Whatever this says, a
   * cache this image has enabled is flushed before the exec (Node >= 22.10):
   * Node writes it only at exit, which an exec skips.
   */
  compileCache?: boolean;
  /**
   * With `servers`: start the new version first as a child of this process
   * (the preflight), with the listening sockets, and restart only once it
   * is up (took its sockets); it then accepts on them while this image
   * drains and execs, and ends once the new image is up (the bridge): no
   * moment without anyone accepting. A preflight that exits, fails or is
   * not up within `preflightTimeout` refuses the restart: this image never
   * stopped serving, `onError` gets an ERR_RESTART_REFUSED error (exit
   * status, end of its stderr). Default true; no effect without `servers`.
   */
  preflight?: boolean;
  /** Milliseconds the preflight may take to come up; default 10000. */
  preflightTimeout?: number;
  /**
   * A preflight that came up within this many ms stands by instead of
   * bridging: from the exec until the new image is up it is stopped
   * (SIGSTOP), takes no CPU and accepts nothing, and connections wait in
   * the kernel's accept queue for the new image (which starts about as
   * fast as the preflight did). If the new image fails to start, it is
   * continued and serves. A slower preflight bridges (accepts meanwhile).
   * Default 0: always bridge. Measured on 2 cores under load (paired
   * rounds): at one restart every 5 s both served 0.90x of a server not
   * restarting, and the bridge's worst latency was 62-103 ms against
   * 190-273 ms; at one restart a second, standing by served 0.43x against
   * 0.35x, for a worst latency of 225-235 ms against 143-159 ms. Set it
   * (500, say) for a fast-starting service restarted that often.
   */
  bridgeAfter?: number;
  /** Called with every error that prevented a restart (the running version goes on). */
  onError?: (err: Error) => void;
}

/**
 * What restartOnChange adds to a restart: a check of the program's files
 * run after the drain, immediately before the exec. When it throws, the
 * servers resume and the restart is abandoned (not retried): the error is
 * the caller's to report.
 */
export interface ExecHooks {
  verify?: () => void | Promise<void>;
  /** What triggers restarts: the guard of the next image waits for the same after a failed start. */
  trigger?: GuardTrigger;
}

export { isSea, mainScript };

/** The pre-exec check or the preflight failed: give up this restart, do not retry it. */
class Refused extends Error {}
/** gracefulShutdown began: this restart gives up (the servers are its to drain, not to resume). */
class Stopped extends Error {}

function stoppingError(): Error {
  return codedError('restart not started: the process is shutting down', 'ERR_SHUTTING_DOWN');
}

function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).errno === 'number' &&
    typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * The command line of the next image: this program's own, as the user
 * started it (relaunch.ts: argv[0], execArgv, the main script as it was
 * spelled, the arguments; `node -e` programs keep theirs). The guard travels
 * in NODE_OPTIONS (nextEnv, guard-env.ts): `ps` and `pgrep -f` see no
 * difference after a restart. execve runs process.execPath whatever argv[0] says.
 */
export function nextArgv(main: string | undefined, args: readonly string[] | undefined): string[] {
  return [process.argv0, ...programArgv({ script: main === undefined ? null : scriptAsGiven(main), args })];
}

/** The environment of the next image (and of its preflight), without the variables a hand-over adds. */
export function nextEnv(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  const fromFiles = envFileValues();
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || k === EXEC_CHILDREN_ENV || k === GUARD_ENV) continue;
    // A value --env-file loaded, unchanged since: the next image reads the
    // file again (it may have changed), as a first start would.
    if (fromFiles.get(k) === v) continue;
    out[k] = v;
  }
  // The guard (see guard.ts), before the program's own preloads; a SEA runs
  // no preload. A NODE_OPTIONS --env-file loaded is kept too: the next
  // image's file would not override the variable set here.
  if (!isSea()) out.NODE_OPTIONS = guardedNodeOptions(env.NODE_OPTIONS);
  return out;
}

/** `argv`/`childEnv` from nextArgv/nextEnv; the entry file already checked by the caller (see restartViaExec). */
function execOnce(argv: string[], childEnv: Record<string, string>, keepFds: number[], guard: GuardInfo): never {
  // Children survive the exec (same PID, still their parent), but the new
  // image cannot know them: hand the list over. childPids() includes any
  // inherited ones not reaped yet, so nothing is lost across several execs.
  // A bridge is not an orphan to reap blindly: its own variable names it.
  // Only the bridge handed on is: an older one left pending (a failed
  // start) that a new preflight replaced gets EOF on its control pipe (close-
  // on-exec), drains, exits, and is an ordinary child of the next image.
  const handedBridge = guard.bridgePid ?? pendingBridgePid();
  const children = childPids().filter((p) => p !== handedBridge);
  if (children.length > 0) childEnv[EXEC_CHILDREN_ENV] = children.join(',');
  // The guard holds the restart signals the program is armed for, and the
  // exec from its first instruction on (exec-hold.ts): only with a guard.
  let blockSignals: NodeJS.Signals[] = [];
  if (startsGuard(childEnv)) {
    childEnv[GUARD_ENV] = guardValue(guard);
    blockSignals = holdAcrossExec(childEnv, heldSignals());
  }
  flushCompileCache();
  debug('autorestart: execve %s %j (children handed over: %j)', process.execPath, argv.slice(1), children);
  return execve(process.execPath, argv, childEnv, { keepFds, blockSignals });
}

/** Whether `pid` is seen to have ended (gone or a zombie); without /proc, never. */
function hasEnded(pid: number): boolean {
  if (readProcStat(process.pid) === null) return false;
  const st = readProcStat(pid);
  return st === null || st.state === 'Z' || st.state === 'X';
}

/**
 * The signals restartOnSignal() is armed for in this image, with how many
 * calls armed each. The next image's guard holds them until that image is
 * up: a second `kill -HUP` while the new version starts must not meet the
 * default action (the exec reset it) and end the service.
 */
const armedSignals = new Map<NodeJS.Signals, number>();

/**
 * restartOnSignal() (or a monitor's reloadOn) arms (true) or disarms (false)
 * one of its signals; when arming, call it after adding the listener: in an
 * image a restart started, the guard's hold of that signal ends here.
 */
export function armRestartSignal(name: NodeJS.Signals, armed: boolean): void {
  const n = (armedSignals.get(name) ?? 0) + (armed ? 1 : -1);
  if (n > 0) armedSignals.set(name, n);
  else armedSignals.delete(name);
  if (armed) releaseHeldSignal(name);
}

/** What the guard of the next image needs to know. */
interface GuardInfo { trigger: GuardTrigger; bridgePid?: number; upTimeout: number; cache?: string }

function guardValue(info: GuardInfo): string {
  const files = [...(startedGraph()?.files ?? [])];
  const main = mainScript();
  if (main !== undefined && !files.includes(main)) files.unshift(main);
  // An environment string has room (MAX_ARG_STRLEN is 128 KiB): keep the
  // list well below it, program files first.
  const own = files.filter((f) => !inNodeModules(f));
  let list = [...own, ...files.filter((f) => inNodeModules(f))];
  while (list.length > 0 && JSON.stringify(list).length > 64 * 1024) list = list.slice(0, Math.floor(list.length * 0.9));
  return JSON.stringify({ ...info.trigger, hold: heldSignals(), files: list, upTimeout: info.upTimeout, cache: info.cache });
}

/** The signals the next image holds while it starts: those this one is armed for (SIGUSR1 is the inspector's). */
function heldSignals(): NodeJS.Signals[] {
  return [...armedSignals.keys()].filter(isHoldable);
}

/** bridgeAfter's default: always bridge (see RestartViaExecOptions for the measurements). */
const DEFAULT_BRIDGE_AFTER = 0;

// The restart in progress, if any: a second trigger (signal, change, call)
// while it drains or retries joins it instead of starting another drain of
// the same servers.
let inFlight: Promise<never> | undefined;

/** The keys of RestartViaExecOptions, for validateOptionKeys: every key, or tsc says which is missing. */
const RESTART_VIA_EXEC_KEY_SET: Record<keyof RestartViaExecOptions, true> = {
  env: true, args: true, keepFds: true, retryInterval: true, signal: true, servers: true, drainTimeout: true,
  compileCache: true, preflight: true, preflightTimeout: true, bridgeAfter: true, onError: true,
};
export const RESTART_VIA_EXEC_KEYS = Object.keys(RESTART_VIA_EXEC_KEY_SET) as (keyof RestartViaExecOptions)[];

/**
 * Replaces the running image with a fresh one of the same program under the
 * same PID: `process.execPath`, `process.execArgv`, the main script, the
 * arguments and the current `process.env`. Never resolves: on success this
 * image is gone. When execve (or the entry-file check before it) fails, the
 * error is logged with `NODE_DEBUG=posix-daemon` and the exec is retried every
 * `retryInterval` ms; the process keeps running meanwhile. Rejects with an
 * AbortError when `signal` aborts, at once for invalid arguments, and with
 * an ERR_RESTART_REFUSED error (also given to `onError`) when the preflight
 * of a restart with `servers` did not come up. A call
 * while another restart is in progress joins that one (same promise).
 */
export function restartViaExec(options: RestartViaExecOptions = {}): Promise<never> {
  const run = restartWith(options, {}).catch((err: Error) => {
    // Reported here, once: a trigger that drops the promise still leaves a trace.
    if (err?.name !== 'AbortError') report(typeof options?.onError === 'function' ? options.onError : undefined, err);
    throw err;
  });
  // A restart that does not happen leaves the running version serving: the
  // caller awaiting this promise gets the error, and one that dropped it
  // (`process.on('SIGUSR2', () => restartViaExec(...))`) must not end the
  // service through an unhandled rejection.
  run.catch(() => {});
  return run;
}

/** restartViaExec with restartOnChange's hooks. */
export async function restartWith(options: RestartViaExecOptions, hooks: ExecHooks): Promise<never> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', RESTART_VIA_EXEC_KEYS);
  // At once, before any drain or attempt: what would fail every attempt
  // the same way (a closed keepFd, a bad server) is the caller's to fix.
  const { keepFds, retryInterval, drainTimeout, compileCache, ...rest } = validateExecOptions(options);
  const servers = rest.servers as RestartViaExecOptions['servers'] & unknown[];
  if (options.preflight !== undefined) validateBoolean(options.preflight, 'options.preflight');
  if (options.preflightTimeout !== undefined) validateDuration(options.preflightTimeout, 'options.preflightTimeout');
  if (options.bridgeAfter !== undefined) validateDuration(options.bridgeAfter, 'options.bridgeAfter');
  if (options.onError !== undefined) validateFunction(options.onError, 'options.onError');
  if (!isMainThread()) throw workerUnsupported('restartViaExec');
  if (isBridge()) return never('restartViaExec', options.signal);
  validateChildProcessAllowed(process.execPath);
  if (isStopping()) throw stoppingError();
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
  const preflight = (options.preflight ?? true) && servers.length > 0 && !isSea();
  const preflightTimeout = options.preflightTimeout ?? 10_000;
  const bridgeAfter = options.bridgeAfter ?? DEFAULT_BRIDGE_AFTER;
  // Type=notify-reload: the reload starts now, and every way out of this
  // attempt ends it (READY=1 + STATUS=), or the new image's ready() does.
  let reloadSent = reloading();
  enterPhase('reloading', 'a restart begins');
  // Every way out of this loop but the exec leaves the version running up
  // again, unless it is stopping (then it stays stopping).
  const backUp = (): void => {
    if (phase() === 'reloading' || phase() === 'draining') enterPhase('up', 'the restart did not happen');
  };
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) {
      if (reloadSent) ready('restart aborted; the running version goes on');
      backUp();
      throw abortError(signal.reason);
    }
    let handoff: Handoff | undefined;
    let bridge: Bridge | undefined;
    try {
      const main = mainScript();
      // execve of node succeeds even when the script is gone, and the new
      // image would then die on "Cannot find module": a missing entry file
      // is an exec failure that leaves this image running. Checked before
      // the drain, so it does not cost the servers a drain on every retry.
      if (main !== undefined) accessSync(main, fsConstants.R_OK);
      const argv = nextArgv(main, args);
      const childEnv = nextEnv(env ?? process.env);
      // The preflight compiles what the new image then reads (compile-cache.ts).
      const cache = compileCache && startsGuard(childEnv) ? compileCacheDir() : undefined;
      if (preflight) {
        try {
          bridge = await startPreflight({
            // The guard's variable tells its main thread it is the one to guard.
            argv, env: startsGuard(childEnv) ? { ...childEnv, [GUARD_ENV]: JSON.stringify(cache === undefined ? {} : { cache }) } : childEnv,
            sockets: currentSockets(servers),
            timeout: preflightTimeout, drainTimeout,
          });
        } catch (err) {
          // A preflight that could not even be started (fork/execve failed:
          // E2BIG, EAGAIN...) is an exec failure: retried like one.
          if ((err as { code?: unknown }).code !== 'ERR_RESTART_REFUSED') throw err;
          throw Object.assign(new Refused(), { cause: err });
        }
      }
      // RELOADING=1 still waiting for room in the manager's queue would
      // die with this image (bounded: a manager that never reads).
      await notificationsSent(drainTimeout);
      if (isStopping()) throw new Stopped();
      enterPhase('draining', 'the servers stop accepting for the exec');
      // Even with no servers: inherited sockets no listen() took travel on.
      handoff = await handOffServers(servers, drainTimeout);
      // Last look at the program after the hook and the drain, which take
      // time in which a file can break: what is exec'd is what was checked.
      if (hooks.verify) {
        try {
          await hooks.verify();
        } catch (err) {
          throw Object.assign(new Refused(), { cause: err });
        }
      }
      // A SIGTERM during the drain: gracefulShutdown waited for the same
      // drain and ends the process; this image must not exec after all.
      if (isStopping()) throw new Stopped();
      if (!reloadSent) reloadSent = reloading();
      const older = pendingBridgeHandoff();
      if (bridge !== undefined) {
        // A preflight that was up and has ended since (a crash soon after
        // listen(), while this image drained) shows what the next image
        // would do: refused while it can still be seen. Its exit is not
        // reaped here.
        if (hasEnded(bridge.pid)) throw Object.assign(new Refused(), { cause: preflightEnded(bridge.pid) });
        // A start faster than bridgeAfter needs no accepting bridge: from
        // here it stands by, stopped, in case the new image fails to start.
        if (bridge.upMs < bridgeAfter) {
          debug('autorestart: the preflight came up in %d ms (bridgeAfter %d): it stands by', bridge.upMs, bridgeAfter);
          bridge.standBy();
        }
      }
      const extra = bridge ?? older;
      for (const [k, v] of Object.entries(handoff.env)) {
        if (v === undefined) delete childEnv[k];
        else childEnv[k] = v;
      }
      Object.assign(childEnv, extra?.env ?? {});
      // The PID-file lock is held by this PID and stays with it.
      execOnce(argv, childEnv,
        [...new Set([...keepFds, ...handoff.keepFds, ...heldPidFileFds(), ...(extra?.keepFds ?? [])])],
        { trigger: hooks.trigger ?? { trigger: 'call' }, bridgePid: bridge?.pid, upTimeout: preflightTimeout, cache });
    } catch (err) {
      bridge?.abandon();
      if (err instanceof Stopped) {
        debug('autorestart: the process is stopping: no exec');
        throw stoppingError();
      }
      backUp();
      const cause = err instanceof Refused ? err.cause as Error : err as Error;
      if (reloadSent) {
        completeReload(err instanceof Refused ? `reload refused: ${firstLine(cause).replace(/^restart refused: /, '')}`
          : `restart failed (${firstLine(cause)}); retrying`, cause);
        reloadSent = false;
      }
      if (handoff) {
        // The exec failed: serve again on the very same sockets.
        await handoff.resume().catch((e: Error) => debug('autorestart: resuming servers: %s', e.message));
      }
      // A bad argument (env with a NUL byte, a closed keepFd is EBADF and
      // stays so) would fail the same way forever, but Go retries whatever
      // the error; we only refuse to retry what is not a system error.
      if (err instanceof Refused) throw markRefusal(cause);
      if (!isSystemError(err)) throw err;
      debug('autorestart: exec attempt %d failed: %s; retrying in %d ms', attempt, err.message, retryInterval);
    }
    await sleep(retryInterval, undefined, { signal });
  }
}

const kRefusal = Symbol('posix-daemon: restart refused');

function markRefusal(err: Error): Error {
  if (err !== null && typeof err === 'object') Object.defineProperty(err, kRefusal, { value: true });
  return err;
}

/**
 * Whether restartViaExec rejected because this restart was refused (the
 * preflight did not come up, the program's check failed): the running
 * version goes on, and the next trigger may try again.
 */
export function isRefusal(err: unknown): boolean {
  return err !== null && typeof err === 'object' && kRefusal in err;
}

/** Hands an error that prevented a restart to `onError` (and debuglog); a throwing hook is only logged. */
export function report(onError: ((err: Error) => void) | undefined, err: Error): void {
  debug('autorestart: not restarting: %s', err?.message);
  if (onError === undefined) {
    // Nobody asked for it: one line on stderr (the new version's own output,
    // its stack trace included, was forwarded already), the service goes on.
    process.stderr.write(`posix-daemon: ${firstLine(err)}\n`);
    return;
  }
  try {
    onError(err);
  } catch (hookErr) {
    debug('autorestart: onError threw: %s', hookErr);
  }
}

/** Never settles: what a restart trigger is in a preflight/bridge, which must never restart. */
export function never(what: string, signal?: AbortSignal): Promise<never> {
  debug('autorestart: %s in a preflight/bridge: inactive', what);
  // Inactive, but the caller's AbortSignal still ends it, as it would anywhere.
  return new Promise<never>((_resolve, reject) => {
    if (signal === undefined) return;
    const onAbort = (): void => reject(abortError(signal.reason));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

function firstLine(err: Error): string {
  return String(err?.message ?? err).split('\n')[0];
}

/**
 * Ends a reload that did not lead to a new image: READY=1 with a STATUS=
 * saying why. systemd has no notification that fails a reload (a reload
 * ends with READY=1, or times out); ERRNO= is recorded with the status and
 * shown by `systemctl status`.
 */
export function completeReload(status: string, err?: unknown): void {
  const errno = (err as { errno?: unknown } | undefined)?.errno;
  notify({ READY: 1, STATUS: status.replace(/[\r\n\0]+/g, ' ').slice(0, 1000),
    ERRNO: typeof errno === 'number' && errno !== 0 ? Math.abs(errno) : undefined });
}
