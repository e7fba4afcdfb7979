/**
 * notifyOnChange: watch files and yield one event per settled burst of changes.
 */
import { realpathSync, statSync, unwatchFile, watch, watchFile } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { debuglog } from 'node:util';
import { abortError, invalidArgValue, outOfRange } from '../errors';
import {
  validateAbortSignal, validateArray, validateBoolean, validateCString, validateDuration, validateObject,
} from '../validators';
import { isSea, mainScript } from './exec';

const debug = debuglog('posix-daemon');

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

export function startWatching(plan: WatchPlan): Feed<ChangeEvent> {
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

