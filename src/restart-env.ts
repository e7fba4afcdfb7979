/**
 * The names of the variables through which a restart hands sockets on: to
 * the next image, and from a preflight's parent to its bridge. Names only,
 * in a module that loads nothing: the guard of a new image reads them to
 * tell whether it needs the socket machinery at all (see guard-start.ts).
 */

/** Our own description of the sockets handed over by restartViaExec (read by sockets.ts). */
export const HANDOFF_ENV = 'POSIX_DAEMON_LISTEN_FDS';
/** In a preflight: `<parent pid>;ready=<initstatus address>;control=<fd>;drain=<ms>[;stdio=piped]` (read by bridge.ts). */
export const BRIDGE_ENV = 'POSIX_DAEMON_BRIDGE';
/** In the image after the exec: `<bridge pid>;control=<fd>;stderr=<fd>[;stdout=<fd>];timeout=<ms>`. */
export const BRIDGED_ENV = 'POSIX_DAEMON_BRIDGED';

/**
 * What the guard of the next image is told: JSON { trigger, signal?, hold?,
 * files, upTimeout, cache? }. Set for every image a restart starts and for
 * every preflight; the guard removes it first (so only its main thread
 * ever sees it).
 */
export const GUARD_ENV = 'POSIX_DAEMON_GUARD';

/** Whether this process was handed sockets by a restart or a preflight's parent. */
export function handedSocketsInEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[HANDOFF_ENV] !== undefined || env[BRIDGE_ENV] !== undefined || env[BRIDGED_ENV] !== undefined;
}
