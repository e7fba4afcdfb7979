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
 */
import type { Server } from 'node:net';
import { handOffServers, type Handoff, type ServerHandoffEntry } from './sockets';
import { ready, reloading } from './systemd';
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants, realpathSync, statSync, unwatchFile, watch, watchFile } from 'node:fs';
import type { FSWatcher, Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { childPids, execve, waitAsync } from './posix';
import { abortError, invalidArgValue, outOfRange, workerUnsupported } from './errors';
import {
  validateAbortSignal, validateArgs, validateArray, validateBoolean, validateCString, validateDuration,
  validateFdList, validateFunction, validateObject, signalName, toSignalNumber,
} from './validators';

const debug = debuglog('posix-daemon');

/**
 * Environment variable through which an image tells the next one which
 * children it had at exec time. Only those PIDs are ever touched by
 * cleanUpChildZombies().
 */
export const EXEC_CHILDREN_ENV = 'POSIX_DAEMON_EXEC_CHILDREN';

// Read the hand-over once, as early as possible, and remove it from the
// environment: children this image starts must not inherit it, and the next
// exec writes a fresh list anyway. Workers get a copy of process.env, so only
// the main thread consumes it.
const inherited = new Set<number>();
if (isMainThread && process.env[EXEC_CHILDREN_ENV] !== undefined) {
  for (const s of String(process.env[EXEC_CHILDREN_ENV]).split(',')) {
    if (/^[1-9]\d{0,9}$/.test(s)) inherited.add(Number(s));
  }
  delete process.env[EXEC_CHILDREN_ENV];
  debug('autorestart: inherited children from the previous image: %j', [...inherited]);
}

// ---------------------------------------------------------------------------
// A small push-based async iterator: the Node face of a Go channel.

type Merge<T> = (queued: T, incoming: T) => T;

class Feed<T> implements AsyncIterableIterator<T> {
  #queued: { value: T } | null = null;
  // next() may be called again before the previous promise settled (as with
  // an async generator): those calls queue up.
  readonly #waiters: Array<{ resolve(r: IteratorResult<T>): void; reject(err: unknown): void }> = [];
  #error: { err: unknown } | null = null;
  #closed = false;
  readonly #merge: Merge<T>;
  readonly #cleanup: Array<() => void> = [];

  // Values that arrive while nobody is waiting are merged into ONE pending
  // value, like a Go channel with a buffer of one: a slow consumer sees that
  // something happened, not a backlog.
  constructor(merge: Merge<T>) {
    this.#merge = merge;
  }

  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#cleanup.push(fn);
  }

  push(value: T): void {
    if (this.#closed) return;
    const w = this.#waiters.shift();
    if (w) {
      w.resolve({ value, done: false });
    } else {
      this.#queued = this.#queued ? { value: this.#merge(this.#queued.value, value) } : { value };
    }
  }

  fail(err: unknown): void {
    if (this.#closed) return;
    this.#close();
    const w = this.#waiters.shift();
    if (w) {
      w.reject(err);
      // Later queued calls see the end, as after a generator threw.
      for (const rest of this.#waiters.splice(0)) rest.resolve({ value: undefined, done: true });
    } else {
      this.#error = { err };
    }
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fn of this.#cleanup.splice(0)) {
      try {
        fn();
      } catch (err) {
        debug('autorestart: cleanup failed: %s', err);
      }
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#queued) {
      const { value } = this.#queued;
      this.#queued = null;
      return Promise.resolve({ value, done: false });
    }
    if (this.#error) {
      const { err } = this.#error;
      this.#error = null;
      return Promise.reject(err);
    }
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#close();
    this.#queued = null;
    this.#error = null;
    for (const w of this.#waiters.splice(0)) w.resolve({ value: undefined, done: true });
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

function attachSignal<T>(feed: Feed<T>, signal: AbortSignal | undefined): void {
  if (!signal) return;
  if (signal.aborted) {
    feed.fail(abortError(signal.reason));
    return;
  }
  const onAbort = (): void => feed.fail(abortError(signal.reason));
  signal.addEventListener('abort', onAbort, { once: true });
  feed.onClose(() => signal.removeEventListener('abort', onAbort));
}

// ---------------------------------------------------------------------------
// restartViaExec

/** Options of restartViaExec. */
export interface RestartViaExecOptions {
  /** Environment of the new image; default: the current `process.env`, run-time changes included. */
  env?: Record<string, string | undefined>;
  /** Arguments after the main script; default `process.argv.slice(2)`. */
  args?: string[];
  /** Fds (>= 3) the new image inherits; all others are closed by the exec. */
  keepFds?: number[];
  /** Milliseconds between attempts when execve fails; default 1000 (as in Go). */
  retryInterval?: number;
  /** Stops retrying; the promise then rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * Listening servers whose sockets the new image inherits (at the fd
   * numbers they have, under their sticky names; take them over with
   * `listen()`). They are drained first: no new accepts, in-
   * flight requests finish, idle keep-alive connections close. Connections
   * arriving meanwhile wait in the kernel's accept queue.
   */
  servers?: Array<Server | ServerHandoffEntry>;
  /** Longest drain of `servers`, in ms; then remaining connections are closed. Default 5000. */
  drainTimeout?: number;
}

let seaCache: boolean | undefined;
/** Whether this is a single executable application, where the node binary IS the program. */
function isSea(): boolean {
  if (seaCache === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      seaCache = (require('node:sea') as { isSea(): boolean }).isSea();
    } catch {
      seaCache = false;  // Node without node:sea
    }
  }
  return seaCache;
}

/** The main script as Node was given it (absolute), or undefined (REPL, -e, SEA). */
function mainScript(): string | undefined {
  if (isSea()) return undefined;
  const main = process.argv[1];
  return typeof main === 'string' && main !== '' ? resolve(main) : undefined;
}

function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).errno === 'number' &&
    typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/** `main`: the entry file, already checked by the caller (see restartViaExec). */
function execOnce(main: string | undefined, args: string[], env: Record<string, string | undefined>,
  keepFds: number[]): never {
  const argv = [process.execPath, ...process.execArgv];
  if (main !== undefined) argv.push(main);
  argv.push(...args);
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && k !== EXEC_CHILDREN_ENV) childEnv[k] = v;
  // Children survive the exec (same PID, still their parent), but the new
  // image cannot know them: hand the list over. childPids() includes any
  // inherited ones not reaped yet, so nothing is lost across several execs.
  const children = childPids();
  if (children.length > 0) childEnv[EXEC_CHILDREN_ENV] = children.join(',');
  debug('autorestart: execve %s %j (children handed over: %j)', process.execPath, argv.slice(1), children);
  return execve(process.execPath, argv, childEnv, { keepFds });
}

/**
 * Replaces the running image with a fresh one of the same program under the
 * same PID: `process.execPath`, `process.execArgv`, the main script, the
 * arguments and the current `process.env`. Never resolves: on success this
 * image is gone. When execve (or the entry-file check before it) fails, the
 * error is logged with `NODE_DEBUG=posix-daemon` and the exec is retried every
 * `retryInterval` ms; the process keeps running meanwhile. Rejects with an
 * AbortError when `signal` aborts, and at once for invalid arguments.
 */
export async function restartViaExec(options: RestartViaExecOptions = {}): Promise<never> {
  validateObject(options as unknown, 'options');
  const { env, args, keepFds = [], retryInterval = 1000, signal, servers = [], drainTimeout = 5000 } = options;
  validateArray(servers, 'options.servers');
  validateDuration(drainTimeout, 'options.drainTimeout');
  if (env !== undefined) validateObject(env, 'options.env');
  if (args !== undefined) validateArgs(args, 'options.args');
  validateFdList(keepFds, 'options.keepFds', 3);
  validateDuration(retryInterval, 'options.retryInterval');
  validateAbortSignal(signal, 'options.signal');
  if (!isMainThread) throw workerUnsupported('restartViaExec');
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortError(signal.reason);
    let handoff: Handoff | undefined;
    let reloadSent = false;
    try {
      const main = mainScript();
      // execve of node succeeds even when the script is gone, and the new
      // image would then die on "Cannot find module": a missing entry file
      // is an exec failure that leaves this image running. Checked before
      // the drain, so it does not cost the servers a drain on every retry.
      if (main !== undefined) accessSync(main, fsConstants.R_OK);
      handoff = await handOffServers(servers, drainTimeout);
      // Type=notify-reload: the reload starts now; the new image's ready() ends it.
      reloadSent = reloading();
      execOnce(main, args ?? process.argv.slice(2), { ...(env ?? process.env), ...handoff.env },
        [...keepFds, ...handoff.keepFds]);
    } catch (err) {
      if (reloadSent) ready(`restart failed (${(err as Error).message}); retrying`);
      if (handoff) {
        // The exec failed: serve again on the very same sockets.
        await handoff.resume().catch((e: Error) => debug('autorestart: resuming servers: %s', e.message));
      }
      // A bad argument (env with a NUL byte, a closed keepFd is EBADF and
      // stays so) would fail the same way forever, but Go retries whatever
      // the error; we only refuse to retry what is not a system error.
      if (!isSystemError(err)) throw err;
      debug('autorestart: exec attempt %d failed: %s; retrying in %d ms', attempt, err.message, retryInterval);
    }
    await sleep(retryInterval, undefined, { signal });
  }
}

// ---------------------------------------------------------------------------
// notifyOnChange

/** One (debounced) change: the watched files that changed. */
export interface ChangeEvent {
  /** Absolute paths of the watched files that changed, in the order first seen. */
  paths: string[];
}

/** Options of notifyOnChange (and the watching part of restartOnChange). */
export interface NotifyOnChangeOptions {
  /** Stat polling (`fs.watchFile`) instead of inotify (`fs.watch`); default false. */
  polling?: boolean;
  /** Polling interval in ms (polling mode only); default 1000. */
  interval?: number;
  /** More files to watch, besides the program itself. */
  paths?: string[];
  /** Quiet time in ms: size and mtime must stay unchanged this long; default 100. */
  debounce?: number;
  /** Ends the iteration with an AbortError and removes the watchers. */
  signal?: AbortSignal;
  /** Keep the event loop alive while watching; default true (as fs.watch). */
  persistent?: boolean;
}

interface WatchPlan {
  targets: string[];
  polling: boolean;
  interval: number;
  debounce: number;
  signal: AbortSignal | undefined;
  persistent: boolean;
}

const DEFAULT_DEBOUNCE = 100;
const DEFAULT_POLL_INTERVAL = 1000;

/** The files that make up "the program", before `paths`. */
function programFiles(): string[] {
  // In a single executable application the binary is the program; otherwise
  // process.execPath is the node runtime, not the program, and is not watched.
  if (isSea()) return [process.execPath];
  const main = mainScript();
  if (main === undefined) return [];
  const out = [main];
  // Node runs realpath(main); a symlinked entry (npm bin links, deploys that
  // flip a `current` link) changes either at the link or at its target.
  try {
    const real = realpathSync(main);
    if (real !== main) out.push(real);
  } catch {
    // missing: reported below by statSync, with Node's ENOENT error
  }
  return out;
}

function parseWatchOptions(options: unknown, defaultPersistent: boolean): WatchPlan {
  validateObject(options, 'options');
  const o = options as NotifyOnChangeOptions;
  const polling = o.polling ?? false;
  validateBoolean(polling, 'options.polling');
  const interval = o.interval ?? DEFAULT_POLL_INTERVAL;
  validateDuration(interval, 'options.interval');
  if (interval === 0) throw outOfRange('options.interval', 'a finite number > 0', interval);
  const debounce = o.debounce ?? DEFAULT_DEBOUNCE;
  validateDuration(debounce, 'options.debounce');
  validateAbortSignal(o.signal, 'options.signal');
  const persistent = o.persistent ?? defaultPersistent;
  validateBoolean(persistent, 'options.persistent');
  const extra = o.paths ?? [];
  validateArray(extra, 'options.paths');
  extra.forEach((p, i) => validateCString(p, `options.paths[${i}]`, { allowEmpty: false }));
  const targets = [...new Set([...programFiles(), ...(extra as string[]).map((p) => resolve(p))])];
  if (targets.length === 0) {
    throw invalidArgValue('options.paths', o.paths, 'must name a file to watch when the program has no main script');
  }
  // A file that does not exist cannot be watched for "changes": fail now,
  // with the same ENOENT error fs.statSync gives.
  for (const t of targets) statSync(t);
  return { targets, polling, interval, debounce, signal: o.signal, persistent };
}

/** A stat fingerprint: what "has stopped changing" compares. */
async function fingerprint(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

function startWatching(plan: WatchPlan): Feed<ChangeEvent> {
  const feed = new Feed<ChangeEvent>((a, b) => ({ paths: [...new Set([...a.paths, ...b.paths])] }));
  attachSignal(feed, plan.signal);

  // Debounce and stability. Every raw event re-arms one timer and takes a
  // stat fingerprint of the file. When the timer fires (`debounce` ms after
  // the last event) a fresh fingerprint must equal the one taken after the
  // last event, i.e. size/mtime/inode did not move for `debounce` ms, even
  // for writes that raise no event (mmap, network file systems).
  const pending = new Map<string, Promise<string>>();
  let generation = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(settle, plan.debounce);
    if (!plan.persistent) timer.unref();
  };
  const mark = (path: string): void => {
    if (closed) return;
    generation++;
    pending.set(path, fingerprint(path));
    arm();
  };
  const settle = async (): Promise<void> => {
    const gen = generation;
    const paths = [...pending.keys()];
    const before = await Promise.all(paths.map((p) => pending.get(p)!));
    const now = await Promise.all(paths.map(fingerprint));
    if (closed || gen !== generation) return;  // new events meanwhile: their timer decides
    if (now.some((fp, i) => fp !== before[i])) {
      debug('autorestart: %j still changing, waiting %d ms more', paths, plan.debounce);
      paths.forEach((p, i) => pending.set(p, Promise.resolve(now[i])));
      arm();
      return;
    }
    pending.clear();
    debug('autorestart: change settled: %j', paths);
    feed.push({ paths });
  };

  if (plan.polling) {
    for (const target of plan.targets) {
      // fs.watchFile stats the path, so a file replaced by rename or deleted
      // and recreated is followed naturally.
      const listener = (): void => mark(target);
      watchFile(target, { persistent: plan.persistent, interval: plan.interval }, listener);
      feed.onClose(() => unwatchFile(target, listener));
    }
  } else {
    // Watch the parent DIRECTORY and filter by name: an inotify watch on the
    // file itself follows the inode, so it goes deaf after an editor's
    // rename-over or a delete + recreate. The directory sees every one.
    const byDir = new Map<string, Map<string, string>>();
    for (const target of plan.targets) {
      const dir = dirname(target);
      if (!byDir.has(dir)) byDir.set(dir, new Map());
      byDir.get(dir)!.set(basename(target), target);
    }
    for (const [dir, names] of byDir) {
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: plan.persistent }, (_event, filename) => {
          if (filename === null || filename === undefined) {
            for (const t of names.values()) mark(t);  // platform gave no name: assume ours
            return;
          }
          const t = names.get(String(filename));
          if (t !== undefined) mark(t);
        });
      } catch (err) {
        feed.fail(err);
        break;
      }
      watcher.on('error', (err) => feed.fail(err));
      feed.onClose(() => watcher.close());
    }
  }
  feed.onClose(() => {
    closed = true;
    clearTimeout(timer);
  });
  debug('autorestart: watching %j (%s)', plan.targets, plan.polling ? `polling every ${plan.interval} ms` : 'fs.watch');
  return feed;
}

/**
 * Watches the program's files and yields ONE `{ paths }` event per burst of
 * changes, once the files have stopped changing for `debounce` ms. Watched:
 * the main script (and its symlink target; in a single executable
 * application, `process.execPath` instead) plus `options.paths`. Uses
 * `fs.watch` on the parent directories (so rename-over and delete+recreate
 * keep working), or `fs.watchFile` stat polling with `polling: true`.
 * Watchers are set up at once (a missing file throws ENOENT here) and
 * removed when the iteration ends (`break`, `return`, or `signal`).
 *
 * @example for await (const { paths } of notifyOnChange({ paths: ['config.json'] })) reload(paths);
 */
export function notifyOnChange(options: NotifyOnChangeOptions = {}): AsyncIterableIterator<ChangeEvent> {
  return startWatching(parseWatchOptions(options, true));
}

// ---------------------------------------------------------------------------
// restartOnChange

/** Options of restartOnChange: watching, checking, the hook, and the exec. */
export interface RestartOnChangeOptions extends NotifyOnChangeOptions, Omit<RestartViaExecOptions, 'signal'> {
  /** Check that a JavaScript entry file parses (`node --check`) before exec; default true. */
  check?: boolean;
  /** Called with every error that prevented a restart (the old image keeps running). */
  onError?: (err: Error) => void;
  /** Runs just before the exec (close servers, flush logs); gets a signal aborted at the deadline. */
  beforeRestart?: (signal: AbortSignal) => unknown;
  /** Milliseconds `beforeRestart` may take; default 5000. The restart happens either way. */
  beforeRestartTimeout?: number;
}

const JS_EXTENSIONS = new Set(['.js', '.cjs', '.mjs', '']);
// Flags that change how Node parses the entry file; everything else in
// execArgv (--inspect, --watch, loaders) is not wanted in a parse check.
const PARSE_FLAGS = /^--(no-)?experimental-(default-type|detect-module|require-module|strip-types)(=|$)/;

/** `node --check file`, asynchronously: the same parser and module-type rules that will load it. */
function checkSyntax(file: string, signal: AbortSignal | undefined): Promise<void> {
  const flags = process.execArgv.filter((a) => PARSE_FLAGS.test(a));
  return new Promise((resolvePromise, reject) => {
    execFile(process.execPath, [...flags, '--check', file], { signal, timeout: 60_000, encoding: 'utf8' },
      (err, _stdout, stderr) => {
        if (!err) {
          resolvePromise();
          return;
        }
        if ((err as NodeJS.ErrnoException).name === 'AbortError') {
          reject(err);
          return;
        }
        if (typeof (err as { code?: unknown }).code !== 'number') {
          reject(err);  // node --check could not run at all (spawn error, timeout)
          return;
        }
        const text = String(stderr).trim();
        const last = text.split('\n').reverse().find((l) => /Error/.test(l)) ?? 'does not parse';
        const e = new SyntaxError(`${file} does not parse: ${last.trim()}`) as SyntaxError & { path: string; stderr: string };
        e.path = file;
        e.stderr = text;
        reject(e);
      });
  });
}

async function runBeforeRestart(hook: (signal: AbortSignal) => unknown, timeout: number): Promise<void> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`beforeRestart() did not finish within ${timeout} ms`) as Error & { code: string };
      err.code = 'ETIMEDOUT';
      ac.abort(err);
      reject(err);
    }, timeout);
  });
  try {
    await Promise.race([Promise.resolve().then(() => hook(ac.signal)), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for a change of the program's files (see notifyOnChange) and
 * restarts via exec (see restartViaExec). Safer than Go's: the file must
 * have stopped changing for `debounce` ms (default 100); a JavaScript entry
 * (.js/.cjs/.mjs or no extension) that fails `node --check`, or is missing,
 * is never exec'd: the error goes to debuglog and `onError`, this image keeps
 * running and the next good version is picked up; `beforeRestart` runs with
 * a deadline. Watchers do not hold the event loop open unless
 * `persistent: true`. Never resolves; rejects with an AbortError on `signal`.
 */
export async function restartOnChange(options: RestartOnChangeOptions = {}): Promise<never> {
  const plan = parseWatchOptions(options, false);
  const o = options;
  const check = o.check ?? true;
  validateBoolean(check, 'options.check');
  if (o.onError !== undefined) validateFunction(o.onError, 'options.onError');
  if (o.beforeRestart !== undefined) validateFunction(o.beforeRestart, 'options.beforeRestart');
  const beforeRestartTimeout = o.beforeRestartTimeout ?? 5000;
  validateDuration(beforeRestartTimeout, 'options.beforeRestartTimeout');
  const execOptions: RestartViaExecOptions = {
    env: o.env, args: o.args, keepFds: o.keepFds, retryInterval: o.retryInterval, signal: o.signal,
    servers: o.servers, drainTimeout: o.drainTimeout,
  };
  // Validate the exec options now rather than at the first change.
  if (o.env !== undefined) validateObject(o.env, 'options.env');
  if (o.args !== undefined) validateArgs(o.args, 'options.args');
  if (o.keepFds !== undefined) validateFdList(o.keepFds, 'options.keepFds', 3);
  if (o.retryInterval !== undefined) validateDuration(o.retryInterval, 'options.retryInterval');

  const report = (err: Error): void => {
    debug('autorestart: not restarting: %s', err.message);
    if (o.onError) {
      try {
        o.onError(err);
      } catch (hookErr) {
        debug('autorestart: onError threw: %s', hookErr);
      }
    }
  };
  const main = mainScript();
  const checkJs = check && main !== undefined && JS_EXTENSIONS.has(extname(main));

  for await (const change of startWatching(plan)) {
    debug('autorestart: change in %j', change.paths);
    let before: Stats | undefined;
    try {
      if (main !== undefined) {
        before = statSync(main);
        // A truncate-then-write caught in a pause longer than the debounce:
        // an empty file is a valid program that would exit at once.
        if (before.size === 0) throw new Error(`${main} is empty; waiting for its content`);
      }
      if (checkJs) await checkSyntax(main!, o.signal);
      // The check took a moment: a write that started meanwhile means the
      // file we checked is not the one we would run. Wait for it to settle.
      if (main !== undefined && before !== undefined) {
        const after = statSync(main);
        if (after.ino !== before.ino || after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
          debug('autorestart: %s changed during the check, waiting for it to settle', main);
          continue;
        }
      }
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      report(err as Error);
      continue;
    }
    if (o.beforeRestart) {
      try {
        await runBeforeRestart(o.beforeRestart, beforeRestartTimeout);
      } catch (err) {
        // Bounded means bounded: a failing or hanging hook must not block
        // an upgrade forever. Report it and restart anyway.
        report(err as Error);
      }
    }
    return restartViaExec(execOptions);
  }
  // Only reachable if the feed ends without an error, which it does not.
  throw abortError(o.signal?.reason);
}

// ---------------------------------------------------------------------------
// cleanUpChildZombies

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
    write(`${LOG_PREFIX} no children inherited from a previous image`);
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

// ---------------------------------------------------------------------------
// Signals

/** Options of notifyOnSighup / notifyOnSigterm. */
export interface NotifyOnSignalOptions {
  /** Ends the iteration with an AbortError and removes the listener. */
  signal?: AbortSignal;
}

function notifyOnSignal(name: 'SIGHUP' | 'SIGTERM', options: NotifyOnSignalOptions): AsyncIterableIterator<NodeJS.Signals> {
  validateObject(options as unknown, 'options');
  validateAbortSignal(options.signal, 'options.signal');
  // Signals are not queued by the kernel either: several arriving while the
  // consumer is busy are one pending notification.
  const feed = new Feed<NodeJS.Signals>((_a, b) => b);
  const listener = (sig: NodeJS.Signals): void => feed.push(sig);
  // Installed now, not at the first next(): from here on the signal no
  // longer terminates the process.
  process.on(name, listener);
  feed.onClose(() => process.removeListener(name, listener));
  attachSignal(feed, options.signal);
  return feed;
}

/**
 * An async iterable of SIGHUP deliveries. While it is being iterated SIGHUP
 * no longer terminates the process; ending the iteration removes the
 * listener.
 */
export function notifyOnSighup(options: NotifyOnSignalOptions = {}): AsyncIterableIterator<NodeJS.Signals> {
  return notifyOnSignal('SIGHUP', options);
}

/**
 * An async iterable of SIGTERM deliveries. While it is being iterated SIGTERM
 * no longer terminates the process; ending the iteration removes the
 * listener.
 */
export function notifyOnSigterm(options: NotifyOnSignalOptions = {}): AsyncIterableIterator<NodeJS.Signals> {
  return notifyOnSignal('SIGTERM', options);
}

/**
 * Restarts via exec when `signal` (default SIGUSR2; SIGHUP is the other
 * classic) arrives: the same path as restartOnChange, `servers` handoff
 * included. Until then the signal no longer terminates the process.
 * Rejects with an AbortError if `options.signal` aborts first.
 */
export async function restartOnSignal(signal: NodeJS.Signals = 'SIGUSR2',
  options: RestartViaExecOptions = {}): Promise<never> {
  const name = signalName(toSignalNumber(signal, 'signal')) as NodeJS.Signals;
  if (name === 'SIGKILL' || name === 'SIGSTOP') throw invalidArgValue('signal', signal, 'cannot be caught');
  validateObject(options as unknown, 'options');
  validateAbortSignal(options.signal, 'options.signal');
  const abort = options.signal;
  await new Promise<void>((resolve, reject) => {
    if (abort?.aborted) {
      reject(abortError(abort.reason));
      return;
    }
    const onAbort = (): void => {
      process.removeListener(name, onSignal);
      reject(abortError(abort?.reason));
    };
    const onSignal = (): void => {
      abort?.removeEventListener('abort', onAbort);
      resolve();
    };
    process.once(name, onSignal);
    abort?.addEventListener('abort', onAbort, { once: true });
  });
  debug('autorestart: %s received, restarting', name);
  return restartViaExec(options);
}

export { listen, listenFds, socketName } from './sockets';
export type { InheritedSocket, ServerHandoffEntry } from './sockets';
