// Process handles and the raw bindings' argument reading (issue 16, items
// 10, 11, 12), against real processes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { accessSync, constants } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { Reaper, fixtures, runNode } from './helpers.mjs';
import { noNamespace } from './init-helpers.mjs';

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

// Issue 22, item 13, in a PID namespace of its own: nobody else forks
// there, so ns_last_pid hands the daemon's PID to the stranger at the first
// attempt and the check can never skip. The fixture runs as the
// namespace's PID 1, so the orphaned daemon comes to it, and it reaps it.
test('openProcess(spawnDetached(...)) in a private PID namespace: the reused PID\'s stranger survives, at the first attempt', {
  skip: (noNamespace || (!canForceReuse && 'needs a writable /proc/sys/kernel/ns_last_pid (root)')) || false,
}, async () => {
  const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath,
    join(fixtures, 'native-pid-reuse.cjs')], { stdio: ['ignore', 'pipe', 'pipe'] });
  reaper.add(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const [code] = await once(child, 'close');
  assert.equal(code, 0, stderr);
  const out = JSON.parse(stdout.trim().split('\n').pop());
  assert.equal(out.skipped, undefined, 'the PID was reused');
  assert.equal(out.attempt, 0);
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
