// launch(): a launched process that is not our child is signalled through a
// pidfd opened right after the spawn, never through its bare PID (issue 10,
// item 10). Checked with strace on a real process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileScope, fixtures, isAlive } from './helpers.mjs';

const { reaper, dir: tmp } = fileScope('posix-daemon-launch-');

test('a launched non-child is pinned by a pidfd; kill() goes through it and says false once the process is gone', { skip: !existsSync('/usr/bin/strace') && 'strace is not installed' }, async () => {
  const log = join(tmp, 'strace.log');
  const { spawnSync } = await import('node:child_process');
  const s = spawnSync('/usr/bin/strace', ['-f', '-qq', '-e', 'trace=kill,pidfd_send_signal,pidfd_open', '-o', log,
    process.execPath, join(fixtures, 'launch-nonchild.mjs')], { encoding: 'utf8', timeout: 60000 });
  assert.equal(s.status, 0, s.stderr);
  const pid = Number(/^PID (\d+)$/m.exec(s.stdout)[1]);
  reaper.add(pid);
  assert.match(s.stdout, /^PIDFDS 1$/m, 'one pidfd held while it runs');
  assert.match(s.stdout, /^KILL true$/m);
  assert.match(s.stdout, /^EXITED null$/m, 'no status for a non-child, but it resolves once it is gone');
  assert.match(s.stdout, /^KILL-AFTER false$/m, 'never signalled by number after it ended');
  assert.match(s.stdout, /^PIDFDS-AFTER 0$/m, 'the pidfd is released');
  assert.equal(isAlive(pid), false);
  const trace = readFileSync(log, 'utf8');
  assert.match(trace, new RegExp(`pidfd_open\\(${pid},`));
  assert.match(trace, /pidfd_send_signal\(\d+, SIGTERM/);
  assert.doesNotMatch(trace, new RegExp(`kill\\(${pid}, SIGTERM`), 'no kill(2) on the bare PID');
});
