// Worker threads that use the addon (issue 16, items 1 and 2): the process
// must survive a worker that ends, or is terminated, whatever binding or
// handle it was using.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileScope, fixtures, runNode } from './helpers.mjs';

const { reaper, dir } = fileScope('native-workers-');

const script = join(fixtures, 'native-workers.mjs');

async function runs(mode, n) {
  const failures = [];
  for (let i = 0; i < n; i++) {
    const r = await runNode(script, [mode, dir], { reaper });
    if (r.code !== 0 || r.signal !== null) failures.push(`run ${i}: code ${r.code} signal ${r.signal} ${r.stderr.slice(-300)}`);
  }
  return failures;
}

for (const [mode, what] of [
  ['wait', 'waitAsync(pid, { ref: false }) and finishes'],
  ['watch', 'notifyOnChange({ persistent: false }) and finishes'],
  ['open', 'openProcess(pid).exited and is terminated'],
]) {
  test(`a worker that used ${what}: the process survives (no SIGSEGV after the addon is unloaded)`, async () => {
    assert.deepEqual(await runs(mode, 3), []);
  });
}

test('worker.terminate() while the worker is blocked in waitpid: no std::terminate, 10 of 10 runs', async () => {
  assert.deepEqual(await runs('terminate', 10), []);
});

test('process.exit() while a worker is blocked in waitpid: exits 0, 10 of 10 runs', async () => {
  assert.deepEqual(await runs('exit', 10), []);
});
