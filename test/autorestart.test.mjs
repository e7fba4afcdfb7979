// autorestart: argument validation, change notification on real files (in
// this process), signal iterables, and exec failures that must leave the
// program running and retrying.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync, writeFileSync, renameSync, unlinkSync, rmSync, readdirSync, readlinkSync, readFileSync,
  linkSync, copyFileSync, appendFileSync, truncateSync,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  notifyOnChange, restartOnChange, restartViaExec, cleanUpChildZombies, notifyOnSighup, notifyOnSigterm,
} from '../dist/autorestart.mjs';
import { Reaper, waitFor } from './helpers.mjs';
import { App, autorestartUrl } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
const dirs = [];
after(async () => {
  await reaper.killAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpDir() {
  const dir = mkdtempSync(join(tmpdir(), 'autorestart-'));
  dirs.push(dir);
  return dir;
}

/** Number of inotify watches this process holds (from /proc/self/fdinfo). */
function inotifyWatches() {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    let target;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== 'anon_inode:inotify') continue;
    n += readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1').split('\n').filter((l) => l.startsWith('inotify wd:')).length;
  }
  return n;
}

function statWatchers() {
  return process.getActiveResourcesInfo().filter((r) => r === 'StatWatcher').length;
}

/** 'none' if `promise` has not settled within `ms` (a lower bound, not a timing assertion). */
async function settledWithin(promise, ms) {
  let timer;
  const none = new Promise((resolve) => { timer = setTimeout(resolve, ms, 'none'); });
  const r = await Promise.race([promise, none]);
  clearTimeout(timer);
  return r;
}

describe('bad input', () => {
  test('notifyOnChange', () => {
    assert.throws(() => notifyOnChange({ paths: [42] }), { code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' });
    assert.throws(() => notifyOnChange({ paths: 'file.js' }), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => notifyOnChange({ paths: ['a\u0000b'] }), { code: 'ERR_INVALID_ARG_VALUE' });
    assert.throws(() => notifyOnChange({ interval: -1 }), { code: 'ERR_OUT_OF_RANGE', name: 'RangeError' });
    assert.throws(() => notifyOnChange({ interval: 0 }), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => notifyOnChange({ interval: '100' }), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => notifyOnChange({ debounce: NaN }), { code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => notifyOnChange({ polling: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => notifyOnChange({ signal: {} }), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => notifyOnChange(null), { code: 'ERR_INVALID_ARG_TYPE' });
    const missing = join(tmpDir(), 'missing.js');
    assert.throws(() => notifyOnChange({ paths: [missing] }), { code: 'ENOENT', syscall: 'stat', path: missing });
  });

  test('restartViaExec, restartOnChange, cleanUpChildZombies reject', async () => {
    await assert.rejects(restartViaExec({ retryInterval: -5 }), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(restartViaExec({ retryInterval: 'soon' }), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(restartViaExec({ args: [1] }), { code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(restartViaExec({ keepFds: [1] }), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(restartViaExec({ env: 'A=1' }), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(restartOnChange({ onError: 5 }), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(restartOnChange({ beforeRestartTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(restartOnChange({ paths: [join(tmpDir(), 'nope')] }), { code: 'ENOENT' });
    await assert.rejects(cleanUpChildZombies({ escalation: [{ after: -1, signal: 'SIGHUP' }] }), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(cleanUpChildZombies({ escalation: [{ after: 1, signal: 'SIGNOPE' }] }), { code: 'ERR_UNKNOWN_SIGNAL' });
    await assert.rejects(cleanUpChildZombies({ log: 'stderr' }), { code: 'ERR_INVALID_ARG_TYPE' });
  });

  test('cleanUpChildZombies with nothing inherited reaps nothing', async () => {
    const lines = [];
    assert.deepEqual(await cleanUpChildZombies({ log: (l) => lines.push(l) }), []);
    assert.deepEqual(lines, [], 'a no-op at a first start: nothing logged (issue 16, item 25)');
  });
});

describe('notifyOnChange', () => {
  test('a burst (writes, truncate, rename over) gives ONE event; the next change another', async (t) => {
    const dir = tmpDir();
    const file = join(dir, 'prog.js');
    writeFileSync(file, 'v1');
    const it = notifyOnChange({ paths: [file], debounce: 100 });
    t.after(() => it.return());
    writeFileSync(file, 'v2');
    appendFileSync(file, ' more');
    truncateSync(file, 1);
    appendFileSync(file, 'x');
    writeFileSync(join(dir, 'prog.js.tmp'), 'v3');
    renameSync(join(dir, 'prog.js.tmp'), file);
    writeFileSync(join(dir, 'unrelated.js'), 'not watched');
    const first = await it.next();
    assert.deepEqual(first, { value: { paths: [file] }, done: false });
    const second = it.next();
    assert.equal(await settledWithin(second, 600), 'none', 'one event for the whole burst');
    appendFileSync(file, 'v4');
    assert.deepEqual((await second).value, { paths: [file] });
  });

  test('a file deleted and recreated keeps being watched', async (t) => {
    const dir = tmpDir();
    const file = join(dir, 'prog.js');
    writeFileSync(file, 'v1');
    const it = notifyOnChange({ paths: [file], debounce: 50 });
    t.after(() => it.return());
    unlinkSync(file);
    assert.deepEqual((await it.next()).value, { paths: [file] }, 'the deletion is a change');
    writeFileSync(file, 'v2');
    assert.deepEqual((await it.next()).value, { paths: [file] }, 'the new file is seen');
    writeFileSync(file, 'v3');
    assert.deepEqual((await it.next()).value, { paths: [file] }, 'and still watched');
    await it.return();
  });

  test('break removes the inotify watch; abort ends the iteration with AbortError', async (t) => {
    const file = join(tmpDir(), 'prog.js');
    writeFileSync(file, 'v1');
    const before = inotifyWatches();
    const it = notifyOnChange({ paths: [file], debounce: 10 });
    t.after(() => it.return());
    assert.ok(inotifyWatches() > before, 'watching');
    setImmediate(() => appendFileSync(file, '!'));
    for await (const change of it) {
      assert.deepEqual(change.paths, [file]);
      break;
    }
    assert.equal(inotifyWatches(), before, 'watch removed by break');

    const ac = new AbortController();
    const it2 = notifyOnChange({ paths: [file], signal: ac.signal });
    assert.ok(inotifyWatches() > before);
    setImmediate(() => ac.abort());
    await assert.rejects(it2.next(), { name: 'AbortError', code: 'ABORT_ERR' });
    assert.equal(inotifyWatches(), before, 'watch removed by abort');
  });

  test('polling mode sees writes and rename over; return() removes the stat watcher', async (t) => {
    const dir = tmpDir();
    const file = join(dir, 'prog.js');
    writeFileSync(file, 'v1');
    const before = statWatchers();
    const it = notifyOnChange({ paths: [file], polling: true, interval: 20, debounce: 50 });
    t.after(() => it.return());
    assert.ok(statWatchers() > before);
    const p = it.next();
    writeFileSync(file, 'v2 longer');  // at once: before the poller's own first stat, maybe
    assert.deepEqual((await p).value, { paths: [file] });
    writeFileSync(join(dir, 'n'), 'v3');
    renameSync(join(dir, 'n'), file);
    assert.deepEqual((await it.next()).value, { paths: [file] });
    await it.return();
    assert.equal(statWatchers(), before);
  });

  // fs.watchFile takes its first stat on libuv's threadpool. Here that pool
  // (one thread) is kept busy in open() of a FIFO while the program writes
  // the watched file: the first stat sees the new content as its starting
  // point, and fs.watchFile alone never reports the change.
  test('polling mode: a change made before fs.watchFile took its first stat is still reported', { timeout: 60000 }, async () => {
    const dir = tmpDir();
    const file = join(dir, 'config.json');
    const fifo = join(dir, 'gate');
    writeFileSync(file, '{}');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
    writeFileSync(join(dir, 'prog.mjs'), `
import { open, openSync, closeSync, writeFileSync } from 'node:fs';
import { notifyOnChange } from ${JSON.stringify(autorestartUrl)};
const [file, fifo] = process.argv.slice(2);
open(fifo, 'r', (err, fd) => { if (!err) closeSync(fd); });  // the pool's one thread waits here
const changes = notifyOnChange({ paths: [file], polling: true, interval: 100, persistent: true });
writeFileSync(file, '{ "changed": true }');
closeSync(openSync(fifo, 'w'));  // the pool goes on: fs.watchFile's first stat sees the new content
for await (const { paths } of changes) {
  console.log('change ' + paths.includes(file));
  break;
}
`);
    const app = new App([join(dir, 'prog.mjs'), file, fifo], { reaper, cwd: dir, env: { ...process.env, UV_THREADPOOL_SIZE: '1' } });
    await app.nextLine(/^change true$/, 'the change');
  });
});

describe('signals', () => {
  for (const [name, fn] of [['SIGHUP', notifyOnSighup], ['SIGTERM', notifyOnSigterm]]) {
    test(`${name}: delivered as values; ending the iteration removes the listener`, async (t) => {
      const before = process.listenerCount(name);
      // Signal listeners do not hold the event loop open (in Node as in Go):
      // keep this test process alive until the signal has come in.
      const keepAlive = setInterval(() => {}, 1000);
      t.after(() => clearInterval(keepAlive));
      const it = fn();
      t.after(() => it.return());
      assert.equal(process.listenerCount(name), before + 1);
      process.kill(process.pid, name);
      assert.deepEqual(await it.next(), { value: name, done: false });
      process.kill(process.pid, name);
      for await (const sig of it) {
        assert.equal(sig, name);
        break;
      }
      assert.equal(process.listenerCount(name), before);
    });
  }
});

/** A program that restarts on "restart" (abortable with "abort") and answers "ping". */
function execFailureApp(dir) {
  const file = join(dir, 'app.mjs');
  writeFileSync(file, `import { restartViaExec } from ${JSON.stringify(autorestartUrl)};
import { createInterface } from 'node:readline';
const n = Number(process.env.AR_N ?? '0');
console.log(\`image \${n} \${process.pid}\`);
let ac;
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'ping') console.log('pong ' + n);
  if (l === 'abort') ac.abort();
  if (l === 'restart') {
    process.env.AR_N = String(n + 1);
    ac = new AbortController();
    restartViaExec({ retryInterval: 100, signal: ac.signal }).catch((e) => console.log('rejected ' + e.name));
  }
});
`);
  return file;
}

const debugEnv = { ...process.env, NODE_DEBUG: 'posix-daemon' };

describe('exec failure leaves the old image running and retrying', () => {
  test('entry file removed: retries, can be aborted, succeeds once the file is back', async () => {
    const dir = tmpDir();
    const file = execFailureApp(dir);
    const source = readFileSync(file);
    const app = new App([file], { reaper, env: debugEnv });
    await app.nextLine(/^image 0 /);
    unlinkSync(file);
    app.send('restart');
    await waitFor(() => /exec attempt 3 failed: ENOENT/.test(app.stderr), { what: 'three failed attempts' });
    app.send('ping');
    await app.nextLine(/^pong 0$/, 'the old image answering');
    app.send('abort');
    await app.nextLine(/^rejected AbortError$/);

    app.send('restart');
    await waitFor(() => (app.stderr.match(/exec attempt 1 failed/g) ?? []).length >= 2, { what: 'retrying again' });
    writeFileSync(file, source);
    const m = await app.nextLine(/^image (\d+) (\d+)$/, 'the new image');
    assert.deepEqual([Number(m[1]), Number(m[2])], [1, app.pid]);
  });

  test('node binary gone: retries until it is back, same PID', async () => {
    const dir = tmpDir();
    const file = execFailureApp(dir);
    const nodeCopy = join(dir, 'node');
    const put = () => {
      try {
        linkSync(process.execPath, nodeCopy);
      } catch {
        copyFileSync(process.execPath, nodeCopy);  // another file system
      }
    };
    put();
    const app = new App([file], { reaper, env: debugEnv, execPath: nodeCopy });
    await app.nextLine(/^image 0 /);
    unlinkSync(nodeCopy);
    app.send('restart');
    await waitFor(() => /exec attempt 2 failed: ENOENT: no such file or directory, execve/.test(app.stderr),
      { what: 'failed execve attempts' });
    app.send('ping');
    await app.nextLine(/^pong 0$/, 'the old image answering');
    put();
    const m = await app.nextLine(/^image (\d+) (\d+)$/, 'the new image');
    assert.deepEqual([Number(m[1]), Number(m[2])], [1, app.pid]);
  });
});
