/**
 * The program's module graph: every file this process has loaded as code
 * (main script, preloads from --import/--require/NODE_OPTIONS, modules
 * reached by import, require() and dynamic import(), files compiled by
 * loaders such as tsx), and every file it loads from now on.
 *
 * Public APIs only, in three layers:
 * 1. What is already loaded when tracking starts: the inspector protocol's
 *    `Profiler.getBestEffortCoverage` (an in-process session), which lists
 *    the scripts V8 holds, ESM and CJS alike, under their file URLs; plus
 *    `require.cache`.
 * 2. What is loaded later: `module.registerHooks()` (Node >= 22.15 / 23.5):
 *    a synchronous, in-thread `load` hook that sees `import` and `require()`
 *    alike. Else `module.register()` (Node >= 18.19 / 20.6): a `load` hook
 *    on the loader thread Node runs for such hooks, reporting URLs over a
 *    MessagePort; it sees ESM loads only, so require.cache is read again
 *    whenever an ESM load or a change is reported.
 * 3. Node 18 < 18.19 has neither hook: files loaded after tracking started
 *    are picked up by the next image's snapshot (it reloads them at start).
 *
 * Node's own built-ins (node:) are not files and never tracked.
 */
import { EventEmitter } from 'node:events';
import { statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { debuglog } from 'node:util';
import { isMainThread } from '../main-thread';

const debug = debuglog('posix-daemon');

// The library's own compiled files (dist/) are not part of "the program"
// (and in a checkout tsc rewrites them while programs run).
const libraryRoot = join(__dirname, '..') + sep;

type ModuleApi = {
  registerHooks?: (hooks: { load?: (url: string, context: unknown, next: (u: string, c: unknown) => unknown) => unknown }) => unknown;
  register?: (specifier: string, parentURL: string | URL, options: { data: unknown; transferList: unknown[] }) => void;
};
const nodeModule = require('node:module') as ModuleApi;

/** The path of a loaded module's URL or filename, or undefined for anything that is not a file. */
export function toPath(urlOrPath: string): string | undefined {
  if (urlOrPath.startsWith('file:')) {
    try {
      // Loaders add queries (?v=1, tsx's namespaces): the file is the same.
      const u = new URL(urlOrPath);
      u.search = '';
      u.hash = '';
      return fileURLToPath(u);
    } catch {
      return undefined;
    }
  }
  return urlOrPath.startsWith('/') ? urlOrPath : undefined;
}

// Runs on Node's loader thread (module.register). Kept as source: a data:
// URL needs no file of its own and works from the CJS build.
const HOOKS_SOURCE = `
let port;
export function initialize(data) { port = data.port; }
export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (url.startsWith('file:')) port.postMessage(url);
  return result;
}
`;

/**
 * The one tracker of this process. Emits 'file' (path) for every file
 * loaded, once per path, while anyone tracks (see track()); `files` holds
 * them all.
 */
class ModuleGraph extends EventEmitter {
  readonly files = new Set<string>();
  #users = 0;
  #cjsSeen = 0;
  /** Undoes the load hook (registerHooks), or stops listening to it (register). */
  #unhook: (() => void) | undefined;
  /** module.register's hook cannot be removed: installed once, muted when unused. */
  #registerPort: import('node:worker_threads').MessagePort | undefined;

  /**
   * Starts tracking for one user (a watcher); the returned function ends
   * it. The first user installs the load hook and takes a snapshot of what
   * is loaded; when the last one ends, the hook goes: a program that
   * stopped watching pays nothing on its later loads.
   */
  track(): () => void {
    if (this.#users++ === 0) {
      this.#installHooks();
      // Also after a pause: what was loaded meanwhile was not seen.
      this.#snapshot();
      this.rescanRequireCache();
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.#users === 0) {
        this.#unhook?.();
        this.#unhook = undefined;
      }
    };
  }

  /**
   * Adds what is loaded now (V8's scripts and require.cache), without
   * installing the load hook: a watcher calls it synchronously, so that a
   * file changed right after restartOnChange()/notifyOnChange() returned
   * is already watched (the hook, which can cost tens of ms, comes a turn
   * later with track()).
   */
  snapshotNow(): void {
    this.#snapshot();
    this.rescanRequireCache();
  }

  /** Adds what require.cache holds that is new (cheap when nothing is). */
  rescanRequireCache(): void {
    const keys = Object.keys(require.cache);
    if (keys.length === this.#cjsSeen) return;
    this.#cjsSeen = keys.length;
    for (const k of keys) this.add(k);
  }

  add(urlOrPath: string): void {
    const path = toPath(urlOrPath);
    if (path === undefined || this.files.has(path) || path.startsWith(libraryRoot)) return;
    try {
      if (!statSync(path).isFile()) return;
    } catch {
      return;  // gone already, or a virtual name
    }
    this.files.add(path);
    this.emit('file', path);
  }

  #snapshot(): void {
    let Session: typeof import('node:inspector').Session;
    try {
      ({ Session } = require('node:inspector') as typeof import('node:inspector'));
    } catch {
      debug('autorestart: no inspector in this Node: tracking the main script, require.cache and later loads');
      return;
    }
    const session = new Session();
    try {
      session.connect();
      // Best-effort coverage lists every script V8 holds, with its URL, in a
      // few ms, without enabling the debugger or the profiler (the debugger's
      // scriptParsed replay costs ~100 ms: it hashes every source). The reply
      // comes synchronously on this thread. A CommonJS script V8 has already
      // collected may be missing: require.cache has those.
      session.post('Profiler.getBestEffortCoverage', (err, reply) => {
        if (err) {
          debug('autorestart: coverage snapshot failed: %s', err.message);
          return;
        }
        for (const script of reply.result) this.add(script.url);
      });
    } catch (err) {
      debug('autorestart: inspector snapshot failed: %s', (err as Error).message);
    } finally {
      session.disconnect();
    }
  }

  #installHooks(): void {
    if (!isMainThread()) return;
    if (typeof nodeModule.registerHooks === 'function') {
      const handle = nodeModule.registerHooks({
        load: (url, context, nextLoad) => {
          const result = nextLoad(url, context);
          this.add(url);
          return result;
        },
      }) as { deregister?: () => void } | undefined;
      this.#unhook = () => {
        handle?.deregister?.();
        debug('autorestart: module hooks deregistered (no watcher left)');
      };
      debug('autorestart: tracking loads with module.registerHooks');
      return;
    }
    if (typeof nodeModule.register === 'function') {
      const onMessage = (url: string): void => {
        this.add(url);
        this.rescanRequireCache();
      };
      this.#unhook = () => {
        this.#registerPort?.removeListener('message', onMessage);
        debug('autorestart: module.register hook muted (no watcher left; it cannot be removed)');
      };
      if (this.#registerPort) {
        this.#registerPort.on('message', onMessage);
        this.#registerPort.unref();
        return;
      }
      const { MessageChannel } = require('node:worker_threads') as typeof import('node:worker_threads');
      const { port1, port2 } = new MessageChannel();
      port1.on('message', onMessage);
      port1.unref();  // tracking never keeps a program alive
      try {
        nodeModule.register(`data:text/javascript,${encodeURIComponent(HOOKS_SOURCE)}`, __filename,
          { data: { port: port2 }, transferList: [port2] });
        this.#registerPort = port1;
        debug('autorestart: tracking ESM loads with module.register (CJS through require.cache)');
      } catch (err) {
        port1.close();
        this.#unhook = undefined;
        debug('autorestart: module.register failed: %s', (err as Error).message);
      }
      return;
    }
    debug('autorestart: this Node has no module hooks: later loads are seen by the next image');
  }
}

let graph: ModuleGraph | undefined;

/** The process's module graph; it tracks loads while a watcher holds track(). */
export function moduleGraph(): ModuleGraph {
  graph ??= new ModuleGraph();
  return graph;
}

/** Whether `path` is inside a node_modules directory. */
export function inNodeModules(path: string): boolean {
  return path.includes(`${sep}node_modules${sep}`);
}


/** The module graph if something started tracking it, else undefined (nothing is started). */
export function startedGraph(): ModuleGraph | undefined {
  return graph;
}
