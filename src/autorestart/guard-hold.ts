/**
 * The first thing the guard of a new image does (guard.ts imports this
 * module before any other): take over the restart signals the image before
 * was armed for. The exec reset them to their default action (for SIGHUP
 * and SIGUSR2: terminate), and the program arms restartOnSignal again only
 * when its start reaches that line; a second `kill -HUP` in between would
 * end the service. Held here, a delivery folds into the restart that is
 * starting. Kept apart from the guard's other imports so the holder is in
 * place as early as a preload can be: what is left is Node's own start-up,
 * which resets every signal's mask and disposition before any JavaScript
 * runs (nothing from outside can keep a signal blocked or ignored there).
 */
import { debuglog } from 'node:util';

const debug = debuglog('posix-daemon');

/** What the guard is told: JSON { trigger, signal?, hold?, files, envFiles }. */
export const GUARD_ENV = 'POSIX_DAEMON_GUARD';

/** Signals the guard may hold: never SIGKILL/SIGSTOP, nor one Node itself owns (SIGUSR1: the inspector). */
const HOLDABLE = new Set(['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGUSR2', 'SIGQUIT', 'SIGWINCH', 'SIGPWR', 'SIGURG', 'SIGCONT',
  'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGXCPU', 'SIGXFSZ', 'SIGVTALRM', 'SIGPROF', 'SIGALRM']);

/** The `hold` list of the guard's variable (read, not removed: guard.ts removes it). */
function heldSignals(): NodeJS.Signals[] {
  try {
    const v = JSON.parse(process.env[GUARD_ENV] ?? '{}') as { hold?: unknown };
    return Array.isArray(v.hold) ? v.hold.filter((s): s is NodeJS.Signals => typeof s === 'string' && HOLDABLE.has(s)) : [];
  } catch {
    return [];
  }
}

const held = heldSignals();
const holder = (sig: NodeJS.Signals): void => {
  debug('guard: %s while the new image starts: folded into the restart in progress', sig);
};
for (const sig of held) process.on(sig, holder);

/** The signals held until this image is up. */
export function heldRestartSignals(): NodeJS.Signals[] {
  return [...held];
}

/** The program's own listeners (restartOnSignal again, or none) decide from now on. */
export function releaseHeldSignals(): void {
  for (const sig of held.splice(0)) process.removeListener(sig, holder);
}
