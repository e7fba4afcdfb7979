// Issue 16, item 21: a directory in `paths` is watched, recursively, with
// `ignore` honoured: a write anywhere below it is a change. Before, the
// directory was accepted and never fired.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { notifyOnChange } from '../dist/autorestart.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'pd-edges-watchdir-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The next change event, with `act` done once the watcher is in place. */
async function nextChange(it, act) {
  const p = it.next();
  // The watches are set up synchronously by notifyOnChange(); the module
  // graph part starts on the next turn and does not matter here.
  await new Promise((resolve) => setImmediate(resolve));
  act();
  const r = await p;
  assert.equal(r.done, false);
  return r.value.paths;
}

for (const polling of [false, true]) {
  const mode = polling ? 'polling' : 'inotify';
  test(`21 (${mode}): a write in a directory of paths, at any depth, is a change; ignore is honoured`, { timeout: 60_000 }, async () => {
    const dir = join(tmp, `tree-${mode}`);
    mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
    mkdirSync(join(dir, 'skipped'));
    mkdirSync(join(dir, 'node_modules'));
    writeFileSync(join(dir, 'sub', 'deeper', 'a.json'), '1');
    const ac = new AbortController();
    const it = notifyOnChange({
      paths: [dir], signal: ac.signal, polling, interval: 20, debounce: 20,
      ignore: (p) => p.endsWith('.log') || p === join(dir, 'skipped'),
    });
    try {
      // An existing file, two levels down.
      assert.deepEqual(await nextChange(it, () => writeFileSync(join(dir, 'sub', 'deeper', 'a.json'), '2')),
        [join(dir, 'sub', 'deeper', 'a.json')]);
      // Ignored files (by name, in an ignored directory, in node_modules)
      // are written first; only the file that counts is reported.
      assert.deepEqual(await nextChange(it, () => {
        writeFileSync(join(dir, 'sub', 'noise.log'), 'x');
        writeFileSync(join(dir, 'skipped', 'b.json'), 'x');
        writeFileSync(join(dir, 'node_modules', 'c.json'), 'x');
        writeFileSync(join(dir, 'top.json'), 'x');
      }), [join(dir, 'top.json')]);
      // A directory made after the start, and a file in it.
      mkdirSync(join(dir, 'later'));
      const inLater = join(dir, 'later', 'new.json');
      const paths = await nextChange(it, () => writeFileSync(inLater, 'x'));
      assert.ok(paths.includes(inLater), JSON.stringify(paths));
      // An editor's save: write a temp file, rename it over the original.
      const saved = await nextChange(it, () => {
        writeFileSync(join(dir, 'sub', 'a.json.tmp'), '3');
        renameSync(join(dir, 'sub', 'a.json.tmp'), join(dir, 'sub', 'deeper', 'a.json'));
      });
      assert.ok(saved.includes(join(dir, 'sub', 'deeper', 'a.json')), JSON.stringify(saved));
      // A delete is a change too.
      const deleted = await nextChange(it, () => unlinkSync(join(dir, 'top.json')));
      assert.ok(deleted.includes(join(dir, 'top.json')), JSON.stringify(deleted));
    } finally {
      ac.abort();
      await it.return();
    }
  });
}

test('a directory of a watched tree deleted and made again, 4 times: a file written in it each time is seen each time', async () => {
  const { setTimeout: sleep } = await import('node:timers/promises');
  const root = join(tmp, 'recreate');
  const gen = join(root, 'gen');
  mkdirSync(gen, { recursive: true });
  const ac = new AbortController();
  const seen = [];
  const it = notifyOnChange({ paths: [root], signal: ac.signal, debounce: 50 });
  const loop = (async () => {
    try {
      for await (const e of it) seen.push(...e.paths);
    } catch { /* aborted */ }
  })();
  for (let i = 0; i < 4; i++) {
    rmSync(gen, { recursive: true, force: true });
    mkdirSync(gen);
    // The hub watches the new directory once it sees it (its parent's IN_CREATE).
    await waitUntil(() => seen.includes(gen));
    seen.length = 0;
    writeFileSync(join(gen, `f${i}.js`), 'x');
    await waitUntil(() => seen.includes(join(gen, `f${i}.js`)));
  }
  ac.abort();
  await loop;

  async function waitUntil(fn) {
    for (let n = 0; !fn(); n++) {
      if (n > 500) throw new Error(`not seen: ${JSON.stringify(seen)}`);
      await sleep(20);
    }
  }
});
