// Helpers for the systemd tests: a notify socket with SO_PASSCRED (python3)
// and free loopback ports.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fixtures, waitFor } from './helpers.mjs';

/** A test-side notify socket; `messages` fills with {pid, uid, data, monotonic_usec}. */
export async function notifyReceiver(address, reaper) {
  const proc = spawn('python3', [join(fixtures, 'systemd-notify-receiver.py'), address], { stdio: ['ignore', 'pipe', 'inherit'] });
  reaper.add(proc.pid);
  const messages = [];
  let buf = '';
  let listening = false;
  proc.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line === 'LISTENING') listening = true;
      else messages.push(JSON.parse(line));
    }
  });
  await waitFor(() => listening, { what: 'notify receiver' });
  return {
    messages,
    from: (pid) => messages.filter((m) => m.pid === pid),
    stop() { try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ } },
  };
}

export { freePort } from './helpers.mjs';
