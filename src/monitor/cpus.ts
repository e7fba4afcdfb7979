/**
 * How many CPUs this process may really use: the host's CPUs, narrowed by
 * its CPU affinity (sched_setaffinity, `taskset`, a cpuset) and by the CPU
 * bandwidth quota of its cgroup and every ancestor (cgroup v2 `cpu.max`,
 * v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`: what `docker --cpus` and
 * systemd's CPUQuota= set). os.cpus() counts the host only: pm2's `-i max`
 * in a 2-CPU container on a 64-CPU host starts 64 workers (pm2 #4347).
 */
import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import { join, posix } from 'node:path';
import { invalidArgValue } from '../errors';
import { validateInteger } from '../validators';

export interface CpuCount {
  /** What 'auto' uses: max(1, min(host, affinity, floor(quota))). */
  count: number;
  host: number;
  affinity: number | null;
  /** quota / period in CPUs (may be fractional), or null without a quota. */
  quota: number | null;
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return null;
  }
}

/** "0-3,8,10-11" → 7. */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return NaN;
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

function affinityCount(): number | null {
  const status = read('/proc/self/status');
  const m = status === null ? null : /^Cpus_allowed_list:\s*(.+)$/m.exec(status);
  if (!m) return null;
  const n = countCpuList(m[1]);
  return n > 0 ? n : null;
}

/** Each ancestor directory of `dir` up to `root`, deepest first. */
function upTo(root: string, dir: string): string[] {
  const out: string[] = [];
  let rel = posix.normalize(`/${dir}`);
  for (;;) {
    out.push(join(root, rel));
    if (rel === '/') return out;
    rel = posix.dirname(rel);
  }
}

function minQuota(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

/** cgroup v2: cpu.max "quota period" or "max period", at every level. */
function v2Quota(root: string, path: string): number | null {
  let q: number | null = null;
  for (const dir of upTo(root, path)) {
    const text = read(join(dir, 'cpu.max'));
    if (text === null) continue;
    const [quota, period] = text.trim().split(/\s+/);
    if (quota === 'max' || !/^\d+$/.test(quota) || !/^\d+$/.test(period ?? '') || Number(period) === 0) continue;
    q = minQuota(q, Number(quota) / Number(period));
  }
  return q;
}

/** cgroup v1: cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us, at every level. */
function v1Quota(mount: string, path: string): number | null {
  let q: number | null = null;
  for (const dir of upTo(mount, path)) {
    const quota = read(join(dir, 'cpu.cfs_quota_us'));
    const period = read(join(dir, 'cpu.cfs_period_us'));
    if (quota === null || period === null) continue;
    const qn = Number(quota.trim());
    const pn = Number(period.trim());
    if (!(qn > 0) || !(pn > 0)) continue;
    q = minQuota(q, qn / pn);
  }
  return q;
}

interface Mount { root: string; point: string; fstype: string; superOptions: string[] }

function mounts(): Mount[] {
  const text = read('/proc/self/mountinfo');
  if (text === null) return [];
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    // "id parent maj:min root point options [optional...] - fstype source superoptions"
    const [left, right] = line.split(' - ');
    if (right === undefined) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ root: unescape(l[3]), point: unescape(l[4]), fstype: r[0], superOptions: (r[2] ?? '').split(',') });
  }
  return out;
}

/** The path of `p` below a mount whose root is `root`, or null if outside it. */
function below(root: string, p: string): string | null {
  if (root === '/') return p;
  if (p === root) return '/';
  return p.startsWith(`${root}/`) ? p.slice(root.length) : null;
}

function quotaCpus(): number | null {
  const text = read('/proc/self/cgroup');
  if (text === null) return null;
  const ms = mounts();
  let q: number | null = null;
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, id, controllers, path] = m;
    if (id === '0' && controllers === '') {
      for (const mt of ms.filter((x) => x.fstype === 'cgroup2')) {
        const rel = below(mt.root, path);
        if (rel !== null) q = minQuota(q, v2Quota(mt.point, rel));
      }
    } else if (controllers.split(',').includes('cpu')) {
      for (const mt of ms.filter((x) => x.fstype === 'cgroup' && x.superOptions.includes('cpu'))) {
        const rel = below(mt.root, path);
        if (rel !== null) q = minQuota(q, v1Quota(mt.point, rel));
      }
    }
  }
  return q;
}

/** The CPUs this process may use (see the module comment); read afresh on every call. */
export function availableCpus(): CpuCount {
  // os.cpus() is empty where /proc/cpuinfo is not readable; libuv's count then.
  const host = Math.max(1, os.cpus().length || (os as { availableParallelism?: () => number }).availableParallelism?.() || 1);
  if (process.platform !== 'linux') return { count: host, host, affinity: null, quota: null };
  const affinity = affinityCount();
  const quota = quotaCpus();
  // A quota of 1.5 CPUs gives 1 worker, as Go's automaxprocs does: a second
  // worker would only be throttled, and every worker costs memory.
  const count = Math.max(1, Math.min(host, affinity ?? host, quota === null ? host : Math.floor(quota)));
  return { count, host, affinity, quota };
}

/**
 * selfMonitor's `workers`: an integer from 1 to 4096, 'auto', or 'max'
 * (pm2's `-i max`, accepted as 'auto' so an ecosystem file's word works).
 */
export function validateWorkers(value: unknown, name: string): asserts value is number | 'auto' | 'max' | undefined {
  if (value === undefined || value === 'auto' || value === 'max') return;
  if (typeof value === 'string') throw invalidArgValue(name, value, "must be an integer from 1 to 4096, 'auto' or 'max'");
  validateInteger(value, name, 1, 4096);
}

/** How many slots `workers` (validated) asks for: 'auto' and 'max' count availableCpus(); none is one. */
export function workerCount(workers: number | 'auto' | 'max' | undefined): number {
  return workers === 'auto' || workers === 'max' ? availableCpus().count : workers ?? 1;
}
