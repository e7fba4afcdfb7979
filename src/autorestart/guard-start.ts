/**
 * The guard of an image a restart started, on its main thread (guard.ts
 * loads it): preloaded with `--require` in NODE_OPTIONS (a CommonJS file,
 * so it runs before the main script whatever its module type, on every
 * supported Node), and invisible to the program: guard.ts puts the
 * program's own NODE_OPTIONS back, and this removes its variable from
 * `process.env`.
 *
 * Why a preload: the failure it catches is the program's own start-up (a
 * throw at the top of an imported module, a rejected top-level await, an
 * early `process.exit`). Only code that runs before the program can see
 * those without the program's help, and only code in the same process
 * keeps the PID and the handed-over sockets alive. A supervising parent
 * would be a second process; an `--import` preload would not run before a
 * CommonJS main on Node 18.
 *
 * Until the image is up (it took every handed-over socket; with none, its
 * main module has been evaluated), an uncaught exception, an unhandled
 * rejection or a process.exit() with a non-zero code does not end the
 * process (process.exit(0), and a program that simply ends, do):
 * - in a preflight/bridge, the failure is reported to the parent (which
 *   refuses the restart) and the process exits;
 * - in the image after the exec, the error is printed ("the new code failed
 *   at start-up: ...; waiting for a change"), systemd's reload completes
 *   with a STATUS= saying so, the sockets stay open (a bridge keeps
 *   serving), and the program's files (those of this start and of the
 *   image before) are watched: the next change restarts into the fix; the
 *   restart signal, when one started this image, too.
 * Once up, the guard is gone: a later crash is a crash. Except in an image
 * restartOnChange started (development: nodemon's loop): there the guard
 * stays for the image's whole life, and a crash at any time (an uncaught
 * exception or rejection, a process.exit() with a non-zero code) is
 * printed ("the new code crashed: ...; waiting for a change") and waited
 * out the same way, with the sockets the program's servers took kept and
 * handed to the fix. The dev loop never ends on the program's account.
 */
// First: the restart signals are held before anything else is loaded.
import { GUARD_ENV, heldRestartSignals, releaseHeldSignals as releaseSignals } from './guard-hold';
import { debuglog } from 'node:util';
import { GUARD_PATH } from './guard-env';
import { handedSocketsInEnv } from '../restart-env';
import type { GuardTrigger } from './exec';

const debug = debuglog('posix-daemon');

/**
 * What the guard loads before the program, it loads at the cost of every
 * restart's first line: only what the image cannot start without. Sockets
 * handed over (a restart with servers, a preflight) need the machinery that
 * lets a plain `server.listen()` take them, in place before the program's
 * first line: the guard loads it (the program loads the same library
 * anyway, from the module cache then). An image without sockets loads
 * nothing more; a failed start loads what it needs when it fails.
 */
type Bridge = typeof import('./bridge');
type Sockets = typeof import('../sockets');
let bridge: Bridge | undefined;
let sockets: Sockets | undefined;
const isBridge = (): boolean => bridge?.isBridge() ?? false;
const socketsWereHanded = (): boolean => sockets?.socketsWereHanded() ?? false;

type GuardInfo = GuardTrigger & { files?: string[]; upTimeout: number; cache?: string };

/** An image that an older release restarted has the guard on its command line, not in NODE_OPTIONS. */
function hideFromExecArgv(): void {
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--require' && argv[i + 1] === GUARD_PATH) {
      argv.splice(i, 2);
      return;
    }
    if (argv[i] === `--require=${GUARD_PATH}` || (argv[i] === '-r' && argv[i + 1] === GUARD_PATH)) {
      argv.splice(i, argv[i] === '-r' ? 2 : 1);
      return;
    }
  }
}

/** The restart's preflightTimeout when the variable has none. */
const DEFAULT_UP_TIMEOUT = 10_000;

/**
 * A signal restartOnSignal can wait for, by its name (the variable comes
 * from the environment: exec.ts writes names). restartOnSignal checks it
 * again when a failed start waits for it; `node:os` is not loaded for this.
 */
function catchable(sig: unknown): sig is NodeJS.Signals {
  return typeof sig === 'string' && /^SIG[A-Z0-9]+$/.test(sig) && sig !== 'SIGKILL' && sig !== 'SIGSTOP';
}

function readInfo(): GuardInfo {
  const raw = process.env[GUARD_ENV];
  delete process.env[GUARD_ENV];
  try {
    const v = JSON.parse(raw ?? '{}') as Record<string, unknown>;
    const files = Array.isArray(v.files) ? v.files.filter((f): f is string => typeof f === 'string' && f.startsWith('/')) : [];
    const upTimeout = Number.isSafeInteger(v.upTimeout) && (v.upTimeout as number) > 0 ? v.upTimeout as number : DEFAULT_UP_TIMEOUT;
    const cache = typeof v.cache === 'string' && v.cache.startsWith('/') ? v.cache : undefined;
    if (v.trigger === 'signal' && catchable(v.signal)) return { trigger: 'signal', signal: v.signal, files, upTimeout, cache };
    return { trigger: v.trigger === 'change' ? 'change' : 'call', files, upTimeout, cache };
  } catch {
    return { trigger: 'call', files: [], upTimeout: DEFAULT_UP_TIMEOUT };
  }
}

hideFromExecArgv();
const info = readInfo();
// Before anything else is compiled: the library and the program.
if (info.cache !== undefined) (require('./compile-cache') as typeof import('./compile-cache')).enableCompileCache(info.cache);
if (handedSocketsInEnv()) {
  bridge = require('./bridge') as Bridge;
  sockets = require('../sockets') as Sockets;
}
// What a first start of this image saw: what a restart from a failed start
// execs again (the failed program may have changed process.env).
const startEnv = { ...process.env };
const startArgs = process.argv.slice(2);

let up = false;
let failed = false;
/**
 * restartOnChange started this image: the guard stays once it is up (a
 * bridge's parent decides for it, so not in a bridge). A signal or a call
 * is production: there a crash after the start is the service manager's.
 */
const forLife = info.trigger === 'change' && !isBridge();
const realExit = process.exit;
/** Thrown by the guarded process.exit to stop the code that called it. */
const STOP = Symbol('posix-daemon guard: process.exit() before the image was up');

// The restart signals the image before was armed for are held (see
// guard-hold.ts) until the program arms each again, and at the latest
// until the up timeout below; not until the image is up: a program may
// arm its restart signal long after (an ES main's top-level await counts
// as evaluated at once on Node 22 and later).
const held = heldRestartSignals();

function markUp(why: string): void {
  if (up || failed) return;
  up = true;
  debug('guard: up (%s)%s', why, forLife ? '; guarding on (restartOnChange)' : '');
  if (forLife) return;
  process.removeListener('uncaughtException', onUncaught);
  process.removeListener('beforeExit', onBeforeExit);
  if (process.exit === guardedExit) process.exit = realExit;
}

function onUncaught(err: unknown): void {
  if (err === STOP) return;
  // Guarding on after the start: a program with its own listener handles
  // its exceptions (Node would not end it either).
  if (up && !failed && process.listenerCount('uncaughtException') > 1) return;
  if (failed) {
    // Not an EPIPE: the stderr that failed would fail again, with another
    // uncaught error, in a loop that starves every promise (the exit too).
    if ((err as NodeJS.ErrnoException)?.code !== 'EPIPE') debug('guard: after the failed start: %s', (err as Error)?.stack ?? err);
    return;
  }
  fail(err);
}

function onBeforeExit(): void {
  // The loop ran dry before the image took its sockets: the program ended.
  // A bridge reports it (its parent refuses the restart); an image exits,
  // as the program did: nothing would ever end a guard left waiting here.
  if (up || failed || !socketsWereHanded()) return;
  if (isBridge()) {
    fail(new Error('the program ended before it took its sockets'));
    return;
  }
  process.stderr.write('posix-daemon: the program ended before it took its handed-over sockets; exiting\n');
}

const guardedExit = function exit(code?: number | string | null): never {
  const c = Number(code ?? process.exitCode ?? 0);
  // process.exit(0) is a request to stop (a SIGTERM handler during the
  // start, a program that is done): honoured, sockets waiting or not. A
  // guard that turned it into "waiting for a fix" left a process behind
  // with nobody to end it.
  if (c === 0 || (!forLife && (up || failed))) return realExit.call(process, code as number);
  // Guarding for life: what is left of a crashed program calling exit(1)
  // must not end the wait for a fix either.
  if (failed) {
    debug('guard: process.exit(%s) after the crash: still waiting for a change', code ?? '');
    throw STOP;
  }
  fail(new Error(`process.exit(${code ?? ''}) ${up ? 'after' : 'before'} it was up`));
  throw STOP;
} as typeof process.exit;

function describe(err: unknown): string {
  return err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
}

function fail(err: unknown): void {
  if (failed) return;
  failed = true;
  if (bridge !== undefined && bridge.isBridge()) {
    process.stderr.write(`${describe(err)}\n`);
    void bridge.reportStart(err instanceof Error ? err : new Error(String(err))).finally(() => realExit.call(process, 1));
    return;
  }
  bridge?.holdBridge();
  const signals = fixSignals();
  const waiting = signals.length > 0 ? `waiting for ${signals.join(' or ')} or a change` : 'waiting for a change';
  const first = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const what = up ? 'the new code crashed' : 'the new code failed at start-up';
  // Watching first, then the message: an edit made on reading it is seen.
  void waitForFix(signals);
  // waitForFix armed restartOnSignal for the held signals synchronously.
  releaseSignals();
  process.stderr.write(`posix-daemon: ${what}: ${first}; ${waiting}\n${describe(err)}\n`);
  if (process.env.NOTIFY_SOCKET) (require('./exec') as typeof import('./exec')).completeReload(`${what}: ${first}; ${waiting}`, err);
}

/** The signals a failed image restarts on: the one that started it and those the image before was armed for. */
function fixSignals(): NodeJS.Signals[] {
  const list = info.trigger === 'signal' ? [info.signal as NodeJS.Signals] : [];
  for (const sig of held) if (!list.includes(sig)) list.push(sig);
  return list;
}

async function waitForFix(signals: NodeJS.Signals[]): Promise<void> {
  // Loaded here: only a failed start pays for the watcher.
  const { restartOnChange } = require('./on-change') as typeof import('./on-change');
  const { restartOnSignal } = require('./signals') as typeof import('./signals');
  const { knownServers } = require('../lifecycle') as typeof import('../lifecycle');
  const { existsSync } = require('node:fs') as typeof import('node:fs');
  const options = {
    env: startEnv, args: startArgs, persistent: true,
    // Up before it crashed: its servers took the handed-over sockets, which
    // travel with them (sockets no server took travel anyway).
    servers: up ? knownServers().filter((s) => s.listening) : [],
    // The files the image before had loaded: the fix may be in one this
    // start never reached.
    paths: (info.files ?? []).filter((f) => existsSync(f)),
    onError: (e: Error) => process.stderr.write(`posix-daemon: not restarting: ${e.message}\n`),
  };
  // An edit saved while this version was starting (before the watch below)
  // counts as a change: the image's start is the baseline, not now.
  const runs: Array<Promise<never>> = [restartOnChange(options, { changedSince: performance.timeOrigin })];
  for (const sig of signals) {
    runs.push((async (): Promise<never> => {
      // Refusals are retried inside restartOnSignal; anything else ends this branch (no spin).
      return restartOnSignal(sig, { env: startEnv, args: startArgs });
    })());
  }
  await Promise.race(runs).catch((e: Error) => process.stderr.write(`posix-daemon: waiting for a fix: ${e.message}\n`));
}

/**
 * With no sockets to take, the image is up once its main module has been
 * evaluated. A CommonJS main runs synchronously right after the preloads:
 * the first check phase comes after it. An ES module main is loaded and
 * evaluated asynchronously, during which Node keeps an 'exit' listener
 * (handleProcessExit, which reports an unsettled top-level await); it is
 * removed when the main module settles: that removal is the moment.
 */
function whenMainEvaluated(done: () => void): void {
  setImmediate(() => {
    const esmMain = process.listeners('exit').find((f) => f.name === 'handleProcessExit');
    if (esmMain === undefined) {
      done();
      return;
    }
    const proc = process as unknown as Record<string, unknown>;
    const original = process.removeListener;
    const watch = function (this: NodeJS.Process, event: string | symbol, fn: (...a: unknown[]) => void): NodeJS.Process {
      const r = original.call(this, event, fn);
      if (event === 'exit' && fn === esmMain) {
        delete proc.removeListener;
        delete proc.off;
        // A rejected main is reported as an uncaught exception right after
        // (a microtask later): give it that moment before calling this up.
        setImmediate(done);
      }
      return r;
    };
    proc.removeListener = watch;
    proc.off = watch;
  });
}

process.on('uncaughtException', onUncaught);
process.on('beforeExit', onBeforeExit);
process.exit = guardedExit;
if (bridge !== undefined && socketsWereHanded()) {
  bridge.whenUp(() => markUp('took its sockets or reported ready'));
} else {
  whenMainEvaluated(() => markUp('main module evaluated'));
}
// At the latest one preflight timeout after the exec: a version that no
// longer takes every socket, or an ES module main whose top-level await
// never settles (`await restartOnSignal()`), must not keep the guard for
// good, or a crash hours later would pass for a failed start.
// The holds end then too: a version that no longer restarts on a signal
// gets that signal's default action back.
setTimeout(() => {
  markUp('timeout');
  releaseSignals();
}, info.upTimeout).unref();
