// Issue 16, item 28 (the parts with behaviour): module hooks go when the
// last watcher ends; one /proc/PID/stat parser copes with any command name.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './helpers.mjs';
import { fork, waitAsync } from '../dist/posix.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'pd-edges-structure-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const hasRegisterHooks = typeof (await import('node:module')).registerHooks === 'function';

test('28: the load hook (module.registerHooks) is deregistered when the last watcher ends, and comes back with the next',
  { skip: hasRegisterHooks ? false : 'this Node has no module.registerHooks' }, () => {
    writeFileSync(join(tmp, 'late.mjs'), 'export default 1;\n');
    const program = join(tmp, 'hooks.mjs');
    writeFileSync(program, `
      import { notifyOnChange } from ${JSON.stringify(join(root, 'dist', 'autorestart.mjs'))};
      const turn = () => new Promise((r) => setImmediate(r));
      const a = notifyOnChange({ persistent: false });
      const b = notifyOnChange({ persistent: false });
      await turn(); await turn();
      await a.return();
      console.error('MARK one watcher left');
      await b.return();
      console.error('MARK none left');
      await import('./late.mjs');
      const c = notifyOnChange({ persistent: false });
      await turn(); await turn();
      await c.return();
      console.error('MARK end');
    `);
    const r = spawnSync(process.execPath, [program], {
      encoding: 'utf8', env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => /MARK|registerHooks|deregistered/.test(l))
      .map((l) => l.replace(/^.*?(MARK .*|autorestart: .*)$/, '$1'));
    assert.deepEqual(lines, [
      'autorestart: tracking loads with module.registerHooks',
      'MARK one watcher left',
      'autorestart: module hooks deregistered (no watcher left)',
      'MARK none left',
      'autorestart: tracking loads with module.registerHooks',
      'autorestart: module hooks deregistered (no watcher left)',
      'MARK end',
    ]);
  });

test('28: a process group is listed right when its command name holds ") " (the one /proc/PID/stat parser)', async () => {
  // A program named like "/tmp/x/a) b c": the comm field of /proc/PID/stat
  // then holds a parenthesis and spaces.
  const odd = join(tmp, 'a) b c');
  copyFileSync('/bin/sleep', odd);
  const pid = fork({ file: odd, args: ['30'], setpgid: true });
  const { groupMembers } = await import('../dist/process-group.js');
  try {
    assert.deepEqual(groupMembers(pid), [pid]);
  } finally {
    process.kill(pid, 'SIGKILL');
    await waitAsync(pid);
  }
  assert.deepEqual(groupMembers(pid), []);
});
