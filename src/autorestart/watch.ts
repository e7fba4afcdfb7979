/**
 * notifyOnChange: watch the program's files and yield one event per settled
 * burst of changes.
 *
 * Linux: one inotify instance for the whole process (native/inotify.c on
 * the libuv loop: no thread, no polling), one watch per DIRECTORY, filtered
 * by name: a watch on the file itself follows the inode and goes deaf after
 * an editor's rename-over or a delete + recreate; the directory sees them
 * all. A change settles when the kernel says the writer is done
 * (IN_CLOSE_WRITE, or IN_MOVED_TO for a file renamed into place) and a short
 * confirmation finds size, mtime and inode unchanged. Writes without a close
 * (a writer keeping the file open, mmap) fall back to the quiet-time timer
 * (`debounce`), as do fs.watch (other systems) and stat polling.
 */
import { readdirSync, realpathSync, statSync, unwatchFile, watch, watchFile } from 'node:fs';
import type { Dirent, FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { debuglog } from 'node:util';
import { addon, type RawInotify } from '../native';
import { abortError, invalidArgValue, outOfRange } from '../errors';
import {
  validateAbortSignal, validateArray, validateBoolean, validateCString, validateDuration, validateFunction,
  validateObject, validateOptionKeys,
} from '../validators';
import { isSea, mainScript } from './exec';
import { isBridge } from './bridge';
import { inNodeModules, moduleGraph } from './graph';

const debug = debuglog('posix-daemon');

// ---------------------------------------------------------------------------
// A push-based async iterator that MERGES what arrives while nobody is
// waiting into one pending value, like a Go channel with a buffer of one: a
// slow consumer (a restart being checked) sees that something happened, not
// a backlog. events.on() queues every event, hence this small class.

class Feed<T> implements AsyncIterableIterator<T> {
  #queued: { value: T } | null = null;
  readonly #waiters: Array<{ resolve(r: IteratorResult<T>): void; reject(err: unknown): void }> = [];
  #error: { err: unknown } | null = null;
  #closed = false;
  readonly #cleanup: Array<() => void> = [];

  constructor(readonly merge: (queued: T, incoming: T) => T) {}

  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#cleanup.push(fn);
  }

  push(value: T): void {
    if (this.#closed) return;
    const w = this.#waiters.shift();
    if (w) w.resolve({ value, done: false });
    else this.#queued = this.#queued ? { value: this.merge(this.#queued.value, value) } : { value };
  }

  fail(err: unknown): void {
    if (this.#closed) return;
    this.#close();
    const w = this.#waiters.shift();
    if (w) {
      w.reject(err);
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
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
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

// ---------------------------------------------------------------------------
// The process's one inotify instance, shared by every watcher.

/** `done`: the kernel says a writer finished (close after write, rename into place). */
type DirListener = (name: string | null, done: boolean) => void;

const IN = addon.inotifyConstants;

/**
 * A watched directory. `wd` is undefined while the directory does not exist
 * (deleted, or moved away): its parent is watched meanwhile (`unwatchParent`),
 * and it is watched again, with every listener told, once it is back.
 */
interface DirEntry {
  wd: number | undefined;
  listeners: Map<DirListener, boolean>;
  unwatchParent?: () => void;
}

class InotifyHub {
  #raw: RawInotify | undefined;
  readonly #dirs = new Map<string, DirEntry>();
  readonly #byWd = new Map<number, string>();

  static available(): boolean {
    return typeof addon.Inotify === 'function' && IN !== undefined;
  }

  /** Calls `listener` for events in `dir`; returns the unsubscribe function. */
  subscribe(dir: string, listener: DirListener, persistent: boolean, mayBeMissing = false): () => void {
    let entry = this.#dirs.get(dir);
    if (!entry) {
      entry = { wd: this.#add(dir, mayBeMissing), listeners: new Map() };
      this.#dirs.set(dir, entry);
      if (entry.wd === undefined) this.#rewatch(dir);
    }
    entry.listeners.set(listener, persistent);
    this.#updateRef();
    return () => {
      const e = this.#dirs.get(dir);
      if (!e || !e.listeners.delete(listener)) return;
      if (e.listeners.size === 0) {
        this.#dirs.delete(dir);
        if (e.wd !== undefined) {
          this.#byWd.delete(e.wd);
          this.#raw?.remove(e.wd);
        }
        e.unwatchParent?.();
      }
      // The last watch gone (a deleted directory's included): the inotify fd
      // goes too, or it would hold the loop open (issue 16, item 5).
      if (this.#dirs.size === 0) {
        this.#raw?.close();
        this.#raw = undefined;
        this.#byWd.clear();
      } else {
        this.#updateRef();
      }
    };
  }

  /** inotify_add_watch; with `mayBeMissing`, undefined when `dir` is not (yet) a directory. */
  #add(dir: string, mayBeMissing: boolean): number | undefined {
    this.#raw ??= new addon.Inotify!((events) => this.#dispatch(events));
    const mask = IN!.IN_MODIFY | IN!.IN_ATTRIB | IN!.IN_CLOSE_WRITE | IN!.IN_MOVED_FROM | IN!.IN_MOVED_TO |
      IN!.IN_CREATE | IN!.IN_DELETE | IN!.IN_MOVE_SELF | IN!.IN_ONLYDIR | IN!.IN_EXCL_UNLINK;
    let wd: number;
    try {
      wd = this.#raw.add(dir, mask);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (mayBeMissing && (code === 'ENOENT' || code === 'ENOTDIR')) return undefined;
      throw err;
    }
    this.#byWd.set(wd, dir);
    return wd;
  }

  /**
   * `dir` lost its watch (deleted or moved away): watch it again if it is
   * back already, else watch its parent (recursively) until it is. Either
   * way its listeners hear of it: files may have changed meanwhile.
   */
  #rewatch(dir: string): void {
    const e = this.#dirs.get(dir);
    if (!e || e.wd !== undefined) return;
    e.wd = this.#add(dir, true);
    if (e.wd !== undefined) {
      e.unwatchParent?.();
      e.unwatchParent = undefined;
      debug('autorestart: %s is back, watching it again', dir);
    } else if (!e.unwatchParent && dirname(dir) !== dir) {
      const name = basename(dir);
      e.unwatchParent = this.subscribe(dirname(dir), (n) => {
        if (n === null || n === name) this.#rewatch(dir);
      }, false, true);
    }
    for (const l of [...e.listeners.keys()]) l(null, false);
  }

  /** The event loop stays alive while any persistent watcher is subscribed. */
  #updateRef(): void {
    let persistent = false;
    for (const e of this.#dirs.values()) for (const p of e.listeners.values()) persistent ||= p;
    if (persistent) this.#raw?.ref();
    else this.#raw?.unref();
  }

  #dispatch(events: Array<number | string | null>): void {
    for (let i = 0; i < events.length; i += 4) {
      const wd = events[i] as number;
      const mask = events[i + 1] as number;
      const name = events[i + 3] as string | null;
      if (mask & IN!.IN_Q_OVERFLOW) {
        // Events were lost: every watched file may have changed.
        for (const e of this.#dirs.values()) for (const l of [...e.listeners.keys()]) l(null, false);
        continue;
      }
      const dir = this.#byWd.get(wd);
      if (dir === undefined) continue;
      if (mask & IN!.IN_MOVE_SELF) {
        // Moved away: the watch would follow the old inode. Drop it; the
        // IN_IGNORED that follows re-watches the path.
        this.#raw?.remove(wd);
        continue;
      }
      if (mask & IN!.IN_IGNORED) {
        // The directory itself went away: its watch is gone. The entry
        // stays (its listeners still want the path): watched again once
        // the directory is back (rm -rf dir && mkdir dir).
        this.#byWd.delete(wd);
        const e = this.#dirs.get(dir);
        if (e && e.wd === wd) {
          e.wd = undefined;
          this.#rewatch(dir);
        }
        continue;
      }
      const done = (mask & (IN!.IN_CLOSE_WRITE | IN!.IN_MOVED_TO)) !== 0;
      const e = this.#dirs.get(dir);
      if (e) for (const l of [...e.listeners.keys()]) l(name, done);
    }
  }
}

let hub: InotifyHub | undefined;

// ---------------------------------------------------------------------------
// notifyOnChange

/** One (settled) change: the watched files that changed. */
export interface ChangeEvent {
  /** Absolute paths of the watched files that changed, in the order first seen. */
  paths: string[];
}

/** Options of notifyOnChange (and the watching part of restartOnChange). */
export interface NotifyOnChangeOptions {
  /** Stat polling (`fs.watchFile`, one stat timer per file) instead of inotify; default false. */
  polling?: boolean;
  /** Polling interval in ms (polling mode only); default 1000. */
  interval?: number;
  /**
   * More files to watch, besides the program's module graph. A directory
   * means every file below it, at any depth, including files and
   * directories created later (minus `ignore`, and minus `node_modules`
   * directories unless `node_modules: true`).
   */
  paths?: string[];
  /**
   * Quiet time in ms for changes the kernel does not close (a writer keeping
   * the file open, polling, fs.watch): size and mtime must stay unchanged
   * this long; default 100. A write that ends with close() or a rename into
   * place settles after a short confirmation instead.
   */
  debounce?: number;
  /** Watch the files of `node_modules` the program loaded (and those in a directory of `paths`) too; default false. */
  node_modules?: boolean;
  /** Files (and directories of a tree in `paths`) for which it returns true are not watched. Gets absolute paths. */
  ignore?: (path: string) => boolean;
  /** Ends the iteration with an AbortError and removes the watchers. */
  signal?: AbortSignal;
  /** Keep the event loop alive while watching; default true (as fs.watch). */
  persistent?: boolean;
}

export interface WatchPlan {
  targets: string[];
  polling: boolean;
  interval: number;
  debounce: number;
  nodeModules: boolean;
  ignore: ((path: string) => boolean) | undefined;
  signal: AbortSignal | undefined;
  persistent: boolean;
  /**
   * Epoch ms: a file changed after it counts as changed as soon as it is
   * watched. The guard's wait for a fix sets it to the image's start: an
   * edit saved while the crashing version was still starting is not lost.
   */
  changedSince?: number;
}

const DEFAULT_DEBOUNCE = 100;
const DEFAULT_POLL_INTERVAL = 1000;
// After the kernel said "writer done": how long size, mtime and inode must
// stay put. Catches a second writer that starts right away (a tool that
// writes, closes, then appends), at a fraction of the quiet-time timer.
const CONFIRM_MS = 8;

/** The files that make up "the program" before its module graph: main script (and its link target), or the SEA binary. */
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

export function parseWatchOptions(options: unknown, defaultPersistent: boolean): WatchPlan {
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
  const nodeModules = o.node_modules ?? false;
  validateBoolean(nodeModules, 'options.node_modules');
  if (o.ignore !== undefined) validateFunction(o.ignore, 'options.ignore');
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
  return { targets, polling, interval, debounce, nodeModules, ignore: o.ignore, signal: o.signal, persistent };
}

/** Whether `path` was written (or renamed into place: its ctime) after `since` (epoch ms). */
function changedAfter(path: string, since: number): boolean {
  try {
    return statSync(path).ctimeMs > since;
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** A stat fingerprint: what "has stopped changing" compares. */
function describe(s: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}

function missing(err: unknown): string {
  return `missing:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
}

export function fingerprint(path: string): Promise<string> {
  return stat(path, { bigint: true }).then(describe, missing);
}

export function fingerprintSync(path: string): string {
  try {
    return describe(statSync(path, { bigint: true }));
  } catch (err) {
    return missing(err);
  }
}

/**
 * A running watcher: the change feed, and the files it watches (growing
 * with the module graph), each with its fingerprint when watching began.
 */
export interface Watching {
  feed: AsyncIterableIterator<ChangeEvent>;
  files: ReadonlyMap<string, string>;
}

/** `onGraph`: called once the module graph's files are being watched too. */
export function startWatching(plan: WatchPlan, onGraph?: () => void): Watching {
  const feed = new Feed<ChangeEvent>((a, b) => ({ paths: [...new Set([...a.paths, ...b.paths])] }));
  const files = new Map<string, string>();
  if (plan.signal) {
    const { signal } = plan;
    if (signal.aborted) {
      feed.fail(abortError(signal.reason));
    } else {
      const onAbort = (): void => feed.fail(abortError(signal.reason));
      signal.addEventListener('abort', onAbort, { once: true });
      feed.onClose(() => signal.removeEventListener('abort', onAbort));
    }
  }

  // Settling. Every event takes a stat fingerprint of its file and arms one
  // timer: CONFIRM_MS when every pending file was reported finished by the
  // kernel, else `debounce`. When it fires, a fresh fingerprint must equal
  // the one taken after the last event: size/mtime/inode did not move.
  const pending = new Map<string, { fp: Promise<string>; done: boolean }>();
  let generation = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const arm = (ms: number): void => {
    clearTimeout(timer);
    timer = setTimeout(settle, ms);
    if (!plan.persistent) timer.unref();
  };
  const mark = (path: string, done: boolean): void => {
    if (closed) return;
    generation++;
    pending.set(path, { fp: fingerprint(path), done });
    const allDone = [...pending.values()].every((p) => p.done);
    arm(allDone ? Math.min(CONFIRM_MS, plan.debounce) : plan.debounce);
  };
  const settle = async (): Promise<void> => {
    const gen = generation;
    const paths = [...pending.keys()];
    const before = await Promise.all(paths.map((p) => pending.get(p)!.fp));
    const now = await Promise.all(paths.map(fingerprint));
    if (closed || gen !== generation) return;  // new events meanwhile: their timer decides
    if (now.some((fp, i) => fp !== before[i])) {
      debug('autorestart: %j still changing, waiting %d ms more', paths, plan.debounce);
      paths.forEach((p, i) => pending.set(p, { fp: Promise.resolve(now[i]), done: false }));
      arm(plan.debounce);
      return;
    }
    pending.clear();
    debug('autorestart: change settled: %j', paths);
    feed.push({ paths });
  };

  // Directory watches, shared by the files of each directory.
  const byDir = new Map<string, Map<string, string>>();
  const onDirEvent = (names: Map<string, string>) => (name: string | null, done: boolean): void => {
    if (name === null) {
      for (const t of names.values()) mark(t, false);  // no name (overflow, platform): assume ours
      return;
    }
    const t = names.get(name);
    if (t !== undefined) mark(t, done);
  };
  const useInotify = !plan.polling && InotifyHub.available();
  const watchDir = (dir: string, listener: DirListener): void => {
    if (useInotify) {
      hub ??= new InotifyHub();
      feed.onClose(hub.subscribe(dir, listener, plan.persistent));
      return;
    }
    const watcher: FSWatcher = watch(dir, { persistent: plan.persistent }, (_event, filename) =>
      listener(filename === null || filename === undefined ? null : String(filename), false));
    watcher.on('error', (err) => feed.fail(err));
    feed.onClose(() => watcher.close());
  };

  const ignored = (path: string): boolean => {
    if (!plan.ignore) return false;
    try {
      return plan.ignore(path) === true;
    } catch (err) {
      debug('autorestart: ignore(%s) threw: %s', path, err);
      return false;
    }
  };

  // A directory in `paths`: every file below it, at any depth, now and
  // later (inotify watches one directory, so one watch per directory of
  // the tree, added as directories appear), minus what `ignore` rejects and
  // `node_modules` directories unless `node_modules: true`. Events are
  // taken for any name: the tree's files are not listed up front.
  const trees = new Set<string>();
  const skipDir = (dir: string): boolean =>
    ignored(dir) || (!plan.nodeModules && basename(dir) === 'node_modules');
  const inTree = (path: string, done: boolean): void => {
    if (ignored(path)) return;
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      // deleted: a change of the tree all the same
    }
    if (isDir) {
      // A directory that appeared (mkdir, or moved in): watch it, and count
      // what is in it already (written before its watch existed).
      if (!trees.has(path) && !skipDir(path)) addTree(path, true);
      return;
    }
    if (plan.polling) watchPolled(path, () => mark(path, false));
    mark(path, done);
  };
  const addTree = (dir: string, fresh: boolean): void => {
    if (closed || trees.has(dir)) return;
    trees.add(dir);
    const pollDir = (): void => {
      // Polling sees a directory's own mtime: rescan it for new entries.
      let names: string[] = [];
      try {
        names = readdirSync(dir);
      } catch {
        // gone: its files' own watchers report them missing
      }
      for (const e of names) {
        const full = join(dir, e);
        if (!polled.has(full)) inTree(full, false);
      }
    };
    if (plan.polling) {
      watchPolled(dir, pollDir);
    } else {
      watchDir(dir, (name, done) => {
        if (name === null) {
          // The directory went away, came back, or events were lost. The hub
          // keeps this subscription (it watches the directory again when it
          // is made again), so the directory stays in `trees`: adding it
          // again would subscribe twice. What is in it now is looked at anew.
          mark(dir, false);
          let names: string[] = [];
          try {
            names = readdirSync(dir);
          } catch {
            // gone for now
          }
          for (const e of names) inTree(join(dir, e), false);
          return;
        }
        inTree(join(dir, name), done);
      });
    }
    let entries: Dirent[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      debug('autorestart: cannot list %s: %s', dir, (err as Error).message);
    }
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        if (!skipDir(full)) addTree(full, fresh);
      } else if (!ignored(full)) {
        if (plan.polling) watchPolled(full, () => mark(full, false));
        if (fresh) mark(full, false);
      }
    }
  };
  // Polling mode: fs.watchFile on each path once. fs.watchFile takes its
  // first stat later, on libuv's threadpool: a change made before that
  // stat would be its starting point and never reported. So one look, a
  // poll interval on, against a fingerprint taken now.
  const polled = new Set<string>();
  const pollFile = (path: string, listener: () => void): void => {
    const before = fingerprintSync(path);
    watchFile(path, { persistent: plan.persistent, interval: plan.interval }, listener);
    const catchUp = setTimeout(() => {
      if (!closed && fingerprintSync(path) !== before) listener();
    }, plan.interval);
    if (!plan.persistent) catchUp.unref();
    feed.onClose(() => {
      clearTimeout(catchUp);
      unwatchFile(path, listener);
    });
  };
  const watchPolled = (path: string, listener: () => void): void => {
    if (polled.has(path)) return;
    polled.add(path);
    pollFile(path, listener);
  };

  const add = (target: string): void => {
    if (closed || files.has(target)) return;
    if (ignored(target)) return;
    if (isDirectory(target)) {
      addTree(target, false);
      return;
    }
    files.set(target, fingerprintSync(target));
    if (plan.changedSince !== undefined && changedAfter(target, plan.changedSince)) mark(target, false);
    if (plan.polling) {
      // fs.watchFile stats the path, so a file replaced by rename or deleted
      // and recreated is followed naturally.
      pollFile(target, () => mark(target, false));
      return;
    }
    const dir = dirname(target);
    let names = byDir.get(dir);
    if (names) {
      names.set(basename(target), target);
      return;
    }
    names = new Map([[basename(target), target]]);
    byDir.set(dir, names);
    watchDir(dir, onDirEvent(names));
  };

  try {
    for (const t of plan.targets) add(t);
  } catch (err) {
    feed.fail(err);
  }
  // The module graph: everything loaded so far, and from now on. What is
  // loaded already is watched now: the program may print that it is up,
  // and a deploy tool change a file, on this very turn (a watch added a
  // turn later missed such a change: the file had already been written).
  // The load hook, and on Node < 22.15 module.register's loader thread,
  // cost a few tens of ms that the program's own start-up (its first line
  // of output) should not wait for: they come on the next turn, with a
  // second snapshot for what was loaded meanwhile.
  const fromGraph = (path: string): void => {
    if (!plan.nodeModules && inNodeModules(path)) return;
    try {
      add(path);
    } catch (err) {
      debug('autorestart: cannot watch %s: %s', path, (err as Error).message);
    }
  };
  if (!closed) {
    const graph = moduleGraph();
    graph.snapshotNow();
    for (const f of graph.files) fromGraph(f);
  }
  const startGraph = setImmediate(() => {
    const graph = moduleGraph();
    const untrack = graph.track();
    for (const f of graph.files) fromGraph(f);
    graph.on('file', fromGraph);
    feed.onClose(() => {
      graph.removeListener('file', fromGraph);
      untrack();  // the last watcher's end removes the load hook
    });
    debug('autorestart: watching %d files (%s)', files.size,
      plan.polling ? `polling every ${plan.interval} ms` : useInotify ? 'inotify' : 'fs.watch');
    onGraph?.();
  });
  feed.onClose(() => {
    closed = true;
    clearTimeout(timer);
    clearImmediate(startGraph);
  });
  return { feed, files };
}

/** The keys of NotifyOnChangeOptions, for validateOptionKeys: every key, or tsc says which is missing. */
const NOTIFY_ON_CHANGE_KEY_SET: Record<keyof NotifyOnChangeOptions, true> = {
  polling: true, interval: true, paths: true, debounce: true, ignore: true, signal: true, persistent: true, node_modules: true,
};
export const NOTIFY_ON_CHANGE_KEYS = Object.keys(NOTIFY_ON_CHANGE_KEY_SET) as (keyof NotifyOnChangeOptions)[];

/**
 * Watches the program's files and yields ONE `{ paths }` event per burst of
 * changes, once they have settled. Watched: the program's module graph
 * (main script, preloads, every module it imports or requires, now and
 * later; in a single executable application `process.execPath`), minus
 * `node_modules` unless `node_modules: true`, plus `options.paths`, minus
 * what `ignore` rejects. A file the program never loaded never triggers.
 * Directory watches through one inotify instance (so rename-over and
 * delete + recreate keep working), or `fs.watchFile` stat polling with
 * `polling: true`. Watchers are set up at once (a missing file in `paths`
 * throws ENOENT here) and removed when the iteration ends (`break`,
 * `return`, or `signal`).
 *
 * @example for await (const { paths } of notifyOnChange({ paths: ['config.json'] })) reload(paths);
 */

export function notifyOnChange(options: NotifyOnChangeOptions = {}): AsyncIterableIterator<ChangeEvent> {
  if (options !== null && typeof options === 'object') validateOptionKeys(options, 'options', NOTIFY_ON_CHANGE_KEYS);
  const plan = parseWatchOptions(options, true);
  // A preflight/bridge watches nothing: an iteration that never yields
  // (but ends on the caller's signal, as it would anywhere).
  if (isBridge()) {
    const feed = new Feed<ChangeEvent>((a) => a);
    const abort = plan.signal;
    if (abort !== undefined) {
      const onAbort = (): void => feed.fail(abortError(abort.reason));
      if (abort.aborted) onAbort();
      else abort.addEventListener('abort', onAbort, { once: true });
    }
    return feed;
  }
  return startWatching(plan).feed;
}
