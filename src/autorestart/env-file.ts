/**
 * `node --env-file=.env`: the env file is part of the program. Node loads
 * it at start-up without overriding variables that are already set; an
 * exec that passed the loaded values on as ordinary variables would make
 * them win over the file from then on, so an edited .env would never be
 * seen. Here: which values came from the file (not in the environment the
 * process was started with, /proc/self/environ), so that the exec leaves
 * them out and the next image reads the file again, and which files to
 * watch.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { debuglog } from 'node:util';

const debug = debuglog('posix-daemon');

/** The env files of this process's command line, absolute, in order. */
function readPaths(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const m = /^--env-file(?:-if-exists)?(?:=(.*))?$/.exec(argv[i]);
    if (m === null) continue;
    const value = m[1] ?? argv[++i];
    if (value !== undefined && value !== '') out.push(resolve(value));
  }
  return out;
}

const paths = readPaths();

function parse(text: string): Record<string, string> {
  const util = require('node:util') as { parseEnv?: (s: string) => Record<string, string> };
  if (typeof util.parseEnv === 'function') return util.parseEnv(text);
  // Node without util.parseEnv has no --env-file either: only reached for
  // a hand-made execArgv. The simple KEY=value lines.
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(?:export\s+)?([\w.-]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) out[m[1]] = m[2].replace(/^(['"])(.*)\1$/, '$2');
  }
  return out;
}

/** Names set in the environment this image was exec'd with. */
function initialNames(): Set<string> | undefined {
  try {
    const raw = readFileSync('/proc/self/environ', 'latin1');
    return new Set(raw.split('\0').filter((kv) => kv !== '').map((kv) => kv.slice(0, kv.indexOf('='))));
  } catch {
    return undefined;  // no /proc: treat nothing as loaded from a file
  }
}

function readValues(): Map<string, string> {
  const out = new Map<string, string>();
  if (paths.length === 0) return out;
  const initial = initialNames();
  if (initial === undefined) return out;
  for (const file of paths) {
    let values: Record<string, string>;
    try {
      values = parse(readFileSync(file, 'utf8'));
    } catch (err) {
      debug('autorestart: env file %s: %s', file, (err as Error).message);
      continue;
    }
    for (const [k, v] of Object.entries(values)) {
      // Set outside the file: the user's value won, and it goes on.
      if (initial.has(k)) continue;
      if (process.env[k] === v) out.set(k, v);
    }
  }
  return out;
}

// Read as the library loads, which is at start-up: the values the file had
// when Node loaded it.
const values = readValues();

/** The env files this process was started with (`--env-file`, `--env-file-if-exists`). */
export function envFilePaths(): string[] {
  return [...paths];
}

/** Variables Node loaded from the env files at start-up (name → value then). */
export function envFileValues(): Map<string, string> {
  return values;
}
