/**
 * notifyOnSighup / notifyOnSigterm, and restartOnSignal.
 */
import { on } from 'node:events';
import { debuglog } from 'node:util';
import { abortError } from '../errors';
import {
  toCatchableSignal, validateAbortSignal, validateChildProcessAllowed, validateExecOptions, validateFunction,
  validateObject, validateOptionKeys,
} from '../validators';
import { armRestartSignal, isRefusal, never, report, RESTART_VIA_EXEC_KEYS, restartWith, type RestartViaExecOptions } from './exec';
import { isBridge } from './bridge';

const debug = debuglog('posix-daemon');

/** Options of notifyOnSighup / notifyOnSigterm. */
export interface NotifyOnSignalOptions {
  /** Ends the iteration with an AbortError and removes the listener. */
  signal?: AbortSignal;
}

function notifyOnSignal(name: 'SIGHUP' | 'SIGTERM', options: NotifyOnSignalOptions): AsyncIterableIterator<NodeJS.Signals> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['signal']);
  validateAbortSignal(options.signal, 'options.signal');
  // events.on installs the listener now, not at the first next(): from here
  // on the signal no longer terminates the process. It also ends the
  // iteration with an AbortError on `signal` and removes the listener on
  // return(). Only the shape of the values differs: [name] -> name.
  let events: AsyncIterableIterator<unknown[]>;
  try {
    events = on(process, name, { signal: options.signal }) as AsyncIterableIterator<unknown[]>;
  } catch (err) {
    // Already aborted: events.on throws at once; we report it at next().
    return (async function* failed(): AsyncGenerator<NodeJS.Signals> { throw err; })();
  }
  const it: AsyncIterableIterator<NodeJS.Signals> = {
    async next() {
      const r = await events.next();
      return r.done ? { value: undefined, done: true } : { value: r.value[0] as NodeJS.Signals, done: false };
    },
    async return() {
      await events.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}

/**
 * An async iterable of SIGHUP deliveries. While it is being iterated SIGHUP
 * no longer terminates the process; ending the iteration removes the
 * listener.
 */
export function notifyOnSighup(options: NotifyOnSignalOptions = {}): AsyncIterableIterator<NodeJS.Signals> {
  return notifyOnSignal('SIGHUP', options);
}

/**
 * An async iterable of SIGTERM deliveries. While it is being iterated SIGTERM
 * no longer terminates the process; ending the iteration removes the
 * listener.
 */
export function notifyOnSigterm(options: NotifyOnSignalOptions = {}): AsyncIterableIterator<NodeJS.Signals> {
  return notifyOnSignal('SIGTERM', options);
}

/**
 * Restarts via exec when `signal` (default SIGUSR2; SIGHUP is the other
 * classic) arrives: the same path as restartOnChange, `servers` handoff
 * included. From the call on, the signal no longer terminates the process,
 * and a repeated signal while the restart is in progress (drain, retries)
 * is folded into it: one restart. Rejects with an AbortError if
 * `options.signal` aborts first.
 */
export async function restartOnSignal(signal: NodeJS.Signals = 'SIGUSR2',
  options: RestartViaExecOptions = {}): Promise<never> {
  const name = toCatchableSignal(signal, 'signal');
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', RESTART_VIA_EXEC_KEYS);
  // Now, not when the signal comes: the same check restartViaExec makes.
  validateExecOptions(options);
  validateChildProcessAllowed(process.execPath);
  const abort = options.signal;
  if (abort?.aborted) throw abortError(abort.reason);
  if (options.onError !== undefined) validateFunction(options.onError, 'options.onError');
  if (isBridge()) return never('restartOnSignal', options.signal);
  // process.on, not once: the listener stays until this call settles, so a
  // second delivery during the drain finds it (with once, it would hit the
  // default action and kill the process with requests in flight).
  let received = false;
  let wake: (() => void) | undefined;
  const onSignal = (): void => {
    if (received) {
      debug('autorestart: %s received again: already restarting', name);
      return;
    }
    received = true;
    wake?.();
  };
  process.on(name, onSignal);
  armRestartSignal(name, true);
  try {
    for (;;) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(abortError(abort?.reason));
        if (abort?.aborted) onAbort();
        abort?.addEventListener('abort', onAbort, { once: true });
        wake = () => {
          abort?.removeEventListener('abort', onAbort);
          resolve();
        };
        if (received) wake();
      });
      debug('autorestart: %s received, restarting', name);
      try {
        return await restartWith(options, { trigger: { trigger: 'signal', signal: name } });
      } catch (err) {
        // Refused (the new version did not come up): this version goes on
        // and the next signal tries again.
        if (!isRefusal(err)) throw err;
        report(options.onError, err as Error);
        received = false;
        wake = undefined;
      }
    }
  } finally {
    // Reached only when no exec happened (abort, invalid options).
    process.removeListener(name, onSignal);
    armRestartSignal(name, false);
  }
}
