// Issue 16, item 26: under Node's permission model without
// --allow-child-process, nothing of ours starts or replaces a program, as
// Node's own process.execve and child_process refuse (Node core's
// test-process-execve-permission-fail): ERR_ACCESS_DENIED, permission
// 'ChildProcess', resource = the program.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixtures, root } from './helpers.mjs';

const [major, minor] = process.versions.node.split('.').map(Number);
// --experimental-permission from Node 20, renamed --permission in 22.13 / 23.5.
const flag = major >= 24 || (major === 23 && minor >= 5) || (major === 22 && minor >= 13)
  ? '--permission' : '--experimental-permission';
const skip = major < 20 ? 'Node < 20 has no permission model' : false;

const tmp = mkdtempSync(join(tmpdir(), 'pd-edges-permission-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function underPermission(what, extra = []) {
  const r = spawnSync(process.execPath, [
    flag, '--allow-fs-read=*', `--allow-fs-write=${tmp}`, '--allow-addons', ...extra,
    join(fixtures, 'permission-app.mjs'), what, tmp,
  ], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${what}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const functions = ['execve', 'fork', 'nestedFork', 'spawnDetached', 'restartViaExec', 'restartOnChange',
  'restartOnSignal', 'daemonize', 'selfMonitor', 'init'];

for (const what of functions) {
  test(`26: ${what} refuses with ERR_ACCESS_DENIED without --allow-child-process`, { skip }, () => {
    const out = underPermission(what);
    assert.equal(out.code, 'ERR_ACCESS_DENIED', JSON.stringify(out));
    assert.equal(out.permission, 'ChildProcess');
    assert.equal(typeof out.resource, 'string');
    assert.match(out.message, /--allow-child-process/);
    if (what === 'execve') {
      // Published before the refusal, as Node 24 does for process.execve.
      assert.deepEqual(out.published, ['/bin/true']);
    } else {
      assert.deepEqual(out.published, [], 'nothing got as far as an exec');
    }
    if (what === 'daemonize') assert.equal(existsSync(join(tmp, 'd.pid')), false, 'refused before the PID file is taken');
  });
}

test('26: with --allow-child-process, fork works under the permission model', { skip }, () => {
  const out = underPermission('fork', ['--allow-child-process']);
  assert.equal(out.started, true, JSON.stringify(out));
  assert.equal(typeof out.result, 'number');
});
