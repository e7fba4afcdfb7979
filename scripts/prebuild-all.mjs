#!/usr/bin/env node
// npm run prebuild:all: every Linux prebuild, from this machine.
//
//   prebuilds/linux-<x64|arm64>/posix-daemon.napi.<glibc|musl>.node
//                               posix_daemon_hold.<glibc|musl>.so
//                               posix_daemon_init.musl.static
//
// glibc: the host's gcc (or Debian's aarch64-linux-gnu-gcc) against a
// Debian bullseye sysroot (glibc 2.31), made once with debootstrap into
// .cache/sysroot/bullseye-<arch>, so no binary depends on the libc of the
// machine that built it. scripts/check-floor.mjs then checks that nothing
// needs more than GLIBC_2.28. musl: musl-gcc's specs (musl-tools, and
// Debian's musl-dev:arm64 for arm64).
//
// The sources, defines and flags come from binding.gyp, so the prebuilds are
// what node-gyp would build, plus what a shipped binary needs: -O2, -fPIC,
// hidden visibility, no debug info, stripped.
//
// Environment: DEBIAN_MIRROR (debootstrap's), PREBUILD_CACHE_DIR (instead
// of .cache/).
//
// Options: --target NAME[,NAME] (repeatable; linux-x64-glibc, linux-x64-musl,
// linux-arm64-glibc, linux-arm64-musl; default all), --out DIR (default
// prebuilds). Prints one line per file written; a target that cannot be
// built says why in one line, the others are still built, and the exit code
// is then 1.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync,
  symlinkSync, writeFileSync,
} from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LIBCS, LINUX_ARCHES, targetFiles } from './prebuild-names.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const started = Date.now();
// The sysroots and objects. PREBUILD_CACHE_DIR shares one .cache between
// copies of the package (scripts/test-package.mjs packs a fresh clone).
const cache = process.env.PREBUILD_CACHE_DIR ? resolve(process.env.PREBUILD_CACHE_DIR) : join(repo, '.cache');

// ------------------------------------------------------------------ targets
const ARCHES = {
  x64: { debian: 'amd64', triplet: 'x86_64-linux-gnu', musl: 'x86_64-linux-musl', gnuCross: null },
  arm64: { debian: 'arm64', triplet: 'aarch64-linux-gnu', musl: 'aarch64-linux-musl', gnuCross: 'aarch64-linux-gnu-' },
};
const TARGETS = LINUX_ARCHES.flatMap((arch) => LIBCS.map((libc) => `linux-${arch}-${libc}`));
const SUITE = 'bullseye';
const MIRROR = process.env.DEBIAN_MIRROR || 'http://deb.debian.org/debian';
const DEBOOTSTRAP_BASE = ['--variant=minbase', '--include=libc6-dev'];

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const opts = { targets: [], out: join(repo, 'prebuilds') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--target') opts.targets.push(...value().split(',').filter(Boolean));
    else if (a.startsWith('--target=')) opts.targets.push(...a.slice(9).split(',').filter(Boolean));
    else if (a === '--out') opts.out = resolve(value());
    else if (a.startsWith('--out=')) opts.out = resolve(a.slice(6));
    else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  for (const t of opts.targets) if (!TARGETS.includes(t)) usage(`unknown target ${t}`);
  if (opts.targets.length === 0) opts.targets = [...TARGETS];
  opts.targets = TARGETS.filter((t) => opts.targets.includes(t));
  return opts;
}

function usage(error) {
  const text = `usage: node scripts/prebuild-all.mjs [--target ${TARGETS.join('|')}]... [--out DIR]`;
  if (error) {
    console.error(`prebuild-all: ${error}\n${text}`);
    process.exit(2);
  }
  console.log(text);
  process.exit(0);
}

// ------------------------------------------------------------- binding.gyp
/** binding.gyp as data: JSON once gyp's comments and trailing commas are gone. */
function readGyp() {
  const text = readFileSync(join(repo, 'binding.gyp'), 'utf8')
    .split('\n').map((l) => l.replace(/^\s*#.*$/, '')).join('\n')
    .replace(/,(\s*[\]}])/g, '$1');
  return JSON.parse(text);
}

/** A gyp condition ("OS=='linux' and target_arch=='x64'") for Linux on `arch`. */
function holds(condition, arch) {
  const js = condition.replace(/\band\b/g, '&&').replace(/\bor\b/g, '||').replace(/\bnot\b/g, '!');
  // Our own binding.gyp: only OS and target_arch are used in it.
  return Function('OS', 'target_arch', `return (${js});`)('linux', arch);
}

/** gyp's `<!(command)`: the command's output, run in the package's folder. */
function expand(value) {
  const m = /^<!\((.*)\)$/.exec(value);
  if (!m) return value;
  const r = spawnSync('/bin/sh', ['-c', m[1]], { cwd: repo, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`binding.gyp: ${m[1]} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** A target's settings for Linux on `arch`: its own keys merged with those of the conditions that hold. */
function gypTarget(gyp, name, arch) {
  const t = gyp.targets.find((x) => x.target_name === name);
  if (!t) throw new Error(`binding.gyp has no target ${name}`);
  const out = {};
  const merge = (src) => {
    for (const [k, v] of Object.entries(src)) {
      if (k === 'conditions' || k === 'target_conditions') continue;
      out[k] = Array.isArray(v) ? [...(out[k] ?? []), ...v] : v;
    }
    for (const c of src.conditions ?? []) {
      if (holds(c[0], arch)) merge(c[1]);
      else if (c[2]) merge(c[2]);
    }
  };
  merge(t);
  const list = (k) => (out[k] ?? []).map(expand).filter((v) => !(out[`${k}!`] ?? []).includes(v));
  return {
    type: out.type ?? 'loadable_module',
    sources: list('sources'),
    defines: list('defines'),
    includes: list('include_dirs').map((d) => resolve(repo, d)),
    cflags: [...list('cflags'), ...list('cflags_c')],
    ldflags: list('ldflags'),
  };
}

// -------------------------------------------------------------- node headers
function nodeHeaders() {
  const candidates = [
    join(dirname(dirname(process.execPath)), 'include', 'node'),
    join(process.env.HOME ?? '/root', '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
  ];
  const dir = candidates.find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'uv.h')));
  if (!dir) throw new Error(`no node_api.h and uv.h in ${candidates.join(' or ')} (npx node-gyp install)`);
  return dir;
}

// ------------------------------------------------------------------ running
function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}\n${`${r.stdout}${r.stderr}`.trim().slice(-3000)}`);
  }
  return r.stdout;
}

function shAsync(cmd, args) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', rej);
    child.on('close', (code, signal) => {
      if (code === 0) return res(out);
      // First line: the compiler's first error; then the command and its output.
      const lines = out.trim().split('\n');
      const first = lines.find((l) => /error|undefined reference|cannot find/i.test(l)) ?? lines.at(-1) ?? '';
      rej(new Error(`${basename(cmd)} exited with ${code ?? signal}: ${first}\n$ ${cmd} ${args.join(' ')}\n${out.trim().slice(-3000)}`));
    });
  });
}

/** Runs `jobs` (functions returning promises), a few at a time. */
async function pool(jobs, width = Math.max(1, Math.min(4, availableParallelism()))) {
  const results = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  }));
  return results;
}

function have(cmd) {
  return spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

// ----------------------------------------------------------------- sysroots
/**
 * The bullseye sysroot for `arch` in .cache/sysroot/bullseye-<arch>, made
 * once. debootstrap's first stage (--foreign) only unpacks the base; the
 * packages asked for with --include are downloaded but unpacked by the
 * second stage, which needs to run the target's binaries: so every
 * downloaded .deb is unpacked here (a sysroot needs files, not a configured
 * system). A stamp file, written last, marks it complete.
 */
function sysroot(arch) {
  const a = ARCHES[arch];
  const root = join(cache, 'sysroot', `${SUITE}-${arch}`);
  const stamp = `${root}.stamp`;
  const args = [...DEBOOTSTRAP_BASE, `--arch=${a.debian}`, '--foreign', SUITE];
  // The stamp names how the sysroot was made: a change remakes it.
  const want = JSON.stringify({ args, mirror: MIRROR, layout: 2 });
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want && existsSync(join(root, 'usr/include/stdio.h'))) {
    return { root, cached: true };
  }
  if (!have('debootstrap')) throw new Error('debootstrap is missing (apt-get install debootstrap)');
  if (process.getuid?.() !== 0) throw new Error('debootstrap needs root to make the sysroot');
  const t0 = Date.now();
  const tmp = `${root}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  rmSync(stamp, { force: true });
  mkdirSync(dirname(root), { recursive: true });
  sh('debootstrap', [...args, tmp, MIRROR]);
  const debs = join(tmp, 'var/cache/apt/archives');
  for (const f of readdirSync(debs).filter((n) => n.endsWith('.deb'))) sh('dpkg-deb', ['-x', join(debs, f), tmp]);
  rmSync(debs, { recursive: true, force: true });
  relativizeLinks(tmp);
  if (!existsSync(join(tmp, 'usr/include/stdio.h'))) throw new Error(`the ${arch} sysroot has no usr/include/stdio.h after debootstrap`);
  rmSync(root, { recursive: true, force: true });
  renameSync(tmp, root);
  writeFileSync(stamp, want);
  console.log(`sysroot ${root} made in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return { root, cached: false };
}

/**
 * Absolute symlinks of the library folders (libm.so -> /lib/...) would lead
 * the linker out of the sysroot into this machine's own libc: they are made
 * relative to the sysroot.
 */
function relativizeLinks(root) {
  const dirs = ['lib', 'lib64', 'usr/lib'].flatMap((d) => {
    const p = join(root, d);
    if (!existsSync(p) || lstatSync(p).isSymbolicLink()) return [];
    return [p, ...readdirSync(p).map((e) => join(p, e)).filter((e) => lstatSync(e).isDirectory() && !lstatSync(e).isSymbolicLink())];
  });
  for (const d of dirs) {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (!lstatSync(p).isSymbolicLink()) continue;
      const to = readlinkSync(p);
      if (!to.startsWith('/')) continue;
      rmSync(p);
      symlinkSync(relative(dirname(p), join(root, to)), p);
    }
  }
}

// -------------------------------------------------------------- toolchains
/**
 * The compiler and flags of a target. glibc: gcc for the architecture with
 * the bullseye sysroot. musl: gcc with musl-gcc's specs. C only: the addon
 * needs no C++ runtime (Debian has none for musl).
 */
function toolchain(arch, libc) {
  const a = ARCHES[arch];
  const prefix = a.gnuCross ?? '';
  const cc = `${prefix}gcc`;
  if (!have(cc)) throw new Error(`${cc} is missing (apt-get install ${a.gnuCross ? 'gcc-aarch64-linux-gnu' : 'gcc'})`);
  if (libc === 'musl') {
    const specs = `/usr/lib/${a.musl}/musl-gcc.specs`;
    if (!existsSync(specs)) {
      throw new Error(`${specs} is missing (apt-get install ${arch === 'x64' ? 'musl-tools musl-dev' : 'musl-dev:arm64, after dpkg --add-architecture arm64'})`);
    }
    return { cc, base: ['-specs', specs], libc, arch };
  }
  const { root } = sysroot(arch);
  const lib = [join(root, 'usr/lib', a.triplet), join(root, 'lib', a.triplet)];
  return {
    cc,
    // The compiler's own search paths come before the sysroot's: its
    // ../../../<triplet> is this machine's libc (or, for the cross
    // compiler, Debian's libc6-dev-arm64-cross), both newer than bullseye.
    // So the headers are named one by one (-nostdinc), and the sysroot's
    // crt*.o and libraries come first (-B, -L).
    base: [`--sysroot=${root}`, '-pthread', '-nostdinc',
      '-isystem', sh(cc, ['-print-file-name=include']).trim(),
      '-isystem', join(root, 'usr/include', a.triplet), '-isystem', join(root, 'usr/include'),
      `-B${lib[0]}/`, ...lib.map((d) => `-L${d}`)],
    libc,
    arch,
  };
}

// ------------------------------------------------------------------ builds
const COMMON = ['-O2', '-fPIC', '-fvisibility=hidden', '-g0', '-fno-omit-frame-pointer',
  '-D_FILE_OFFSET_BITS=64', '-D_LARGEFILE_SOURCE', '-D__STDC_FORMAT_MACROS'];

async function compile(tc, src, obj, { defines, includes, cflags }) {
  // C only: a C++ source would need a C++ runtime, and there is none for musl here.
  if (!src.endsWith('.c')) throw new Error(`${src} is not C: the prebuilds link no C++ runtime`);
  const args = [...tc.base, ...COMMON, ...defines.map((d) => `-D${d}`),
    ...includes.flatMap((d) => ['-I', d]), ...cflags,
    '-c', join(repo, src), '-o', obj];
  mkdirSync(dirname(obj), { recursive: true });
  await shAsync(tc.cc, args);
}

/** Where a file is linked before it takes its name (its folder made). */
function tmpFor(dest) {
  mkdirSync(dirname(dest), { recursive: true });
  return `${dest}.tmp`;
}

/** Gives `tmp` its name `dest` in one rename, and prints it. */
function publish(tmp, dest) {
  renameSync(tmp, dest);
  console.log(`${relative(process.cwd(), dest) || dest} ${statSync(dest).size}`);
}

/** The addon: posix_daemon's sources, linked as a shared object whose N-API symbols node provides. */
async function buildAddon(gyp, tc, work, dest) {
  const t = gypTarget(gyp, 'posix_daemon', tc.arch);
  const headers = nodeHeaders();
  const opts = {
    ...t,
    defines: ['NODE_GYP_MODULE_NAME=posix_daemon', 'USING_UV_SHARED=1', 'USING_V8_SHARED=1', 'BUILDING_NODE_EXTENSION', ...t.defines],
    includes: [headers, ...t.includes],
  };
  const objs = t.sources.map((s) => join(work, 'addon', `${s.replace(/[/.]/g, '_')}.o`));
  await pool(t.sources.map((s, i) => () => compile(tc, s, objs[i], opts)));
  const tmp = tmpFor(dest);
  // No -z,defs: the napi_* and uv_* symbols come from the node that loads
  // it.
  await shAsync(tc.cc, [...tc.base, '-shared', '-s', '-Wl,--as-needed', '-Wl,-O1',
    '-Wl,-z,noexecstack', ...t.ldflags, ...objs, '-o', tmp]);
  publish(tmp, dest);
}

/** native/hold.c: an LD_PRELOAD object, libc only; -z,defs proves it needs nothing else. */
async function buildHold(gyp, tc, work, dest) {
  const t = gypTarget(gyp, 'posix_daemon_hold', tc.arch);
  if (t.type === 'none') throw new Error('binding.gyp builds no posix_daemon_hold for Linux');
  const objs = t.sources.map((s) => join(work, 'hold', `${s.replace(/[/.]/g, '_')}.o`));
  await pool(t.sources.map((s, i) => () => compile(tc, s, objs[i], t)));
  const tmp = tmpFor(dest);
  await shAsync(tc.cc, [...tc.base, '-shared', '-s', '-Wl,-z,defs', '-Wl,-z,noexecstack', ...t.ldflags, ...objs, '-o', tmp]);
  publish(tmp, dest);
}

/**
 * native/init-loop.c as a static executable (PD_INIT_STATIC: an ordinary
 * main, no PT_INTERP of its own), musl's libc.a inside: no loader, no libc
 * to find in the image it runs in. binding.gyp's entry point (-e) is the
 * shared object's, not this one's.
 */
async function buildInitStatic(gyp, tc, work, dest) {
  const t = gypTarget(gyp, 'posix_daemon_init', tc.arch);
  if (t.type === 'none') throw new Error('binding.gyp builds no posix_daemon_init for Linux');
  const opts = { ...t, defines: [...t.defines, 'PD_INIT_STATIC'] };
  const objs = t.sources.map((s) => join(work, 'init', `${s.replace(/[/.]/g, '_')}.o`));
  await pool(t.sources.map((s, i) => () => compile(tc, s, objs[i], opts)));
  const tmp = tmpFor(dest);
  const ldflags = t.ldflags.filter((f) => !/^-Wl,-e,/.test(f));
  await shAsync(tc.cc, [...tc.base, '-static', '-no-pie', '-s', '-Wl,-z,noexecstack', ...ldflags, ...objs, '-o', tmp]);
  publish(tmp, dest);
}

const BUILDERS = [[/\.node$/, buildAddon], [/^posix_daemon_hold\./, buildHold], [/^posix_daemon_init\..*\.static$/, buildInitStatic]];

// --------------------------------------------------------------------- main
const opts = parseArgs(process.argv.slice(2));
const gyp = readGyp();
const failures = [];
// Per run: two runs sharing a cache do not mix their objects.
const workRoot = join(cache, 'prebuild-obj', String(process.pid));
for (const target of opts.targets) {
  const [, arch, libc] = /^linux-(x64|arm64)-(glibc|musl)$/.exec(target);
  let tc;
  try {
    tc = toolchain(arch, libc);
  } catch (e) {
    failures.push(`${target}: ${e.message.split('\n')[0]}`);
    console.error(`FAIL ${target}: ${e.message}`);
    continue;
  }
  const work = join(workRoot, target);
  rmSync(work, { recursive: true, force: true });
  for (const name of targetFiles(libc)) {
    const build = BUILDERS.find(([re]) => re.test(name))[1];
    const dest = join(opts.out, `linux-${arch}`, name);
    try {
      await build(gyp, tc, work, dest);
    } catch (e) {
      rmSync(`${dest}.tmp`, { force: true });
      // A stale file of an earlier run must not pass for this one.
      rmSync(dest, { force: true });
      failures.push(`${target} ${name}: ${e.message.split('\n')[0]}`);
      console.error(`FAIL ${target} ${name}: ${e.message}`);
    }
  }
  rmSync(work, { recursive: true, force: true });
}
rmSync(workRoot, { recursive: true, force: true });
const secs = ((Date.now() - started) / 1000).toFixed(1);
if (failures.length) {
  console.error(`prebuild-all: ${failures.length} failed (${secs} s):\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log(`prebuild-all: ${opts.targets.join(', ')} built in ${secs} s`);
