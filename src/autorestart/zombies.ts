/**
 * cleanUpChildZombies: reap the children the previous image left behind,
 * and only those.
 */
import { readdirSync } from 'node:fs';
import { debuglog } from 'node:util';
import { isMainThread } from '../main-thread';
import { childPids, waitAsync } from '../posix';
import { readProcStat } from '../procstat';
import { validateArray, validateBoolean, validateDuration, validateFunction, validateObject, validateOptionKeys, toSignalNumber } from '../validators';

const debug = debuglog('posix-daemon');


/**
 * Environment variable through which an image tells the next one which
 * children it had at exec time. Only those PIDs are ever touched by
 * cleanUpChildZombies().
 */
export const EXEC_CHILDREN_ENV = 'POSIX_DAEMON_EXEC_CHILDREN';

/**
 * When this image started, in clock ticks since boot (the unit of
 * /proc/PID/stat's starttime); undefined without /proc. The main thread's
 * starttime is the fork of the process, long before our exec; but Node
 * creates its platform worker threads during start-up, right after the
 * execve: the oldest of them marks the image's start in the very unit and
 * clock of a child's starttime. Any child this image starts is born after
 * them, so `born < start` is never true for it.
 */
function imageStartTicks(): number | undefined {
  let start: number | undefined;
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      if (Number(tid) === process.pid) continue;
      const t = startTicks(`self/task/${tid}`);
      if (t !== undefined && (start === undefined || t < start)) start = t;
    }
  } catch {
    return undefined;
  }
  return start;
}

/** starttime (field 22) of /proc/PID/stat, in clock ticks since boot. */
function startTicks(pid: number | string): number | undefined {
  return readProcStat(pid)?.startTicks;
}

/**
 * The children this image may reap: the PIDs the previous image handed over
 * that are (a) our children right now, when the module loads, and (b) older
 * than this image. The variable is untrusted (anyone can start a program
 * with it set): (a) drops strangers, (b) drops a child this image started
 * before loading the module. A child started after the load is not in the
 * set at all. So "never a child this image started" holds whatever the
 * environment says. Without /proc (macOS), (b) cannot be checked and only
 * (a) applies. Cost of (b): starttime has a resolution of one clock tick
 * (10 ms), so a child the previous image started within the same tick as
 * this image's start-up is not reaped (it stays a zombie until this process
 * exits): the safe side of the doubt.
 */
function claimInherited(list: string): Set<number> {
  const listed = new Set<number>();
  for (const s of list.split(',')) if (/^[1-9]\d{0,9}$/.test(s)) listed.add(Number(s));
  const out = new Set<number>();
  if (listed.size === 0) return out;
  const start = imageStartTicks();
  for (const pid of childPids()) {
    if (!listed.has(pid)) continue;
    if (start !== undefined) {
      const born = startTicks(pid);
      if (born === undefined || !(born < start)) {
        debug('autorestart: child %d is listed but not older than this image: not ours to reap', pid);
        continue;
      }
    }
    out.add(pid);
  }
  return out;
}

// Read the hand-over once, as early as possible, and remove it from the
// environment: children this image starts must not inherit it, and the next
// exec writes a fresh list anyway. Workers get a copy of process.env, so only
// the main thread consumes it.
let inherited = new Set<number>();
if (process.env[EXEC_CHILDREN_ENV] !== undefined && isMainThread()) {
  inherited = claimInherited(String(process.env[EXEC_CHILDREN_ENV]));
  delete process.env[EXEC_CHILDREN_ENV];
  debug('autorestart: inherited children from the previous image: %j', [...inherited]);
}

/**
 * Takes `pids` out of the children inherited from the previous image (for
 * a selfMonitor adopting its workers: cleanUpChildZombies must not reap
 * them). Returns those that were there: only they passed the checks above
 * (our children when this image loaded, and older than it).
 */
export function takeInheritedChildren(pids: number[]): number[] {
  const out = pids.filter((p) => inherited.has(p));
  for (const p of out) inherited.delete(p);
  return out;
}

/** One child reaped by cleanUpChildZombies. */
export interface ReapedChild {
  pid: number;
  /** Exit code when it exited normally, else null. */
  exitCode: number | null;
  /** Signal that killed it, like 'SIGINT', else null. */
  signal: NodeJS.Signals | null;
}

/** One escalation step of cleanUpChildZombies. */
export interface EscalationStep {
  /** Milliseconds after the previous step (or the start) to send `signal`. */
  after: number;
  signal: NodeJS.Signals | number;
}

/** Options of cleanUpChildZombies. */
export interface CleanUpChildZombiesOptions {
  /** Log nothing; default false. */
  quiet?: boolean;
  /** Where log lines go; default stderr. */
  log?: (line: string) => void;
  /** Signals for children that do not exit; default 5 s SIGHUP, +120 s SIGINT, +60 s SIGTERM (as in Go). */
  escalation?: EscalationStep[];
  /** Keep the event loop alive until every child is reaped; default false. */
  ref?: boolean;
}

const LOG_PREFIX = '[autorestart.CleanUpZombies]';
const DEFAULT_ESCALATION: EscalationStep[] = [
  { after: 5_000, signal: 'SIGHUP' },
  { after: 120_000, signal: 'SIGINT' },
  { after: 60_000, signal: 'SIGTERM' },
];

async function reapOne(pid: number, steps: EscalationStep[], log: (line: string) => void,
  ref: boolean): Promise<ReapedChild | null> {
  let timer: NodeJS.Timeout | undefined;
  let step = 0;
  let elapsed = 0;
  const schedule = (): void => {
    if (step >= steps.length) return;
    const { after, signal } = steps[step++];
    elapsed += after;
    const at = elapsed;
    timer = setTimeout(() => {
      log(`${LOG_PREFIX} child ${pid} still running after ${at} ms, sending ${signal}`);
      try {
        // Safe: an unreaped child keeps its PID, so this cannot hit a stranger.
        process.kill(pid, signal);
      } catch (err) {
        log(`${LOG_PREFIX} kill(${pid}, ${signal}) failed: ${(err as Error).message}`);
      }
      schedule();
    }, after);
    if (!ref) timer.unref();
  };
  log(`${LOG_PREFIX} waiting for child ${pid}`);
  schedule();
  try {
    const r = await waitAsync(pid, { ref });
    const how = r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`;
    log(`${LOG_PREFIX} reaped child ${pid} (${how})`);
    return { pid, exitCode: r.exitCode, signal: r.signal };
  } catch (err) {
    log(`${LOG_PREFIX} cannot wait for ${pid}: ${(err as Error).message}`);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reaps the children the previous image left behind (the PIDs it handed over
 * through restartViaExec; never a child this image started itself). Each is
 * waited on with a pidfd; if one is still running it gets SIGHUP after 5 s,
 * SIGINT 120 s later and SIGTERM 60 s after that (`escalation`). Logs to
 * stderr with the prefix `[autorestart.CleanUpZombies]` unless `quiet`.
 * Resolves with what was reaped. The waits and timers are unref'd unless
 * `ref: true`: cleanup never keeps a finished program alive (its orphans then
 * go to init, which reaps them). Each PID is handled by one call only.
 */
export async function cleanUpChildZombies(options: CleanUpChildZombiesOptions = {}): Promise<ReapedChild[]> {
  validateObject(options as unknown, 'options');
  validateOptionKeys(options, 'options', ['quiet', 'log', 'escalation', 'ref']);
  const { quiet = false, log, escalation = DEFAULT_ESCALATION, ref = false } = options;
  validateBoolean(quiet, 'options.quiet');
  if (log !== undefined) validateFunction(log, 'options.log');
  validateBoolean(ref, 'options.ref');
  validateArray(escalation, 'options.escalation');
  escalation.forEach((s, i) => {
    validateObject(s, `options.escalation[${i}]`);
    validateDuration(s.after, `options.escalation[${i}].after`);
    toSignalNumber(s.signal, `options.escalation[${i}].signal`);
  });
  const write = quiet ? (): void => {} : (log ?? ((line: string): void => { process.stderr.write(`${line}\n`); }));
  // Intersect with the children we have now: a PID in the list that is not
  // our child (a tampered variable) is ignored rather than signalled.
  const current = new Set(childPids());
  const pids = [...inherited].filter((p) => current.has(p));
  inherited.clear();  // claimed: a second call must not wait on them again
  if (pids.length === 0) {
    // The usual case (every first start): a no-op, as the README says, and
    // a silent one: a line on stderr at every start is noise.
    debug('autorestart: no children inherited from a previous image');
    return [];
  }
  const steps = escalation.map((s) => ({ ...s }));
  const results = await Promise.all(pids.map((pid) => reapOne(pid, steps, write, ref)));
  return results.filter((r): r is ReapedChild => r !== null);
}

/** cleanUpChildZombies({ quiet: true }). */
export function cleanUpChildZombiesQuietly(): Promise<ReapedChild[]> {
  return cleanUpChildZombies({ quiet: true });
}
