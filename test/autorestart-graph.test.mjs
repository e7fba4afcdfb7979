// restartOnChange watches the program's module graph: the files it
// imported, required and dynamic-imported, never a file it did not load,
// nor node_modules. Every changed file is checked before the exec, and
// again right before it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Reaper, root } from './helpers.mjs';
import { App, autorestartUrl } from './fixtures/autorestart-harness.mjs';
import { writeGraphApp, lib } from './fixtures/autorestart-graph-app.mjs';

const reaper = new Reaper();
const dirs = [];
after(async () => {
  await reaper.killAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpDir() {
  const dir = mkdtempSync(join(tmpdir(), 'autorestart-graph-'));
  dirs.push(dir);
  return dir;
}

// Time in which no further restart may happen (proves an absence; times nothing).
const QUIET_MS = 1200;

async function expectRestart(app, esm, cjs, gen) {
  const m = await app.nextLine(/^ready (\S+) (\S+) (\d+) (\d+)$/, `ready ${esm} ${cjs} ${gen}`);
  assert.deepEqual(m.slice(1), [esm, cjs, String(gen), String(app.pid)], 'restarted into the new code, same PID');
  const mark = app.mark();
  await sleep(QUIET_MS);
  assert.deepEqual(app.since(mark, /^(ready|error|fatal)/), [], 'exactly one restart');
}

async function expectNoRestart(app, esm, cjs, gen, what) {
  const mark = app.mark();
  await sleep(QUIET_MS);
  assert.deepEqual(app.since(mark, /^(ready|error|fatal)/), [], what);
  app.send('ping');
  const m = await app.nextLine(/^pong (\S+) (\S+) (\S+) (\d+) (\d+)$/, 'pong');
  assert.deepEqual([m[1], m[2], m[4], Number(m[5])], [esm, cjs, String(gen), app.pid], 'the old image answers');
}

test('ESM import, CJS require, later dynamic import: each edit is one restart into the new code; node_modules and never-loaded files are not watched; a broken module is not exec\'d', async () => {
  const dir = tmpDir();
  const main = writeGraphApp(dir);
  const app = new App([main], { reaper, cwd: dir });
  await app.nextLine(/^ready e1 c1 0 /, 'first start');

  writeFileSync(join(dir, 'esm-lib.mjs'), lib.esm('e2'));
  await expectRestart(app, 'e2', 'c1', 1);

  writeFileSync(join(dir, 'cjs-lib.cjs'), lib.cjs('c2'));
  await expectRestart(app, 'e2', 'c2', 2);

  // late.mjs is not loaded yet: editing it does nothing...
  writeFileSync(join(dir, 'late.mjs'), lib.late('l2'));
  await expectNoRestart(app, 'e2', 'c2', 2, 'a module not loaded (yet) is not watched');
  // ...until the program imports it.
  app.send('load-late');
  await app.nextLine(/^late l2$/);
  writeFileSync(join(dir, 'late.mjs'), lib.late('l3'));
  await expectRestart(app, 'e2', 'c2', 3);
  app.send('load-late');
  await app.nextLine(/^late l3$/, 'the new image loads the new version');

  writeFileSync(join(dir, 'node_modules', 'dep', 'index.js'), 'exports.dep = 2;\n');
  await expectNoRestart(app, 'e2', 'c2', 3, 'node_modules are not watched by default');
  writeFileSync(join(dir, 'never-loaded.mjs'), 'export const x = 2;\n');
  await expectNoRestart(app, 'e2', 'c2', 3, 'a file never loaded never restarts');

  // A syntax error in an imported module (not the main script).
  writeFileSync(join(dir, 'esm-lib.mjs'), `${lib.esm('broken')}export const = ;\n`);
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.equal(err[1], 'SyntaxError');
  assert.match(JSON.parse(err[2]), /esm-lib\.mjs does not parse/);
  await expectNoRestart(app, 'e2', 'c2', 3, 'the old image keeps running');
  writeFileSync(join(dir, 'esm-lib.mjs'), lib.esm('e3'));
  await expectRestart(app, 'e3', 'c2', 4);

  // Same for CommonJS, checked by V8 itself.
  writeFileSync(join(dir, 'cjs-lib.cjs'), 'exports.cjs = (;\n');
  assert.match(JSON.parse((await app.nextLine(/^error SyntaxError (.*)$/, 'onError'))[1]), /cjs-lib\.cjs does not parse/);
  writeFileSync(join(dir, 'cjs-lib.cjs'), lib.cjs('c3'));
  await expectRestart(app, 'e3', 'c3', 5);
  assert.equal(app.since(0, /^ready broken/).length, 0);
});

test('node --import tsx main.ts: editing an imported .ts file restarts into it; a TypeScript syntax error does not', async () => {
  const dir = tmpDir();
  const main = writeGraphApp(dir, { ts: true });
  // tsx resolves from the repository (the app lives in a temp dir).
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs');
  const app = new App([main], { reaper, cwd: dir, nodeArgs: ['--import', `file://${tsx}`] });
  await app.nextLine(/^ready e1 c1 0 /, 'first start');
  writeFileSync(join(dir, 'lib.ts'), lib.ts('e2'));
  await expectRestart(app, 'e2', 'c1', 1);
  writeFileSync(join(dir, 'lib.ts'), `${lib.ts('broken')}export const y: = 1;\n`);
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.equal(err[1], 'SyntaxError');
  assert.match(JSON.parse(err[2]), /lib\.ts does not parse/);
  await expectNoRestart(app, 'e2', 'c1', 1, 'the old image keeps running');
  writeFileSync(join(dir, 'lib.ts'), lib.ts('e3'));
  await expectRestart(app, 'e3', 'c1', 2);
});

test('a file broken while beforeRestart runs is never exec\'d: the restart is called off, the next good version restarts', async () => {
  const dir = tmpDir();
  const main = writeGraphApp(dir, { gate: true });
  const app = new App([main], { reaper, cwd: dir });
  await app.nextLine(/^ready e1 c1 0 /, 'first start');
  writeFileSync(join(dir, 'esm-lib.mjs'), lib.esm('e2'));
  await app.nextLine(/^before-restart$/);
  // The check before the hook passed; now the main script breaks.
  writeFileSync(main, 'this is not javascript (\n');
  app.send('go');
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.equal(err[1], 'SyntaxError');
  assert.match(JSON.parse(err[2]), /main\.mjs does not parse/);
  app.send('ping');
  const pong = await app.nextLine(/^pong (\S+) (\S+) (\S+) (\d+) (\d+)$/, 'the old image answers');
  assert.deepEqual([pong[1], pong[4], Number(pong[5])], ['e1', '0', app.pid]);
  writeGraphApp(dir, { gate: true });  // main fixed (libraries rewritten as e1/c1)
  writeFileSync(join(dir, 'esm-lib.mjs'), lib.esm('e3'));
  await app.nextLine(/^before-restart$/, 'the next good version');
  app.send('go');
  await app.nextLine(/^ready e3 c1 1 (\d+)$/, 'restarted into the good version');
  assert.equal(app.child.exitCode, null);
});

// A change made on the very turn restartOnChange()/notifyOnChange() returned
// (the program says it is up, a deploy tool writes at once) is not lost: the
// files already loaded are watched before the call returns. Here the program
// itself edits its imported module right after the call, which no watch
// added a turn later could ever see (dep.mjs lives in a directory of its
// own: nothing else there is watched before the module graph is).
test('a change on the turn the watch was asked for is seen: restartOnChange restarts into it, notifyOnChange yields it', { timeout: 60000 }, async () => {
  const dir = tmpDir();
  mkdirSync(join(dir, 'lib'));
  writeFileSync(join(dir, 'lib', 'dep.mjs'), 'export const version = 1;\n');
  writeFileSync(join(dir, 'restart.mjs'), `
import { writeFileSync } from 'node:fs';
import { restartOnChange } from ${JSON.stringify(autorestartUrl)};
import { version } from './lib/dep.mjs';
console.log('ready ' + version + ' ' + process.pid);
restartOnChange({ persistent: true, onError: (e) => console.log('error ' + e.message) });
if (version === 1) writeFileSync(new URL('./lib/dep.mjs', import.meta.url), 'export const version = 2;\\n');
`);
  writeFileSync(join(dir, 'notify.mjs'), `
import { writeFileSync } from 'node:fs';
import { notifyOnChange } from ${JSON.stringify(autorestartUrl)};
import { version } from './lib/dep.mjs';
const changes = notifyOnChange({ persistent: true });
writeFileSync(new URL('./lib/dep.mjs', import.meta.url), 'export const version = ' + (version + 1) + ';\\n');
for await (const { paths } of changes) {
  console.log('change ' + paths.map((p) => p.split('/').pop()).join(','));
  break;
}
`);
  const restarting = new App([join(dir, 'restart.mjs')], { reaper, cwd: dir });
  await restarting.nextLine(/^ready 1 /, 'first start');
  const m = await restarting.nextLine(/^ready 2 (\d+)$/, 'a restart into version 2');
  assert.equal(Number(m[1]), restarting.pid, 'same PID');

  writeFileSync(join(dir, 'lib', 'dep.mjs'), 'export const version = 1;\n');
  const notified = new App([join(dir, 'notify.mjs')], { reaper, cwd: dir });
  await notified.nextLine(/^change dep\.mjs$/, 'the change of dep.mjs');
});
