/**
 * daemonize(): run the current Node program again as a daemon, with a true
 * double fork, and wait until it reports that it is ready. A port of Go's
 * `daemon.Daemonize` that does the classic double fork Go skips.
 */
import { closeSync, openSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { debuglog } from 'node:util';
import { isChildSubreaper, setChildSubreaper, spawnDetached } from './posix';
import { adoptInheritedPipe, protectInheritedPipe, receiver, REPORTED_PREFIX, SERVICE_MANAGER_ADDRESS } from './initstatus';
import { underServiceManager } from './systemd';
import { setDaemonKey } from './daemon-ready';
import { claimEnvKey } from './monitor/env-key';
import { isExitedError, launch } from './launch';
import { adoptLifeline, createLifeline, openStderrCapture, splitLifeline, type Lifeline, type StderrCapture } from './lifeline';
import { isEvalProgram, relaunchArgs, relaunchNodeOptions } from './relaunch';
import { adoptPidFile, lockPidFile, lockPidFileForLaunch, type LaunchPidFile, type PidFileLock } from './pidfile';
import { adoptLogFiles, logFilesEnv, openLogFile, reopenLogsOn } from './logs';
import { abortError, invalidArgType, invalidArgValue, outOfRange } from './errors';
import {
  toCatchableSignal, validateAbortSignal, validateChildProcessAllowed, validateCString, validateDuration, validateFdList, validateFunction,
  validateInteger, validateObject, validateOptionKeys,
} from './validators';

const debug = debuglog('posix-daemon');

/** Go's ReadyFunc: runs in the foreground; `signal` is aborted (with the reason) if the daemon dies first. */
export type ReadyFunc = (signal: AbortSignal) => Promise<void> | void;

export interface DaemonizeOptions {
  /** Environment variable that tells the two roles apart: unset/empty = foreground, non-empty = background. */
  envKey: string;
  /** Value the daemon gets in `envKey`. Default: the address of a readiness pipe created for you. */
  envValue?: string;
  /** Waits for the daemon to be ready (Go's check func). Default (no envValue): the readiness pipe. */
  ready?: ReadyFunc;
  /** Aborting stops waiting: the daemon is killed and daemonize rejects with an AbortError. */
  signal?: AbortSignal;
  /** Milliseconds to wait for readiness (0 or absent: no limit); then the daemon is killed. */
  timeout?: number;
  /** 'minimal' (default: PATH, USER, HOME, and NODE_OPTIONS, NODE_DEBUG when set), 'inherit' (process.env), or exactly this object; envKey is always added. */
  env?: 'minimal' | 'inherit' | Record<string, string>;
  /** Working directory of the daemon; default '/'. */
  cwd?: string;
  /** umask of the daemon; default: unchanged. */
  umask?: number;
  /** File the daemon's stdout is appended to; default /dev/null. */
  stdout?: string;
  /** File the daemon's stderr is appended to; default /dev/null. */
  stderr?: string;
  /** Fds (>= 3) the daemon inherits under the same numbers; every other fd is closed. */
  keepFds?: number[];
  /**
   * PID file, locked by the foreground before anything is launched (a second
   * start rejects with ERR_ALREADY_RUNNING) and handed to the daemon, which
   * holds the lock with its own PID until it exits.
   */
  pidFile?: string;
  /** In the daemon: reopen the stdout/stderr files on this signal (logrotate), e.g. 'SIGUSR1'. */
  reopenLogsOn?: NodeJS.Signals;
  /**
   * Whether to start a daemon at all. 'auto' (default): not when a service
   * manager runs this process (`NOTIFY_SOCKET` or `INVOCATION_ID` is set),
   * since forking away from systemd breaks its MAINPID and `Type=simple`
   * tracking; the program then goes on in this process and its `report()`
   * tells systemd (READY=1). true: always fork; false: never.
   */
  detach?: 'auto' | boolean;
}

export type DaemonizeResult = { foreground: true; pid: number } | { foreground: false };

const KNOWN_ENV_MODES = ['minimal', 'inherit'];
/** Every key of DaemonizeOptions (tsc says which is missing), for validateOptionKeys. */
const OPTION_KEY_SET: Record<keyof DaemonizeOptions, true> = {
  envKey: true, envValue: true, ready: true, signal: true, timeout: true, env: true, cwd: true, umask: true,
  stdout: true, stderr: true, keepFds: true, pidFile: true, reopenLogsOn: true, detach: true,
};
const OPTION_KEYS = Object.keys(OPTION_KEY_SET);

interface Normalized {
  envKey: string;
  envValue: string | undefined;
  ready: ReadyFunc | undefined;
  signal: AbortSignal | undefined;
  timeout: number;
  env: 'minimal' | 'inherit' | Record<string, string>;
  cwd: string;
  umask: number | undefined;
  stdout: string | undefined;
  stderr: string | undefined;
  keepFds: number[];
  pidFile: string | undefined;
  reopenLogsOn: NodeJS.Signals | undefined;
  detach: 'auto' | boolean;
}

function validateOptions(options: unknown): Normalized {
  validateObject(options, 'options');
  const o = options as Record<string, unknown>;
  validateOptionKeys(o, 'options', OPTION_KEYS);
  validateCString(o.envKey, 'options.envKey', { allowEmpty: false });
  if (o.envKey.includes('=')) throw invalidArgValue('options.envKey', o.envKey, "must not contain '='");
  if (o.envValue !== undefined) {
    // Go: an empty value is ErrInvalid (the daemon could not tell it is one).
    validateCString(o.envValue, 'options.envValue', { allowEmpty: false });
  }
  if (o.ready !== undefined) {
    validateFunction(o.ready, 'options.ready');
    if (o.envValue === undefined) {
      throw invalidArgValue('options.envValue', o.envValue, 'must be given when options.ready is given');
    }
  }
  validateAbortSignal(o.signal, 'options.signal');
  let timeout = 0;
  if (o.timeout !== undefined) {
    validateDuration(o.timeout, 'options.timeout');
    if (o.timeout > 2 ** 31 - 1) throw outOfRange('options.timeout', `>= 0 && <= ${2 ** 31 - 1}`, o.timeout);
    timeout = o.timeout;
  }
  let env: Normalized['env'] = 'minimal';
  if (o.env !== undefined) {
    if (typeof o.env === 'string') {
      if (!KNOWN_ENV_MODES.includes(o.env)) throw invalidArgValue('options.env', o.env, "must be 'minimal', 'inherit' or an object");
      env = o.env as 'minimal' | 'inherit';
    } else {
      validateObject(o.env, 'options.env');
      for (const [k, v] of Object.entries(o.env)) {
        if (typeof v !== 'string' || k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) {
          throw invalidArgValue('options.env', o.env, 'must be an object with string keys and values without null bytes');
        }
      }
      env = o.env as Record<string, string>;
    }
  }
  let cwd = '/';
  if (o.cwd !== undefined) {
    validateCString(o.cwd, 'options.cwd', { allowEmpty: false });
    // Relative to the foreground's directory: the daemon has no other frame.
    cwd = resolvePath(o.cwd);
  }
  if (o.umask !== undefined) validateInteger(o.umask, 'options.umask', 0, 0o777);
  if (o.stdout !== undefined) validateCString(o.stdout, 'options.stdout', { allowEmpty: false });
  if (o.stderr !== undefined) validateCString(o.stderr, 'options.stderr', { allowEmpty: false });
  let keepFds: number[] = [];
  if (o.keepFds !== undefined) {
    validateFdList(o.keepFds, 'options.keepFds', 3);
    keepFds = o.keepFds;
  }
  if (o.pidFile !== undefined) validateCString(o.pidFile, 'options.pidFile', { allowEmpty: false });
  if (o.reopenLogsOn !== undefined) {
    // A name, as the type says (the daemon gets it as a name again).
    if (typeof o.reopenLogsOn !== 'string') throw invalidArgType('options.reopenLogsOn', 'string', o.reopenLogsOn);
    toCatchableSignal(o.reopenLogsOn, 'options.reopenLogsOn');  // reopenLogsOn()'s own check
  }
  const detach = o.detach ?? 'auto';
  if (detach !== 'auto' && detach !== true && detach !== false) {
    throw invalidArgValue('options.detach', detach, "must be 'auto', true or false");
  }
  return {
    detach,
    envKey: o.envKey, envValue: o.envValue as string | undefined, ready: o.ready as ReadyFunc | undefined,
    signal: o.signal as AbortSignal | undefined, timeout, env, cwd, umask: o.umask as number | undefined,
    stdout: o.stdout as string | undefined, stderr: o.stderr as string | undefined, keepFds,
    pidFile: o.pidFile as string | undefined, reopenLogsOn: o.reopenLogsOn as NodeJS.Signals | undefined,
  };
}

/** The daemon's environment: `env` as asked, plus what the library itself tells the daemon. */
function buildEnv(mode: Normalized['env'], key: string, value: string, ours: Record<string, string>): Record<string, string> {
  let env: Record<string, string>;
  if (mode === 'minimal') {
    env = {};
    // NODE_OPTIONS is part of how the program was started (a preload such
    // as `--import tsx` or `--require ./setup.cjs`), like execArgv.
    // NODE_DEBUG is how the user asked to see what happens: the daemon's
    // own lines (NODE_DEBUG=posix-daemon) are those that explain a failure.
    for (const k of ['PATH', 'USER', 'HOME', 'NODE_OPTIONS', 'NODE_DEBUG']) {
      const v = process.env[k];
      if (v !== undefined) env[k] = v;
    }
  } else if (mode === 'inherit') {
    env = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  } else {
    env = { ...mode };
  }
  if (mode === 'minimal' || mode === 'inherit') {
    if (env.NODE_OPTIONS !== undefined) env.NODE_OPTIONS = relaunchNodeOptions(env.NODE_OPTIONS);
  }
  Object.assign(env, ours);
  env[key] = value;
  return env;
}

/** In the daemon: the readiness pipe must not leak into programs the daemon starts. */
function protectReadinessFd(value: string): void {
  const fd = protectInheritedPipe(value);
  // A monitor started here hands it on to its worker (see launch.ts).
  if (fd !== undefined) adoptInheritedPipe(value, fd);
}

/**
 * Starts this program again as a daemon (foreground), or recognizes that it
 * is the daemon (background). Call it early, the same way in both.
 *
 * Foreground (`process.env[envKey]` unset or empty): runs `process.execPath`
 * with the same execArgv, main script and arguments through a true double
 * fork (not a session leader, no controlling terminal, not our child), in
 * `/`, with stdio on /dev/null and an environment of only PATH, USER, HOME
 * and `envKey=envValue`. Then waits for `ready` (by default the daemon's
 * `report(process.env[envKey])` over a pipe). Resolves `{ foreground: true,
 * pid }` once ready; if the daemon dies first, `ready` fails, `signal` aborts
 * or `timeout` ms pass, the daemon is killed and the promise rejects.
 *
 * Background: resolves `{ foreground: false }` at once, without forking.
 * Go: `daemon.Daemonize`.
 *
 * Under a service manager (`detach: 'auto'` and `NOTIFY_SOCKET` or
 * `INVOCATION_ID` set), or with `detach: false`, nothing is started: this
 * process is the service. `envKey` is set to an address that makes
 * `report()` notify systemd, and daemonize resolves `{ foreground: false }`.
 */
export async function daemonize(options: DaemonizeOptions): Promise<DaemonizeResult> {
  if (options === undefined) throw invalidArgType('options', 'Object', options);
  const o = validateOptions(options);
  const current = process.env[o.envKey];
  if (current !== undefined && current !== '') return background(o, current);
  if (o.detach === false || (o.detach === 'auto' && underServiceManager())) {
    // python-daemon makes the same call for init and inetd. The service
    // manager already gave us what a daemon gets (no tty, our own session,
    // its stdio, cwd and umask), so those options are left to the unit.
    debug('daemonize: not detaching (%s); this process goes on as the service',
      o.detach === false ? 'detach: false' : 'under a service manager');
    process.env[o.envKey] = SERVICE_MANAGER_ADDRESS;
    return background(o, SERVICE_MANAGER_ADDRESS);
  }
  if (o.signal?.aborted) throw abortError(o.signal.reason);
  return foreground(o);
}

/**
 * The daemon's side: take over what the foreground set up for it. Also
 * runs again after an in-place restart (restartViaExec), where each step
 * picks up the same state (the PID file's fd is kept, the log paths are in
 * the environment).
 */
function background(o: Normalized, value: string): DaemonizeResult {
  debug('daemonize: %s is set, running in the background (pid %d)', o.envKey, process.pid);
  // The lifeline rides at the end of the value: cut off before the program
  // reads the address (report()) and before anything it starts inherits it.
  const { address: current, lifeline } = splitLifeline(value);
  if (lifeline !== undefined) process.env[o.envKey] = current;
  let handed: PidFileLock | null = null;
  if (o.pidFile !== undefined) {
    // The lock the foreground took and handed over; if the daemon was started
    // some other way (envKey set by hand), it locks the file itself.
    handed = adoptPidFile();
    if (handed === null) lockPidFile(o.pidFile);
  }
  adoptLogFiles();
  if (o.reopenLogsOn !== undefined) installReopenLogs(o.reopenLogsOn);
  protectReadinessFd(current);
  setDaemonKey(o.envKey);  // a selfMonitor() here reports for us once its workers are ready
  claimEnvKey(o.envKey);  // ours: programs we start must not take themselves for the daemon
  // A foreground that dies before we are ready cannot remove the PID file it
  // made for us (its timeout path does), and we end by a signal, which skips
  // the clean-exit hook: the launch failed, so the file goes now (item 10).
  adoptLifeline(lifeline, () => process.env[o.envKey]?.startsWith(REPORTED_PREFIX) === true, () => handed?.release());
  return { foreground: false };
}

const reopenInstalled = new Set<string>();

/** Once per signal, however often daemonize() runs in this process. */
function installReopenLogs(signal: NodeJS.Signals): void {
  if (reopenInstalled.has(signal)) return;
  reopenInstalled.add(signal);
  reopenLogsOn(signal);
}

async function foreground(o: Normalized): Promise<DaemonizeResult> {
  validateChildProcessAllowed(process.execPath);  // before the PID file is taken
  const args = relaunchArgs();
  // First, before anything is started: a second start fails here, with
  // ERR_ALREADY_RUNNING naming the file and the running PID.
  const pidFile = o.pidFile !== undefined ? lockPidFileForLaunch(o.pidFile) : null;
  let rx;
  try {
    // Go's shape gives envValue + ready; without them, a readiness pipe of our own.
    rx = o.envValue === undefined ? await receiver() : undefined;
  } catch (err) {
    pidFile?.abandon();
    throw err;
  }
  // No stderr file: the daemon's stderr is kept until it is ready, for the error.
  const capture = o.stderr === undefined ? openStderrCapture() : null;
  // `node -e`: the code resolves its modules from the directory it was run
  // in, so the daemon starts there and moves to o.cwd in daemonize().
  const startCwd = isEvalProgram() ? process.cwd() : o.cwd;
  let lifeline: Lifeline;
  try {
    lifeline = createLifeline({
      ...(capture !== null ? { stderr: capture.id } : {}),
      ...(startCwd !== o.cwd ? { cwd: o.cwd } : {}),
    });
  } catch (err) {
    capture?.close();
    rx?.close();
    pidFile?.abandon();
    throw err;
  }
  const envValue = o.envValue ?? rx!.address;
  const env = buildEnv(o.env, o.envKey, lifeline.carry(envValue), {
    ...pidFile?.env,
    ...logFilesEnv({ stdout: o.stdout, stderr: o.stderr }),
  });

  let daemon;
  try {
    daemon = launch({
      what: 'daemon',
      spawn: (readinessFds) => spawnAdopted(args, env, { ...o, cwd: startCwd }, [...readinessFds, lifeline.childFd],
        pidFile, capture),
      ...(rx !== undefined ? { receiver: rx } : { check: o.ready, addresses: [envValue] }),
    });
  } catch (err) {
    lifeline.close();
    capture?.close();
    pidFile?.abandon();
    throw err;
  }
  lifeline.childStarted();
  try {
    // Inside the try: should writing its PID fail, the daemon is killed too.
    pidFile?.launched(daemon.pid);
    await daemon.ready({ signal: o.signal, timeout: o.timeout });
  } catch (err) {
    // Nothing may be left running: kill it and wait until it is gone (reaped
    // where it is our child), then let the PID file go.
    daemon.kill('SIGKILL');
    const r = await daemon.exited;
    lifeline.close();
    pidFile?.abandon();
    if (capture !== null) {
      withStderr(err, capture.tail());
      capture.close();
    } else if (o.stderr !== undefined) {
      withStderrFile(err, resolvePath(o.stderr));
    }
    debug('daemonize: daemon %d not ready (%s), killed: %o', daemon.pid, (err as Error)?.message, r && { code: r.exitCode, signal: r.signal });
    throw err;
  }
  // Ready: the daemon lets go of us (and puts its stderr back on /dev/null).
  lifeline.release();
  capture?.close();
  // The daemon holds the PID file's lock now (its own copy of the fd).
  pidFile?.close();
  // Ready. The daemon stays our child (adopted while we were a subreaper):
  // it is reaped whenever it ends, so it never becomes our zombie, but it
  // never holds this process open.
  daemon.unref();
  debug('daemonize: daemon %d is ready', daemon.pid);
  return { foreground: true, pid: daemon.pid };
}

/**
 * The daemon's last stderr lines on the error it failed with: `err.stderr`,
 * and in the message of an "exited before it was ready" error, where they
 * are all the user has to go on.
 */
function withStderr(err: unknown, tail: string): void {
  if (tail === '' || typeof err !== 'object' || err === null) return;
  try {
    Object.defineProperty(err, 'stderr', { value: tail, enumerable: true, configurable: true, writable: true });
    if (isExitedError(err) && err instanceof Error) {
      err.message += `; its stderr ended with:\n${tail.replace(/^/gm, '  ')}`;
    }
  } catch (e) {
    debug('daemonize: cannot attach stderr to %o: %s', err, (e as Error).message);
  }
}

/**
 * With a `stderr` file, the error says where the daemon's own account of its
 * failure is: `err.stderrFile`, and at the end of the message (not for an
 * abort: the caller stopped it, the daemon did not fail).
 */
function withStderrFile(err: unknown, path: string): void {
  if (!(err instanceof Error) || err.name === 'AbortError') return;
  try {
    Object.defineProperty(err, 'stderrFile', { value: path, enumerable: true, configurable: true, writable: true });
    err.message += `; its stderr is in ${path}`;
  } catch (e) {
    debug('daemonize: cannot attach the stderr file to %o: %s', err, (e as Error).message);
  }
}

/**
 * Whether this process was a child subreaper, and whether it is one now.
 * Where there are none (macOS; qemu-user, which answers EINVAL to both
 * prctl calls: an arm64 image run on an x64 host, as `docker run
 * --platform` does), the daemon is re-parented to init and its end is
 * learnt from the readiness pipe. A real Linux kernel (>= 3.4) never
 * answers EINVAL here.
 */
function becomeSubreaper(): { wasSubreaper: boolean; subreaper: boolean } {
  try {
    const wasSubreaper = isChildSubreaper();
    return { wasSubreaper, subreaper: wasSubreaper || setChildSubreaper(true) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    debug('daemonize: no child subreapers here (prctl: EINVAL): the daemon is not adopted');
    return { wasSubreaper: false, subreaper: false };
  }
}

/**
 * The double fork, with stdio on /dev/null or the log files. We are a child
 * subreaper for the duration of the (synchronous) call: when the
 * intermediate process exits (spawnDetached reaps it) the orphaned daemon is
 * re-parented to us and stays our child after the flag is restored. So we
 * learn its real exit status from a pidfd instead of a bare pipe EOF, and the
 * window in which other orphans could be adopted is that one call.
 */
function spawnAdopted(
  args: string[], env: Record<string, string>, o: Normalized, readinessFds: number[], pidFile: LaunchPidFile | null,
  capture: StderrCapture | null,
): { pid: number; child: boolean } {
  const keepFds = [...o.keepFds];
  for (const fd of [...readinessFds, ...(pidFile !== null ? [pidFile.fd] : [])]) if (!keepFds.includes(fd)) keepFds.push(fd);
  const fds: number[] = [];
  const { wasSubreaper, subreaper } = becomeSubreaper();
  try {
    const nullFd = openSync('/dev/null', 'r+');
    fds.push(nullFd);
    const stdio: [number, number, number] = [nullFd, nullFd, capture?.fd ?? nullFd];
    for (const [i, path] of [[1, o.stdout], [2, o.stderr]] as const) {
      if (path === undefined) continue;
      // Created with the daemon's umask, not ours (0o666 & ~umask).
      const fd = openLogFile(path, o.umask);
      fds.push(fd);
      stdio[i] = fd;
    }
    const pid = spawnDetached(process.execPath, args, {
      cwd: o.cwd, stdio, env, keepFds, ...(o.umask !== undefined ? { umask: o.umask } : {}),
    });
    debug('daemonize: started daemon pid %d (%s)', pid, subreaper ? 'subreaper' : 'no subreaper');
    return { pid, child: subreaper };
  } finally {
    if (subreaper && !wasSubreaper) setChildSubreaper(false);
    for (const fd of fds) closeSync(fd);
  }
}
