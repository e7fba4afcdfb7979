/**
 * The restart signals of the next image, held from its first instruction
 * (see native/hold.c). The exec leaves them blocked, so one sent during the
 * exec or Node's start-up stays pending; hold.c, preloaded into that one
 * exec, gives them a handler that folds them into the restart and unblocks
 * them before Node's main; the guard's listener (guard-hold.ts) takes over
 * once JavaScript runs. Without this, a second `kill -USR2` in the 80-240 ms
 * of Node's start-up met the default action and ended the service.
 */
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { debuglog } from 'node:util';
import { companionPath } from '../native';
import { HOLD_BASE, HOLD_ENV } from './guard-env';

const debug = debuglog('posix-daemon');

/** The preload, built next to the addon for its libc (Linux only). */
const HOLD_PATH = companionPath(HOLD_BASE, '.so');

let usable: boolean | undefined;
/** LD_PRELOAD cannot name a path with a space or a colon (its separators). */
function holdUsable(): boolean {
  usable ??= process.platform === 'linux' && !/[ :]/.test(HOLD_PATH) && existsSync(HOLD_PATH);
  if (!usable) debug('autorestart: no signal hold from the exec on (%s)', HOLD_PATH);
  return usable;
}

/**
 * Prepares `env` (the next image's) to hold `signals` from its first
 * instruction, and returns the signals the exec must leave blocked. None
 * when the preload cannot be used: then nothing stays blocked either (Node
 * would unblock it into the default action anyway).
 */
export function holdAcrossExec(env: Record<string, string>, signals: readonly NodeJS.Signals[]): NodeJS.Signals[] {
  if (signals.length === 0 || !holdUsable()) return [];
  const numbers = signals.map((s) => (osConstants.signals as Record<string, number>)[s]);
  env[HOLD_ENV] = numbers.join(',');
  // First, before the program's own preloads; hold.c puts theirs back.
  env.LD_PRELOAD = env.LD_PRELOAD === undefined ? HOLD_PATH : `${HOLD_PATH} ${env.LD_PRELOAD}`;
  return [...signals];
}
