/**
 * restartOnChange: watch, settle, check, run the hook, restart in place.
 */
import type { Stats } from 'node:fs';
import { statSync } from 'node:fs';
import { extname } from 'node:path';
import { debuglog } from 'node:util';
import { abortError } from '../errors';
import { validateArgs, validateBoolean, validateDuration, validateFdList, validateFunction, validateObject } from '../validators';
import { mainScript, restartViaExec, type RestartViaExecOptions } from './exec';
import { JS_EXTENSIONS, checkSyntax } from './check';
import { parseWatchOptions, startWatching, type NotifyOnChangeOptions } from './watch';

const debug = debuglog('posix-daemon');

// ---------------------------------------------------------------------------
// restartOnChange

/** Options of restartOnChange: watching, checking, the hook, and the exec. */
export interface RestartOnChangeOptions extends NotifyOnChangeOptions, Omit<RestartViaExecOptions, 'signal'> {
  /** Check that a JavaScript entry file parses (`node --check`) before exec; default true. */
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
      const err = new Error(`beforeRestart() did not finish within ${timeout} ms`) as Error & { code: string };
      err.code = 'ETIMEDOUT';
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
 * Waits for a change of the program's files (see notifyOnChange) and
 * restarts via exec (see restartViaExec). Safer than Go's: the file must
 * have stopped changing for `debounce` ms (default 100); a JavaScript entry
 * (.js/.cjs/.mjs or no extension) that fails `node --check`, or is missing,
 * is never exec'd: the error goes to debuglog and `onError`, this image keeps
 * running and the next good version is picked up; `beforeRestart` runs with
 * a deadline. Watchers do not hold the event loop open unless
 * `persistent: true`. Never resolves; rejects with an AbortError on `signal`.
 */
export async function restartOnChange(options: RestartOnChangeOptions = {}): Promise<never> {
  const plan = parseWatchOptions(options, false);
  const o = options;
  const check = o.check ?? true;
  validateBoolean(check, 'options.check');
  if (o.onError !== undefined) validateFunction(o.onError, 'options.onError');
  if (o.beforeRestart !== undefined) validateFunction(o.beforeRestart, 'options.beforeRestart');
  const beforeRestartTimeout = o.beforeRestartTimeout ?? 5000;
  validateDuration(beforeRestartTimeout, 'options.beforeRestartTimeout');
  const execOptions: RestartViaExecOptions = {
    env: o.env, args: o.args, keepFds: o.keepFds, retryInterval: o.retryInterval, signal: o.signal,
    servers: o.servers, drainTimeout: o.drainTimeout,
  };
  // Validate the exec options now rather than at the first change.
  if (o.env !== undefined) validateObject(o.env, 'options.env');
  if (o.args !== undefined) validateArgs(o.args, 'options.args');
  if (o.keepFds !== undefined) validateFdList(o.keepFds, 'options.keepFds', 3);
  if (o.retryInterval !== undefined) validateDuration(o.retryInterval, 'options.retryInterval');

  const report = (err: Error): void => {
    debug('autorestart: not restarting: %s', err.message);
    if (o.onError) {
      try {
        o.onError(err);
      } catch (hookErr) {
        debug('autorestart: onError threw: %s', hookErr);
      }
    }
  };
  const main = mainScript();
  const checkJs = check && main !== undefined && JS_EXTENSIONS.has(extname(main));

  for await (const change of startWatching(plan)) {
    debug('autorestart: change in %j', change.paths);
    let before: Stats | undefined;
    try {
      if (main !== undefined) {
        before = statSync(main);
        // A truncate-then-write caught in a pause longer than the debounce:
        // an empty file is a valid program that would exit at once.
        if (before.size === 0) throw new Error(`${main} is empty; waiting for its content`);
      }
      if (checkJs) await checkSyntax(main!, o.signal);
      // The check took a moment: a write that started meanwhile means the
      // file we checked is not the one we would run. Wait for it to settle.
      if (main !== undefined && before !== undefined) {
        const after = statSync(main);
        if (after.ino !== before.ino || after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
          debug('autorestart: %s changed during the check, waiting for it to settle', main);
          continue;
        }
      }
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      report(err as Error);
      continue;
    }
    if (o.beforeRestart) {
      try {
        await runBeforeRestart(o.beforeRestart, beforeRestartTimeout);
      } catch (err) {
        // Bounded means bounded: a failing or hanging hook must not block
        // an upgrade forever. Report it and restart anyway.
        report(err as Error);
      }
    }
    return restartViaExec(execOptions);
  }
  // Only reachable if the feed ends without an error, which it does not.
  throw abortError(o.signal?.reason);
}

