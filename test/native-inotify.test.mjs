// notifyOnChange when the watched file's directory is deleted (issue 16,
// item 5): a re-created directory is watched again, and once the iteration
// ends no inotify fd keeps the process alive.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, runNode } from './helpers.mjs';

const { reaper, dir } = fileScope('native-inotify-');

const script = join(fixtures, 'native-inotify-recreate.mjs');

async function run(mode) {
  const where = join(dir, mode);
  mkdirSync(where);
  // The fixture exits by itself once its iteration ended; the timeout only
  // guards against one that never does.
  return runNode(script, [where, mode], { timeout: 15000, reaper });
}

for (const [mode, what] of [
  ['recreate', 'rm -rf dir && mkdir dir'],
  ['later', 'the directory and its parent deleted, made again after the deletion was reported'],
]) {
  test(`${what}: a write in the new directory is reported, and the process exits after the iteration`, {
    skip: process.platform !== 'linux' && 'inotify',
  }, async () => {
    const r = await run(mode);
    assert.match(r.stdout, /^write reported$/m, `no event for the write in the new directory: ${r.stdout}`);
    assert.match(r.stdout, /^iteration ended$/m);
    assert.equal(r.signal, null, 'the process did not exit by itself after the iteration ended');
    assert.equal(r.code, 0, r.stderr);
  });
}

test('the directory deleted for good: after the iteration ends no inotify fd keeps the process alive', {
  skip: process.platform !== 'linux' && 'inotify',
}, async () => {
  const r = await run('delete');
  assert.match(r.stdout, /^iteration ended$/m);
  assert.equal(r.signal, null, 'the process did not exit by itself after the iteration ended');
  assert.equal(r.code, 0, r.stderr);
});
