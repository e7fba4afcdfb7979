// test:container's image: this node, the libraries `ldd` names for it,
// tini, dumb-init and the addon (and the init image where the package has
// one), busybox for sh/sleep/cat, and the package as `npm pack` makes it
// installed in /app. Built once into <cacheRoot>/rootfs-<key>/ (the key
// hashes the package's sources, this node and the tools) and reused.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, closeSync, copyFileSync, existsSync, openSync, readSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync,
  renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { npm, packTarball, repo, run } from '../stage.mjs';

export const which = (cmd) => {
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(join(d, cmd))) return join(d, cmd);
  return null;
};

/** The files `npm pack` would take the package from: their contents decide the cached rootfs. */
function packageInputs() {
  const r = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard', '--',
    'src', 'native', 'binding.gyp', 'package.json', 'package-lock.json', 'tsconfig.json', 'scripts/esm-wrappers.mjs',
    'examples/systemd'], { cwd: repo, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ls-files failed: ${r.stderr}`);
  return r.stdout.split('\0').filter((f) => f && existsSync(join(repo, f))).sort();
}

function fileId(p) {
  const real = realpathSync(p);
  const st = statSync(real);
  return `${real}:${st.size}:${st.mtimeMs}`;
}

function rootfsKey(tools) {
  const h = createHash('sha256');
  h.update('rootfs v2\n');
  h.update(`${process.version} ${fileId(process.execPath)}\n`);
  for (const t of Object.values(tools)) h.update(`${fileId(t)}\n`);
  for (const f of packageInputs()) h.update(`${f}\0`).update(readFileSync(join(repo, f))).update('\0');
  return h.digest('hex').slice(0, 16);
}

/** Shared libraries (and the loader) an ELF file needs, as `ldd` names them. */
function libsOf(file) {
  const out = spawnSync('ldd', [file], { encoding: 'utf8' });
  if (out.status !== 0) return [];  // static ("not a dynamic executable")
  const libs = [];
  for (const line of out.stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

function copyInto(root, src, dest = src) {
  const to = join(root, dest);
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(realpathSync(src), to);
  chmodSync(to, statSync(realpathSync(src)).mode & 0o777);
}

/** Returns { dir, key, built, initImage }. */
export function buildRootfs({ cacheRoot, rebuild = false, log = () => {} }) {
  const tools = { busybox: which('busybox'), tini: which('tini'), 'dumb-init': which('dumb-init') };
  for (const [n, p] of Object.entries(tools)) {
    if (!p) throw new Error(`${n} is not installed (apt-get install ${n === 'busybox' ? 'busybox-static' : n})`);
  }
  const key = rootfsKey(tools);
  const dir = join(cacheRoot, `rootfs-${key}`);
  const meta = () => JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8'));
  if (existsSync(join(dir, 'done')) && !rebuild) return { dir, key, built: false, ...meta() };

  mkdirSync(cacheRoot, { recursive: true });
  const tmp = mkdtempSync(join(cacheRoot, 'building-'));
  try {
    const root = join(tmp, 'rootfs');
    for (const d of ['bin', 'usr/bin', 'usr/local/bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'app']) mkdirSync(join(root, d), { recursive: true });
    chmodSync(join(root, 'tmp'), 0o1777);
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n');
    writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\n');

    // The package, as a user's `npm install` gets it: the packed tarball
    // (with its prebuild) installed into /app, no dev dependencies.
    const tarball = packTarball(tmp, { log });
    const app = join(root, 'app');
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'container-app', private: true, type: 'module' }));
    run(npm, ['install', '--omit=dev', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: app, log });
    writeFileSync(join(app, 'app.mjs'), '');  // bind-mount target for the program
    const prebuilds = join(app, 'node_modules', 'posix-daemon', 'prebuilds', `${process.platform}-${process.arch}`);
    // The addon this glibc node loads (the musl one sits beside it).
    const addon = readdirSync(prebuilds).find((f) => f.endsWith('.node') && !/\.musl\./.test(f));
    if (!addon) throw new Error(`no prebuild in ${prebuilds}`);

    copyInto(root, process.execPath, '/usr/local/bin/node');
    copyInto(root, tools.busybox, '/bin/busybox');
    for (const applet of ['sh', 'sleep', 'cat', 'echo', 'ps', 'kill', 'ls', 'true', 'grep', 'cut', 'test', '[']) {
      symlinkSync('busybox', join(root, 'bin', applet));
    }
    copyInto(root, tools.tini, '/usr/bin/tini');
    copyInto(root, tools['dumb-init'], '/usr/bin/dumb-init');
    // The package's init image (an executable a container can have as its
    // ENTRYPOINT), where this version of the package has one.
    const imageOnHost = spawnSync(process.execPath, ['-e',
      "import('posix-daemon/init').then((m) => process.stdout.write(m.initImagePath ?? ''), () => {})"],
    { cwd: app, encoding: 'utf8' }).stdout.trim();
    const image = imageOnHost && existsSync(imageOnHost) ? imageOnHost.slice(root.length) : null;
    writeFileSync(join(root, 'image.json'), JSON.stringify({ initImage: image }));
    const libs = new Set();
    for (const f of [process.execPath, tools.busybox, tools.tini, tools['dumb-init'], join(prebuilds, addon),
      ...(image ? [imageOnHost] : [])]) {
      for (const l of libsOf(f)) libs.add(l);
    }
    for (const l of libs) copyInto(root, l);
    log(`rootfs libraries: ${[...libs].join(' ')}`);

    rmSync(dir, { recursive: true, force: true });
    renameSync(root, dir);
    writeFileSync(join(dir, 'done'), `${new Date().toISOString()}\n`);
    // Older rootfs builds go: one cached rootfs at a time.
    for (const d of readdirSync(cacheRoot)) {
      if (d.startsWith('rootfs-') && d !== `rootfs-${key}`) rmSync(join(cacheRoot, d), { recursive: true, force: true });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { dir, key, built: true, ...meta() };
}

// ------------------------------------------------------- the no-libc rootfs
// The second image: busybox-static (/bin/busybox and its applet links), the
// package's static init image and, as the reference, tini-static, and no C
// library at all: no loader, no libc.so, nothing dynamic. What it proves:
// the init image starts where there is no libc to load (busybox-only and
// distroless images). Rebuilt on every run (a few MB, no package install).

/** The PT_INTERP (loader path) of an ELF file; null when it has none, undefined when not ELF. */
export function elfInterp(file) {
  const fd = openSync(file, 'r');
  try {
    const h = Buffer.alloc(64);
    if (readSync(fd, h, 0, 64, 0) < 52 || h.readUInt32BE(0) !== 0x7f454c46) return undefined;
    const is64 = h[4] === 2;
    const le = h[5] === 1;
    const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const uw = (b, o) => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(b, o));
    const phoff = uw(h, is64 ? 0x20 : 0x1c);
    const phentsize = u16(h, is64 ? 0x36 : 0x2a);
    const phnum = u16(h, is64 ? 0x38 : 0x2c);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      if (u32(ph, o) !== 3) continue;  // PT_INTERP
      const off = uw(ph, o + (is64 ? 8 : 4));
      const size = uw(ph, o + (is64 ? 32 : 16));
      const s = Buffer.alloc(size);
      readSync(fd, s, 0, size, off);
      return s.toString('latin1').replace(/\0.*$/s, '');
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * What in `dir` could be (or needs) a C library: files named like a loader
 * or a libc (ld-linux*, ld-musl*, libc.so*, libc.musl*, any *.so*), and ELF
 * files with a PT_INTERP. Returns { problems, elves } (elves: every ELF file
 * found, with its interpreter or null).
 */
export function libcCheck(dir) {
  const problems = [];
  const elves = [];
  const walk = (rel) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = join(rel, e.name);
      if (/^(ld-linux|ld-musl|libc\.so|libc\.musl)|\.so(\.|$)/.test(e.name)) problems.push(`${r}: a loader or shared library`);
      if (e.isDirectory()) walk(r);
      else if (e.isFile()) {
        const interp = elfInterp(join(dir, r));
        if (interp === undefined) continue;
        elves.push({ path: r, interp });
        if (interp !== null) problems.push(`${r}: dynamic, needs ${interp}`);
      }
    }
  };
  walk('/');
  return { problems, elves };
}

export const STATIC_INIT_NAME = 'posix_daemon_init.musl.static';

/** Builds the no-libc rootfs in `dir`. Returns { dir, app: false, initImage, tini }. */
export function buildStaticRootfs({ dir, initImage, log = () => {} }) {
  const busybox = which('busybox');
  if (!busybox) throw new Error('busybox is not installed (apt-get install busybox-static)');
  if (elfInterp(realpathSync(busybox)) !== null) throw new Error(`${busybox} is dynamic: install busybox-static`);
  const tini = which('tini-static');
  const root = join(dir, 'rootfs');
  for (const d of ['bin', 'usr/local/bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'out']) mkdirSync(join(root, d), { recursive: true });
  chmodSync(join(root, 'tmp'), 0o1777);
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n');
  writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\n');
  copyInto(root, busybox, '/bin/busybox');
  const applets = spawnSync(busybox, ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter((a) => /^[\w.[-]+$/.test(a) && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', join(root, 'bin', a));
  const image = `/usr/local/bin/${STATIC_INIT_NAME}`;
  copyInto(root, initImage, image);
  chmodSync(join(root, image), 0o755);
  if (tini) copyInto(root, tini, '/usr/local/bin/tini-static');
  log(`static rootfs ${root}: busybox (${applets.length} applets), ${initImage} as ${image}${tini ? ', tini-static' : ''}`);
  return { dir: root, app: false, initImage: image, tini: tini ? '/usr/local/bin/tini-static' : null, applets: applets.length };
}
