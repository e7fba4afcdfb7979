// Native core hardening (issue 10 items 5, 6, 7, 9; issue 13's setpgid):
// each defect reproduced against real processes, /proc, strace and RSS.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Reaper, fixtures, runNode } from './helpers.mjs';

const reaper = new Reaper();
const dir = mkdtempSync(join(tmpdir(), 'native-hardening-'));
after(async () => {
  await reaper.killAll();
  rmSync(dir, { recursive: true, force: true });
});

test('ExitWatcher for a PID that does not exist (ESRCH) frees what it allocated', async () => {
  // 300000 failed constructions used to keep their libuv handles (+96 MiB
  // RSS); a bounded memory growth is the assertion, never a duration.
  const r = await runNode(join(fixtures, 'native-hardening-watcher-esrch.cjs'), ['300000'],
    { nodeArgs: ['--expose-gc'], timeout: 120000, reaper });
  assert.equal(r.code, 0, r.stderr);
  const { calls, growth } = JSON.parse(r.stdout);
  assert.equal(calls, 300000);
  assert.ok(growth < 16 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB over ${calls} failed constructions`);
});
