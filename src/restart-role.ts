/**
 * What the rest of the library needs to know of a restart in progress,
 * without loading the restart machinery (autorestart/bridge.ts), which
 * takes LISTEN_FDS from the environment as it loads: a program that only
 * notifies systemd or locks a PID file must not pay for it. bridge.ts sets
 * both when it loads, which it does in every image a restart starts (the
 * guard preload loads it).
 *
 * What `ready()` (posix-daemon/systemd) means to a restart in progress:
 * this image is up, so the bridge it was started over may end; in a
 * restart's bridge, the parent is told and systemd is not. The restart
 * machinery (autorestart/bridge.ts) sets the hook when it loads, in every
 * image a restart starts. A hook, not an import: systemd.ts must not load
 * that machinery, which takes LISTEN_FDS from the environment as it loads,
 * into a program that only sends notifications.
 */
type ReadyHook = () => boolean;

let hook: ReadyHook | undefined;

/** Set by autorestart/bridge.ts: marks this image up; false when systemd must not be told (a bridge). */
export function setReadyHook(fn: ReadyHook): void {
  hook = fn;
}

/** Called by ready(): whether READY=1 may go to systemd. */
export function readyReached(): boolean {
  return hook === undefined ? true : hook();
}

let bridge = false;

/** Set by autorestart/bridge.ts in a restart's preflight/bridge. */
export function setInBridge(): void {
  bridge = true;
}

/** Whether this process is a restart's preflight/bridge (see isBridge() in posix-daemon/autorestart). */
export function inBridge(): boolean {
  return bridge;
}
