/**
 * /proc/PID/stat, read in one place. Its second field is the command name
 * in parentheses, which may itself hold spaces and parentheses: the fields
 * after it start after the LAST ')'.
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  /** R, S, D, Z, T, X... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** starttime: clock ticks after boot at which the process (or thread) started. */
  startTicks: number;
  /** The kernel's PF_* flags (PF_EXITING: 0x4, set as soon as the process starts to exit). */
  flags: number;
}

/**
 * The fields of /proc/`pid`/stat (`pid` may be 'self' or 'self/task/TID'),
 * or null when it cannot be read (gone, no /proc) or makes no sense.
 */
export function readProcStat(pid: number | string): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const stat = { state: f[0], ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), startTicks: Number(f[19]), flags: Number(f[6]) };
  if (stat.state === undefined || !Number.isSafeInteger(stat.ppid) || !Number.isSafeInteger(stat.startTicks)) return null;
  return stat;
}
