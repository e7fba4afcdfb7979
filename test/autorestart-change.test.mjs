// restartOnChange end to end: the test rewrites a running program's main
// script the ways editors and compilers do, and the program must restart
// exactly once per change, under the same PID, into the new code, never into
// a partial or broken file.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, renameSync, unlinkSync, openSync, writeSync, closeSync, ftruncateSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Reaper, zombieChildren } from './helpers.mjs';
import { App, appSource } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
const dirs = [];
after(async () => {
  await reaper.killAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpApp(source) {
  const dir = mkdtempSync(join(tmpdir(), 'autorestart-'));
  dirs.push(dir);
  const file = join(dir, 'app.mjs');
  writeFileSync(file, source);
  return file;
}

// Quiet time after a restart in which no second restart may happen. A lower
// bound only: it proves the absence of a duplicate, it does not time anything.
const QUIET_MS = 1200;

async function expectOneRestart(app, version, gen) {
  const m = await app.nextLine(/^ready (\S+) (\d+) (\d+)$/, `ready ${version}`);
  assert.equal(m[1], version, 'restarted into the new code');
  assert.equal(Number(m[2]), gen, 'one restart, one generation further');
  assert.equal(Number(m[3]), app.pid, 'same PID');
  const mark = app.mark();
  await sleep(QUIET_MS);
  assert.deepEqual(app.since(mark, /^(ready|error|fatal)/), [], 'exactly one restart');
  app.send('ping');
  const pong = await app.nextLine(/^pong (\S+) (\d+) (\d+)$/, 'pong');
  assert.deepEqual(pong.slice(1), [version, String(gen), String(app.pid)]);
}

test('plain write, rename over, delete + recreate, truncate + slow writes: one restart each, into the new code', async () => {
  const options = '{ debounce: 250 }';
  const file = tmpApp(appSource('1', { options }));
  const app = new App([file], { reaper });
  await app.nextLine(/^ready 1 0 /, 'first start');

  writeFileSync(file, appSource('2', { options }));
  await expectOneRestart(app, '2', 1);

  const tmp = join(file, '..', '.app.mjs.swp');
  writeFileSync(tmp, appSource('3', { options }));
  renameSync(tmp, file);
  await expectOneRestart(app, '3', 2);

  unlinkSync(file);
  await sleep(20);
  writeFileSync(file, appSource('4', { options }));
  await expectOneRestart(app, '4', 3);

  // Truncate, then write line by line with pauses shorter than the debounce.
  // Every prefix that ends before the last line is either a syntax error or a
  // valid program printing "partial" (the empty file too: it would exit at
  // once). Only the complete file prints "5".
  const full = appSource('partial', { options, tail: "VERSION = '5';" });
  const chunks = full.split(/(?<=\n)/);
  const fd = openSync(file, 'r+');
  try {
    ftruncateSync(fd, 0);
    for (const c of chunks) {
      await sleep(25);
      writeSync(fd, c);
    }
  } finally {
    closeSync(fd);
  }
  const mark = app.mark();
  await expectOneRestart(app, '5', 4);
  assert.deepEqual(app.since(mark, /partial|error/), [], 'never exec\'d nor even checked a partial file');
  assert.deepEqual(zombieChildren(app.pid), [], 'the node --check children were reaped');
});

test('a syntax error is not exec\'d: the old image keeps answering, the next good version is picked up', async () => {
  const file = tmpApp(appSource('1'));
  const app = new App([file], { reaper });
  await app.nextLine(/^ready 1 0 /, 'first start');

  writeFileSync(file, `${appSource('broken')}\nconst = ;\n`);
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.equal(err[1], 'SyntaxError');
  assert.match(JSON.parse(err[2]), /app\.mjs does not parse: SyntaxError/);
  app.send('ping');
  const pong = await app.nextLine(/^pong (\S+) (\d+) (\d+)$/, 'pong from the old image');
  assert.deepEqual(pong.slice(1), ['1', '0', String(app.pid)]);

  writeFileSync(file, appSource('2'));
  await expectOneRestart(app, '2', 1);
  assert.equal(app.since(0, /^ready broken/).length, 0);
});

test('a deleted entry file is not exec\'d; its reappearance is', async () => {
  const file = tmpApp(appSource('1'));
  const app = new App([file], { reaper });
  await app.nextLine(/^ready 1 0 /, 'first start');
  unlinkSync(file);
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.match(JSON.parse(err[2]), /ENOENT/);
  app.send('ping');
  assert.equal((await app.nextLine(/^pong (\S+)/))[1], '1', 'old image still running');
  writeFileSync(file, appSource('2'));
  await expectOneRestart(app, '2', 1);
});

test('polling mode: plain write and rename over are seen', async () => {
  const options = '{ polling: true, interval: 50 }';
  const file = tmpApp(appSource('1', { options }));
  const app = new App([file], { reaper });
  await app.nextLine(/^ready 1 0 /, 'first start');
  writeFileSync(file, appSource('2', { options }));
  await expectOneRestart(app, '2', 1);
  const tmp = join(file, '..', 'next.mjs');
  writeFileSync(tmp, appSource('3', { options }));
  renameSync(tmp, file);
  await expectOneRestart(app, '3', 2);
});

test('beforeRestart runs first and is bounded: a hook that hangs is aborted and the restart happens', async () => {
  const options = `{
    beforeRestartTimeout: 200,
    beforeRestart: (signal) => {
      console.log('before-restart');
      return new Promise(() => signal.addEventListener('abort', () => console.log('hook aborted ' + signal.reason.code)));
    },
  }`;
  const file = tmpApp(appSource('1', { options }));
  const app = new App([file], { reaper });
  await app.nextLine(/^ready 1 0 /, 'first start');
  writeFileSync(file, appSource('2', { options }));
  await app.nextLine(/^before-restart$/);
  await app.nextLine(/^hook aborted ETIMEDOUT$/);
  const err = await app.nextLine(/^error (\S+) (.*)$/, 'onError');
  assert.match(JSON.parse(err[2]), /beforeRestart\(\) did not finish within 200 ms/);
  await expectOneRestart(app, '2', 1);
});
