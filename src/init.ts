/**
 * posix-daemon/init: be a proper PID 1 in a container.
 *
 * Plain `node` as PID 1 never reaps orphans (they stay zombies) and, having
 * no handler, ignores SIGTERM from `docker stop`. Call `await init()` first
 * thing in the program: as PID 1 the process turns into a tiny init (see
 * native/init.cc: an execve into the dynamic loader with this addon
 * preloaded, so no JavaScript engine runs in it) that starts the same
 * command line again as its child, forwards signals to it, reaps every
 * process and exits with the program's status. In the child, and in any
 * process that is not PID 1, `init()` resolves at once.
 */
import { programArgv as thisProgramArgv } from './relaunch';
import { isMainThread } from 'node:worker_threads';
import { debuglog } from 'node:util';
import { addon, addonPath } from './native';
import { featureUnavailable, workerUnsupported } from './errors';
import { validateBoolean, validateDuration, validateObject, validateOptionKeys } from './validators';

const debug = debuglog('posix-daemon');

/** Set in the program's environment to the init's PID. */
export const INIT_ENV = 'POSIX_DAEMON_INIT';

export interface InitOptions {
  /** Become the init even when this process is not PID 1 (default false). */
  force?: boolean;
  /**
   * Once the program has exited, how long what is left gets after SIGTERM
   * before SIGKILL, in ms (default 5000).
   */
  shutdownTimeout?: number;
}

/** Whether this process is the program started by our init (the init is its parent). */
export function isUnderInit(): boolean {
  const v = process.env[INIT_ENV];
  // Untrusted: it counts only when it names our actual parent.
  return v !== undefined && /^[1-9]\d{0,9}$/.test(v) && Number(v) === process.ppid;
}

function glibcRuntime(): boolean {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return typeof header?.glibcVersionRuntime === 'string';
}

/**
 * When this process is PID 1 (or `force` is set), it becomes the init and
 * this promise never settles in it; the same command line runs again as its
 * child, where `init()` resolves. Otherwise it resolves at once and does
 * nothing.
 *
 * The program runs in its own process group (the terminal's foreground
 * group when there is a terminal). SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1,
 * SIGUSR2, SIGWINCH, SIGCONT and SIGTSTP sent to the init are forwarded to
 * it. When it exits, everything left (as PID 1: every process of the
 * namespace) gets SIGTERM, then SIGKILL after `shutdownTimeout`, and the
 * init exits with the program's exit code (128+N after signal N).
 *
 * Code that runs before `init()` runs twice (once in PID 1, once in the
 * program); call it first. Linux with glibc only.
 */
export async function init(options: InitOptions = {}): Promise<void> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['force', 'shutdownTimeout']);
  const { force = false, shutdownTimeout = 5000 } = options;
  validateBoolean(force, 'options.force');
  validateDuration(shutdownTimeout, 'options.shutdownTimeout');
  if (isUnderInit()) {
    debug('init: running under the init (pid %d)', process.ppid);
    return;
  }
  if (process.pid !== 1 && !force) return;
  if (!isMainThread) throw workerUnsupported('init()');
  const interpreter = addon.initInterpreter?.() ?? null;
  if (process.platform !== 'linux' || addon.becomeInit === undefined || interpreter === null || !glibcRuntime()) {
    throw featureUnavailable('init() (it needs Linux, glibc and a dynamically linked node)');
  }
  const programArgv = [process.execPath, ...thisProgramArgv()];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  env[INIT_ENV] = String(process.pid);
  const userPreload = env.LD_PRELOAD;
  const timeout = Math.min(Math.floor(shutdownTimeout), 2 ** 31 - 1);
  env.POSIX_DAEMON_INIT_IMAGE = `${timeout}:${userPreload === undefined ? 0 : 1}`;
  if (userPreload !== undefined) env.POSIX_DAEMON_INIT_LD_PRELOAD = `LD_PRELOAD=${userPreload}`;
  env.LD_PRELOAD = addonPath;
  const envArray = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  // The dynamic loader runs process.execPath with this addon preloaded; the
  // addon's constructor takes over before node's main() starts.
  const argv = [interpreter, process.execPath, '--posix-daemon-init', '--', ...programArgv];
  debug('init: pid %d becomes the init of %j', process.pid, programArgv);
  addon.becomeInit(interpreter, argv, envArray);
}
