/**
 * posix-daemon/init/auto: `node --import posix-daemon/init/auto app.js` (or
 * `node -r posix-daemon/init/auto app.js`). As PID 1 the process becomes the
 * init with the default options before any module of the program is loaded,
 * so nothing of the program runs twice and node starts the program only
 * once more (in the init's child, where this module does nothing). For
 * options, use `init()` or the `posix-daemon-init` command.
 */
// Only PID 1 loads the init (and with it the addon): every other process
// this preload reaches (the program under the init, children that inherit
// NODE_OPTIONS) pays nothing for it.
if (process.pid === 1) {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { execInitImage, initImageOptions, isUnderInit } = require('./init') as typeof import('./init');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { programArgv } = require('./relaunch') as typeof import('./relaunch');
  if (!isUnderInit()) execInitImage([...initImageOptions(), '--', process.execPath, ...programArgv()]);
}
