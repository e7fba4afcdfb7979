/**
 * The preload of an image a restart started (see guard-start.ts). A preload
 * runs in every worker_threads Worker too, and a Worker is not the image:
 * its start-up failure is its own ('error' on the Worker, exit code 1), and
 * it must not hold signals, watch files or speak to systemd. Only the main
 * thread loads the guard.
 *
 * The main thread is the one that still has the guard's variable: a restart
 * (and a preflight's parent) always sets it, and the guard removes it as its
 * first act, before the program can make a Worker, whose environment is a
 * copy of (or shares) the main thread's. Asking `worker_threads` instead
 * would load it: 3.5 ms of every restart, measured.
 */
import { GUARD_ENV } from '../restart-env';
import { restoreHoldEnv, restoreNodeOptions } from './guard-env';

if (process.env[GUARD_ENV] !== undefined) {
  // First: the program's own NODE_OPTIONS (and LD_PRELOAD, if hold.c could
  // not put it back), before anything can start a child.
  restoreNodeOptions();
  restoreHoldEnv();
  require('./guard-start');
}
