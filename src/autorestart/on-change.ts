/**
 * restartOnChange: watch the program, settle, check, run the hook, drain,
 * check again, restart in place.
 */
import { existsSync, statSync } from 'node:fs';
import { debuglog } from 'node:util';
import { abortError, codedError } from '../errors';
import {
  validateArray, validateBoolean, validateChildProcessAllowed, validateDuration, validateExecOptions, validateFunction,
  validateObject, validateOptionKeys,
} from '../validators';
import { isRefusal, mainScript, never, report, RESTART_VIA_EXEC_KEYS, restartWith, type RestartViaExecOptions } from './exec';
import { isBridge } from './bridge';
import { envFilePaths } from './env-file';
import { checkFile, isCheckable, warmUp } from './check';
import { moduleGraph } from './graph';
import { fingerprintSync, NOTIFY_ON_CHANGE_KEYS, parseWatchOptions, startWatching, type NotifyOnChangeOptions } from './watch';

const debug = debuglog('posix-daemon');

// ---------------------------------------------------------------------------
// restartOnChange

/** Options of restartOnChange: watching, checking, the hook, and the exec. */
export interface RestartOnChangeOptions extends NotifyOnChangeOptions, Omit<RestartViaExecOptions, 'signal'> {
  /**
   * Check, in this process, that every changed file of the program parses
   * as its loader will parse it (JavaScript, JSON, TypeScript through tsx),
   * after the change settled and again immediately before the exec; default
   * true.
   */
  check?: boolean;
  /** Called with every error that prevented a restart (the old image keeps running). */
  onError?: (err: Error) => void;
  /** Runs just before the exec (close servers, flush logs); gets a signal aborted at the deadline. */
  beforeRestart?: (signal: AbortSignal) => unknown;
  /** Milliseconds `beforeRestart` may take; default 5000. The restart happens either way. */
  beforeRestartTimeout?: number;
}


async function runBeforeRestart(hook: (signal: AbortSignal) => unknown, timeout: number): Promise<void> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = codedError(`beforeRestart() did not finish within ${timeout} ms`, 'ETIMEDOUT');
      ac.abort(err);
      reject(err);
    }, timeout);
  });
  try {
    await Promise.race([Promise.resolve().then(() => hook(ac.signal)), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The keys of RestartOnChangeOptions, each once (`signal` is in both lists
 * it is made of), for validateOptionKeys' "the options are: ..." message.
 */
const RESTART_ON_CHANGE_KEYS = [...new Set<string>([...NOTIFY_ON_CHANGE_KEYS, ...RESTART_VIA_EXEC_KEYS,
  'check', 'beforeRestart', 'beforeRestartTimeout'] satisfies (keyof RestartOnChangeOptions)[])];

/**
 * Waits for a change of the program's files (see notifyOnChange) and
 * restarts via exec (see restartViaExec). Safer than Go's:
 * - a change counts once it settled (the writer closed the file, or it
 *   stayed unchanged for `debounce` ms);
 * - every changed file is syntax-checked in this process (`check`), and a
 *   missing or empty entry file is refused: the error goes to debuglog and
 *   `onError`, this image keeps running and the next good version is
 *   picked up;
 * - `beforeRestart` runs with a deadline, then `servers` drain, then the
 *   program is checked AGAIN (any file changed since its last check): a
 *   file broken meanwhile aborts this restart, the servers resume, and the
 *   next good version restarts;
 * - a change or a restart signal arriving while a restart is in progress
 *   is folded into it.
 * Watchers do not hold the event loop open unless `persistent: true`.
 * Never resolves; rejects with an AbortError on `signal`.
 */
export async function restartOnChange(options: RestartOnChangeOptions = {}, internal: { changedSince?: number } = {}): Promise<never> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', RESTART_ON_CHANGE_KEYS);
  // The env files of `node --env-file` are part of the program (those of
  // --env-file-if-exists only when they exist: a watch needs a file).
  const envFiles = envFilePaths().filter((f) => existsSync(f));
  if (options.paths !== undefined) validateArray(options.paths, 'options.paths');
  const plan = parseWatchOptions(envFiles.length === 0 ? options
    : { ...options, paths: [...(options.paths ?? []), ...envFiles] }, false);
  plan.changedSince = internal.changedSince;
  const o = options;
  const check = o.check ?? true;
  validateBoolean(check, 'options.check');
  if (o.onError !== undefined) validateFunction(o.onError, 'options.onError');
  if (o.beforeRestart !== undefined) validateFunction(o.beforeRestart, 'options.beforeRestart');
  const beforeRestartTimeout = o.beforeRestartTimeout ?? 5000;
  validateDuration(beforeRestartTimeout, 'options.beforeRestartTimeout');
  const execOptions: RestartViaExecOptions = {
    env: o.env, args: o.args, keepFds: o.keepFds, retryInterval: o.retryInterval, signal: o.signal,
    servers: o.servers, drainTimeout: o.drainTimeout, compileCache: o.compileCache,
    preflight: o.preflight, preflightTimeout: o.preflightTimeout, bridgeAfter: o.bridgeAfter,
  };
  // The exec options now rather than at the first change, by the same
  // check restartViaExec makes (which makes it again at the restart: an fd
  // may have been closed meanwhile).
  validateExecOptions(execOptions);
  if (o.preflight !== undefined) validateBoolean(o.preflight, 'options.preflight');
  if (o.preflightTimeout !== undefined) validateDuration(o.preflightTimeout, 'options.preflightTimeout');
  if (o.bridgeAfter !== undefined) validateDuration(o.bridgeAfter, 'options.bridgeAfter');
  if (isBridge()) return never('restartOnChange', options.signal);
  validateChildProcessAllowed(process.execPath);

  const main = mainScript();
  const { feed, files } = startWatching(plan, () => {
    baseline();
    warmUp();
  });

  // What each file looked like when it was last known good (when it was
  // first watched: it had been loaded, so it parsed; or when it last passed
  // a check). A file whose fingerprint moved since is checked again.
  const good = new Map<string, string>();
  const baseline = (): void => {
    for (const [f, fp] of files) if (!good.has(f)) good.set(f, fp);
  };
  baseline();

  /** Checks the given files (or every watched file that moved since it was last good). */
  const checkProgram = async (only?: string[]): Promise<void> => {
    baseline();
    moduleGraph().rescanRequireCache();
    if (main !== undefined) {
      // A truncate-then-write caught in a pause longer than the debounce:
      // an empty file is a valid program that would exit at once. A missing
      // one would die on "Cannot find module".
      if (statSync(main).size === 0) throw new Error(`${main} is empty; waiting for its content`);
    }
    if (!check) return;
    const candidates = only ?? [...files.keys()];
    for (const f of candidates) {
      const before = fingerprintSync(f);
      if (only === undefined && good.get(f) === before) continue;
      // A deleted module is not refused: the new version may no longer
      // import it (what it imports is only known once it runs).
      if (before.startsWith('missing:') || !isCheckable(f) || envFiles.includes(f)) continue;
      await checkFile(f);
      if (fingerprintSync(f) !== before) throw new Error(`${f} changed during the check; waiting for it to settle`);
      good.set(f, before);
    }
  };

  for await (const change of feed) {
    debug('autorestart: change in %j', change.paths);
    try {
      await checkProgram(change.paths);
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      report(o.onError, err as Error);
      continue;
    }
    if (o.beforeRestart) {
      try {
        await runBeforeRestart(o.beforeRestart, beforeRestartTimeout);
      } catch (err) {
        // Bounded means bounded: a failing or hanging hook must not block
        // an upgrade forever. Report it and restart anyway.
        report(o.onError, err as Error);
      }
    }
    try {
      // The second look, after the hook and the drain: what is exec'd is
      // what was checked.
      return await restartWith(execOptions, { verify: () => checkProgram(), trigger: { trigger: 'change' } });
    } catch (err) {
      if (!isRefusal(err)) throw err;
      report(o.onError, err as Error);
      // Not restarted (the check or the preflight refused it): the servers
      // are serving again; wait for the next change.
    }
  }
  // Only reachable if the feed ends without an error, which it does not.
  throw abortError(o.signal?.reason);
}
