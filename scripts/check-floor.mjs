#!/usr/bin/env node
// npm run check:floor [-- DIR]: what the Linux prebuilds in DIR (default
// prebuilds/) need from the machine that loads them.
//
// - glibc files: no symbol version newer than GLIBC_2.28 (Node's own Linux
//   builds need 2.28), GLIBCXX_3.4.25 and CXXABI_1.3.11 if libstdc++ is
//   linked at all; no undefined symbol that no library provides (a static
//   runtime can leave one: it then fails at load, with no version to see)
//   but N-API/libuv ones, which node provides.
// - musl files: NEEDED only musl's libc, no symbol versions, and musl's own
//   loader in list mode (`ld-musl-<arch>.so.1 --list`, under qemu-user for
//   arm64) resolves every symbol but N-API/libuv ones.
// - the static init image: no INTERP, no DYNAMIC; it runs (-h) here, under
//   qemu-user for arm64.
// - every file: its ELF machine is its folder's; every expected file is
//   there, and nothing else a loader could pick up.
//
// readelf (binutils) reads both architectures. Prints one line per file
// checked and one per problem; exits 1 when there is a problem.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expectedFiles } from './prebuild-names.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = resolve(process.argv[2] ?? join(repo, 'prebuilds'));

const FLOOR = { GLIBC: '2.28', GLIBCXX: '3.4.25', CXXABI: '1.3.11' };
const MACHINE = { x64: 'Advanced Micro Devices X86-64', arm64: 'AArch64' };
const MUSL_ARCH = { x64: 'x86_64', arm64: 'aarch64' };
// What node itself provides to an addon it loads.
const FROM_NODE = /^(napi_|node_api_|uv_)/;

const problems = [];
const fail = (file, text) => problems.push(`FAIL ${file}: ${text}`);

function readelf(args, file) {
  const r = spawnSync('readelf', ['-W', ...args, file], { encoding: 'utf8' });
  if (r.error) throw new Error(`readelf: ${r.error.message} (apt-get install binutils)`);
  return `${r.stdout}${r.stderr}`;
}

/** 1.2.10 > 1.2.9 */
function newer(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
  }
  return false;
}

/** The ELF facts of a file: machine, NEEDED, INTERP/DYNAMIC, version needs, undefined symbols. */
function elf(file) {
  const header = readelf(['-h'], file);
  const machine = /Machine:\s+(.*)/.exec(header)?.[1].trim() ?? null;
  const dynamic = readelf(['-d'], file);
  const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const segments = readelf(['-l'], file);
  const interp = /^\s+INTERP\s/m.test(segments);
  const hasDynamic = /^\s+DYNAMIC\s/m.test(segments);
  // Version needs: "Name: GLIBC_2.28  Flags: ..." under ".gnu.version_r".
  const versionText = readelf(['-V'], file);
  const needsAt = versionText.indexOf('.gnu.version_r');
  const versions = needsAt === -1 ? []
    : [...versionText.slice(needsAt).matchAll(/Name: ([A-Z_]+)_([0-9.]+)\s/g)].map((m) => ({ lib: m[1], version: m[2] }));
  // Undefined, not weak, and no version: nothing named provides it.
  const undefinedPlain = [];
  for (const line of readelf(['--dyn-syms'], file).split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[6] !== 'UND' || f[4] === 'WEAK' || f[7].includes('@')) continue;
    undefinedPlain.push(f[7]);
  }
  return { machine, needed, interp, hasDynamic, versions, undefinedPlain };
}

function maxVersion(versions, lib) {
  return versions.filter((v) => v.lib === lib).map((v) => v.version).reduce((a, b) => (a === null || newer(b, a) ? b : a), null);
}

function checkGlibc(rel, e) {
  for (const [lib, floor] of Object.entries(FLOOR)) {
    const over = [...new Set(e.versions.filter((v) => v.lib === lib && newer(v.version, floor)).map((v) => `${lib}_${v.version}`))];
    if (over.length) fail(rel, `needs ${over.join(', ')} (the floor is ${lib}_${floor})`);
  }
  const stray = e.undefinedPlain.filter((s) => !FROM_NODE.test(s));
  if (stray.length) fail(rel, `undefined symbols with no version (glibc 2.28 has none of them; a data symbol fails the load): ${stray.join(', ')}`);
  if (e.needed.some((n) => /^libstdc\+\+|^libgcc_s/.test(n))) fail(rel, `links a C++ runtime dynamically: ${e.needed.join(' ')}`);
  const parts = ['GLIBC', 'GLIBCXX', 'CXXABI'].map((l) => [l, maxVersion(e.versions, l)]).filter(([, v]) => v).map(([l, v]) => `${l}_${v}`);
  return `max ${parts.join(' ') || 'no versioned symbol'}; NEEDED ${e.needed.join(' ') || 'none'}`;
}

/** musl's loader in list mode: it reports every symbol it cannot resolve. */
function muslLoad(rel, file, arch) {
  const loader = `/lib/ld-musl-${MUSL_ARCH[arch]}.so.1`;
  if (!existsSync(loader)) {
    fail(rel, `${loader} is missing: cannot load it with musl (apt-get install musl${arch === 'arm64' ? ':arm64' : ''})`);
    return 'not loaded';
  }
  const r = spawnSync(loader, ['--list', file], { encoding: 'utf8' });
  if (r.error) {
    fail(rel, `${loader}: ${r.error.message}${arch === 'arm64' ? ' (qemu-user-binfmt runs arm64 programs)' : ''}`);
    return 'not loaded';
  }
  const out = `${r.stdout}${r.stderr}`;
  const missing = [...out.matchAll(/Error relocating [^:]+: ([^:]+): symbol not found/g)].map((m) => m[1]);
  const bad = missing.filter((s) => !FROM_NODE.test(s));
  const other = out.split('\n').filter((l) => /Error/.test(l) && !/symbol not found/.test(l));
  if (bad.length) fail(rel, `musl's loader cannot resolve: ${bad.join(', ')}`);
  if (other.length) fail(rel, `musl's loader: ${other.join(' | ')}`);
  return `${loader} --list: ${missing.length - bad.length} symbols left to node`;
}

function checkMusl(rel, file, arch, e) {
  const libc = new Set(['libc.so', `libc.musl-${MUSL_ARCH[arch]}.so.1`]);
  const other = e.needed.filter((n) => !libc.has(n));
  if (other.length) fail(rel, `NEEDED besides musl's libc: ${other.join(' ')}`);
  if (e.versions.length) fail(rel, `has symbol version requirements (glibc's): ${[...new Set(e.versions.map((v) => `${v.lib}_${v.version}`))].join(', ')}`);
  return `NEEDED ${e.needed.join(' ') || 'none'}; ${muslLoad(rel, file, arch)}`;
}

function checkStatic(rel, file, e) {
  if (e.interp) fail(rel, 'has an INTERP (it would need a loader)');
  if (e.hasDynamic) fail(rel, 'has a DYNAMIC section (it is not static)');
  if (e.needed.length) fail(rel, `NEEDED ${e.needed.join(' ')}`);
  // It runs here: the usage text, exit 0 (arm64 through qemu-user's binfmt).
  const r = spawnSync(file, ['-h'], { encoding: 'utf8' });
  if (r.error || r.status !== 0 || !/Usage:/.test(r.stderr + r.stdout)) {
    fail(rel, `does not run: ${r.error?.message ?? `exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n')[0]}`}`);
    return 'static, did not run';
  }
  return 'static (no INTERP, no DYNAMIC); ran -h';
}

const expected = expectedFiles();
let checked = 0;
for (const { arch, libc, path } of expected) {
  const file = join(dir, path);
  const rel = relative(process.cwd(), file) || file;
  if (!existsSync(file)) {
    fail(rel, `missing (expected for linux-${arch}-${libc})`);
    continue;
  }
  checked++;
  const e = elf(file);
  if (e.machine !== MACHINE[arch]) fail(rel, `ELF machine is ${e.machine}, not ${MACHINE[arch]} (its folder is linux-${arch})`);
  let what;
  if (path.endsWith('.static')) what = checkStatic(rel, file, e);
  else if (libc === 'glibc') what = checkGlibc(rel, e);
  else what = checkMusl(rel, file, arch, e);
  console.log(`${rel}: ${what}`);
}
// Anything else in a Linux folder could be picked by node-gyp-build (an
// untagged .node matches every libc) or shadow a companion.
const known = new Set(expected.map((x) => x.path));
for (const arch of Object.keys(MACHINE)) {
  const d = join(dir, `linux-${arch}`);
  if (!existsSync(d)) continue;
  for (const f of readdirSync(d)) {
    if (!known.has(`linux-${arch}/${f}`)) fail(relative(process.cwd(), join(d, f)), 'not a file of any target (stale or misnamed)');
  }
}
for (const p of problems) console.log(p);
console.log(`floor: ${checked} of ${expected.length} files checked in ${relative(process.cwd(), dir) || dir}, ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
process.exit(problems.length ? 1 : 0);
