// Native handles that call into JS (inotify, pidfd, ExitWatcher) can fire
// once more while Node tears the environment down at exit. A C++ exception
// from N-API there used to be std::terminate: SIGABRT at the end of a
// program that had done nothing wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileScope, fixtures, runNode } from './helpers.mjs';

const { reaper, dir } = fileScope('pd-teardown-');

test('a watched file changed as the program ends: it ends normally, never SIGABRT', async () => {
  for (let i = 0; i < 5; i++) {
    const r = await runNode(join(fixtures, 'autorestart-teardown.mjs'), [join(dir, `f${i}.txt`)], { reaper });
    assert.equal(r.stdout, 'written\n');
    assert.doesNotMatch(r.stderr, /terminate called/);
    assert.deepEqual({ code: r.code, signal: r.signal }, { code: 0, signal: null });
  }
});
