/**
 * posix-daemon/posix: the real POSIX process calls, for Node.
 *
 * `fork` takes a plan instead of running JavaScript in the child: a forked
 * Node process cannot safely run JS (the V8 heap is MADV_DONTFORK and other
 * threads' locks are gone), so the addon carries the plan out in C with
 * async-signal-safe calls only, up to execve(2).
 */
import { accessSync, constants as fsConstants, readdirSync, readFileSync } from 'node:fs';
import { channel } from 'node:diagnostics_channel';
import { isMainThread } from './main-thread';
import { delimiter, join } from 'node:path';
import { addon, type RawWaitResult } from './native';
import { readProcStat } from './procstat';
import { adoptStartedPidfd } from './process-handle';
import { abortError, invalidArgType, invalidArgValue, workerUnsupported } from './errors';
import {
  envToArray, signalName, validateAbortSignal, validateArgs, validateArray, validateBoolean,
  validateChildProcessAllowed, validateCString, validateFdList, validateInteger, validateObject, validateOpenFds,
  validateOptionKeys, toCatchableSignal, toSignalNumber,
} from './validators';

// Node's own channel for process.execve (Node >= 23.11): tools that watch
// it see our exec too. Message: { execPath, args, env: ['KEY=value', ...] }.
const execveChannel = channel('process.execve');

export type Stdio = 'inherit' | 'ignore' | [number, number, number];

/**
 * Settings any level of a plan may have. On a level that forks again
 * (`fork: {...}`) they take effect in that intermediate process, so the
 * levels below inherit them unless they set their own.
 */
interface PlanCommon {
  /** Call setsid(2) first: new session, no controlling terminal. */
  setsid?: boolean;
  /**
   * Call setpgid(0, 0) first: lead a new process group (in the same
   * session). Not with `setsid`, which already starts a new group.
   */
  setpgid?: boolean;
  /** umask(2); unchanged when absent. Inherited by nested levels. */
  umask?: number;
  /** chdir(2). Inherited by nested levels (a relative inner cwd starts here). */
  cwd?: string;
  /**
   * 'inherit' (default), 'ignore' (/dev/null) or the fds to put on 0, 1, 2.
   * Nested levels inherit what this level put on 0-2.
   */
  stdio?: Stdio;
  /**
   * Fds (>= 3) the new program inherits; every other fd >= 3 is closed.
   * On an outer level: the default for the levels below that set none.
   */
  keepFds?: number[];
}

export interface ExecPlan extends PlanCommon {
  /** Path of the program (no PATH search, as with execve). */
  file: string;
  /** Arguments after argv[0]. */
  args?: string[];
  /** argv[0]; defaults to `file`. */
  argv0?: string;
  /** The environment; defaults to the current process.env. */
  env?: Record<string, string>;
  /**
   * Linux only, a direct child only (not in a nested plan): the signal the
   * child gets when its parent ends (prctl PR_SET_PDEATHSIG), set before
   * execve and kept by it. The kernel sends it when the thread that called
   * fork() ends: from a worker thread, that is when the worker ends. A
   * parent that ended before the child set it is noticed (getppid()) and
   * the signal is raised at once.
   */
  deathSignal?: NodeJS.Signals | number;
  /** Not with `file`: a level either execs or forks again (fork() throws). */
  fork?: never;
}

export interface NestedPlan extends PlanCommon {
  /** Fork again: this process exits at once, the next one carries on. */
  fork: ForkPlan;
  // What only the level that execs takes: here fork() would throw.
  file?: never;
  args?: never;
  argv0?: never;
  env?: never;
  deathSignal?: never;
}

/** What a forked child does, as data. */
export type ForkPlan = ExecPlan | NestedPlan;

export interface WaitResult {
  /** PID of the process reaped; 0 with WNOHANG when none had changed state. */
  pid: number;
  /** Raw wait status. */
  status: number;
  /** Exit code when it exited normally, else null. */
  exitCode: number | null;
  /** Signal name that killed (or stopped) it, like 'SIGKILL', else null. */
  signal: NodeJS.Signals | null;
  coreDumped: boolean;
  stopped: boolean;
  continued: boolean;
}

export interface ResourceUsage {
  userCPUTime: number;
  systemCPUTime: number;
  maxRSS: number;
  sharedMemorySize: number;
  unsharedDataSize: number;
  unsharedStackSize: number;
  minorPageFault: number;
  majorPageFault: number;
  swappedOut: number;
  fsRead: number;
  fsWrite: number;
  ipcSent: number;
  ipcReceived: number;
  signalsCount: number;
  voluntaryContextSwitches: number;
  involuntaryContextSwitches: number;
}

export interface Wait4Result extends WaitResult {
  rusage: ResourceUsage;
}

/** Flags for waitpid/wait4. */
export const constants: Readonly<{ WNOHANG: number; WUNTRACED: number; WCONTINUED: number }> =
  Object.freeze({ ...addon.constants });

const MAX_NESTING = 4;

/**
 * A plain copy of an array argument, its length read once: a getter on an
 * element may push more while it is being read (issue 16, item 11), and
 * what is validated must be what the addon gets.
 */
function snapshot<T>(value: T): T {
  return (Array.isArray(value) ? Array.prototype.slice.call(value) : value) as T;
}

const FORK_PLAN_KEYS = ['setsid', 'setpgid', 'umask', 'cwd', 'stdio', 'keepFds', 'file', 'args', 'argv0', 'env', 'fork',
  'deathSignal'];

function normalizePlan(plan: unknown, name: string, depth: number): Record<string, unknown> {
  validateObject(plan, name);
  validateOptionKeys(plan, name, FORK_PLAN_KEYS);
  // A copy: each property (and array) read once, the caller's plan untouched.
  const p = { ...(plan as Record<string, unknown>) };
  const out: Record<string, unknown> = {};
  if (p.setsid !== undefined) {
    validateBoolean(p.setsid, `${name}.setsid`);
    out.setsid = p.setsid;
  }
  if (p.setpgid !== undefined) {
    validateBoolean(p.setpgid, `${name}.setpgid`);
    if (p.setpgid && p.setsid === true) {
      throw invalidArgValue(name, plan,
        "must not set both 'setsid' and 'setpgid' (setsid already starts a new process group)");
    }
    out.setpgid = p.setpgid;
  }
  if (p.umask !== undefined) {
    validateInteger(p.umask, `${name}.umask`, 0, 0o777);
    out.umask = p.umask;
  }
  if (p.cwd !== undefined) {
    validateCString(p.cwd, `${name}.cwd`, { allowEmpty: false });
    out.cwd = p.cwd;
  }
  if (p.stdio !== undefined) {
    p.stdio = snapshot(p.stdio);
    if (Array.isArray(p.stdio) && p.stdio.length === 3) {
      validateFdList(p.stdio, `${name}.stdio`);
    } else if (p.stdio !== 'inherit' && p.stdio !== 'ignore') {
      throw invalidArgValue(`${name}.stdio`, p.stdio, "must be 'inherit', 'ignore' or an array of 3 fds");
    }
    out.stdio = p.stdio;
  }
  if (p.keepFds !== undefined) {
    p.keepFds = snapshot(p.keepFds);
    validateFdList(p.keepFds, `${name}.keepFds`, 3);
    out.keepFds = p.keepFds;
  }
  if (p.fork !== undefined && p.file !== undefined) {
    throw invalidArgValue(name, plan, "must have either 'file' or 'fork', not both");
  }
  if (p.fork !== undefined) {
    const execOnly = ['args', 'argv0', 'env', 'deathSignal'].filter((k) => p[k] !== undefined);
    if (execOnly.length > 0) {
      throw invalidArgValue(name, plan, `must not have '${execOnly[0]}' with 'fork' (it belongs to the level that execs)`);
    }
    if (depth >= MAX_NESTING) throw invalidArgValue(`${name}.fork`, p.fork, `must not nest more than ${MAX_NESTING} forks`);
    out.fork = normalizePlan(p.fork, `${name}.fork`, depth + 1);
    return out;
  }
  if (p.file === undefined) throw invalidArgValue(name, plan, "must have 'file' or 'fork'");
  validateCString(p.file, `${name}.file`, { allowEmpty: false });
  out.file = p.file;
  if (p.deathSignal !== undefined) {
    // Its parent would be an intermediate that exits at once.
    if (depth > 0) throw invalidArgValue(`${name}.deathSignal`, p.deathSignal, 'is only for a direct child, not a nested plan');
    if (process.platform !== 'linux') throw invalidArgValue(`${name}.deathSignal`, p.deathSignal, 'needs Linux (PR_SET_PDEATHSIG)');
    out.deathSignal = toSignalNumber(p.deathSignal, `${name}.deathSignal`);
  }
  if (p.args !== undefined) {
    p.args = snapshot(p.args);
    validateArgs(p.args, `${name}.args`);
    out.args = p.args;
  }
  if (p.argv0 !== undefined) {
    validateCString(p.argv0, `${name}.argv0`);
    out.argv0 = p.argv0;
  }
  out.env = envToArray(p.env === undefined ? process.env : p.env, `${name}.env`);
  return out;
}

/** The program a (normalized) plan ends in: the permission error's `resource`. */
function programOf(plan: Record<string, unknown>): string {
  return plan.fork !== undefined ? programOf(plan.fork as Record<string, unknown>) : plan.file as string;
}

/**
 * fork(2) with a plan for the child. Returns the PID of the process that
 * execs (the grandchild for a nested plan; intermediates are reaped before
 * this returns). An exec failure in the child is thrown here, synchronously,
 * with nothing left running.
 *
 * @example fork({ file: '/bin/echo', args: ['hi'] })
 * @example fork({ setsid: true, fork: { cwd: '/', stdio: 'ignore', file, args } })
 */
export function fork(plan: ForkPlan): number {
  if (plan === undefined) throw invalidArgType('plan', 'Object', plan);
  const normalized = normalizePlan(plan, 'plan', 0);
  validateChildProcessAllowed(programOf(normalized));
  return forkPlan(normalized);
}

/**
 * Runs a normalized plan. A nested plan's program is not our child: the
 * pidfd its parent intermediate opened on it comes back with its PID, for
 * an openProcess(pid) in this turn of the loop (see process-handle.ts).
 */
function forkPlan(plan: Record<string, unknown>): number {
  if (plan.fork === undefined) return addon.fork(plan);
  const { pid, pidfd } = addon.fork(plan, true);
  if (pidfd >= 0) adoptStartedPidfd(pid, pidfd);
  return pid;
}

/** setsid(2): make this process a session leader. Returns the new session id. */
export function setsid(): number {
  return addon.setsid();
}

/** getsid(2): session id of `pid` (0 = this process). */
export function getsid(pid = 0): number {
  validateInteger(pid, 'pid', 0, 2 ** 31 - 1);
  return addon.getsid(pid);
}

/** getpgid(2): process group id of `pid` (0 = this process). */
export function getpgid(pid = 0): number {
  validateInteger(pid, 'pid', 0, 2 ** 31 - 1);
  return addon.getpgid(pid);
}

/** _exit(2): end the process now; no 'exit' handlers, no flushing. */
export function exit(code = 0): never {
  validateInteger(code, 'code', -(2 ** 31), 2 ** 31 - 1);
  return addon.exit(code);
}

export interface ExecveOptions {
  /**
   * Fds (>= 3) that the new image inherits, at the same numbers; every other
   * fd >= 3 is closed. (There is no way to move an fd to another number: in
   * a running Node process every low number may be one libuv owns.)
   */
  keepFds?: number[];
  /**
   * Signals (names or numbers, catchable) left blocked in the new image's
   * mask: one sent during the exec or the new program's start-up stays
   * pending, for a program that handles them first and then unblocks them.
   * Default none: the mask is emptied.
   */
  blockSignals?: Array<NodeJS.Signals | number>;
}

/**
 * A drop-in for Node's `process.execve(file, args, env)`: the same
 * parameters, validation and error codes, the same PID afterwards. `args` is
 * the whole argv (args[0] is argv[0]). In addition: stdio goes back to the
 * blocking mode it had when the process started, the signal mask is emptied
 * (but for `options.blockSignals`) and ignored signals go back to SIG_DFL,
 * every fd but 0-2 and `options.keepFds` is closed. If execve(2) fails, all of that is undone and
 * an error with `code`, `errno`, `syscall: 'execve'` and `path` is thrown.
 */
export function execve(file: string, args: string[] = [], env: NodeJS.ProcessEnv | Record<string, string> = process.env,
  options: ExecveOptions = {}): never {
  if (!isMainThread()) throw workerUnsupported('Calling execve');
  validateCString(file, 'execPath');
  args = snapshot(args);
  validateArgs(args, 'args');
  const envArray = envToArray(env, 'env');
  // process.execve takes three arguments and ignores a fourth: so do we,
  // unless it is an options object.
  const opts: ExecveOptions = options !== null && typeof options === 'object' && !Array.isArray(options) ? options : {};
  validateOptionKeys(opts, 'options', ['keepFds', 'moveFds', 'blockSignals']);  // moveFds: refused below, with its reason
  const keepFds = snapshot(opts.keepFds ?? []);
  validateFdList(keepFds, 'options.keepFds', 3);
  if ((opts as { moveFds?: unknown }).moveFds !== undefined) {
    throw invalidArgValue('options.moveFds', (opts as { moveFds?: unknown }).moveFds,
      'is not supported: dup2 onto a running Node process\'s fds could replace one libuv owns; use keepFds');
  }
  validateOpenFds(keepFds, 'options.keepFds');
  const blockSignals = snapshot(opts.blockSignals ?? []);
  validateArray(blockSignals, 'options.blockSignals');
  const blocked = blockSignals.map((s, i) => toSignalNumber(toCatchableSignal(s, `options.blockSignals[${i}]`), 'signal'));
  // What Node >= 23.11 publishes for process.execve, in the same place:
  // after validation, before the permission check and the exec.
  if (execveChannel.hasSubscribers) execveChannel.publish({ execPath: file, args, env: envArray });
  validateChildProcessAllowed(file);
  return addon.execve(file, args, envArray, keepFds, undefined, blocked);
}

function toWaitResult(raw: RawWaitResult): WaitResult {
  return {
    pid: raw.pid,
    status: raw.status,
    exitCode: raw.exitCode,
    signal: signalName(raw.termSignal || raw.stopSignal) as NodeJS.Signals | null,
    coreDumped: raw.coreDumped,
    stopped: raw.stopSignal !== 0,
    continued: raw.continued,
  };
}

function validateWait(pid: unknown, flags: unknown): void {
  validateInteger(pid, 'pid', -(2 ** 31) + 1, 2 ** 31 - 1);
  validateInteger(flags, 'flags', 0, 2 ** 31 - 1);
  const known = constants.WNOHANG | constants.WUNTRACED | constants.WCONTINUED;
  if ((flags & ~known) !== 0) throw invalidArgValue('flags', flags, 'has unknown bits');
}

/** waitpid(2). `pid` may be -1 (any child) or -pgid, as in C. Throws ECHILD etc. */
export function waitpid(pid: number, flags = 0): WaitResult {
  validateWait(pid, flags);
  return toWaitResult(addon.waitpid(pid, flags));
}

/** wait4(2): waitpid plus the child's resource usage, named as in process.resourceUsage(). */
export function wait4(pid: number, flags = 0): Wait4Result {
  validateWait(pid, flags);
  const raw = addon.wait4(pid, flags);
  return { ...toWaitResult(raw), rusage: raw.rusage as unknown as ResourceUsage };
}

export interface WaitAsyncOptions {
  /** Stop waiting; the child is then left unreaped. */
  signal?: AbortSignal;
  /**
   * Keep the event loop alive while waiting (default true, like a
   * child_process child). With `false` the wait still reaps the child if the
   * process is running anyway, but never holds it open.
   */
  ref?: boolean;
}

/**
 * Wait for child `pid` to exit without blocking the event loop and without a
 * thread: a pidfd watched by libuv on Linux, kqueue on macOS, SIGCHLD
 * elsewhere. Resolves with wait4's result. Rejects with ECHILD at once when
 * `pid` is not our child.
 *
 * Rule: only wait on PIDs you started yourself with `fork`/`spawnDetached`
 * (or adopted as a subreaper). A child of `child_process` belongs to Node:
 * reaping it here would steal its exit status from its 'exit' event.
 */
export function waitAsync(pid: number, options: WaitAsyncOptions = {}): Promise<Wait4Result> {
  validateInteger(pid, 'pid', 1, 2 ** 31 - 1);
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['signal', 'ref']);
  const { signal, ref = true } = options;
  validateAbortSignal(signal, 'options.signal');
  validateBoolean(ref, 'options.ref');
  return new Promise<Wait4Result>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal.reason));
      return;
    }
    const first = wait4(pid, constants.WNOHANG);  // throws ECHILD for a non-child
    if (first.pid !== 0) {
      resolve(first);
      return;
    }
    let watcher: { close(): void } | undefined;
    const onAbort = (): void => {
      watcher?.close();
      reject(abortError(signal?.reason));
    };
    const check = (): void => {
      let r: Wait4Result;
      try {
        r = wait4(pid, constants.WNOHANG);
      } catch (err) {
        watcher?.close();
        signal?.removeEventListener('abort', onAbort);
        reject(err);
        return;
      }
      if (r.pid === 0) return;  // SIGCHLD fallback: another child
      watcher?.close();
      signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const w = new addon.ExitWatcher(pid, check);
    if (!ref) w.unref();
    watcher = w;
    signal?.addEventListener('abort', onAbort, { once: true });
    // The child may have exited between the first check and the watcher.
    if (w.kind === 'sigchld') check();
  });
}

export interface SpawnDetachedOptions {
  /** Working directory of the daemon; default '/'. */
  cwd?: string;
  /** Default 'ignore' (/dev/null on 0-2). */
  stdio?: Stdio;
  /** Default: unchanged. */
  umask?: number;
  /** Fds (>= 3) the daemon inherits. */
  keepFds?: number[];
  /** Default: process.env. */
  env?: Record<string, string>;
  /** argv[0]; default: `file`. */
  argv0?: string;
}

/** Resolves a bare command name through PATH, as execvp would. */
function resolveCommand(file: string, env: Record<string, string | undefined>): string {
  if (file.includes('/')) return file;
  const path = env.PATH ?? process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';
  for (const dir of path.split(delimiter)) {
    const candidate = join(dir || '.', file);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return file;  // execve reports ENOENT with this name
}

/**
 * The classic daemon launch, a true double fork:
 * `fork({ setsid: true, fork: { umask, cwd, stdio, keepFds, file, args, env } })`.
 * The result is not a session leader, has no controlling terminal and is not
 * our child. Returns its PID; exec errors are thrown.
 */
export function spawnDetached(file: string, args: string[] = [], options: SpawnDetachedOptions = {}): number {
  validateCString(file, 'file', { allowEmpty: false });
  args = snapshot(args);
  validateArgs(args, 'args');
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['cwd', 'stdio', 'umask', 'keepFds', 'env', 'argv0']);
  const env = options.env ?? (process.env as Record<string, string>);
  const inner: ExecPlan = {
    cwd: options.cwd ?? '/',
    stdio: options.stdio ?? 'ignore',
    file: resolveCommand(file, env),
    args,
    env,
  };
  if (options.umask !== undefined) inner.umask = options.umask;
  if (options.keepFds !== undefined) inner.keepFds = options.keepFds;
  if (options.argv0 !== undefined) inner.argv0 = options.argv0;
  const plan: NestedPlan = { setsid: true, fork: inner };
  const normalized = normalizePlan(plan, 'options', 1);
  validateChildProcessAllowed(inner.file);
  return forkPlan(normalized);
}

function childPidsFromProc(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  let haveChildrenFiles = true;
  for (const tid of tasks) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && tid === String(pid)) haveChildrenFiles = false;
      continue;  // a thread that just ended
    }
    for (const s of text.split(' ')) if (s.trim() !== '') out.push(Number(s));
  }
  if (haveChildrenFiles) return out.sort((a, b) => a - b);
  // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (readProcStat(entry)?.ppid === pid) out.push(Number(entry));  // undefined: gone meanwhile
  }
  return out.sort((a, b) => a - b);
}

/** The current children of a process (Linux: from /proc, no pgrep). */
export function childPids(pid: number = process.pid): number[] {
  validateInteger(pid, 'pid', 1, 2 ** 31 - 1);
  if (process.platform === 'linux') return childPidsFromProc(pid);
  return addon.childPids(pid).sort((a, b) => a - b);
}

/**
 * prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to
 * this process instead of init, so they can be waited on. Returns false
 * where the platform has no subreapers (macOS).
 */
export function setChildSubreaper(on: boolean): boolean {
  validateBoolean(on, 'on');
  return addon.setChildSubreaper(on);
}

/** Whether this process is currently a child subreaper (always false off Linux). */
export function isChildSubreaper(): boolean {
  return addon.isChildSubreaper();
}

/** pipe(2): `[readFd, writeFd]`, both close-on-exec (pass an end on with `keepFds`). */
export function pipe(): [number, number] {
  return addon.pipe();
}

/** Set or clear FD_CLOEXEC on `fd`. */
export function setCloexec(fd: number, on: boolean): void {
  validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
  validateBoolean(on, 'on');
  addon.setCloexec(fd, on);
}

/** fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate of `fd` at the lowest free number >= minFd. */
export function dup(fd: number, minFd = 0): number {
  validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
  validateInteger(minFd, 'minFd', 0, 2 ** 31 - 1);
  return addon.dup(fd, minFd);
}
