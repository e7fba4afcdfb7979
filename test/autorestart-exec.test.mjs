// restartViaExec: the same PID across many in-place restarts, with argv,
// execArgv and the run-time environment carried over, and no fd or memory
// growth. Each image is checked from outside, through /proc.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Reaper, fixtures, procFds, procStat, procStatus, procEnv } from './helpers.mjs';
import { App } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

const counter = join(fixtures, 'autorestart-counter.mjs');
const nodeArgs = ['--no-warnings', '--enable-source-maps', '--stack-size=900'];
const args = ['alpha', 'two words', '--flag=x', ''];

function startCounter() {
  return new App([counter, ...args], {
    nodeArgs, reaper, env: { ...process.env, AR_FOO: 'bar baz', AR_RESTARTS: '0' },
  });
}

test('same PID across 20 restarts; argv, execArgv and run-time env carried over', async () => {
  const app = startCounter();
  const ppid = procStat(app.pid).ppid;
  for (let i = 0; i <= 20; i++) {
    const info = JSON.parse((await app.nextLine(/^\{.*\}$/, `image ${i}`))[0]);
    assert.equal(info.pid, app.pid, `image ${i} has the original PID`);
    assert.equal(info.n, i, 'AR_RESTARTS, changed at run time, reached the new image');
    assert.deepEqual(info.argv, [counter, ...args]);
    assert.deepEqual(info.execArgv, nodeArgs);
    assert.equal(info.foo, 'bar baz');
    assert.equal(info.handover, null, 'the child hand-over variable is consumed on load');
    // Seen from outside: same process, same parent, new image's environment.
    assert.equal(procStat(app.pid).ppid, ppid);
    assert.equal(procEnv(app.pid).AR_RESTARTS, String(i));
    if (i < 20) app.send('restart');
  }
});

function rssKiB(pid) {
  return Number(procStatus(pid).VmRSS.replace(/\s*kB$/, ''));
}

test('fd count and RSS stay flat over 50 restarts', async (t) => {
  const app = startCounter();
  let first;
  let last;
  for (let i = 0; i <= 50; i++) {
    const info = JSON.parse((await app.nextLine(/^\{.*\}$/, `image ${i}`))[0]);
    assert.equal(info.pid, app.pid);
    // Let the image settle (libuv threads, lazy fds) before sampling /proc.
    await new Promise((r) => setTimeout(r, 150));
    const sample = { fds: Object.values(procFds(app.pid)).sort(), rss: rssKiB(app.pid) };
    // Baseline: image 1, the first one started by an exec. Image 0 was
    // started by the test runner and may carry fds leaked to it by its parent;
    // the exec closes those (every fd but 0-2), which is not what we measure.
    if (i === 1) first = sample;
    if (i === 50) last = sample;
    if (i < 50) app.send('restart');
  }
  assert.deepEqual(last.fds.length, first.fds.length, `fds: ${JSON.stringify(first.fds)} -> ${JSON.stringify(last.fds)}`);
  // Kinds of fds too (pipes, eventfd, epoll...), not only how many.
  const kind = (t) => t.replace(/\[\d+\]$/, '').replace(/^\/.*$/, 'file');
  assert.deepEqual(last.fds.map(kind).sort(), first.fds.map(kind).sort());
  // A fresh image each time: RSS is that of a newly started node, give or
  // take the allocator's mood. A leak across 50 execs would be far outside.
  assert.ok(last.rss < first.rss * 1.25 + 8192, `RSS ${first.rss} KiB -> ${last.rss} KiB`);
  t.diagnostic(`fds ${first.fds.length} -> ${last.fds.length}, RSS ${first.rss} KiB -> ${last.rss} KiB`);
});

test('options.args and options.env replace the arguments and the environment', async () => {
  const app = startCounter();
  await app.nextLine(/^\{.*\}$/, 'image 0');
  app.send(`restart-with ${JSON.stringify({ args: ['only'], env: { AR_FOO: 'changed', PATH: process.env.PATH } })}`);
  const info = JSON.parse((await app.nextLine(/^\{.*\}$/, 'image 1'))[0]);
  assert.equal(info.pid, app.pid);
  assert.deepEqual(info.argv, [counter, 'only']);
  assert.deepEqual(info.execArgv, nodeArgs, 'node flags are kept');
  assert.equal(info.foo, 'changed');
  // The exec'd environment block also names the guard preload (NODE_OPTIONS)
  // and its variable, which the program's process.env never shows (see
  // autorestart-bridge, autorestart-guard).
  assert.deepEqual(Object.keys(procEnv(app.pid)).filter((k) => k !== 'POSIX_DAEMON_GUARD' && k !== 'NODE_OPTIONS').sort(),
    ['AR_FOO', 'AR_RESTARTS', 'PATH']);
});
