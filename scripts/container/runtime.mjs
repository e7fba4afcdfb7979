// test:container's OCI runtimes (crun, runc) and containers: a bundle per
// container, `<runtime> run` with the program's output piped, kill/exec
// through the runtime, and a clean-up that deletes every container started.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The runtimes' context: `work` holds their state and the bundles; `log` gets every command. */
export function containers({ work, appFile, log }) {
  /** cgroup2 mount points of a hybrid host (cgroup v1 controllers mounted too). */
  function hybridCgroup2Mounts() {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => {
      const [pre, post] = l.split(' - ');
      return post ? { point: pre.split(' ')[4], fstype: post.split(' ')[0] } : null;
    }).filter(Boolean);
    const v2 = mounts.filter((m) => m.fstype === 'cgroup2').map((m) => m.point);
    const v1 = mounts.some((m) => m.fstype === 'cgroup');
    return v1 ? v2 : [];
  }

  function makeRuntime(name) {
    const state = join(work, `state-${name}`);
    mkdirSync(state);
    if (name === 'runc') return { name, state, cmd: (args) => ['runc', ['--root', state, ...args]] };
    const hide = hybridCgroup2Mounts();
    const crunArgs = (args) => ['--root', state, '--cgroup-manager=disabled', ...args];
    if (hide.length === 0) return { name, state, cmd: (args) => ['crun', crunArgs(args)] };
    // A private mount namespace in which crun sees no cgroup2 mount.
    const script = `${hide.map((m) => `umount -l '${m}'`).join(' && ')} && exec "$@"`;
    return {
      name, state, note: `each crun call in a private mount namespace without ${hide.join(', ')} (cgroup v1 hybrid host)`,
      cmd: (args) => ['unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', 'crun', ...crunArgs(args)]],
    };
  }

  function rtSync(rt, args) {
    const [cmd, a] = rt.cmd(args);
    const r = spawnSync(cmd, a, { encoding: 'utf8', timeout: 30000 });
    log(`$ ${rt.name} ${args.join(' ')} -> ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`);
    return r;
  }

  function rtAsync(rt, args) {
    const [cmd, a] = rt.cmd(args);
    return new Promise((resolve) => {
      const c = spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
      c.stderr.setEncoding('utf8').on('data', (d) => { out += d; });
      c.on('error', (err) => resolve({ code: -1, out: err.message }));
      c.on('close', (code) => {
        log(`$ ${rt.name} ${args.join(' ')} -> ${code}\n${out}`);
        resolve({ code, out });
      });
    });
  }

  const live = new Map();  // container id -> runtime, until deleted
  let serial = 0;

  function cleanupAll() {
    for (const [id, { rt, pidFile }] of live) {
      rtSync(rt, ['kill', id, 'KILL']);
      // Caught between create and start the runtime may not know it yet: its
      // PID 1 dies by our hand, and every process of its PID namespace with it.
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        // no PID file yet, or already gone
      }
      rtSync(rt, ['delete', '--force', id]);
      live.delete(id);
    }
  }

  // ------------------------------------------------------------- containers
  const PROGRAM = ['node', '/app/app.mjs'];
  const ENTRY = {
    ours: (s) => [...PROGRAM, s],
    image: (s, rootfs) => [rootfs.initImage, '--', ...PROGRAM, s],
    tini: (s) => ['/usr/bin/tini', '--', ...PROGRAM, s],
    'dumb-init': (s) => ['/usr/bin/dumb-init', ...PROGRAM, s],
    node: (s) => [...PROGRAM, s],
  };

  // `args` (the static rootfs's cases) replaces the node program; `out`, a
  // host directory, is mounted writable at /out (what the program leaves
  // there is read after the container ends); `tmpfs` puts one on /tmp (a
  // read-only rootfs without /app has nowhere else to write).
  function config({ rootfs, init, scenario, readonly = false, uid = 0, args, out, tmpfs = false }) {
    const extra = [
      ...(rootfs.app === false ? [] : [{ destination: '/app/app.mjs', type: 'bind', source: appFile, options: ['rbind', 'ro'] }]),
      ...(out ? [{ destination: '/out', type: 'bind', source: out, options: ['rbind', 'rw'] }] : []),
      ...(tmpfs ? [{ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=16384k'] }] : []),
    ];
    return {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid, gid: uid },
        args: args ?? ENTRY[init](scenario, rootfs),
        env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/tmp', ...(init === 'node' ? ['APP_NO_INIT=1'] : [])],
        cwd: rootfs.app === false ? '/' : '/app',
        capabilities: Object.fromEntries(['bounding', 'effective', 'permitted'].map((k) => [k, ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE']])),
        rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
        noNewPrivileges: true,
      },
      root: { path: rootfs.dir, readonly },
      hostname: 'posix-daemon-test',
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        ...extra,
      ],
      linux: {
        namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
        maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    };
  }

  const SIGNUM = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGTERM: 15, SIGWINCH: 28 };

  /**
   * Starts `<runtime> run` for one container. Returns a handle: line(re) waits
   * for a line of the program's output, kill(sig), exec(args), exited (a
   * promise of the container's status as the runtime reports it: the exit
   * code, or 128+N).
   */
  function startContainer(rt, rootfs, spec) {
    const id = `pdtest-${process.pid}-${++serial}`;
    const bundle = join(work, id);
    mkdirSync(bundle);
    // The program's writable directory (/out): any uid may write it.
    const outDir = spec.out ? join(bundle, 'out') : undefined;
    if (outDir) {
      mkdirSync(outDir);
      chmodSync(outDir, 0o777);
    }
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(config({ rootfs, ...spec, out: outDir }), null, 1));
    const pidFile = join(bundle, 'pid');
    // The PID file appears once the container's process exists.
    let onPid;
    const pidSeen = new Promise((resolve) => { onPid = resolve; });
    const watcher = watch(bundle, (ev, name) => {
      if (name === 'pid' && existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, 'utf8').trim());
        if (pid > 0) onPid(pid);
      }
    });
    const [cmd, a] = rt.cmd(['run', '--bundle', bundle, '--pid-file', pidFile, id]);
    live.set(id, { rt, pidFile });
    const child = spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const lines = [];
    const waiters = [];
    const onLine = (line) => {
      const i = waiters.findIndex((w) => w.re.test(line));
      if (i >= 0) waiters.splice(i, 1)[0].resolve(line);
      else lines.push(line);
    };
    let buf = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) onLine(buf.slice(0, i));
    });
    child.stderr.setEncoding('utf8').on('data', (d) => { out += d; });
    const exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        watcher.close();
        resolve(code ?? 128 + (SIGNUM[signal] ?? 0));
        for (const w of waiters) w.resolve(null);
      });
    });
    return {
      id,
      out: outDir,
      pidSeen,
      exited,
      output: () => out,
      /** The first line matching `re` (or null if the container ended first). */
      line(re) {
        const i = lines.findIndex((l) => re.test(l));
        if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0]);
        return new Promise((resolve) => waiters.push({ re, resolve }));
      },
      kill: (sig) => rtAsync(rt, ['kill', id, sig]),
      exec: (args) => rtAsync(rt, ['exec', id, ...args]),
      async remove() {
        const code = await Promise.race([exited, new Promise((r) => setTimeout(r, 100, 'running'))]);
        if (code === 'running') rtSync(rt, ['kill', id, 'KILL']);
        await exited;
        rtSync(rt, ['delete', '--force', id]);
        live.delete(id);
        rmSync(bundle, { recursive: true, force: true });
      },
    };
  }

  return { makeRuntime, startContainer, cleanupAll, live };
}
