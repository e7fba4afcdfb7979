/**
 * The first thing the guard of a new image does (guard-start.ts imports this
 * module before any other): take over the restart signals the image before
 * was armed for. The exec reset them to their default action (for SIGHUP
 * and SIGUSR2: terminate), and the program arms restartOnSignal again only
 * when its start reaches that line; a second `kill -HUP` in between would
 * end the service. Held here, a delivery folds into the restart that is
 * starting. A signal is held until the program arms it again (its start
 * may go on long after the image counts as up: a top-level await, an init
 * after listen()), or one preflightTimeout after the exec at the latest (a
 * version that no longer restarts on it). Kept apart from the guard's other
 * imports so the holder is in place as early as a preload can be. Node's
 * own start-up before it is covered by the exec (exec-hold.ts, hold.c): the
 * signals stay blocked across it and a C preload handles them before
 * Node's main; the listener added here replaces that handler.
 */
import { debuglog } from 'node:util';
import { GUARD_ENV } from '../restart-env';

const debug = debuglog('posix-daemon');

export { GUARD_ENV };

/** Signals the guard may hold: never SIGKILL/SIGSTOP, nor one Node itself owns (SIGUSR1: the inspector). */
const HOLDABLE = new Set(['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGUSR2', 'SIGQUIT', 'SIGWINCH', 'SIGPWR', 'SIGURG', 'SIGCONT',
  'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGXCPU', 'SIGXFSZ', 'SIGVTALRM', 'SIGPROF', 'SIGALRM']);

/** Whether the next image's guard can hold `sig` (the exec holds only those too). */
export function isHoldable(sig: string): sig is NodeJS.Signals {
  return HOLDABLE.has(sig);
}

/** The `hold` list of the guard's variable (read, not removed: guard-start.ts removes it). */
function heldSignals(): NodeJS.Signals[] {
  try {
    const v = JSON.parse(process.env[GUARD_ENV] ?? '{}') as { hold?: unknown };
    return Array.isArray(v.hold) ? v.hold.filter((s): s is NodeJS.Signals => typeof s === 'string' && isHoldable(s)) : [];
  } catch {
    return [];
  }
}

// Only the main thread of a guarded image has the variable when this loads
// (the guard removes it right after): a Worker, or an image no restart
// started, holds nothing.
const held = heldSignals();
const holder = (sig: NodeJS.Signals): void => {
  debug('guard: %s while the new image starts: folded into the restart in progress', sig);
};
for (const sig of held) process.on(sig, holder);

/** The signals held until this image is up. */
export function heldRestartSignals(): NodeJS.Signals[] {
  return [...held];
}

/**
 * The program armed `sig` again (restartOnSignal, a monitor's reloadOn):
 * its own listener is in place, so the hold of that signal ends. Called
 * after that listener was added: removing the holder first would leave the
 * signal with no listener, and Node would restore its default action.
 */
export function releaseHeldSignal(sig: NodeJS.Signals): void {
  const i = held.indexOf(sig);
  if (i === -1) return;
  held.splice(i, 1);
  process.removeListener(sig, holder);
  debug('guard: %s armed again by the program: no longer held', sig);
}

/** Every hold ends: the program's own listeners (or none) decide from now on. */
export function releaseHeldSignals(): void {
  for (const sig of held.splice(0)) process.removeListener(sig, holder);
}
