/**
 * The syntax check run before a restart, in this process (no second Node
 * start-up): a file that does not parse is never exec'd.
 *
 * The module type follows the loader's rules: .mjs is ESM, .cjs CommonJS,
 * .js and extensionless files what the nearest package.json "type" says,
 * else `--experimental-default-type`, else CommonJS with syntax detection
 * (Node >= 20.19 / 22.7, or `--experimental-detect-module`) accepting ESM.
 *
 * - CommonJS: `vm.compileFunction` with the CommonJS wrapper's parameters,
 *   which is how Node's loader compiles it: V8's own verdict.
 * - ESM: core has no compile-only API for modules without a flag
 *   (vm.SourceTextModule needs --experimental-vm-modules), so acorn parses
 *   it. Acorn may lag V8 on brand-new syntax: its "does not parse" is
 *   confirmed by `node --check` (the slow path runs only for a broken file),
 *   so a valid program is never refused.
 * - JSON: JSON.parse.
 * - TypeScript (.ts, .mts, .cts, .tsx): through esbuild as the `tsx` loader
 *   the program uses would (tsx's own esbuild); without tsx, with
 *   `module.stripTypeScriptTypes` (Node >= 22.13) for erasable syntax;
 *   otherwise skipped (logged with NODE_DEBUG=posix-daemon): no parser of
 *   ours could know what the program's loader accepts.
 * - Anything else (.node, .wasm, data files from `paths`): not checked.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, sep } from 'node:path';
import { compileFunction } from 'node:vm';
import { debuglog } from 'node:util';
import { moduleGraph } from './graph';
import { parseNodeOptions } from '../relaunch';
import { formatLocation, lineColumn, parseArrow, type SourceLocation } from './where';

const debug = debuglog('posix-daemon');

const CJS_PARAMS = ['exports', 'require', 'module', '__filename', '__dirname'];
const TS_EXTENSIONS = new Set(['.ts', '.mts', '.cts', '.tsx']);
// Flags that change how Node parses a file, for the `node --check` confirmation.
const PARSE_FLAGS = /^--(no-)?experimental-(default-type|detect-module|require-module|strip-types)(=|$)/;

/** The failure of a check: a SyntaxError naming the file, and where in it when the parser says. */
export type CheckError = SyntaxError & { path: string; line?: number; column?: number };

/** What a parser said: its message, and where. */
interface Verdict { message: string; loc?: { line: number; column: number; caret?: string } }

/**
 * `<file> does not parse: <message>`, then (when the parser gave a place)
 * `<file>:<line>:<column>`, the source line and a caret, as node prints a
 * SyntaxError. `source`: the file's text, for that line.
 */
function checkError(file: string, { message, loc }: Verdict, source?: string): CheckError {
  let where = '';
  if (loc !== undefined) {
    const line = source?.split('\n')[loc.line - 1]?.replace(/\r$/, '');
    const at: SourceLocation = { file, line: loc.line, column: loc.column, source: line, caret: line === undefined ? undefined : loc.caret };
    where = `\n${formatLocation(at)}`;
  }
  const e = new SyntaxError(`${file} does not parse: ${message}${where}`) as CheckError;
  e.path = file;
  if (loc !== undefined) {
    e.line = loc.line;
    e.column = loc.column;
  }
  return e;
}

function nodeFlags(): string[] {
  // NODE_OPTIONS split by Node's own rules (quotes, escapes).
  return [...process.execArgv, ...(parseNodeOptions(process.env.NODE_OPTIONS ?? '') ?? [])];
}

function flagValue(name: string): string | boolean | undefined {
  let v: string | boolean | undefined;
  for (const a of nodeFlags()) {
    if (a === `--${name}`) v = true;
    else if (a === `--no-${name}`) v = false;
    else if (a.startsWith(`--${name}=`)) v = a.slice(name.length + 3);
  }
  return v;
}

function detectModuleByDefault(): boolean {
  const [major, minor] = process.versions.node.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 7) || (major === 20 && minor >= 19);
}

/** 'module' | 'commonjs' | undefined (no "type": ambiguous), from the nearest package.json. */
function packageType(file: string): 'module' | 'commonjs' | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    let text: string | undefined;
    try {
      text = readFileSync(join(dir, 'package.json'), 'utf8');
    } catch {
      // none here: look further up
    }
    if (text !== undefined) {
      try {
        const type = (JSON.parse(text) as { type?: unknown }).type;
        return type === 'module' ? 'module' : type === 'commonjs' ? 'commonjs' : undefined;
      } catch {
        return undefined;  // Node itself would fail on it; the check of the code still runs
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

type Kind = 'esm' | 'cjs' | 'either';

function jsKind(file: string, ext: string): Kind {
  if (ext === '.mjs' || ext === '.mts') return 'esm';
  if (ext === '.cjs' || ext === '.cts') return 'cjs';
  const type = packageType(file);
  if (type === 'module') return 'esm';
  if (type === 'commonjs') return 'cjs';
  if (flagValue('experimental-default-type') === 'module') return 'esm';
  const detect = flagValue('experimental-detect-module');
  return detect === true || (detect === undefined && detectModuleByDefault()) ? 'either' : 'cjs';
}

function cjsError(file: string, source: string): Verdict | undefined {
  try {
    // A leading #! is legal in a script file, not inside the wrapper.
    compileFunction(source.startsWith('#!') ? `//${source}` : source, CJS_PARAMS, { filename: file });
    return undefined;
  } catch (err) {
    // V8's place is in the arrow node puts on the stack; acorn's, parsing
    // the same script, where there is none.
    const arrow = parseArrow((err as Error).stack);
    const loc = arrow ?? acornError(source, 'script')?.loc;
    return { message: `${(err as Error).name}: ${(err as Error).message}`, loc };
  }
}

let acorn: typeof import('acorn') | undefined;
function acornError(source: string, sourceType: 'module' | 'script'): Verdict | undefined {
  acorn ??= require('acorn') as typeof import('acorn');
  try {
    acorn.parse(source, { ecmaVersion: 'latest', sourceType, allowHashBang: true, allowReturnOutsideFunction: sourceType === 'script' });
    return undefined;
  } catch (err) {
    // acorn's message ends with " (line:column)"; its column is 0-based.
    const loc = (err as { loc?: { line: number; column: number } }).loc;
    return {
      message: `SyntaxError: ${(err as Error).message.replace(/ \(\d+:\d+\)$/, '')}`,
      loc: loc === undefined ? undefined : { line: loc.line, column: loc.column + 1 },
    };
  }
}

function esmError(source: string): Verdict | undefined {
  return acornError(source, 'module');
}

/** V8's verdict on an ESM file, for what acorn refused: node --check's message, and its arrow. */
function nodeCheck(file: string): Promise<Verdict | undefined> {
  const flags = process.execArgv.filter((a) => PARSE_FLAGS.test(a));
  // Loaded here: only a file acorn refuses pays for it (~5 ms at start-up).
  const { execFile } = require('node:child_process') as typeof import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...flags, '--check', file], { timeout: 60_000, encoding: 'utf8' }, (err, _o, stderr) => {
      if (!err) resolve(undefined);
      else if (typeof (err as { code?: unknown }).code !== 'number') reject(err);
      else {
        const text = String(stderr);
        const message = text.trim().split('\n').reverse().find((l) => /Error/.test(l))?.trim() ?? 'does not parse';
        resolve({ message, loc: parseArrow(text) });
      }
    });
  });
}

/** `shown`: the text whose lines an error shows (the TypeScript source of stripped code). */
async function checkJs(file: string, source: string, kind: Kind, shown = source): Promise<void> {
  let verdict: Verdict | undefined;
  if (kind === 'cjs') {
    verdict = cjsError(file, source);
  } else if (kind === 'esm') {
    const acornSays = esmError(source);
    // node --check has V8's message; acorn's place when it gives none.
    if (acornSays !== undefined) verdict = await nodeCheck(file).then((v) => v && { ...v, loc: v.loc ?? acornSays.loc });
  } else {
    // Either parse will do (syntax detection); when both fail, Node's own
    // detection has the last word.
    if (cjsError(file, source) !== undefined && esmError(source) !== undefined) verdict = await nodeCheck(file);
  }
  if (verdict !== undefined) throw checkError(file, verdict, shown);
}

type Esbuild = { transform(src: string, o: object): Promise<unknown> };
let esbuildCache: { from: string; esbuild: Esbuild | null } | undefined;
/** tsx's esbuild, as resolved from the program's directory. */
function tsxEsbuild(file: string): Esbuild | null {
  const from = dirname(file);
  if (esbuildCache?.from === from) return esbuildCache.esbuild;
  let esbuild: Esbuild | null = null;
  // The tsx this program loaded (its files are in the module graph), else
  // one resolvable from the file or the working directory.
  const loaded = [...moduleGraph().files].find((f) => f.includes(`${sep}node_modules${sep}tsx${sep}`));
  for (const base of [...(loaded ? [dirname(loaded)] : []), from, process.cwd()]) {
    try {
      const tsx = createRequire(join(base, 'noop.js')).resolve('tsx/package.json');
      esbuild = createRequire(tsx)('esbuild') as Esbuild;
      break;
    } catch {
      // not from here
    }
  }
  esbuildCache = { from, esbuild };
  return esbuild;
}

async function checkTs(file: string, source: string, ext: string): Promise<void> {
  const esbuild = tsxEsbuild(file);
  if (esbuild) {
    try {
      await esbuild.transform(source, { loader: ext === '.tsx' ? 'tsx' : 'ts', sourcefile: file, logLevel: 'silent' });
    } catch (err) {
      const first = (err as { errors?: Array<{ text: string; location?: { line: number; column: number } }> }).errors?.[0];
      // esbuild's column is 0-based.
      const loc = first?.location ? { line: first.location.line, column: first.location.column + 1 } : undefined;
      throw checkError(file, { message: first ? `SyntaxError: ${first.text}` : (err as Error).message, loc }, source);
    }
    return;
  }
  const strip = (require('node:module') as { stripTypeScriptTypes?: (s: string) => string }).stripTypeScriptTypes;
  if (strip) {
    let js: string;
    try {
      js = strip(source);
    } catch (err) {
      // Non-erasable syntax (enum, namespace) may still be fine for the
      // program's loader: not ours to refuse.
      debug('autorestart: %s: stripTypeScriptTypes: %s; not checked', file, (err as Error).message);
      return;
    }
    // Types are blanked out, not removed: places in `js` are places in `source`.
    await checkJs(file, js, jsKind(file, ext), source);
    return;
  }
  debug('autorestart: %s: no TypeScript parser available (no tsx, no module.stripTypeScriptTypes); not checked', file);
}

// Common syntax, so that the parser's functions are compiled before the
// first change (a cold first parse costs ~15 ms, a warm one ~3 ms).
const WARM_UP_SOURCE = `import a, { b as c } from "d";
export const e = async (f, ...g) => { for (const [h, i] of Object.entries(g)) { if (h !== \`\${i}\`) await f?.(h ?? 1); } return { a, ...c, k: [1, 2].map((x) => x * 2) }; };
export default class L extends Array { #p = 1; static m() { try { return new.target; } catch { return /re/g; } } }
`;

/** Loads the parser and runs it once now, off the path from a change to the restart. */
export function warmUp(): void {
  acorn ??= require('acorn') as typeof import('acorn');
  esmError(WARM_UP_SOURCE);
}

/** Whether `file` is something checkFile() parses. */
export function isCheckable(file: string): boolean {
  const ext = extname(file);
  return ext === '.js' || ext === '.mjs' || ext === '.cjs' || ext === '' || ext === '.json' || TS_EXTENSIONS.has(ext);
}

/**
 * Checks that `file` parses as the loader will parse it. Rejects with a
 * SyntaxError (`path` set) naming the file and the parser's message, or
 * with the fs error (ENOENT...) when it cannot be read.
 */
export async function checkFile(file: string): Promise<void> {
  const ext = extname(file);
  if (!isCheckable(file)) return;
  const source = readFileSync(file, 'utf8');
  if (ext === '.json') {
    try {
      JSON.parse(source);
    } catch (err) {
      const message = (err as Error).message;
      // "... at position N" (Node < 21), "... (line L column C)" (later).
      const lc = /\(line (\d+) column (\d+)\)/.exec(message);
      const pos = /at position (\d+)/.exec(message);
      const loc = lc ? { line: Number(lc[1]), column: Number(lc[2]) } : pos ? lineColumn(source, Number(pos[1])) : undefined;
      throw checkError(file, { message: `SyntaxError: ${message}`, loc }, source);
    }
    return;
  }
  if (TS_EXTENSIONS.has(ext)) {
    await checkTs(file, source, ext);
    return;
  }
  await checkJs(file, source, jsKind(file, ext));
}
