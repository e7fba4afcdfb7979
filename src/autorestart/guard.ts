/**
 * The preload of an image a restart started (see guard-start.ts). A preload
 * runs in every worker_threads Worker too, and a Worker is not the image:
 * its start-up failure is its own ('error' on the Worker, exit code 1), and
 * it must not hold signals, watch files or speak to systemd. Only the main
 * thread loads the guard.
 */
import { isMainThread } from 'node:worker_threads';
import { restoreHoldEnv, restoreNodeOptions } from './guard-env';

if (isMainThread) {
  // First: the program's own NODE_OPTIONS (and LD_PRELOAD, if hold.c could
  // not put it back), before anything can start a child.
  restoreNodeOptions();
  restoreHoldEnv();
  require('./guard-start');
}
