/**
 * How to run "this program" again from another directory: the daemon starts
 * in '/', so everything the foreground named relative to its own directory
 * (the main script, --import/--require/--loader preloads in execArgv and in
 * NODE_OPTIONS) is made absolute first.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { debuglog } from 'node:util';
import { parseNodeOptions, serializeNodeOptions } from './node-options';

const debug = debuglog('posix-daemon');

export { parseNodeOptions, serializeNodeOptions };

const EVAL_FLAGS = new Set(['-e', '--eval', '-p', '--print']);
const IMPORT_FLAGS = new Set(['--import', '--loader', '--experimental-loader']);
const REQUIRE_FLAGS = new Set(['-r', '--require']);

/** ESM-style entry of a bare package specifier, found from `base` the way Node would. */
function resolveEsmBare(spec: string, base: string): string | null {
  const parts = spec.split('/');
  const nameLen = spec.startsWith('@') ? 2 : 1;
  const name = parts.slice(0, nameLen).join('/');
  const sub = parts.length > nameLen ? `./${parts.slice(nameLen).join('/')}` : '.';
  for (let dir = base; ; dir = dirname(dir)) {
    const pkgDir = join(dir, 'node_modules', name);
    const pkgFile = join(pkgDir, 'package.json');
    if (existsSync(pkgFile)) {
      const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { exports?: unknown; main?: string };
      if (pkg.exports !== undefined) {
        let target: unknown = pkg.exports;
        if (typeof target === 'object' && target !== null && !Array.isArray(target) &&
            Object.keys(target).some((k) => k.startsWith('.'))) {
          target = (target as Record<string, unknown>)[sub];
        } else if (sub !== '.') {
          target = undefined;
        }
        const pick = (t: unknown): string | null => {
          if (typeof t === 'string') return t;
          if (Array.isArray(t)) {
            for (const x of t) {
              const r = pick(x);
              if (r !== null) return r;
            }
            return null;
          }
          if (t !== null && typeof t === 'object') {
            for (const [cond, v] of Object.entries(t)) {
              if (cond === 'import' || cond === 'node' || cond === 'default') {
                const r = pick(v);
                if (r !== null) return r;
              }
            }
          }
          return null;
        };
        const rel = pick(target);
        return rel === null ? null : join(pkgDir, rel);
      }
      return null;  // no exports: let require.resolve handle main/index
    }
    if (dirname(dir) === dir) return null;
  }
}

function isPathLike(spec: string): boolean {
  return spec.startsWith('./') || spec.startsWith('../') || spec === '.' || spec === '..';
}

/**
 * The daemon starts in '/', so a preload named relative to the foreground's
 * directory (`--import tsx`, `-r ./setup.js`) would not be found there.
 * Resolve such specifiers to absolute ones from the foreground's cwd.
 */
function absolutizeSpecifier(flag: string, spec: string): string {
  if (spec.startsWith('node:') || spec.startsWith('file:') || spec.startsWith('data:') || isAbsolute(spec)) return spec;
  const cwd = process.cwd();
  try {
    if (isPathLike(spec)) {
      const abs = resolvePath(cwd, spec);
      return IMPORT_FLAGS.has(flag) ? pathToFileURL(abs).href : abs;
    }
    if (IMPORT_FLAGS.has(flag)) {
      const esm = resolveEsmBare(spec, cwd);
      if (esm !== null) return pathToFileURL(esm).href;
    }
    const req = createRequire(join(cwd, '[daemonize]'));
    const found = req.resolve(spec);
    return IMPORT_FLAGS.has(flag) ? pathToFileURL(found).href : found;
  } catch (err) {
    debug('daemonize: could not resolve %s %s from %s: %s', flag, spec, cwd, (err as Error).message);
    return spec;
  }
}

/** `argv` (node flags) with cwd-relative preloads (--import, --require, --loader) made absolute. */
function absolutizePreloads(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (IMPORT_FLAGS.has(flag) || REQUIRE_FLAGS.has(flag)) {
      if (eq > 0) {
        out.push(`${flag}=${absolutizeSpecifier(flag, a.slice(eq + 1))}`);
      } else if (i + 1 < argv.length) {
        out.push(a, absolutizeSpecifier(flag, argv[++i]));
      } else {
        out.push(a);
      }
      continue;
    }
    out.push(a);
  }
  return out;
}

/** NODE_OPTIONS for the daemon, which starts in another directory: preloads made absolute. */
export function relaunchNodeOptions(value: string): string {
  const args = parseNodeOptions(value);
  if (args === null) return value;
  const rewritten = absolutizePreloads(args);
  return rewritten.every((a, i) => a === args[i]) ? value : serializeNodeOptions(rewritten);
}

let seaCache: boolean | undefined;
/** Whether this is a single executable application, where the node binary IS the program. */
export function isSea(): boolean {
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

/** Whether the program is code given on the command line (`node -e`, `-p`): there is no main script. */
export function isEvalProgram(): boolean {
  return process.execArgv.some((a) => EVAL_FLAGS.has(a));
}

/** The main script (absolute), or undefined: `node -e`/`-p`, a SEA, the REPL. */
export function mainScript(): string | undefined {
  if (isSea() || isEvalProgram()) return undefined;
  const main = process.argv[1];
  return typeof main === 'string' && main !== '' && main !== '-' ? resolvePath(main) : undefined;
}

/**
 * The command line as the kernel has it, read when this module loads:
 * before the program is likely to set process.title, which overwrites it.
 */
const startCmdline = ((): string[] | undefined => {
  try {
    return readFileSync('/proc/self/cmdline', 'utf8').split('\0');
  } catch {
    return undefined;  // no /proc
  }
})();

/**
 * The main script as the command line spelled it (`node app.mjs`: `app.mjs`),
 * when that still names `main` from the current directory; else `main`.
 * Node makes process.argv[1] absolute; the command line (/proc/self/cmdline)
 * keeps the user's spelling, which `ps` and `pgrep -f` match. A chdir()
 * that changed what the spelling names, or a command line that does not
 * match (a process.title set before this module loaded), leaves `main`.
 */
export function scriptAsGiven(main: string): string {
  const given = startCmdline?.[1 + process.execArgv.length];
  return given !== undefined && given !== '' && resolvePath(given) === main ? given : main;
}

export interface ProgramArgvOptions {
  /**
   * The new image starts in another directory (a daemon in '/'): preloads in
   * execArgv named relative to this process's directory are made absolute.
   * Default false: same directory (a worker, an exec in place, the init's child).
   */
  elsewhere?: boolean;
  /** The main script; default `mainScript()`. null: none (run from execArgv alone). */
  script?: string | null;
  /** The program's own arguments; default this process's (after the script, or after node for `-e`). */
  args?: readonly string[];
}

/**
 * The one builder of "this program's argv": what follows `process.execPath`
 * to run this program again (execArgv, the main script, its arguments).
 * daemonize, selfMonitor, restartViaExec and init() all start "the same
 * program"; they differ only in where it starts (`elsewhere`) and in an
 * explicit script/arguments.
 */
export function programArgv({ elsewhere = false, script, args }: ProgramArgvOptions = {}): string[] {
  const execArgv = elsewhere ? absolutizePreloads(process.execArgv) : [...process.execArgv];
  // `node -e code a b`: process.argv is [node, a, b]; a script's: [node, script, a, b].
  const main = script === undefined ? mainScript() : script ?? undefined;
  // In a SEA argv[1] is the binary again, and the binary is the program.
  const own = args ?? process.argv.slice(isEvalProgram() && !isSea() ? 1 : 2);
  return main === undefined ? [...execArgv, ...own] : [...execArgv, main, ...own];
}

/**
 * The arguments that start this program again elsewhere (a daemon, in '/'):
 * execArgv with cwd-relative preloads made absolute, the main script made
 * absolute, the program's arguments. Throws ERR_DAEMONIZE_NO_SCRIPT for a
 * program read from stdin.
 */
export function relaunchArgs(): string[] {
  if (!isEvalProgram() && !isSea()) {
    const script = process.argv[1];
    if (script === undefined || script === '-') {
      const err = new Error('daemonize needs a main script: a program read from stdin cannot be started again');
      Object.defineProperty(err, 'code', { value: 'ERR_DAEMONIZE_NO_SCRIPT', enumerable: true });
      throw err;
    }
  }
  return programArgv({ elsewhere: true });
}
