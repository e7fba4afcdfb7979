// sd_notify to a receiver that never reads (issue 16, item 8).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileScope, fixtures, waitFor } from './helpers.mjs';

const { reaper, dir } = fileScope('native-notify-');

const hasPython = spawnSync('python3', ['--version']).status === 0;

function lines(child) {
  const out = { text: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { out.text += d; });
  return out;
}

test('notify() to a full NOTIFY_SOCKET under a stream of signals returns false instead of stalling the loop', {
  skip: (!hasPython || process.platform !== 'linux') && 'needs python3 and Linux',
}, async () => {
  const path = join(dir, 'notify.sock');
  const receiver = spawn('python3', [join(fixtures, 'native-notify-full.py'), path], { stdio: ['pipe', 'pipe', 'inherit'] });
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
  assert.deepEqual(JSON.parse(out.text.split('\n')[1]), { sent: false });
});
