/**
 * The preflight and the bridge of a restart with `servers`.
 *
 * Three processes meet here, all the same program:
 * - the OLD image (parent): before it drains, it forks the new version as a
 *   child (a plan: fork + execve, no JavaScript in the child) with the
 *   listening sockets at the fd numbers they have, a readiness pipe, a
 *   control pipe and pipes for its stdout and stderr (copied to ours, each
 *   line marked `[preflight PID] `, then `[bridge PID] `). The child is "up" once it took
 *   every socket (or reported ready). If it exits, reports an error or is
 *   not up in time, the restart is refused (the old image never stopped
 *   accepting). Once it is up it accepts on the very same sockets, and the
 *   old image drains and execs, handing on the sockets, the control pipe's
 *   write end and the output pipes' read ends.
 * - the BRIDGE (that child): serves until the control pipe reaches EOF, then
 *   drains and exits. EOF comes when the new image is up, or when every
 *   holder of the write end is gone (the process died): a bridge never
 *   outlives its parent by more than a drain.
 * - the NEW image (same PID as the old): once it took its sockets it closes
 *   the control pipe and reaps the bridge, its child across the exec.
 *
 * In the bridge the library stays quiet without being told (see isBridge()):
 * no sd_notify (NOTIFY_SOCKET is not passed on), no PID-file lock, no
 * watching, no restart triggers.
 */
import { codedError } from '../errors';
import { closeQuietly, isPipeFd, stdioToDevNull } from '../fdfile';
import { Socket } from 'node:net';
import { debuglog } from 'node:util';
import { fork, pipe, setCloexec, waitAsync } from '../posix';
import { readProcStat } from '../procstat';
// initstatus and launch are loaded when first needed: every image a restart
// starts loads this module (the guard preload), and initstatus pulls in
// node:http and node:https.
type Initstatus = typeof import('../initstatus');
type Launch = typeof import('../launch');
const initstatus = (): Initstatus => require('../initstatus') as Initstatus;
const launchApi = (): Launch => require('../launch') as Launch;
import { handedSocketsTaken, handoffValue, HANDOFF_ENV, socketsWereHanded, type PassedSocket } from '../sockets';
import { drain, knownServers, markUp } from '../lifecycle';
import { PIDFILE_ENV } from '../pidfile';
import { EXEC_CHILDREN_ENV } from './zombies';
import { setInBridge, setReadyHook } from '../restart-role';
import { errorLocation } from './where';
import { flushCompileCache } from './compile-cache';
import { BRIDGE_ENV, BRIDGED_ENV } from '../restart-env';

const debug = debuglog('posix-daemon');

export { BRIDGE_ENV, BRIDGED_ENV };
/** How much of a failed preflight's stderr the error carries. */
const STDERR_TAIL = 8 * 1024;

function fields(value: string): { head: string; map: Map<string, string> } {
  const [head, ...rest] = value.split(';');
  const map = new Map<string, string>();
  for (const kv of rest) {
    const i = kv.indexOf('=');
    if (i > 0) map.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return { head, map };
}

/** Reads and removes `name` from the environment (each process reads its own once). */
function takeEnv(name: string): { value: string; head: string; map: Map<string, string> } | undefined {
  const value = process.env[name];
  if (value === undefined) return undefined;
  delete process.env[name];
  return { value, ...fields(value) };
}

function fdField(map: Map<string, string>, key: string): number | undefined {
  const v = map.get(key);
  return v !== undefined && /^[0-9]{1,9}$/.test(v) && Number(v) >= 3 ? Number(v) : undefined;
}

// ---------------------------------------------------------------------------
// "Up": an image (or a bridge) started by a restart with sockets is up once
// it took every handed-over socket, or once it said so (systemd's ready()).

let up = false;
const upWaiters: Array<() => void> = [];

/** Runs `fn` once this image is up (see imageUp). */
export function whenUp(fn: () => void): void {
  if (up) fn();
  else upWaiters.push(fn);
}

/** This image is up: it took its sockets, or reported ready. */
export function imageUp(why: string): void {
  if (up) return;
  up = true;
  debug('autorestart: this image is up (%s)', why);
  markUp(why);
  for (const fn of upWaiters.splice(0)) fn();
}

if (socketsWereHanded()) void handedSocketsTaken().then(() => imageUp('took its sockets'));
// systemd's ready(): this image is up; a bridge does not speak for the service.
setReadyHook(() => {
  imageUp('ready()');
  return !isBridge();
});

// ---------------------------------------------------------------------------
// The bridge's side.

interface BridgeRole { parent: number; ready: string; control: number; drainTimeout: number; piped: boolean }

function readBridgeEnv(): BridgeRole | undefined {
  const found = takeEnv(BRIDGE_ENV);
  if (found === undefined) return undefined;
  const { value, head, map } = found;
  const control = fdField(map, 'control');
  const ready = map.get('ready');
  if (!/^[1-9][0-9]*$/.test(head) || Number(head) !== process.ppid || process.ppid <= 1 || control === undefined ||
    ready === undefined || !/^fd:[0-9]{1,9}$/.test(ready) || !isPipeFd(control)) {
    debug('bridge: %s=%j is not for this process: ignored', BRIDGE_ENV, value);
    return undefined;
  }
  // Ours from here on, and close-on-exec at once: a program this process
  // starts must not hold the control pipe (the bridge would never see its
  // EOF) nor the readiness pipe (it could report "ready" for us).
  setCloexec(control, true);
  const readyFd = Number(ready.slice(3));
  if (readyFd > 2 && isPipeFd(readyFd)) setCloexec(readyFd, true);
  const ms = Number(map.get('drain'));
  return {
    parent: Number(head), ready, control, drainTimeout: Number.isSafeInteger(ms) && ms >= 0 ? ms : 5000,
    piped: map.get('stdio') === 'piped',
  };
}

/** PF_EXITING: set when a process starts to exit, before its fds are closed (and before we are re-parented). */
const PF_EXITING = 0x4;

/** Whether `parent` has died or is dying: we were re-parented, or the control pipe's EOF came from its exit. */
function parentGone(parent: number): boolean {
  if (process.ppid !== parent) return true;
  const st = readProcStat(parent);
  return st === null || st.state === 'Z' || st.state === 'X' || (st.flags & PF_EXITING) !== 0;
}

const bridgeRole = readBridgeEnv();
if (bridgeRole !== undefined) setInBridge();

/**
 * Whether this process is the preflight/bridge of a restart: the next
 * version of the program, started by the running one to check that it
 * comes up, then serving while the running one execs into it. It runs
 * everything a first start runs, so one-time work (migrations, cron jobs)
 * should be skipped when this is true. The library itself needs no such
 * care: here it sends no sd_notify, takes no PID-file lock, watches nothing
 * and arms no restart trigger.
 */
export function isBridge(): boolean {
  return bridgeRole !== undefined;
}

/**
 * What the parent's refusal says of a failed start: the error, and where
 * in the program it comes from (the arrow of a SyntaxError, else the first
 * frame outside Node and this library), so that it names the file.
 */
function startFailure(error: Error | string): string {
  if (typeof error === 'string') return error;
  const what = error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message || error.name || 'Error';
  const loc = errorLocation(error);
  return loc === undefined ? what : `${what} at ${loc.file}:${loc.line}:${loc.column}`;
}

let reported = false;
/** The bridge tells its parent how its start went (once). */
export function reportStart(error?: Error | string): Promise<boolean> {
  if (bridgeRole === undefined || reported) return Promise.resolve(false);
  reported = true;
  return initstatus().report(bridgeRole.ready, error === undefined ? null : startFailure(error));
}

if (bridgeRole !== undefined) {
  const role = bridgeRole;
  debug('bridge: started by %d', process.ppid);
  // Up once every socket handed over is taken (or it called ready()). What
  // it compiled is written first: the new image starts right after.
  whenUp(() => {
    flushCompileCache();
    void reportStart();
  });
  const control = new Socket({ fd: role.control, readable: true, writable: false });
  control.on('data', () => {});
  control.on('error', () => {});
  // EOF: the new image is up (or everyone else is gone). Drain and leave.
  control.once('close', () => {
    // With the parent gone, nobody reads our stderr pipe (nor our stdout
    // pipe, from a parent that made one) any more: a write there (a debug
    // line, the program's own) would fail with EPIPE, an uncaught error.
    // /dev/null first, so that nothing written on the way out changes how
    // this ends.
    if (parentGone(role.parent)) {
      for (const fd of role.piped ? [1, 2] as const : [2] as const) {
        try {
          stdioToDevNull(fd);
        } catch {
          // no /dev/null: the writes fail, the exit below still comes
        }
      }
    }
    debug('bridge: control pipe closed: draining %d server(s) and exiting', knownServers().length);
    void Promise.all(knownServers().map((s) => drain(s, role.drainTimeout))).then(() => process.exit(0));
  });
  control.unref();
}

// ---------------------------------------------------------------------------
// The output of a preflight/bridge: its stdout and stderr are pipes that the
// process that started it (then the image after the exec) copies to its own,
// each line marked, so that the second start's lines are not taken for the
// service's.

const NL = 0x0a;

/**
 * Copies an output pipe of the preflight/bridge to `out` (this process's
 * stdout or stderr), `[preflight PID] ` (once up: `[bridge PID] `) at the
 * start of each line. Nothing is held back: a partial line goes on at once,
 * and the next chunk continues it.
 */
class Forwarder {
  readonly stream: Socket;
  private atLineStart = true;
  /** Everything copied goes here too (the end of a refused preflight's stderr). */
  onText?: (text: string) => void;

  constructor(fd: number, private readonly out: 1 | 2, private label: string) {
    this.stream = new Socket({ fd, readable: true, writable: false });
    this.stream.on('data', (d: Buffer) => this.copy(d));
    // A closed pipe or EBADF ends the copy; nothing to report to anyone.
    this.stream.on('error', () => {});
  }

  relabel(label: string): void {
    this.label = label;
  }

  private copy(d: Buffer): void {
    const prefix = Buffer.from(`[${this.label}] `);
    const parts: Buffer[] = [];
    let start = 0;
    while (start < d.length) {
      if (this.atLineStart) parts.push(prefix);
      const nl = d.indexOf(NL, start);
      const end = nl === -1 ? d.length : nl + 1;
      parts.push(d.subarray(start, end));
      this.atLineStart = nl !== -1;
      start = end;
    }
    (this.out === 1 ? process.stdout : process.stderr).write(Buffer.concat(parts));
    this.onText?.(d.toString('utf8'));
  }

  /** Resolves once what the child wrote before it ended is copied (its end of the pipe closed), or soon. */
  drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.stream.destroyed || this.stream.readableEnded) resolve();
      else {
        this.stream.once('close', () => resolve());
        setTimeout(resolve, 200).unref();
      }
    });
  }

  unref(): void {
    this.stream.unref();
  }

  destroy(): void {
    this.stream.destroy();
  }
}

/** Once the child is gone: what it wrote last is copied, then the copy ends. */
function endForwarders(list: Forwarder[]): void {
  void Promise.all(list.map((f) => f.drained())).then(() => {
    for (const f of list) f.destroy();
  });
}

// ---------------------------------------------------------------------------
// The old image's side: the preflight.

/** A restart refused because the new version did not come up; `code` ERR_RESTART_REFUSED. */
export interface PreflightError extends Error {
  code: 'ERR_RESTART_REFUSED';
  /** The child's PID. */
  pid: number;
  exitCode: number | null;
  signalCode: NodeJS.Signals | null;
  /** The end of what it wrote to stderr. */
  stderr: string;
}

/**
 * A SyntaxError from the preflight's ES module loader carries no place
 * (node prints its arrow only for a fatal error): the program's own files
 * this image has loaded are checked, and the first that does not parse is
 * named. Only on a refusal; a file only the new version imports stays
 * unnamed.
 */
async function locateSyntaxError(): Promise<string | undefined> {
  const { checkFile, isCheckable } = require('./check') as typeof import('./check');
  const { inNodeModules, moduleGraph } = require('./graph') as typeof import('./graph');
  // What this image has loaded (a restart on a signal tracks nothing: a snapshot now).
  const graph = moduleGraph();
  graph.snapshotNow();
  const files = [...graph.files].filter((f) => !inNodeModules(f) && isCheckable(f)).slice(0, 1000);
  for (const f of files) {
    try {
      await checkFile(f);
    } catch (err) {
      const e = err as { path?: string; line?: number; column?: number };
      if (e.path !== undefined && e.line !== undefined) return `${e.path}:${e.line}:${e.column}`;
    }
  }
  return undefined;
}

/** The preflight came up, then ended before the exec (seen by the exec, just before it). */
export function preflightEnded(pid: number): PreflightError {
  return refused(pid, 'ended after it was up, before the exec', undefined, null, null, '');
}

function refused(pid: number, why: string, cause: unknown, exitCode: number | null, signalCode: NodeJS.Signals | null,
  stderr: string): PreflightError {
  // Its stderr was forwarded to ours as it came (marked): printed once, not
  // again in the message; the end of it is `stderr`.
  return codedError(`restart refused: the new version (preflight pid ${pid}) ${why}; the running version goes on`,
    'ERR_RESTART_REFUSED', { pid, exitCode, signalCode, stderr }, { cause }) as PreflightError;
}

/** A bridge that came up: what the exec passes on, or how to give it up. */
export interface Bridge {
  pid: number;
  keepFds: number[];
  env: Record<string, string>;
  /** The restart did not happen after all: the bridge drains, exits and is reaped. */
  abandon(): void;
  /**
   * A fast start (see RestartViaExecOptions.bridgeAfter): the bridge is
   * stopped (SIGSTOP) and only stands by. It takes no CPU from this image's
   * drain and the new image's start, and accepts nothing: connections wait
   * in the kernel's queue for the new image. The new image continues it
   * (SIGCONT) to end it once up, or to serve if its own start fails.
   */
  standBy(): void;
  /** Settles once it has exited and was reaped. */
  exited: Promise<unknown>;
  /** Milliseconds from its start to its report that it is up. */
  upMs: number;
}

export interface PreflightSpec {
  argv: string[];
  env: Record<string, string>;
  sockets: PassedSocket[];
  timeout: number;
  drainTimeout: number;
}

/**
 * Starts the new version as a child with the sockets and waits until it is
 * up. Rejects with a PreflightError (the child then is killed and reaped).
 */
export async function startPreflight(spec: PreflightSpec): Promise<Bridge> {
  const { launch, isExitedError } = launchApi();
  const rx = await initstatus().receiver();
  let controlRead: number | undefined;
  let controlWrite: number | undefined;
  let errRead: number | undefined;
  let errWrite: number | undefined;
  let outRead: number;
  let outWrite: number;
  try {
    [controlRead, controlWrite] = pipe();
    [errRead, errWrite] = pipe();
    [outRead, outWrite] = pipe();
  } catch (err) {
    // EMFILE and the like: nothing of this attempt stays open (a retry follows).
    rx.close();
    for (const fd of [controlRead, controlWrite, errRead, errWrite]) closeQuietly(fd);
    throw err;
  }
  const env: Record<string, string> = { ...spec.env };
  // The bridge must not speak for the service, hold its PID file or think
  // it inherited children.
  for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', PIDFILE_ENV, EXEC_CHILDREN_ENV, BRIDGED_ENV,
    'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) delete env[k];
  const handoff = handoffValue(`P${process.pid}`, spec.sockets);
  if (handoff !== undefined) env[HANDOFF_ENV] = handoff;
  else delete env[HANDOFF_ENV];
  // stdio=piped: its stdout and stderr are pipes to us (see parentGone's use).
  env[BRIDGE_ENV] = `${process.pid};ready=${rx.address};control=${controlRead};drain=${spec.drainTimeout};stdio=piped`;
  let child;
  const startedAt = performance.now();
  try {
    child = launch({
      what: 'preflight',
      receiver: rx,
      spawn: (keep) => fork({
        file: process.execPath, argv0: spec.argv[0], args: spec.argv.slice(1), env,
        stdio: [0, outWrite, errWrite], keepFds: [...keep, controlRead, ...spec.sockets.map((s) => s.fd)],
        // The control pipe's EOF ends a bridge whose parent died, once its
        // event loop runs; the kernel's SIGTERM also reaches one whose start
        // is stuck. It is tied to the forking thread: the main one (restarts
        // run there), which an exec keeps, so the exec sends nothing.
        ...(process.platform === 'linux' ? { deathSignal: 'SIGTERM' as const } : {}),
      }),
    });
  } catch (err) {
    // controlRead and the write ends are closed below, once: a second close
    // could hit an fd number another thread has opened meanwhile.
    closeQuietly(controlWrite);
    closeQuietly(errRead);
    closeQuietly(outRead);
    throw err;
  } finally {
    closeQuietly(controlRead);
    closeQuietly(errWrite);
    closeQuietly(outWrite);
  }
  debug('preflight: pid %d started', child.pid);
  // Its output goes on to ours, marked; the end of its stderr is kept for a refusal.
  let tail = '';
  const errFwd = new Forwarder(errRead, 2, `preflight ${child.pid}`);
  const outFwd = new Forwarder(outRead, 1, `preflight ${child.pid}`);
  errFwd.onText = (text) => {
    tail = (tail + text).slice(-STDERR_TAIL);
  };
  try {
    await child.ready({ timeout: spec.timeout });
  } catch (err) {
    // A child that reported its failure exits right after (the guard does):
    // give it a moment, for its real exit status. Anything else goes now.
    if (!isExitedError(err) && (err as { code?: string }).code !== 'ETIMEDOUT') {
      await Promise.race([child.exited, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    }
    child.kill('SIGKILL');
    const status = await child.exited;
    // What it wrote before it died may still be in the pipes.
    await Promise.all([errFwd.drained(), outFwd.drained()]);
    errFwd.destroy();
    outFwd.destroy();
    closeQuietly(controlWrite);
    // The reported error names its place, except a SyntaxError of the loader.
    const reported = (err as Error).message ?? '';
    const where = /^SyntaxError: /.test(reported) && !/ at \/[^ ]*:\d+:\d+$/.test(reported)
      ? await locateSyntaxError().catch(() => undefined) : undefined;
    const why = isExitedError(err) ? (status?.signal ? `was killed by ${status.signal} before it was up`
      : `exited with code ${status?.exitCode} before it was up`)
      : (err as { code?: string }).code === 'ETIMEDOUT' ? `was not up within ${spec.timeout} ms`
        : `failed at start-up (${reported}${where === undefined ? '' : ` at ${where}`})${status?.exitCode != null ? ` and exited with code ${status.exitCode}` : ''}`;
    throw refused(child.pid, why, err, status?.exitCode ?? null, status?.signal ?? null, tail);
  }
  debug('preflight: pid %d is up', child.pid);
  // From here on its output is forwarded by whoever holds the read ends:
  // us, then the new image.
  errFwd.onText = undefined;
  for (const f of [errFwd, outFwd]) {
    f.relabel(`bridge ${child.pid}`);
    f.unref();
  }
  child.unref();
  let given = false;
  let standingBy = false;
  const bridgedValue = (): string =>
    `${child.pid};control=${controlWrite};stderr=${errRead};stdout=${outRead};timeout=${spec.timeout}${standingBy ? ';standby=1' : ''}`;
  return {
    pid: child.pid,
    exited: child.exited,
    upMs: Math.round(performance.now() - startedAt),
    keepFds: [controlWrite, errRead, outRead],
    get env() {
      return { [BRIDGED_ENV]: bridgedValue() };
    },
    standBy() {
      if (given || standingBy) return;
      standingBy = signalBridge(child.pid, 'SIGSTOP');
      if (standingBy) debug('preflight: pid %d stands by (stopped) across the exec', child.pid);
    },
    abandon() {
      if (given) return;
      given = true;
      debug('preflight: restart abandoned: bridge %d drains and exits', child.pid);
      // Stopped, it would never see the EOF.
      if (standingBy) signalBridge(child.pid, 'SIGCONT');
      closeQuietly(controlWrite);
      void child.exited.then(() => endForwarders([errFwd, outFwd]));
    },
  };
}

/** Signals our own bridge child (not reaped yet: its PID cannot have been reused); false if it is gone. */
function signalBridge(pid: number, signal: 'SIGSTOP' | 'SIGCONT'): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    debug('bridge: %s to %d: %s', signal, pid, (err as Error).message);
    return false;
  }
}

// ---------------------------------------------------------------------------
// The new image's side: end the bridge once this image is up.

interface Bridged { pid: number; control: number; stderr: number; stdout?: number; timeout: number; standby: boolean }

function readBridgedEnv(): Bridged | undefined {
  const taken = takeEnv(BRIDGED_ENV);
  if (taken === undefined) return undefined;
  const { value, head, map } = taken;
  const control = fdField(map, 'control');
  const stderr = fdField(map, 'stderr');
  // No stdout pipe: an image of an older version started that bridge with ours.
  const stdout = fdField(map, 'stdout');
  const pid = Number(head);
  const timeout = Number(map.get('timeout'));
  // Untrusted: only our own child, only pipes.
  if (!/^[1-9][0-9]*$/.test(head) || readProcStat(pid)?.ppid !== process.pid || control === undefined || stderr === undefined ||
    !isPipeFd(control) || !isPipeFd(stderr) || (stdout !== undefined && !isPipeFd(stdout))) {
    debug('bridge: %s=%j is not for this process: ignored', BRIDGED_ENV, value);
    return undefined;
  }
  // Close-on-exec, as they were in the image before: a program this image
  // starts must not keep the bridge's control pipe open (the bridge, the
  // old code, would serve for as long as it runs) nor its stderr pipe.
  setCloexec(control, true);
  setCloexec(stderr, true);
  if (stdout !== undefined) setCloexec(stdout, true);
  return { pid, control, stderr, stdout, timeout: Number.isSafeInteger(timeout) && timeout > 0 ? timeout : 10_000,
    standby: map.get('standby') === '1' };
}

/** The bridge this image was started over and has not ended yet. */
let bridged: (Bridged & { hold: boolean; forward: Forwarder[] }) | undefined;

/** The PID of the bridge this image has to end, if any (not a child to hand over as an orphan). */
export function pendingBridgePid(): number | undefined {
  return bridged?.pid;
}

/**
 * What an exec from an image still waiting to end its bridge (a failed
 * start) passes on, so the next image ends it.
 */
export function pendingBridgeHandoff(): { keepFds: number[]; env: Record<string, string> } | undefined {
  if (bridged === undefined) return undefined;
  const b = bridged;
  const stdout = b.stdout === undefined ? '' : `;stdout=${b.stdout}`;
  return {
    keepFds: [b.control, b.stderr, ...(b.stdout === undefined ? [] : [b.stdout])],
    env: { [BRIDGED_ENV]: `${b.pid};control=${b.control};stderr=${b.stderr}${stdout};timeout=${b.timeout}${b.standby ? ';standby=1' : ''}` },
  };
}

/** A failed start: the bridge keeps serving (one standing by serves now) until a next image is up. */
export function holdBridge(): void {
  if (bridged === undefined) return;
  bridged.hold = true;
  if (bridged.standby) {
    bridged.standby = false;
    debug('bridge: %d was standing by: it serves while this image waits for a fix', bridged.pid);
    signalBridge(bridged.pid, 'SIGCONT');
  }
}

function endBridge(why: string): void {
  const b = bridged;
  if (b === undefined || b.hold) return;
  bridged = undefined;
  debug('bridge: %s: ending bridge %d', why, b.pid);
  closeQuietly(b.control);
  // One standing by goes on to see the EOF, drain what it accepted before
  // it stopped, and exit: continued after this image has been through one
  // poll phase, in which it accepts what waited in the queue meanwhile
  // (continued at once, the bridge raced it for those connections).
  if (b.standby) setImmediate(() => setImmediate(() => signalBridge(b.pid, 'SIGCONT')));
  waitAsync(b.pid, { ref: false }).then((r) => {
    debug('bridge: %d reaped (%o)', b.pid, { code: r.exitCode, signal: r.signal });
    endForwarders(b.forward);
  }, (err: Error) => debug('bridge: cannot wait for %d: %s', b.pid, err.message));
}

const found = readBridgedEnv();
if (found !== undefined) {
  const forward = [new Forwarder(found.stderr, 2, `bridge ${found.pid}`)];
  if (found.stdout !== undefined) forward.push(new Forwarder(found.stdout, 1, `bridge ${found.pid}`));
  for (const f of forward) f.unref();
  bridged = { ...found, hold: false, forward };
  whenUp(() => endBridge('this image is up'));
  // A new version that no longer listens on every socket would never end
  // the bridge: it ends one preflight timeout after the exec at the latest.
  setTimeout(() => endBridge('timeout'), found.timeout).unref();
}
