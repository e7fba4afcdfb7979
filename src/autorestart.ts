/**
 * posix-daemon/autorestart: restart a Node program in place, under the same
 * PID, when its files change. A port of the Go `autorestart` package on the
 * native `execve`, made safe for Node:
 *
 * - the whole program is reproduced: node binary, `process.execArgv`, main
 *   script, arguments and the environment as it is *now*;
 * - a change is only acted on once the file has stopped changing, and a
 *   JavaScript entry that does not parse is never exec'd;
 * - child zombies left by the previous image are reaped with pidfds, and only
 *   the PIDs that image handed over, so a `child_process` child of the new
 *   image keeps its exit status.
 *
 * One concern per file in ./autorestart/: exec (the restart itself), watch
 * (file events and settling), check (syntax), on-change (restartOnChange),
 * zombies, signals. This file is the public face (and keeps the
 * `dist/autorestart.js` path that package.json exports).
 */
export { restartViaExec, isRefusal } from './autorestart/exec';
export { isBridge } from './autorestart/bridge';
export type { PreflightError } from './autorestart/bridge';
export type { RestartViaExecOptions } from './autorestart/exec';
export type { ChangeEvent, NotifyOnChangeOptions } from './autorestart/watch';
export type { RestartOnChangeOptions } from './autorestart/on-change';
export { EXEC_CHILDREN_ENV, cleanUpChildZombies, cleanUpChildZombiesQuietly } from './autorestart/zombies';
export type { CleanUpChildZombiesOptions, EscalationStep, ReapedChild } from './autorestart/zombies';
export { notifyOnSighup, notifyOnSigterm, restartOnSignal } from './autorestart/signals';
export type { NotifyOnSignalOptions } from './autorestart/signals';
export { listen, listenFds, socketName } from './sockets';
export type { InheritedSocket, ServerHandoffEntry } from './sockets';

// The file watcher and restartOnChange (watch, graph, check, on-change:
// a fifth of the library) are loaded when first called, not with the
// library: a service that restarts on a signal never uses them, and every
// image a restart starts would pay for loading them (measured: 6 ms of
// 40 on Node 20).
import type { ChangeEvent, NotifyOnChangeOptions } from './autorestart/watch';
import type { RestartOnChangeOptions } from './autorestart/on-change';

/** {@inheritDoc autorestart/watch!notifyOnChange} */
export function notifyOnChange(options?: NotifyOnChangeOptions): AsyncIterableIterator<ChangeEvent> {
  return (require('./autorestart/watch') as typeof import('./autorestart/watch')).notifyOnChange(options);
}

/** {@inheritDoc autorestart/on-change!restartOnChange} */
export function restartOnChange(options?: RestartOnChangeOptions): Promise<never> {
  return (require('./autorestart/on-change') as typeof import('./autorestart/on-change')).restartOnChange(options);
}
