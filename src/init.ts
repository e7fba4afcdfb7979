/**
 * posix-daemon/init: be a proper PID 1 in a container.
 *
 * Plain `node` as PID 1 never reaps orphans (they stay zombies) and, having
 * no handler, ignores SIGTERM from `docker stop`. Call `await init()` first
 * thing in the program: as PID 1 the process turns into a tiny init (an
 * execve into native/init-loop.c, a plain-C image: with a prebuild, a static
 * executable with musl's libc inside, which needs no loader and no libc of
 * the image it runs in; with a local build, a shared object run by node's
 * dynamic loader; no JavaScript engine, no node, no C++ runtime in it) that starts the same
 * command line again as its child, forwards signals to it, reaps every
 * process and exits with the program's status. In the child, and in any
 * process that is not PID 1, `init()` resolves at once.
 *
 * To start in the init image before any JavaScript runs, use the
 * `posix-daemon-init` command or `node --import posix-daemon/init/auto`
 * (README, "In a container").
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isMainThread } from './main-thread';
import { debuglog } from 'node:util';
import { addon, addonLibc, addonPath } from './native';
import { featureUnavailable, invalidArgValue, workerUnsupported } from './errors';
import { programArgv as thisProgramArgv } from './relaunch';
import {
  toCatchableSignal, toSignalNumber, validateBoolean, validateChildProcessAllowed, validateDuration, validateInteger,
  validateObject, validateOptionKeys,
} from './validators';

const debug = debuglog('posix-daemon');

/** Set in the program's environment to the init's PID (by the init image). */
export const INIT_ENV = 'POSIX_DAEMON_INIT';

export interface InitOptions {
  /** Become the init even when this process is not PID 1 (default false). */
  force?: boolean;
  /**
   * Once the program has exited, how long what is left gets after SIGTERM
   * before SIGKILL, in ms (default 5000).
   */
  shutdownTimeout?: number;
  /**
   * Outside PID 1 (with `force`): register as a child subreaper, so orphans
   * of the program's tree are re-parented to the init and reaped (tini -s).
   * Default true; with false the init warns that orphans are not reaped.
   */
  subreaper?: boolean;
  /**
   * Forward signals to the program's whole process group instead of the
   * program alone (tini -g). Default false.
   */
  signalGroup?: boolean;
  /**
   * Exit statuses to replace: `{ 143: 0 }` makes a program that died of
   * SIGTERM (128+15) end the container with 0 (tini -e 143).
   */
  remapExitCodes?: Record<number, number>;
  /**
   * Signals to rewrite before forwarding: `{ SIGTERM: 'SIGQUIT' }`; `null`
   * drops the signal (dumb-init -r). A key the init never forwards
   * (SIGCHLD, SIGKILL, SIGSTOP, a synchronous fault) is refused. A
   * SIGTSTP/SIGTTIN/SIGTTOU rewritten to a signal that stops nothing is
   * forwarded, then the init stops itself (as dumb-init).
   */
  rewriteSignals?: Partial<Record<NodeJS.Signals, NodeJS.Signals | number | null>>;
}

/** Whether this process is the program started by our init (the init is its parent). */
export function isUnderInit(): boolean {
  const v = process.env[INIT_ENV];
  // Untrusted: it counts only when it names our actual parent.
  return v !== undefined && /^[1-9]\d{0,9}$/.test(v) && Number(v) === process.ppid;
}

/**
 * The static init image beside a prebuilt addon (scripts/prebuild-all.mjs),
 * the same for both libcs: it needs neither.
 */
const staticImage = addonLibc === null ? null : join(dirname(addonPath), 'posix_daemon_init.musl.static');

/** Whether the init image is the static executable (run directly, no loader, any libc). */
export const initImageStatic: boolean = staticImage !== null && existsSync(staticImage);

/**
 * The init image: the static executable beside a prebuild, else the
 * plain-C shared object of the local build (run through node's loader).
 */
export const initImagePath: string = initImageStatic ? staticImage! : join(dirname(addonPath), 'posix_daemon_init.so');

/** Signals the init image never forwards (native/init-loop.c): it reaps on SIGCHLD; faults are its own. */
const NEVER_FORWARDED = new Set(['SIGCHLD', 'SIGFPE', 'SIGILL', 'SIGSEGV', 'SIGBUS', 'SIGABRT', 'SIGTRAP', 'SIGSYS']);

/**
 * The init image's command-line options for `options` (the same options the
 * `posix-daemon-init` command takes). Validates like `init()`.
 */
export function initImageOptions(options: InitOptions = {}): string[] {
  validateObject(options as unknown, 'options');
  const {
    shutdownTimeout = 5000, subreaper = true, signalGroup = false, remapExitCodes = {}, rewriteSignals = {},
  } = options;
  validateDuration(shutdownTimeout, 'options.shutdownTimeout');
  validateBoolean(subreaper, 'options.subreaper');
  validateBoolean(signalGroup, 'options.signalGroup');
  validateObject(remapExitCodes as unknown, 'options.remapExitCodes');
  validateObject(rewriteSignals as unknown, 'options.rewriteSignals');
  const out = ['-t', String(Math.min(Math.floor(shutdownTimeout), 2 ** 31 - 1))];
  if (subreaper) out.push('-s');
  if (signalGroup) out.push('-g');
  for (const [from, to] of Object.entries(remapExitCodes)) {
    if (!/^(0|[1-9]\d{0,2})$/.test(from) || Number(from) > 255) {
      throw invalidArgValue('options.remapExitCodes', from, 'must have exit statuses (0-255) as keys');
    }
    validateInteger(to, `options.remapExitCodes[${from}]`, 0, 255);
    out.push('-e', `${from}:${to}`);
  }
  for (const [from, to] of Object.entries(rewriteSignals)) {
    // SIGKILL and SIGSTOP (by name: their numbers differ between architectures) are never forwarded.
    const name = toCatchableSignal(from, 'options.rewriteSignals');
    // Nor are SIGCHLD and the synchronous faults (issue 22, item 20): a
    // rewrite of one would be accepted and do nothing.
    if (NEVER_FORWARDED.has(name)) {
      throw invalidArgValue('options.rewriteSignals', from, 'must be a signal the init forwards (not SIGCHLD or a synchronous fault)');
    }
    const f = toSignalNumber(name, 'options.rewriteSignals');
    const t = to === null ? 0 : toSignalNumber(to, `options.rewriteSignals.${from}`);
    out.push('-r', `${f}:${t}`);
  }
  return out;
}

/**
 * The file and argv that run the init image with `imageArgs` (options, `--`,
 * program and arguments), or an error saying what is missing.
 */
export function initImageCommand(imageArgs: string[]): { file: string; argv: string[] } {
  if (process.platform !== 'linux' || addon.becomeInit === undefined || addon.initRuntime === undefined) {
    throw featureUnavailable('init() (it needs Linux)');
  }
  // argv[0] is the image itself: the kernel runs it, nothing to load.
  if (initImageStatic) return { file: initImagePath, argv: [initImagePath, ...imageArgs] };
  const { interpreter, glibc } = addon.initRuntime();
  // The shared object names glibc's loader; a musl node has none to lend.
  if (glibc === null) throw featureUnavailable('init() (with a local build it needs glibc; this node runs on another C library: use a prebuild, whose init image is static)');
  if (!existsSync(initImagePath)) {
    throw featureUnavailable(`init() (the init image ${initImagePath} is missing: rebuild the package, or use a prebuild for linux-x64/arm64)`);
  }
  if (interpreter === null) {
    // A statically linked node: the image names its own loader (PT_INTERP).
    return { file: initImagePath, argv: [initImagePath, ...imageArgs] };
  }
  return { file: interpreter, argv: [interpreter, initImagePath, ...imageArgs] };
}

/** The environment as execve wants it. */
function envArray(): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) out.push(`${k}=${v}`);
  return out;
}

/**
 * Replaces this process with the init image, which then runs `programArgv`.
 * Returns only by throwing (nothing changed) when that is impossible.
 */
export function execInitImage(imageArgs: string[]): never {
  if (!isMainThread()) throw workerUnsupported('init()');
  validateChildProcessAllowed(process.execPath);
  const { file, argv } = initImageCommand(imageArgs);
  debug('init: pid %d becomes the init: %j', process.pid, argv);
  return addon.becomeInit!(file, argv, envArray());
}

/**
 * When this process is PID 1 (or `force` is set), it becomes the init and
 * this promise never settles in it; the same command line runs again as its
 * child, where `init()` resolves. Otherwise it resolves at once and does
 * nothing.
 *
 * The program runs in its own process group (the terminal's foreground
 * group when there is a terminal). Every signal sent to the init but
 * SIGCHLD and the synchronous faults is forwarded to it (optionally
 * rewritten, optionally to its process group). When it exits, everything
 * left (as PID 1: every process of the namespace) gets SIGTERM, then
 * SIGKILL after `shutdownTimeout`, and the init exits with the program's
 * exit code (128+N after signal N; optionally remapped).
 *
 * Code that runs before `init()` runs twice (once in PID 1, once in the
 * program); call it first, or start with `posix-daemon-init`. Linux only
 * (with a local build, glibc only: its image runs through node's loader).
 */
export async function init(options: InitOptions = {}): Promise<void> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options',
    ['force', 'shutdownTimeout', 'subreaper', 'signalGroup', 'remapExitCodes', 'rewriteSignals']);
  const { force = false } = options;
  validateBoolean(force, 'options.force');
  const imageOptions = initImageOptions(options);
  if (isUnderInit()) {
    debug('init: running under the init (pid %d)', process.ppid);
    return;
  }
  if (process.pid !== 1 && !force) return;
  const programArgv = [process.execPath, ...thisProgramArgv()];
  execInitImage([...imageOptions, '--', ...programArgv]);
}
