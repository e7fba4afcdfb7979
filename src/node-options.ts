/**
 * NODE_OPTIONS as Node reads it. Its own module, loading nothing: the guard
 * of every restarted image needs it before the program's first line.
 */

/**
 * NODE_OPTIONS split the way Node splits it: on spaces; double quotes group,
 * and inside them a backslash escapes the next character. null if Node would
 * reject it (then it is passed on unchanged).
 */
export function parseNodeOptions(value: string): string[] | null {
  const args: string[] = [];
  let inString = false;
  let startNew = true;
  for (let i = 0; i < value.length; i++) {
    let c = value[i];
    if (c === '\\' && inString) {
      if (i + 1 === value.length) return null;
      c = value[++i];
    } else if (c === ' ' && !inString) {
      startNew = true;
      continue;
    } else if (c === '"') {
      inString = !inString;
      continue;
    }
    if (startNew) {
      args.push(c);
      startNew = false;
    } else {
      args[args.length - 1] += c;
    }
  }
  return inString ? null : args;
}

/** The inverse of parseNodeOptions: quote what has a space, a quote or a backslash. */
export function serializeNodeOptions(args: readonly string[]): string {
  return args.map((a) => (/[ "\\]/.test(a) ? `"${a.replace(/[\\"]/g, '\\$&')}"` : a)).join(' ');
}
