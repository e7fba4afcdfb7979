// execve() preparing and undoing (issue 16, items 7 and 9).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileScope, fixtures, runNode, waitFor } from './helpers.mjs';

const { reaper, dir } = fileScope('native-exec-');

const hasPrlimit = spawnSync('prlimit', ['--version']).status === 0;

test('bad_alloc while copying execve arguments: ENOMEM thrown, signal mask and fds as before, no abort', {
  skip: (!hasPrlimit || process.platform !== 'linux') && 'needs prlimit (util-linux) and Linux',
}, async () => {
  const r = await runNode(join(fixtures, 'native-exec-enomem.cjs'), [], { reaper });
  assert.equal(r.signal, null, `${r.signal}: ${r.stderr.slice(-300)}`);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  if (out.skipped) return;
  assert.equal(out.code, 'ENOMEM');
  assert.deepEqual(out.after, out.before);
});

/** State letter of a process from /proc/PID/stat, or null when it is gone. */
function state(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

test('SIGCHLD ignored: failing execs leave no zombie (the no-op handler keeps SA_NOCLDWAIT)', {
  skip: process.platform !== 'linux' && 'Linux',
}, async (t) => {
  const so = join(dir, 'ignore-sigchld.so');
  const src = join(dir, 'ignore-sigchld.c');
  writeFileSync(src, '#include <signal.h>\n__attribute__((constructor)) static void ignore(void) { signal(SIGCHLD, SIG_IGN); }\n');
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-o', so, src], { encoding: 'utf8' });
  if (cc.status !== 0) {
    t.skip(`no C compiler: ${cc.stderr ?? cc.error}`);
    return;
  }
  const child = spawn(process.execPath, [join(fixtures, 'native-exec-sigchld.cjs'), so], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(child.pid);
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { text += d; });
  // A safety net only: 300 attempts with 3000 kept fds take a while on a loaded machine.
  await waitFor(() => text.includes('\n'), { timeout: 180000, what: 'the fixture to report its children' });
  const { children, stillIgnored } = JSON.parse(text);
  assert.equal(stillIgnored, true, 'SIGCHLD is ignored again after the failed execs');
  // Every /bin/true ends at once: each is then either gone (reaped by the
  // kernel) or a zombie that nobody will ever reap.
  await waitFor(() => children.every((pid) => state(pid) === null || state(pid) === 'Z'),
    { what: 'every child to end' });
  const zombies = children.filter((pid) => state(pid) === 'Z');
  child.kill('SIGKILL');
  await once(child, 'close');
  assert.deepEqual(zombies, [], `${zombies.length} of ${children.length} children left as zombies`);
});

test('the new image starts with SIGCHLD at SIG_DFL even when it was ignored', {
  skip: process.platform !== 'linux' && 'Linux',
}, async (t) => {
  const so = join(dir, 'ignore-sigchld.so');
  if (!existsSync(so)) {
    t.skip('no shared object (no C compiler)');
    return;
  }
  const script = `try { process.dlopen({ exports: {} }, ${JSON.stringify(so)}); } catch {}
    require(${JSON.stringify(join(fixtures, '..', '..', 'dist', 'posix.js'))})
      .execve('/bin/sh', ['sh', '-c', 'grep SigIgn /proc/self/status']);`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const mask = BigInt(`0x${r.stdout.match(/SigIgn:\s*(\S+)/)[1]}`);
  assert.equal((mask >> 16n) & 1n, 0n, 'SIGCHLD (17) not ignored in the new image');
});
