// A real systemd as PID 1 of a systemd-nspawn container, for
// scripts/test-systemd.mjs.
//
// - The rootfs (Debian trixie: systemd 257, which has Type=notify-reload)
//   comes from debootstrap once and is cached in .cache/systemd/; every run
//   boots it with --volatile=overlay, so a run writes to a tmpfs overlay
//   and the cache is never changed by one.
// - systemd-nspawn runs in a cgroup v2 sub-cgroup of its own (it puts
//   itself in <cg>/supervisor and the container in <cg>/payload): on a
//   hybrid v1/v2 host (this machine: cgroup2 at /sys/fs/cgroup/unified) as
//   on a pure v2 one. SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 gives the
//   container's systemd the unified hierarchy either way.
// - It is driven with `nsenter -t <container PID 1> -a ...` (there is no
//   host systemd, so no machinectl).
// - Stopping: SIGTERM to systemd-nspawn halts the container in order. Every
//   way out of the run goes through halt(); systemd-nspawn also gets
//   SIGTERM when this process dies, even by SIGKILL (setpriv --pdeathsig),
//   and a sub-cgroup left by a run that died anyway is emptied and removed
//   by the next run.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, writeFileSync, watch,
} from 'node:fs';
import { join } from 'node:path';

const CG_PREFIX = 'posix-daemon-systemd-';
// What a command run in the container sees (not this host's environment).
const CONTAINER_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };

export const DEBOOTSTRAP_ARGS = [
  '--variant=minbase', '--include=systemd,systemd-sysv,dbus,curl,procps,libstdc++6', 'trixie',
];

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.error) throw r.error;
  return r;
}

/** Which of the host tools are missing. */
export function missingTools() {
  return ['systemd-nspawn', 'debootstrap', 'nsenter', 'setpriv']
    .filter((t) => sh('sh', ['-c', `command -v ${t}`]).status !== 0);
}

/**
 * The cached rootfs, built with debootstrap when missing (or made by other
 * debootstrap arguments). Built under a temporary name and renamed, so an
 * interrupted build is never taken for a cache.
 */
export function ensureRootfs(cacheDir, { mirror = 'http://deb.debian.org/debian', log = () => {} } = {}) {
  const rootfs = join(cacheDir, 'rootfs-trixie');
  const stamp = `${rootfs}.stamp`;
  const want = JSON.stringify(DEBOOTSTRAP_ARGS);
  if (existsSync(join(rootfs, 'usr/lib/systemd/systemd')) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) {
    return { rootfs, cached: true };
  }
  mkdirSync(cacheDir, { recursive: true });
  for (const e of readdirSync(cacheDir)) {
    if (e.startsWith('rootfs-trixie.tmp-')) rmSync(join(cacheDir, e), { recursive: true, force: true });
  }
  const tmp = `${rootfs}.tmp-${process.pid}`;
  log(`debootstrap ${DEBOOTSTRAP_ARGS.join(' ')} ${tmp} ${mirror}`);
  const r = sh('debootstrap', [...DEBOOTSTRAP_ARGS, tmp, mirror]);
  log(`${r.stdout}${r.stderr}`);
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`debootstrap failed (${r.status}):\n${`${r.stdout}${r.stderr}`.slice(-2000)}`);
  }
  rmSync(rootfs, { recursive: true, force: true });
  renameSync(tmp, rootfs);
  writeFileSync(stamp, want);
  return { rootfs, cached: false };
}

/** Where cgroup v2 is mounted, and this process's cgroup v2 directory. */
export function cgroup2() {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  let mountpoint;
  for (const line of mounts) {
    const [pre, post] = line.split(' - ');
    if (post?.split(' ')[0] === 'cgroup2') {
      mountpoint = pre.split(' ')[4];
      break;
    }
  }
  if (!mountpoint) throw new Error('no cgroup2 mount (mount | grep cgroup): systemd-nspawn needs cgroup v2 for a unified container');
  const own = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!own) throw new Error('this process has no cgroup v2 path in /proc/self/cgroup');
  return { mountpoint, parent: join(mountpoint, own.slice(3)) };
}

function procsIn(dir) {
  const out = [];
  const walk = (d) => {
    let entries;
    try { entries = readdirSync(d, { withFileTypes: true }); } catch { return; }
    try {
      for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (p) out.push(Number(p));
    } catch { /* gone */ }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return out;
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

/** Resolves once the cgroup (and every sub-cgroup) has no process left (the kernel says so in cgroup.events). */
function waitEmpty(dir, timeoutMs) {
  return new Promise((resolve) => {
    const populated = () => {
      try { return /populated 1/.test(readFileSync(join(dir, 'cgroup.events'), 'utf8')); } catch { return false; }
    };
    if (!populated()) return resolve(true);
    let w;
    const done = (v) => { clearTimeout(t); w?.close(); resolve(v); };
    const t = setTimeout(() => done(!populated()), timeoutMs);
    try {
      w = watch(join(dir, 'cgroup.events'), () => { if (!populated()) done(true); });
    } catch { /* the file went: empty */ done(true); }
    if (!populated()) done(true);
  });
}

/** SIGKILL every process in the cgroup tree (cgroup.kill where the kernel has it), then rmdir the tree. */
async function destroyCgroup(dir) {
  if (!existsSync(dir)) return;
  try { writeFileSync(join(dir, 'cgroup.kill'), '1'); } catch { /* kernel < 5.14 */ }
  for (const pid of procsIn(dir)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  await waitEmpty(dir, 10_000);
  const rm = (d) => {
    let entries = [];
    try { entries = readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) if (e.isDirectory()) rm(join(d, e.name));
    try { rmdirSync(d); } catch { /* still busy */ }
  };
  rm(dir);
}

/** Sub-cgroups left by runs that died without halting (their owner PID is gone). */
export async function removeStaleCgroups(parent, log = () => {}) {
  let entries = [];
  try { entries = readdirSync(parent); } catch { return; }
  for (const e of entries) {
    const m = new RegExp(`^${CG_PREFIX}(\\d+)$`).exec(e);
    if (m && !alive(Number(m[1]))) {
      log(`removing the stale container cgroup ${join(parent, e)}`);
      await destroyCgroup(join(parent, e));
    }
  }
}

export class Container {
  constructor({ rootfs, binds = [], bindsRo = [], log = () => {} }) {
    this.rootfs = rootfs;
    this.binds = binds;
    this.bindsRo = bindsRo;
    this.log = log;
    this.name = `${CG_PREFIX}${process.pid}`;
    this.output = '';
    this.halted = false;
  }

  async boot() {
    const { parent } = cgroup2();
    await removeStaleCgroups(parent, this.log);
    this.cg = join(parent, this.name);
    mkdirSync(this.cg);
    const args = [
      '-D', this.rootfs, `--machine=${this.name}`, '--register=no', '--keep-unit', '--private-network',
      '--volatile=overlay',
      ...this.bindsRo.map(([from, to]) => `--bind-ro=${from}:${to}`),
      ...this.binds.map(([from, to]) => `--bind=${from}:${to}`),
      '-b', '--console=pipe',
    ];
    this.log(`systemd-nspawn ${args.join(' ')}`);
    // sh moves itself into the sub-cgroup, then becomes systemd-nspawn;
    // setpriv makes the kernel send it SIGTERM (an orderly halt) if this
    // process dies first, however it dies.
    this.proc = spawn('setpriv', [
      '--pdeathsig', 'SIGTERM', '--', 'sh', '-c', 'echo $$ > "$1/cgroup.procs" && shift && exec systemd-nspawn "$@"',
      'sh', this.cg, ...args,
    ], {
      env: { ...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,  // its own process group: a Ctrl-C reaches us, and we halt it in order
    });
    this.exited = new Promise((resolve) => this.proc.on('close', (code, sig) => resolve({ code, sig })));
    for (const s of [this.proc.stdout, this.proc.stderr]) s.setEncoding('utf8').on('data', (d) => { this.output += d; });
    // The container's PID 1: the process in our sub-cgroup whose PID in its
    // own namespace is 1 (NSpid: <host pid> 1). Looked for at each console
    // line and every 250 ms: the payload cgroup does not exist before
    // systemd-nspawn makes it, so there is nothing to watch yet.
    this.pid1 = await new Promise((resolve, reject) => {
      let timer;
      const look = () => {
        for (const pid of procsIn(join(this.cg, 'payload'))) {
          try {
            const ns = /NSpid:\s+(.*)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1].trim().split(/\s+/);
            if (ns && ns.length >= 2 && ns[ns.length - 1] === '1') return pid;
          } catch { /* gone */ }
        }
        return undefined;
      };
      const check = () => {
        const p = look();
        if (p !== undefined) { clearInterval(timer); this.proc.stdout.off('data', check); resolve(p); }
      };
      this.proc.stdout.on('data', check);
      timer = setInterval(check, 250);
      this.exited.then(({ code, sig }) => {
        clearInterval(timer);
        reject(new Error(`systemd-nspawn exited (${code ?? sig}) before the container's PID 1 appeared:\n${this.output.slice(-3000)}`));
      });
    });
    // Up: systemd's own word (running, or degraded with a unit failed).
    // Until systemd has its private bus socket, systemctl fails to connect
    // at once (printing nothing, or "offline"); it is asked again after each
    // such failure. Once connected, --wait returns when the boot is over.
    const deadline = Date.now() + 120_000;
    for (;;) {
      const r = await this.run(['systemctl', 'is-system-running', '--wait'], { check: false });
      this.state = r.stdout.trim();
      if (/^(running|degraded)$/.test(this.state) || this.proc.exitCode !== null || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    if (!/^(running|degraded)$/.test(this.state)) throw new Error(`the container's systemd did not come up: ${this.state || 'no answer'}\n${this.output.slice(-3000)}`);
    return this;
  }

  /** Host path of a path inside the container (its mount namespace's root). */
  path(p) {
    return `/proc/${this.pid1}/root${p}`;
  }

  /** Runs argv inside every namespace of the container. Resolves { code, stdout, stderr }. */
  run(argv, { check = true, input, timeout = 120_000, ns = ['-a'] } = {}) {
    return new Promise((resolve, reject) => {
      const p = spawn('nsenter', ['-t', String(this.pid1), ...ns, '--', ...argv], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: CONTAINER_ENV });
      let stdout = '';
      let stderr = '';
      p.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
      p.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
      const t = setTimeout(() => p.kill('SIGKILL'), timeout);
      p.on('error', reject);
      p.on('close', (code, sig) => {
        clearTimeout(t);
        const r = { code: code ?? sig, stdout, stderr };
        if (check && code !== 0) reject(new Error(`${argv.join(' ')} exited ${code ?? sig}: ${stderr.trim() || stdout.trim()}`));
        else resolve(r);
      });
      if (input !== undefined) p.stdin.on('error', () => {}).end(input);
    });
  }

  /** A process spawned inside the container's namespaces (default: all). */
  spawn(argv, { ns = ['-a'], ...opts } = {}) {
    return spawn('nsenter', ['-t', String(this.pid1), ...ns, '--', ...argv], { env: CONTAINER_ENV, ...opts });
  }

  /**
   * Halts the container and removes its cgroup: SIGTERM to systemd-nspawn
   * (systemd stops every unit and powers off), and if that does not end it
   * in time, SIGKILL to everything in the sub-cgroup.
   */
  async halt({ timeoutMs = 20_000 } = {}) {
    if (this.halted) return;
    this.halted = true;
    const running = () => this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
    const exitWithin = (ms) => Promise.race([this.exited.then(() => true), new Promise((r) => setTimeout(r, ms, false))]);
    if (running()) {
      try { process.kill(this.proc.pid, 'SIGTERM'); } catch { /* gone */ }
      // A systemd still booting may not act on the halt request: a second
      // SIGTERM makes systemd-nspawn end the container at once.
      if (!await exitWithin(timeoutMs) && running()) {
        this.log('systemd-nspawn did not halt in time: SIGTERM again (immediate termination)');
        try { process.kill(this.proc.pid, 'SIGTERM'); } catch { /* gone */ }
        if (!await exitWithin(10_000)) this.log('systemd-nspawn still running: killing the container');
      }
    }
    if (this.cg) await destroyCgroup(this.cg);
    return !existsSync(this.cg ?? '/nonexistent');
  }
}

