#!/usr/bin/env node
/**
 * posix-daemon-init [options] [--] program [args...]
 *
 * Replaces itself at once with the init image (native/init-loop.c), which
 * runs `program` as its child: tini's job, with this package's init. Only
 * node's own start-up and this file run before; no module of the program.
 * The options are the init image's (the same as init()'s):
 *   -t MS      shutdown timeout (default 5000)
 *   -s         outside PID 1: become a child subreaper (tini -s)
 *   -g         forward signals to the program's process group (tini -g)
 *   -e N[:M]   exit status N becomes M (default 0) (tini -e)
 *   -r S:R     forward R when S arrives; R 0 drops S; names or numbers
 *              (dumb-init -r): -r TERM:QUIT
 *   -w         no warning outside PID 1 without -s
 * and, instead of running anything:
 *   -h, --help print the usage (the init image's text) and exit 0
 *   --image    print the path of the init image, an executable that can be
 *              a container's ENTRYPOINT itself (no window in which a signal
 *              sent to the container is lost)
 */
import { constants } from 'node:os';
import { execInitImage, initImagePath } from './init';

const args = process.argv.slice(2);
if (args[0] === '--image') {
  process.stdout.write(`${initImagePath}\n`);
} else {
  const out: string[] = [];
  const signals = constants.signals as Record<string, number>;
  const signo = (s: string) => (/^\d+$/.test(s) ? s : String(signals[s.startsWith('SIG') ? s : `SIG${s}`] ?? s));
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-r' && i + 1 < args.length) {
      // Signal names are this command's convenience; the image takes numbers.
      const [from, to = ''] = args[++i].split(':');
      out.push(a, `${signo(from)}:${signo(to)}`);
      continue;
    }
    out.push(a);
    if (a === '--' || !a.startsWith('-')) {
      out.push(...args.slice(i + 1));
      break;
    }
    if ((a === '-t' || a === '-e') && i + 1 < args.length) out.push(args[++i]);
  }
  try {
    execInitImage(out);
  } catch (err) {
    process.stderr.write(`posix-daemon-init: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
