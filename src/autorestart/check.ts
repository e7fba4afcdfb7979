/**
 * The syntax check run before a restart: a file that does not parse is never exec'd.
 */
import { execFile } from 'node:child_process';

export const JS_EXTENSIONS = new Set(['.js', '.cjs', '.mjs', '']);
// Flags that change how Node parses the entry file; everything else in
// execArgv (--inspect, --watch, loaders) is not wanted in a parse check.
const PARSE_FLAGS = /^--(no-)?experimental-(default-type|detect-module|require-module|strip-types)(=|$)/;

/** `node --check file`, asynchronously: the same parser and module-type rules that will load it. */
export function checkSyntax(file: string, signal: AbortSignal | undefined): Promise<void> {
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
