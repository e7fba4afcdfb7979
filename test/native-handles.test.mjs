// Process handles and the raw bindings' argument reading (issue 16, items
// 10, 11, 12), against real processes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { Reaper, fixtures, runNode } from './helpers.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

let canForceReuse = process.platform === 'linux';
try {
  accessSync('/proc/sys/kernel/ns_last_pid', constants.W_OK);
} catch {
  canForceReuse = false;
}

test('openProcess(spawnDetached(...)) after the PID was reused pins the daemon, not the stranger', {
  skip: !canForceReuse && 'needs a writable /proc/sys/kernel/ns_last_pid (root)',
}, async () => {
  const r = await runNode(join(fixtures, 'native-pid-reuse.cjs'), [], { reaper });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  if (out.skipped) return;  // the machine forked too much to get the PID back
  assert.equal(out.kind, 'pidfd');
  assert.equal(out.sent, false, 'kill() through the handle reports the daemon as gone');
  assert.equal(out.strangerAlive, true, `the stranger that got PID ${out.pid} survived`);
});

test('arrays that grow while being read (a getter that pushes): read as they were, no runaway', async () => {
  const r = await runNode(join(fixtures, 'native-growing-arrays.cjs'), [],
    { nodeArgs: ['--max-old-space-size=64'], timeout: 60000, reaper });
  assert.equal(r.code, 0, `${r.signal ?? ''} ${r.stderr.slice(-500)}`);
  assert.deepEqual(JSON.parse(r.stdout), {
    'raw fork args': 0,
    'raw fork env': 0,
    'raw fork keepFds': 0,
    'raw execve args': 'ENOENT',
    'raw execve keepFds': 'ENOENT',
    'fork args': 0,
    'spawnDetached args': 'number',
    'execve args': 'ENOENT',
  });
});

test('ProcessHandle: unref(); watch(cb); ref(); a GC: cb still runs when the process ends', async () => {
  const r = await runNode(join(fixtures, 'native-handle-gc.cjs'), [], { nodeArgs: ['--expose-gc'], reaper });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^exited$/m);
});
