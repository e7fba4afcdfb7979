/**
 * Where an error points in the program's files: `file:line:column`, and
 * the source line with a caret under the column, as node prints it. For
 * the pre-restart check (a file that does not parse) and for a preflight's
 * refusal (the error its start failed with).
 */
import { dirname, isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A place in a file: 1-based line and column; the source line and V8's caret line when known. */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
  source?: string;
  caret?: string;
}

function toPath(file: string): string | undefined {
  if (file.startsWith('file://')) {
    try {
      return fileURLToPath(file);
    } catch {
      return undefined;
    }
  }
  return isAbsolute(file) ? file : undefined;
}

/**
 * Node's "arrow" at the top of a SyntaxError's stack, or of `node --check`'s
 * stderr: `file:line`, the source line, then a caret line (`   ^`, or a
 * range `^^^`). The column is that of the first caret.
 */
export function parseArrow(text: string | undefined): SourceLocation | undefined {
  const m = /^(.+):(\d+)\r?\n(.*)\r?\n([ \t]*)(\^+)[ \t]*(?:\r?\n|$)/.exec(String(text ?? ''));
  if (m === null) return undefined;
  const file = toPath(m[1]);
  if (file === undefined) return undefined;
  return { file, line: Number(m[2]), column: m[4].length + 1, source: m[3], caret: m[4] + m[5] };
}

/** Line and column (1-based) of a character offset in `text`. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, offset));
  const nl = before.lastIndexOf('\n');
  return { line: before.split('\n').length, column: before.length - nl };
}

/** The library's own files (dist/): not where a program's error comes from. */
const LIBRARY_DIR = dirname(__dirname);

/**
 * Where `err` comes from in the program: the arrow of a SyntaxError thrown
 * while loading a module, else the first stack frame in a file that is
 * neither Node's own nor this library's.
 */
export function errorLocation(err: unknown): SourceLocation | undefined {
  const stack = (err as { stack?: unknown } | null)?.stack;
  if (typeof stack !== 'string') return undefined;
  const arrow = parseArrow(stack);
  if (arrow !== undefined) return arrow;
  for (const line of stack.split('\n')) {
    const m = /^\s+at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/.exec(line);
    if (m === null) continue;
    const file = toPath(m[1]);
    if (file === undefined || file.startsWith(LIBRARY_DIR + '/')) continue;
    return { file, line: Number(m[2]), column: Number(m[3]) };
  }
  return undefined;
}

/**
 * `file:line:column`, then the source line and its caret when the source
 * is known: what node prints above a SyntaxError, with the column.
 */
export function formatLocation(loc: SourceLocation): string {
  const head = `${loc.file}:${loc.line}:${loc.column}`;
  if (loc.source === undefined) return head;
  // The caret under the column: tabs stay tabs, so it lines up in a terminal.
  const caret = loc.caret ?? `${loc.source.slice(0, loc.column - 1).replace(/[^\t]/g, ' ')}^`;
  return `${head}\n${loc.source}\n${caret}`;
}
