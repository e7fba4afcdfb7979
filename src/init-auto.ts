/**
 * posix-daemon/init/auto: `node --import posix-daemon/init/auto app.js` (or
 * `node -r posix-daemon/init/auto app.js`). As PID 1 the process becomes the
 * init with the default options before any module of the program is loaded,
 * so nothing of the program runs twice and node starts the program only
 * once more (in the init's child, where this module does nothing). For
 * options, use `init()` or the `posix-daemon-init` command.
 */
import { execInitImage, initImageOptions, isUnderInit } from './init';

if (process.pid === 1 && !isUnderInit()) {
  execInitImage([...initImageOptions(), '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)]);
}
