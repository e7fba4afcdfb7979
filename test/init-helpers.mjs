// Shared by the init tests: start a command and read its output lines, and
// find the host PID of a PID namespace's PID 1.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { waitFor } from './helpers.mjs';

const probe = spawnSync('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'true']);
/** A skip reason when PID namespaces cannot be made here, else false. */
export const noNamespace = probe.status === 0 ? false
  : `unshare --pid --fork --mount-proc is not permitted here (${String(probe.stderr).trim() || probe.error?.message})`;
export const noTini = existsSync('/usr/bin/tini') ? false : 'tini is not installed (/usr/bin/tini)';
export const noDumbInit = existsSync('/usr/bin/dumb-init') ? false : 'dumb-init is not installed (/usr/bin/dumb-init)';

/** Starts `cmd` and collects its output lines; `line(prefix)` waits for one. */
export function start(reaper, cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  reaper.add(child.pid);
  const lines = [];
  let stderr = '';
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const line = (prefix) => waitFor(() => lines.find((l) => l.startsWith(prefix)),
    { what: `${prefix} (stdout: ${lines.join(' | ')}; stderr: ${stderr})` });
  return { child, lines, line, exited, stderr: () => stderr };
}

/** The host PID of the namespace's PID 1: unshare --fork's only child. */
export async function namespaceInit(reaper, unsharePid) {
  const kids = await waitFor(() => {
    try {
      const t = readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'latin1').trim();
      return t === '' ? null : t.split(' ').map(Number);
    } catch {
      return null;
    }
  }, { what: 'the namespace init' });
  return reaper.add(kids[0]);
}

/** Parses "READY <pid> <ppid> <pgid>". */
export function parseReady(line) {
  const [, pid, ppid, pgid] = line.split(' ').map(Number);
  return { pid, ppid, pgid };
}
