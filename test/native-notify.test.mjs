// sd_notify to a receiver that never reads (issue 16, item 8) or reads late
// (issue 22, item 14).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync } from 'node:fs';
import { fileScope, fixtures, straceCalls, waitFor } from './helpers.mjs';

const { reaper, dir } = fileScope('native-notify-');

const hasPython = spawnSync('python3', ['--version']).status === 0;

function lines(child) {
  const out = { text: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { out.text += d; });
  return out;
}

test('notify() to a full NOTIFY_SOCKET under a stream of signals returns at once (queued) instead of stalling the loop', {
  skip: (!hasPython || process.platform !== 'linux') && 'needs python3 and Linux',
}, async () => {
  const path = join(dir, 'notify.sock');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-receiver.py'), path, 'hold'], { stdio: ['pipe', 'pipe', 'inherit'] });
  reaper.add(receiver.pid);
  const receiverClosed = once(receiver, 'close');
  const rx = lines(receiver);
  await waitFor(() => rx.text.includes('full'), { what: 'the receiver queue to be full' });

  const child = spawn(process.execPath, [join(fixtures, 'native-notify-full.cjs')], {
    env: { ...process.env, NOTIFY_SOCKET: path }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  const childClosed = once(child, 'close');
  const out = lines(child);
  await waitFor(() => out.text.includes('ready'), { what: 'the notifier to start' });
  // SIGUSR2 every 100 ms, as long as notify() has not returned (at most
  // 200 of them). A send whose timeout every EINTR restarts returns only
  // once they stop; a bounded one returns while they still come.
  let signals = 0;
  while (!out.text.includes('sent') && signals < 200) {
    try {
      process.kill(child.pid, 'SIGUSR2');
    } catch {
      break;
    }
    signals++;
    await sleep(100);
  }
  const returnedWhileSignalled = out.text.includes('sent');
  await childClosed;
  receiver.stdin.end();
  await receiverClosed;
  assert.ok(returnedWhileSignalled, `notify() returned only after the signals stopped (${signals} sent)`);
  // Queued for when the manager reads; process.exit() then drops it.
  assert.deepEqual(JSON.parse(out.text.split('\n')[1]), { sent: true });
});

test('a manager 20+ ms late still gets READY=1, STATUS= and STOPPING=1, in order, and the loop runs meanwhile', {
  skip: (!hasPython || process.platform !== 'linux') && 'needs python3 and Linux',
}, async () => {
  const path = join(dir, 'late.sock');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-receiver.py'), path], { stdio: ['pipe', 'pipe', 'inherit'] });
  reaper.add(receiver.pid);
  const rx = lines(receiver);
  await waitFor(() => rx.text.includes('full'), { what: 'the receiver queue to be full' });

  const child = spawn(process.execPath, [join(fixtures, 'native-notify-late.cjs')], {
    env: { ...process.env, NOTIFY_SOCKET: path }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  let exited = false;
  const childClosed = once(child, 'close').then(([code]) => { exited = true; return code; });
  const out = lines(child);
  await waitFor(() => out.text.includes('loop'), { what: 'the notifier to run its loop' });
  assert.deepEqual(JSON.parse(out.text.split('\n')[0]), { ready: true, status: true, stopping: true });
  // The queued datagrams keep the process alive until they are sent.
  await sleep(50);
  assert.equal(exited, false, 'the notifier exited with its datagrams unsent');
  receiver.stdin.write('drain\n');
  assert.equal(await childClosed, 0);
  const mine = () => rx.text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  await waitFor(() => mine().length >= 3, { what: 'the three datagrams' });
  receiver.kill('SIGKILL');
  assert.deepEqual(mine(), [
    { pid: child.pid, data: 'READY=1\nSTATUS=up' },
    { pid: child.pid, data: 'STATUS=serving' },
    { pid: child.pid, data: 'STOPPING=1' },
  ]);
});

test('storeFds() behind a full queue sends the fd even though the caller closed it right after the call', {
  skip: (!hasPython || process.platform !== 'linux') && 'needs python3 and Linux',
}, async () => {
  const path = join(dir, 'late-fds.sock');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-receiver.py'), path], { stdio: ['pipe', 'pipe', 'inherit'] });
  reaper.add(receiver.pid);
  const rx = lines(receiver);
  await waitFor(() => rx.text.includes('full'), { what: 'the receiver queue to be full' });
  const child = spawn(process.execPath, [join(fixtures, 'native-notify-late.cjs'), 'fds'], {
    env: { ...process.env, NOTIFY_SOCKET: path }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  const childClosed = once(child, 'close');
  const out = lines(child);
  await waitFor(() => out.text.includes('loop'), { what: 'the notifier to run its loop' });
  const [{ inode }, returned] = out.text.split('\n').slice(0, 2).map((l) => JSON.parse(l));
  assert.deepEqual(returned, { storeFds: true, stopping: true });
  receiver.stdin.write('drain\n');
  assert.equal((await childClosed)[0], 0);
  const mine = () => rx.text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  await waitFor(() => mine().length >= 2, { what: 'the two datagrams' });
  receiver.kill('SIGKILL');
  assert.deepEqual(mine(), [
    { pid: child.pid, data: 'FDSTORE=1\nFDNAME=kept', inodes: [inode] },
    { pid: child.pid, data: 'STOPPING=1' },
  ]);
});

test('restartViaExec waits for datagrams the manager had no room for: READY, RELOADING, READY arrive from one PID, in order', {
  skip: (!hasPython || process.platform !== 'linux') && 'needs python3 and Linux',
}, async () => {
  const path = join(dir, 'late-exec.sock');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-receiver.py'), path], { stdio: ['pipe', 'pipe', 'inherit'] });
  reaper.add(receiver.pid);
  const rx = lines(receiver);
  await waitFor(() => rx.text.includes('full'), { what: 'the receiver queue to be full' });
  const child = spawn(process.execPath, [join(fixtures, 'systemd-server.cjs')], {
    env: { ...process.env, NOTIFY_SOCKET: path, SD_LISTEN: JSON.stringify([{ port: 0, host: '127.0.0.1' }]) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  const out = lines(child);
  await waitFor(() => out.text.includes('READY GEN 0'), { what: 'the server' });
  process.kill(child.pid, 'SIGHUP');
  // The preflight (the new version, a child) is up: without the wait the
  // old image would hand over and exec now, and its queue would die with it.
  await waitFor(() => new RegExp(`READY GEN 1 PID (?!${child.pid} )`).test(out.text), { what: 'the preflight' });
  await sleep(200);
  receiver.stdin.write('drain\n');
  await waitFor(() => out.text.includes(`READY GEN 1 PID ${child.pid} `), { what: 'generation 1 in the same PID' });
  const mine = () => rx.text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .filter((m) => m.pid === child.pid && m.data !== 'WATCHDOG=1');
  await waitFor(() => mine().length >= 3, { what: `three datagrams (${JSON.stringify(mine())})` });
  child.kill('SIGTERM');
  receiver.kill('SIGKILL');
  assert.deepEqual(mine().map((m) => m.data.split('\n')[0]), ['READY=1', 'RELOADING=1', 'READY=1']);
  assert.deepEqual(mine().map((m) => m.data.split('\n').find((l) => l.startsWith('STATUS='))),
    ['STATUS=generation 0', undefined, 'STATUS=generation 1']);
});

const strace = ['/usr/bin/strace', '/bin/strace'].find(existsSync);

test('strace: a full queue costs one EAGAIN, then the kernel says when (EPOLLOUT): one sendmsg per datagram, no retry loop', {
  skip: (!hasPython || process.platform !== 'linux' || !strace) && 'needs python3, Linux and strace',
}, async () => {
  const path = join(dir, 'late-strace.sock');
  const log = join(dir, 'notify.strace');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-receiver.py'), path], { stdio: ['pipe', 'pipe', 'inherit'] });
  reaper.add(receiver.pid);
  const rx = lines(receiver);
  await waitFor(() => rx.text.includes('full'), { what: 'the receiver queue to be full' });
  const child = spawn(strace, ['-f', '-o', log, '-e', 'trace=sendmsg,epoll_ctl,io_uring_enter', process.execPath, join(fixtures, 'native-notify-late.cjs')], {
    env: { ...process.env, NOTIFY_SOCKET: path }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  reaper.add(child.pid);
  const childClosed = once(child, 'close');
  const out = lines(child);
  await waitFor(() => out.text.includes('loop'), { what: 'the notifier to run its loop' });
  await sleep(100);
  receiver.stdin.write('drain\n');
  assert.equal((await childClosed)[0], 0);
  receiver.kill('SIGKILL');
  const calls = straceCalls(log).map((c) => c.text);
  const sends = calls.filter((t) => t.startsWith('sendmsg('));
  assert.equal(sends.filter((t) => /= -1 EAGAIN/.test(t)).length, 1, sends.join('\n'));
  assert.equal(sends.filter((t) => /= \d+$/.test(t)).length, 3, sends.join('\n'));
  assert.equal(sends.length, 4, sends.join('\n'));
  // After the EAGAIN the socket goes to the event loop for EPOLLOUT: an
  // epoll_ctl, or on Node 26 (libuv batches epoll_ctl through io_uring,
  // UV_USE_IO_URING=0 or not) an io_uring_enter, whose operations strace
  // cannot show.
  const afterEagain = calls.slice(calls.findIndex((t) => /^sendmsg\(.*= -1 EAGAIN/.test(t)) + 1);
  const nextSend = afterEagain.findIndex((t) => t.startsWith('sendmsg('));
  assert.ok(afterEagain.slice(0, nextSend).some((t) => /^epoll_ctl\(.*EPOLLOUT/.test(t) || /^io_uring_enter\(/.test(t)),
    `the socket was handed to the event loop for EPOLLOUT before the next send:\n${afterEagain.join('\n')}`);
});
