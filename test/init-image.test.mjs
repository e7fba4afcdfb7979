// init(): the init image itself (what PID 1 maps, where the package may
// live, how a container starts in it) and the shutdown's defects of issue 16
// (a reused group ID, a late orphan). Real PID namespaces (unshare), tini as
// the reference where it has the same behaviour.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, realpathSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, fixtures, root, isAlive, procStat, waitFor } from './helpers.mjs';
import { noNamespace, noTini, start, namespaceInit, parseReady } from './init-helpers.mjs';
import { initImagePath } from '../dist/init.mjs';

const prog = join(fixtures, 'init-prog.mjs');
const { reaper, dir: tmp } = fileScope('posix-daemon-init-image-');
const env = (options) => ({ ...process.env, FIXTURE_INIT: JSON.stringify(options) });
const unshare = (...args) => ['unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', ...args]];

describe('the init image as PID 1', { skip: noNamespace }, () => {
  test('maps neither node nor a C++ runtime: the loader, libc and the plain-C image only (issue 16 item 13)', async () => {
    const run = start(reaper, ...unshare(process.execPath, prog, 'signals', 'SIGTERM'), { env: env({}) });
    assert.equal(parseReady(await run.line('READY ')).ppid, 1);
    const pid1 = await namespaceInit(reaper, run.child.pid);
    const files = new Set(readFileSync(`/proc/${pid1}/maps`, 'latin1').split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' ')).filter((f) => f.startsWith('/')));
    const node = realpathSync(process.execPath);
    assert.equal(files.has(node), false, `node is not mapped in PID 1: ${[...files].join(', ')}`);
    assert.deepEqual([...files].filter((f) => /libstdc\+\+|libgcc_s|posix_daemon\.node/.test(f)), []);
    assert.ok(files.has(realpathSync(initImagePath)), [...files].join(', '));
    assert.equal(readFileSync(`/proc/${pid1}/comm`, 'latin1').trim(), 'node-init');
    process.kill(pid1, 'SIGTERM');
    await run.line('GOT SIGTERM');
    assert.equal((await run.exited).code, 42, run.stderr());
  });

  test('works without /proc mounted (the namespace has none; the init needs none)', async () => {
    const script = 'umount -l /proc && exec "$0" "$@"';
    const run = start(reaper, 'unshare', ['--pid', '--fork', '--kill-child', '--mount', 'sh', '-c', script, process.execPath, prog, 'signals', 'SIGTERM'],
      { env: env({}) });
    const ready = parseReady(await run.line('READY '));
    assert.equal(ready.ppid, 1, `the program runs under the init (stderr: ${run.stderr()})`);
    const pid1 = await namespaceInit(reaper, run.child.pid);
    assert.equal(readFileSync(`/proc/${pid1}/comm`, 'latin1').trim(), 'node-init');
    process.kill(pid1, 'SIGTERM');
    await run.line('GOT SIGTERM');
    assert.equal((await run.exited).code, 42, run.stderr());
  });

  // A container that starts in the image (ENTRYPOINT) drops nothing once
  // the image has blocked signals (a few hundred microseconds after the
  // exec, as tini), however early in the program's own start-up: the
  // SIGTERM goes out the moment PID 1 has forked the program (both block
  // signals before that), while node is still starting.
  for (const [name, skip] of [['ours', false], ['tini', noTini]]) {
    test(`${name}: a SIGTERM while the program is still starting is not lost (exit 143)`, { skip }, async () => {
      const entry = name === 'ours' ? initImagePath : '/usr/bin/tini';
      const run = start(reaper, ...unshare(entry, '--', process.execPath, prog, 'die'));
      const pid1 = await namespaceInit(reaper, run.child.pid);
      await waitFor(() => {
        try {
          return readFileSync(`/proc/${pid1}/task/${pid1}/children`, 'latin1').trim() !== '';
        } catch {
          return false;
        }
      }, { interval: 1, what: 'PID 1 to start the program' });
      process.kill(pid1, 'SIGTERM');
      assert.equal((await run.exited).code, 143, run.stderr());
    });
  }

  test('posix-daemon-init (the command) and node --import posix-daemon/init/auto run the program under the init', async () => {
    const entries = [
      [process.execPath, join(root, 'dist', 'init-command.js'), '--', process.execPath, prog, 'signals', 'SIGTERM'],
      [process.execPath, '--import', pathToFileURL(join(root, 'dist', 'init-auto.js')).href, prog, 'signals', 'SIGTERM'],
    ];
    for (const args of entries) {
      const run = start(reaper, ...unshare(...args));
      assert.equal(parseReady(await run.line('READY ')).ppid, 1, run.stderr());
      const pid1 = await namespaceInit(reaper, run.child.pid);
      assert.equal(readFileSync(`/proc/${pid1}/comm`, 'latin1').trim(), 'node-init');
      process.kill(pid1, 'SIGTERM');
      await run.line('GOT SIGTERM');
      assert.equal((await run.exited).code, 42, run.stderr());
    }
  });
});

test('the package in a path with a space and a colon (issue 16 item 6)', async () => {
  // A copy of the package (compiled JS and the native files this run loads:
  // build/Release/, or prebuilds/<platform>-<arch>/ where there is no build,
  // as under test:matrix) under "a b:c".
  const pkg = join(tmp, 'a b:c', 'posix-daemon');
  const nativeDir = relative(root, dirname(initImagePath));
  mkdirSync(join(pkg, nativeDir), { recursive: true });
  cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
  cpSync(join(root, 'package.json'), join(pkg, 'package.json'));
  cpSync(join(root, nativeDir), join(pkg, nativeDir), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(pkg, 'node_modules'));
  const run = start(reaper, process.execPath, [prog, 'signals', 'SIGTERM'], {
    env: { ...env({ force: true }), FIXTURE_INIT_MODULE: pathToFileURL(join(pkg, 'dist', 'init.mjs')).href },
  });
  const ready = parseReady(await run.line('READY '));
  reaper.add(ready.pid);
  assert.equal(ready.ppid, run.child.pid, `the program runs under the init (stderr: ${run.stderr()})`);
  process.kill(run.child.pid, 'SIGTERM');
  await run.line('GOT SIGTERM');
  assert.equal((await run.exited).code, 42, run.stderr());
});

test('an orphan re-parented to the init after the SIGKILL sweep is killed too; the init ends (issue 16 item 4)', async () => {
  const run = start(reaper, process.execPath, [prog, 'leave-late'], { env: env({ force: true, shutdownTimeout: 300 }) });
  const ready = parseReady(await run.line('READY '));
  reaper.add(ready.pid);
  const grandchild = reaper.add(Number((await run.line('GRANDCHILD ')).split(' ')[1]));
  process.kill(ready.pid, 'SIGUSR1');  // the program exits 3, leaving both behind
  // Liveness, not timing: the init must end at all (before: never).
  let timer;
  const ended = await Promise.race([run.exited, new Promise((r) => { timer = setTimeout(r, 20000, null); })]);
  clearTimeout(timer);
  assert.notEqual(ended, null, `the init still runs 20 s after the program ended (stderr: ${run.stderr()})`);
  assert.equal(ended.code, 3);
  assert.equal(isAlive(grandchild), false, 'the late orphan is gone');
  assert.equal(procStat(grandchild), null, 'and reaped');
});

test('the shutdown never signals a reaped program\'s group ID that a stranger now holds (issue 16 item 3)', { skip: noNamespace }, async () => {
  // In a namespace of our own (a driver as its PID 1), so the next PID can
  // be chosen: /proc/sys/kernel/ns_last_pid.
  const driver = join(fixtures, 'init-reuse-driver.mjs');
  const run = start(reaper, ...unshare(process.execPath, driver, prog));
  const result = await run.line('RESULT ');
  const { stranger, program, strangerAlive } = JSON.parse(result.slice(7));
  assert.ok(stranger > 0 && program > 0, result);
  assert.equal(strangerAlive, true, `the stranger (pid ${stranger}, group ${stranger}; the program was ${program}) survived the init's shutdown`);
  assert.equal((await run.exited).code, 0, run.stderr());
});
