/**
 * What is left of a process group once its leader (our child) has ended:
 * grandchildren that ignored the signal sent to the group, or that outlived
 * a worker that crashed. They are not our children and their group's ID is
 * no longer pinned by an unreaped leader, so they are signalled one by one
 * through pidfds (process-handle.ts), never with killpg() on a number that
 * might by now name someone else's group.
 */
import { readdirSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { openProcess, type ProcessHandle } from './process-handle';
import { readProcStat } from './procstat';

const debug = debuglog('posix-daemon');

/**
 * The live members of process group `pgid` (Linux: from /proc), or null
 * where that cannot be listed.
 */
export function groupMembers(pgid: number): number[] | null {
  if (process.platform !== 'linux') return null;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return null;
  }
  const out: number[] = [];
  for (const e of entries) {
    if (e.charCodeAt(0) < 48 || e.charCodeAt(0) > 57) continue;
    const st = readProcStat(e);  // null: ended meanwhile
    if (st !== null && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') out.push(Number(e));
  }
  return out;
}

function openAll(pids: number[]): ProcessHandle[] {
  const out: ProcessHandle[] = [];
  for (const pid of pids) {
    try {
      out.push(openProcess(pid));
    } catch {
      // ended between the listing and the open
    }
  }
  return out;
}

/** False when the signal could not be sent (EPERM: a member that changed its credentials). */
function quietKill(h: ProcessHandle, signal: NodeJS.Signals | number): boolean {
  try {
    h.kill(signal);
    return true;
  } catch (err) {
    debug('process group: kill %d %s: %s', h.pid, signal, (err as Error).message);
    return false;
  }
}

/**
 * Ends what is left of group `pgid` after its leader was reaped: each member
 * gets `signal` (if given), and SIGKILL once `deadline` resolves if it has
 * not ended by then. Pins first, then checks the pinned process is still in
 * the group (a PID listed a moment ago may have been reused). Resolves once
 * every member is gone; the kernel says when (pidfds), nothing is polled.
 * Returns how many processes it found.
 */
export async function endGroupRemains(pgid: number, signal: NodeJS.Signals | number | null, timeout: number): Promise<number> {
  let found = 0;
  let killing = false;
  const timer = new AbortController();
  const deadline = delay(timeout, 'deadline', { signal: timer.signal }).catch(() => 'cancelled');
  try {
    // Members may fork while we wait: look again until the group is empty
    // (bounded, so a fork bomb cannot keep us here forever).
    for (let pass = 0; pass < 16; pass++) {
      const pids = groupMembers(pgid);
      if (pids === null || pids.length === 0) return found;
      const pinned = openAll(pids);
      // Pinned now: a PID still in the group (one more listing for all of
      // them, not one per PID) is a member's.
      const still = new Set(groupMembers(pgid) ?? []);
      const handles = pinned.filter((h) => {
        if (still.has(h.pid)) return true;
        h.close();
        return false;
      });
      if (handles.length === 0) return found;
      found += handles.length;
      debug('process group %d: %d left after its leader: %j', pgid, handles.length, handles.map((h) => h.pid));
      try {
        if (!killing && signal !== null) for (const h of handles) quietKill(h, signal);
        if (!killing) {
          const all = Promise.all(handles.map((h) => h.exited)).then(() => 'gone');
          if (await Promise.race([all, deadline]) === 'deadline') killing = true;
        }
        if (killing) {
          const killed = handles.filter((h) => quietKill(h, 'SIGKILL'));
          await Promise.all(killed.map((h) => h.exited));
        }
      } finally {
        for (const h of handles) h.close();
      }
    }
    return found;
  } finally {
    timer.abort();
  }
}
