// npm run test:package: what a user gets from `npm install posix-daemon`.
//
// 1. contents  - `npm pack` ships dist/ (JS, .d.ts, .mjs, .d.mts), native/ (C sources),
//                binding.gyp, prebuilds/<platform>-<arch>/*.node, README.md,
//                LICENSE and package.json, and nothing else.
// 2. prebuild  - the tarball installs into an empty project with a PATH that
//                has node and npm but no C/C++ compiler and no make, so a
//                source build is impossible; every subpath loads with both
//                import and require, a binding runs, and the .node file
//                mapped into the process is the shipped prebuild.
// 3. source    - the same tarball without prebuilds/ installs with the
//                compiler present: it builds from source, and the process
//                maps build/Release/*.node.
// 4. clone     - `npm pack` in a fresh clone (no dist/, build/, prebuilds/)
//                ships dist/ and this platform's prebuild: `prepack` built them.
// 5. targets   - every prebuild of every target is in the tarball (TARGETS
//                below) and the tarball is not larger than MAX_PACKED; each
//                binary is loaded by a loader for its libc and arch, where
//                this machine has one: node (x64 glibc, check 2), the arm64
//                node under qemu-user (.cache/node-arm64-*, else qemu and the
//                arm64 glibc loader in trace mode), musl's loaders in list
//                mode (x64, and arm64 through binfmt); the static init image
//                is run (arm64 through binfmt).
//
//   node scripts/test-package.mjs [--keep] [--tarball FILE] [--arm64-node FILE]
//     --tarball     test this tarball instead of packing one (what a release
//                   would publish)
//     --arm64-node  the arm64 node to load the arm64 glibc addon with
//                   (default: the newest .cache/node-arm64-*/bin/node)
//
// Prints one line per check and a closing "package: N passed, N failed".
import { spawnSync } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, appendFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { findPrebuild, npm, packTarball, repo as repoDir, run } from './stage.mjs';
import { elfInterp } from './container/rootfs.mjs';

const argv = process.argv.slice(2);
const opt = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : null);
const keep = argv.includes('--keep');
const givenTarball = opt('--tarball');

// ----------------------------------------------------------------- targets
// Every file `npm run prebuild:all` writes, one name per target (the
// addon's names are node-gyp-build's tags: napi, glibc|musl).
const ARCHES = ['x64', 'arm64'];
const LIBCS = ['glibc', 'musl'];
const TARGETS = ARCHES.flatMap((arch) => [
  ...LIBCS.map((libc) => ({ arch, libc, kind: 'addon', file: `prebuilds/linux-${arch}/posix-daemon.napi.${libc}.node` })),
  ...LIBCS.map((libc) => ({ arch, libc, kind: 'hold', file: `prebuilds/linux-${arch}/posix_daemon_hold.${libc}.so` })),
  { arch, libc: 'static', kind: 'init', file: `prebuilds/linux-${arch}/posix_daemon_init.musl.static` },
]);
// The bound on the tarball: every install downloads every target. Measured
// with prebuild:all's files (stripped, C++ runtime linked in): a glibc
// addon .node 420 KB (x64) / 388 KB (arm64), a hold .so 14-66 KB, the init
// image 37-66 KB; dist/ and the rest ~0.8 MB: 617 KB packed, 1.9 MB
// unpacked without the two musl addons, so about 1 MB packed with them.
// 2 MB packed leaves twice that; a build with debug info (several MB per
// .node) or a stray large file trips it.
const MAX_PACKED = 2 * 1024 * 1024;
// The libc node-gyp-build sees here (its rule: musl when /etc/alpine-release
// exists; LIBC overrides), hence the addon check 2 must load.
const hostLibc = process.env.LIBC || (existsSync('/etc/alpine-release') ? 'musl' : 'glibc');
const hostAddon = process.platform === 'linux' ? `prebuilds/linux-${process.arch}/posix-daemon.napi.${hostLibc}.node` : null;
const work = mkdtempSync(join(tmpdir(), 'posix-daemon-pkgtest-'));
const logFile = join(work, 'test-package.log');
const log = (text) => appendFileSync(logFile, `${text}\n`);
const results = [];

function record(name, ok, detail) {
  results.push({ name, ok });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
}

/** A check this machine cannot make (no loader for that target here): shown, not counted. */
function skip(name, why) {
  results.push({ name, ok: true, skipped: true });
  console.log(`skip ${name}: ${why}`);
}

// ---------------------------------------------------------------- the check
// Runs inside the temp project. Argument: 'prebuild' or 'build' (where the
// loaded .node file must come from). Prints one JSON line.
const checkScript = String.raw`
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const require = createRequire(import.meta.url);
const expect = process.argv[2];
const subpaths = ['posix-daemon', 'posix-daemon/posix', 'posix-daemon/initstatus', 'posix-daemon/monitor', 'posix-daemon/autorestart', 'posix-daemon/init', 'posix-daemon/systemd'];
const problems = [];
const missing = [];
const loaded = {};
for (const s of subpaths) {
  let esm, cjs;
  try { esm = await import(s); } catch (e) {
    (/MODULE_NOT_FOUND|ERR_MODULE_NOT_FOUND|ERR_PACKAGE_PATH_NOT_EXPORTED/.test(e.code) ? missing : problems)
      .push(s + ' (import): ' + (e.code || '') + ' ' + e.message.split('\n')[0]);
  }
  try { cjs = require(s); } catch (e) {
    (/MODULE_NOT_FOUND|ERR_PACKAGE_PATH_NOT_EXPORTED/.test(e.code) ? missing : problems)
      .push(s + ' (require): ' + (e.code || '') + ' ' + e.message.split('\n')[0]);
  }
  if (esm && cjs) {
    const names = Object.keys(cjs).filter((n) => n !== '__esModule' && n !== 'default');
    if (names.length === 0) problems.push(s + ': exports nothing');
    for (const n of names) if (esm[n] !== cjs[n]) problems.push(s + ': import and require disagree on ' + n);
    if (esm.default !== cjs) problems.push(s + ': the ESM default export is not the CommonJS module (two instances)');
    loaded[s] = names.length;
  }
}
// A binding: fork + exec /bin/true, reaped with wait4; and getsid.
let binding = null;
try {
  const posix = require('posix-daemon/posix');
  const pid = posix.fork({ file: '/bin/true', args: [] });
  const w = posix.wait4(pid);
  if (w.pid !== pid || w.exitCode !== 0) problems.push('fork+wait4 of /bin/true gave ' + JSON.stringify(w));
  const sid = posix.getsid();
  const statSid = Number(readFileSync('/proc/self/stat', 'latin1').split(') ')[1].split(' ')[3]);
  if (sid !== statSid) problems.push('getsid() = ' + sid + ' but /proc/self/stat says ' + statSid);
  binding = { pid, exitCode: w.exitCode, sid };
} catch (e) {
  problems.push('binding call failed: ' + (e.code || '') + ' ' + e.message.split('\n')[0]);
}
// Which .node file is mapped into this process: the kernel's word.
const maps = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\n')
  .map((l) => l.split(/\s+/).slice(5).join(' ')).filter((p) => /posix-daemon.*\.node$/.test(p)))];
const pkgDir = require.resolve('posix-daemon/package.json').replace(/package\.json$/, '');
const wantRel = expect === 'prebuild' ? /^prebuilds\/[^/]+\/[^/]+\.node$/ : /^build\/Release\/[^/]+\.node$/;
// The prebuild node-gyp-build must pick, when the caller names it.
const exact = process.argv[3];
const okPath = (p) => p.startsWith(pkgDir) && (exact ? p.slice(pkgDir.length) === exact : wantRel.test(p.slice(pkgDir.length)));
if (maps.length !== 1 || !okPath(maps[0])) problems.push('mapped addon ' + JSON.stringify(maps) + ' is not ' + pkgDir + (exact ?? wantRel.source));
// addonPath as the library reports it (dist/native.js is not a public subpath).
let addonPath = null;
try { addonPath = require(pkgDir + 'dist/native.js').addonPath; } catch (e) { problems.push('dist/native.js: ' + e.message); }
if (addonPath !== maps[0]) problems.push('addonPath ' + addonPath + ' is not the mapped file ' + maps[0]);
// The init image next to the addon: run through the library's own command
// (the loader + the image), through the posix-daemon-init bin, and directly.
if (process.platform === 'linux') {
  const { spawnSync } = await import('node:child_process');
  const { accessSync, constants } = await import('node:fs');
  const initMod = require('posix-daemon/init');
  const want = pkgDir + (expect === 'prebuild' ? 'prebuilds/' : 'build/Release/');
  if (!initMod.initImagePath.startsWith(want)) problems.push('initImagePath ' + initMod.initImagePath + ' is not under ' + want);
  const { file, argv } = initMod.initImageCommand(['-w', '--', '/bin/sh', '-c', 'exit 7']);
  const r1 = spawnSync(file, argv.slice(1), { argv0: argv[0], encoding: 'utf8' });
  if (r1.status !== 7) problems.push('the init image via ' + file + ' gave ' + r1.status + ' ' + r1.stderr);
  const r2 = spawnSync('node_modules/.bin/posix-daemon-init', ['-w', '--', '/bin/sh', '-c', 'exit 5'], { encoding: 'utf8' });
  if (r2.status !== 5) problems.push('node_modules/.bin/posix-daemon-init gave ' + r2.status + ' ' + r2.stderr + (r2.error?.message ?? ''));
  try { accessSync(initMod.initImagePath, constants.X_OK); } catch { problems.push(initMod.initImagePath + ' is not executable (an ENTRYPOINT needs that)'); }
  const r3 = spawnSync(initMod.initImagePath, ['-w', '--', '/bin/sh', '-c', 'exit 6'], { encoding: 'utf8' });
  if (r3.status !== 6) problems.push('the init image run directly gave ' + r3.status + ' ' + r3.stderr + (r3.error?.message ?? ''));
}
console.log(JSON.stringify({ node: process.version, loaded, missing, problems, binding, addon: maps[0] ?? null }));
`;

function runCheck(project, expect, env, exact) {
  const r = spawnSync(process.execPath, ['check.mjs', expect, ...(exact ? [exact] : [])], { cwd: project, env, encoding: 'utf8' });
  log(`$ node check.mjs ${expect}\n${r.stdout}${r.stderr}`);
  const line = (r.stdout ?? '').trim().split('\n').pop();
  let res;
  try {
    res = JSON.parse(line);
  } catch {
    return { ok: false, detail: `check script failed (exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}` };
  }
  const bad = [];
  if (res.missing.length) bad.push(`MISSING subpath modules (not written yet?): ${res.missing.join('; ')}`);
  bad.push(...res.problems);
  if (bad.length) return { ok: false, detail: bad.join('\n      ') };
  return {
    ok: true,
    detail: `${Object.keys(res.loaded).length} subpaths via import+require, fork+wait4 ok, addon ${res.addon.slice(res.addon.indexOf('node_modules/'))}`,
  };
}

// ------------------------------------------------ 5. loaders, per target
// Written here, small on purpose: scripts/check-floor.mjs (the floor check,
// not on main yet) may export the same reading of a loader's report; then
// one of the two goes.

// What node itself gives an addon: the only symbols an addon may leave
// unresolved. A hold .so (LD_PRELOADed into any program) may leave none.
const FROM_NODE = /^(napi_|node_api_|uv_)/;
const MUSL_LOADER = { x64: '/lib/ld-musl-x86_64.so.1', arm64: '/lib/ld-musl-aarch64.so.1' };
const GLIBC_LOADER = { x64: '/lib64/ld-linux-x86-64.so.2', arm64: '/lib/ld-linux-aarch64.so.1' };
const ARM64_PREFIX = '/usr/aarch64-linux-gnu';  // Debian's libc6-arm64-cross (and libstdc++6-arm64-cross)

/**
 * Has a loader resolve `file` without running it. musl: `<ld-musl> --list
 * FILE` ("Error relocating F: SYM: symbol not found", "Error loading shared
 * library L"). glibc: the loader with LD_TRACE_LOADED_OBJECTS=1
 * LD_BIND_NOW=1 LD_WARN=yes, which is `ldd -r` ("undefined symbol: SYM",
 * "L => not found", "version `V' not found"); for arm64 through
 * `qemu-aarch64 -L <prefix> -E ...`: -E hands the variables to the guest
 * only (in qemu's own environment the host's loader would trace qemu).
 * Returns { cmd, unresolved, problems, libs } or { skip }.
 */
function loaderReport(file, arch, libc) {
  let cmd;
  let env = process.env;
  if (libc === 'musl') {
    if (!existsSync(MUSL_LOADER[arch])) return { skip: `no ${MUSL_LOADER[arch]} here (Debian: musl${arch === 'arm64' ? ':arm64' : ''})` };
    if (!runsHere(arch)) return { skip: `${arch} executables do not run here (Debian: qemu-user-binfmt)` };
    cmd = [MUSL_LOADER[arch], '--list', file];
  } else if (arch === process.arch) {
    cmd = [GLIBC_LOADER[arch], file];
    env = { ...process.env, LD_TRACE_LOADED_OBJECTS: '1', LD_BIND_NOW: '1', LD_WARN: 'yes' };
  } else {
    const loader = join(ARM64_PREFIX, 'lib', basename(GLIBC_LOADER[arch]));
    if (arch !== 'arm64' || !existsSync(loader)) return { skip: `no ${loader} here (Debian: libc6-arm64-cross)` };
    if (!onPath('qemu-aarch64')) return { skip: 'no qemu-aarch64 here (Debian: qemu-user)' };
    cmd = ['qemu-aarch64', '-L', ARM64_PREFIX, '-E', 'LD_TRACE_LOADED_OBJECTS=1', '-E', 'LD_BIND_NOW=1', '-E', 'LD_WARN=yes', loader, file];
  }
  const r = spawnSync(cmd[0], cmd.slice(1), { env, encoding: 'utf8', timeout: 60000 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  log(`$ ${cmd.join(' ')} -> ${r.status ?? r.signal}\n${out}`);
  if (r.error) return { cmd, unresolved: [], problems: [`${cmd[0]}: ${r.error.message}`], libs: [] };
  const unresolved = [];
  const problems = [];
  const libs = [];
  for (const line of out.split('\n')) {
    let m;
    if ((m = /^Error relocating [^:]+: ([^:]+): symbol not found/.exec(line) ?? /^undefined symbol: (\S+)/.exec(line))) unresolved.push(m[1]);
    else if ((m = /^\s*(\S+) => not found/.exec(line))) problems.push(`${m[1]} not found`);
    else if ((m = /^\s*(\S+) => (\S+)/.exec(line))) libs.push(`${m[1]} => ${m[2]}`);
    else if (/Error|not found|cannot/i.test(line)) problems.push(line.trim());
  }
  // A musl binary may link musl's libc and nothing else.
  if (libc === 'musl') for (const l of libs) if (!l.endsWith(`=> ${MUSL_LOADER[arch]}`)) problems.push(`links ${l}`);
  return { cmd, unresolved, problems, libs };
}

const onPath = (cmd) => (process.env.PATH ?? '').split(delimiter).some((d) => d && existsSync(join(d, cmd)));
// Another arch's executables run here when binfmt_misc hands them to qemu.
const runsHere = (arch) => arch === process.arch || (arch === 'arm64' && existsSync('/proc/sys/fs/binfmt_misc/qemu-aarch64'));

/** The arm64 node to load the arm64 addon with: --arm64-node, else the newest .cache/node-arm64-*. */
function arm64Node() {
  const given = opt('--arm64-node');
  if (given) return resolve(given);
  const cache = join(repoDir, '.cache');
  if (!existsSync(cache)) return null;
  const found = readdirSync(cache).map((d) => /^node-arm64-(\d+)\.(\d+)\.(\d+)$/.exec(d)).filter(Boolean)
    .filter((m) => existsSync(join(cache, m[0], 'bin', 'node')))
    .sort((a, b) => a[1] - b[1] || a[2] - b[2] || a[3] - b[3]);
  return found.length ? join(cache, found.at(-1)[0], 'bin', 'node') : null;
}

// Under the arm64 node, in the project check 2 installed into: the package
// as a user requires it; node-gyp-build must pick the arm64 glibc addon.
const arm64Script = String.raw`
const posix = require('posix-daemon/posix');
const pkgDir = require.resolve('posix-daemon/package.json').replace(/package\.json$/, '');
const { addonPath } = require(pkgDir + 'dist/native.js');
const sid = posix.getsid();
const pid = posix.fork({ file: '/bin/true', args: [] });
const w = posix.wait4(pid);
console.log(JSON.stringify({ arch: process.arch, version: process.version, addon: addonPath.slice(pkgDir.length), sid, forked: w.pid === pid, exitCode: w.exitCode }));
`;

// Under a node on bullseye's glibc: the glibc the addon itself reports.
const oldGlibcScript = String.raw`
const posix = require('posix-daemon/posix');
const pkgDir = require.resolve('posix-daemon/package.json').replace(/package\.json$/, '');
const { addon, addonPath } = require(pkgDir + 'dist/native.js');
const pid = posix.fork({ file: '/bin/true', args: [] });
const w = posix.wait4(pid);
console.log(JSON.stringify({ arch: process.arch, version: process.version, glibc: addon.initRuntime().glibc, addon: addonPath.slice(pkgDir.length), forked: w.pid === pid, exitCode: w.exitCode }));
`;

function newProject(name) {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `pkgtest-${name}`, version: '1.0.0', private: true }, null, 2));
  writeFileSync(join(dir, 'check.mjs'), checkScript);
  return dir;
}

/** A bin dir with node, npm and a shell, and nothing that can compile. */
function toolLessPath() {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  const which = (cmd) => {
    for (const d of (process.env.PATH ?? '').split(delimiter)) {
      if (d && existsSync(join(d, cmd))) return join(d, cmd);
    }
    return null;
  };
  const links = { node: process.execPath, npm: which('npm') };
  for (const t of ['sh', 'env', 'cat', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'chmod', 'uname', 'tar', 'gzip']) {
    const p = which(t);
    if (p) links[t] = p;
  }
  for (const [n, target] of Object.entries(links)) {
    if (!target) throw new Error(`cannot find ${n} on PATH`);
    symlinkSync(target, join(bin, n));
  }
  return bin;
}

let prebuildProject = null;  // check 2's project, once the tarball is installed there
try {
  // ---------------------------------------------------- stage and pack
  const tarball = givenTarball ? resolve(givenTarball) : packTarball(work, { log, keep });

  // ------------------------------------------------------ 1. contents
  {
    const listing = run('tar', ['tzf', tarball]).split('\n').filter((l) => l && !l.endsWith('/'))
      .map((l) => l.replace(/^package\//, ''));
    const pkg = JSON.parse(run('tar', ['xzOf', tarball, 'package/package.json']));
    const plat = `${process.platform}-${process.arch}`;
    const allowed = [
      /^package\.json$/, /^README\.md$/, /^LICENSE$/, /^binding\.gyp$/,
      /^native\/([^/]+\/)?[^/]+\.(c|h)$/,  // C sources, a folder per grown concern (native/fork/)
      /^dist\/[^/]+\.(js|d\.ts|mjs|d\.mts)$/,
      // One concern per file under a subpath's folder (src/autorestart/): CJS + types.
      /^dist\/[^/]+\/[^/]+\.(js|d\.ts)$/,
      // The systemd units and server the README installs from node_modules.
      /^examples\/systemd\/[^/]+\.(mjs|service|socket)$/,
      // Linux: exactly the targets' files (TARGETS). macOS prebuilds, which
      // only a macOS runner builds, may be added by the release workflow.
      ...TARGETS.map((t) => new RegExp(`^${t.file.replace(/\./g, '\\.')}$`)),
      /^prebuilds\/darwin-(x64|arm64)\/[^/]+\.node$/,
    ];
    const required = {
      'package.json': /^package\.json$/,
      'README.md': /^README\.md$/,
      LICENSE: /^LICENSE$/,
      'binding.gyp': /^binding\.gyp$/,
      'native/*.c': /^native\/[^/]+\.c$/,
      'dist/*.js': /^dist\/.+\.js$/,
      'dist/*.d.ts': /^dist\/.+\.d\.ts$/,
      'dist/*.mjs': /^dist\/.+\.mjs$/,
      'dist/*.d.mts': /^dist\/.+\.d\.mts$/,
      [`prebuilds/${plat}/*.node`]: new RegExp(`^prebuilds/${plat}/[^/]+\\.node$`),
      ...Object.fromEntries(TARGETS.map((t) => [t.file, new RegExp(`^${t.file.replace(/\./g, '\\.')}$`)])),
      'native/init-loop.c': /^native\/init-loop\.c$/,
    };
    // Every file the exports map points at must be in the tarball.
    for (const [sub, t] of Object.entries(pkg.exports ?? {})) {
      const targets = typeof t === 'string' ? [t] : [t.import?.types, t.import?.default, t.require?.types, t.require?.default];
      for (const f of targets.filter(Boolean)) {
        const rel = f.replace(/^\.\//, '');
        required[`${rel} (exports "${sub}")`] = new RegExp(`^${rel.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
      }
    }
    const extra = listing.filter((f) => !allowed.some((re) => re.test(f)));
    const absent = Object.entries(required).filter(([, re]) => !listing.some((f) => re.test(f))).map(([n]) => n);
    const problems = [];
    if (extra.length) problems.push(`unexpected files: ${extra.join(', ')}`);
    if (absent.length) problems.push(`missing: ${absent.join(', ')}`);
    record('tarball contents', problems.length === 0,
      problems.length ? problems.join('\n      ') : `${basename(tarball)}: ${listing.length} files, only dist/ native/ binding.gyp prebuilds/ examples/systemd/ README.md LICENSE package.json`);
  }

  // ----------------------------------------------------- 1b. its size
  {
    // `tar tv` lists each member's size: the unpacked figure is their sum.
    const members = run('tar', ['tvzf', tarball]).split('\n').filter(Boolean).map((l) => {
      const f = l.split(/\s+/);
      return { size: Number(f[2]), path: f.slice(5).join(' ').replace(/^package\//, ''), dir: l.startsWith('d') };
    }).filter((m) => !m.dir);
    const packed = statSync(tarball).size;
    const unpacked = members.reduce((n, m) => n + m.size, 0);
    const kb = (n) => `${(n / 1024).toFixed(0)} KB`;
    const binaries = members.filter((m) => m.path.startsWith('prebuilds/')).reduce((n, m) => n + m.size, 0);
    const biggest = [...members].sort((a, b) => b.size - a.size).slice(0, 3).map((m) => `${m.path} ${kb(m.size)}`).join(', ');
    record(`tarball size (at most ${kb(MAX_PACKED)} packed)`, packed <= MAX_PACKED,
      `${kb(packed)} packed, ${kb(unpacked)} unpacked, ${members.length} files (prebuilds/ ${kb(binaries)}; largest: ${biggest})`);
  }

  // ------------------------------- 2. install with no compiler: prebuild
  {
    const name = 'install from prebuild, no compiler on PATH';
    try {
      const bin = toolLessPath();
      const env = { ...process.env, PATH: bin };
      delete env.CC; delete env.CXX; delete env.MAKE;
      const probe = spawnSync('/bin/sh', ['-c', 'for t in cc gcc g++ c++ clang clang++ make gmake; do command -v $t; done'], { env, encoding: 'utf8' });
      if (probe.stdout.trim() !== '') throw new Error(`compiler tools still reachable: ${probe.stdout.trim()}`);
      const project = newProject('prebuild');
      prebuildProject = project;
      run(npm, ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: project, env, log });
      const installed = join(project, 'node_modules', 'posix-daemon');
      if (existsSync(join(installed, 'build'))) throw new Error('a build/ directory appeared: something tried a source build');
      const r = runCheck(project, 'prebuild', env, hostAddon);
      record(name, r.ok, r.detail);
    } catch (err) {
      record(name, false, err.message.split('\n').slice(0, 6).join('\n      '));
    }
  }

  // --------------------------- 3. install with no matching prebuild: source
  {
    const name = 'install without prebuilds, compiler present: source build';
    try {
      const unpack = join(work, 'noprebuild');
      mkdirSync(unpack);
      run('tar', ['xzf', tarball, '-C', unpack]);
      rmSync(join(unpack, 'package', 'prebuilds'), { recursive: true, force: true });
      const stripped = join(work, 'posix-daemon-noprebuilds.tgz');
      run('tar', ['czf', stripped, '-C', unpack, 'package']);
      const project = newProject('source');
      run(npm, ['install', '--no-audit', '--no-fund', '--foreground-scripts', stripped], { cwd: project, log });
      const installed = join(project, 'node_modules', 'posix-daemon');
      if (existsSync(join(installed, 'prebuilds'))) throw new Error('prebuilds/ is still there');
      const built = existsSync(join(installed, 'build', 'Release'))
        ? readdirSync(join(installed, 'build', 'Release')).filter((f) => f.endsWith('.node')) : [];
      if (built.length === 0) throw new Error('no build/Release/*.node after install: the install script did not build from source');
      const r = runCheck(project, 'build', process.env);
      record(name, r.ok, r.detail);
    } catch (err) {
      record(name, false, err.message.split('\n').slice(0, 6).join('\n      '));
    }
  }

  // ------------------ 4. npm pack straight after a clone: prepack builds
  {
    const name = 'npm pack in a fresh clone (no dist/, build/, prebuilds/): prepack builds them';
    try {
      const clone = join(work, 'clone');
      // What a clone has: the files git knows (the working tree as it is,
      // uncommitted changes included), none of what the build makes.
      mkdirSync(clone);
      for (const f of run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repoDir })
        .split('\0').filter((f) => f !== '' && existsSync(join(repoDir, f)))) {
        mkdirSync(dirname(join(clone, f)), { recursive: true });
        cpSync(join(repoDir, f), join(clone, f));
      }
      for (const d of ['dist', 'build']) {
        if (existsSync(join(clone, d))) throw new Error(`a fresh clone has ${d}/`);
      }
      if (findPrebuild(clone)) throw new Error('a fresh clone has a prebuild');
      symlinkSync(join(repoDir, 'node_modules'), join(clone, 'node_modules'), 'dir');
      const dest = join(work, 'clone-pack');
      mkdirSync(dest);
      // prepack runs prebuild:all: the repository's sysroots serve (no second debootstrap).
      const packEnv = { ...process.env, PREBUILD_CACHE_DIR: join(repoDir, '.cache') };
      const packed = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', dest], { cwd: clone, log, env: packEnv }).replace(/^[^[]*/, ''));
      const listing = run('tar', ['tzf', join(dest, packed[0].filename)]).split('\n').map((l) => l.replace(/^package\//, ''));
      const plat = `${process.platform}-${process.arch}`;
      const absent = [
        ['dist/index.js', /^dist\/index\.js$/], ['dist/index.mjs', /^dist\/index\.mjs$/],
        ['dist/index.d.ts', /^dist\/index\.d\.ts$/], ['dist/index.d.mts', /^dist\/index\.d\.mts$/],
        [`prebuilds/${plat}/*.node`, new RegExp(`^prebuilds/${plat}/[^/]+\\.node$`)],
      ].filter(([, re]) => !listing.some((f) => re.test(f))).map(([n]) => n);
      if (absent.length) throw new Error(`the tarball lacks ${absent.join(', ')}`);
      record(name, true, `${packed[0].filename}: ${listing.filter(Boolean).length} files, dist/ and prebuilds/${plat}/ included`);
    } catch (err) {
      record(name, false, err.message.split('\n').slice(0, 6).join('\n      '));
    }
  }

  // ------------------------------------------------- 5. every target loads
  {
    const unpack = join(work, 'targets');
    mkdirSync(unpack);
    run('tar', ['xzf', tarball, '-C', unpack]);
    const pkgDir = join(unpack, 'package');
    for (const t of TARGETS) {
      const file = join(pkgDir, t.file);
      const name = `${t.file}: ${t.kind === 'init' ? 'runs' : 'loads'}`;
      try {
        if (!existsSync(file)) throw new Error('not in the tarball');
        if (t.kind === 'init' && !runsHere(t.arch)) {
          skip(name, `${t.arch} executables do not run here (Debian: qemu-user-binfmt)`);
          continue;
        }
        if (t.kind === 'init') {
          // Static: no loader to find, wherever it runs (arm64 through binfmt).
          const interp = elfInterp(file);
          if (interp !== null) throw new Error(interp === undefined ? 'not an ELF file' : `not static: needs ${interp}`);
          const runs = [[['-w', '--', '/bin/true'], 0], [['-w', '--', '/bin/sh', '-c', 'exit 7'], 7]].map(([args, want]) => {
            const r = spawnSync(file, args, { encoding: 'utf8', timeout: 60000 });
            log(`$ ${t.file} ${args.join(' ')} -> ${r.status ?? r.signal}\n${r.stderr}`);
            return { args, want, got: r.error ? r.error.code : r.status ?? r.signal, err: r.stderr.trim() };
          });
          const bad = runs.filter((x) => x.got !== x.want);
          if (bad.length) throw new Error(bad.map((x) => `${x.args.join(' ')} gave ${x.got}, not ${x.want} ${x.err}`).join('; '));
          record(name, true, `static, ${runs.map((x) => `\`${x.args.join(' ')}\` → ${x.got}`).join(', ')}${t.arch !== process.arch ? ` (${t.arch} through qemu binfmt)` : ''}`);
          continue;
        }
        if (t.kind === 'addon' && t.libc === 'glibc' && t.arch === 'arm64') {
          const node = arm64Node();
          if (node && prebuildProject && runsHere('arm64')) {
            // Loaded for real: the arm64 node (dynamic, glibc) under qemu-user.
            writeFileSync(join(prebuildProject, 'arm64.cjs'), arm64Script);
            const r = spawnSync(node, ['arm64.cjs'], {
              cwd: prebuildProject, encoding: 'utf8', timeout: 300000, env: { ...process.env, QEMU_LD_PREFIX: ARM64_PREFIX },
            });
            log(`$ ${node} arm64.cjs -> ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`);
            let res = null;
            try { res = JSON.parse((r.stdout ?? '').trim().split('\n').pop()); } catch { /* below */ }
            if (!res) throw new Error(`the arm64 node failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
            // Its session is ours (spawnSync starts none). Our own /proc,
            // not the guest's: qemu-user fakes most of /proc/self/stat.
            const ourSid = Number(readFileSync('/proc/self/stat', 'latin1').split(') ')[1].split(' ')[3]);
            const ok = res.arch === 'arm64' && res.addon === t.file && res.sid === ourSid && res.forked && res.exitCode === 0;
            record(name, ok, `node ${res.version} ${res.arch} (qemu-user, ${node.startsWith(repoDir) ? node.slice(repoDir.length + 1) : node}) picked ${res.addon}; getsid ${res.sid} (ours ${ourSid}), fork+wait4 /bin/true → ${res.exitCode}`);
            continue;
          }
          log(`no arm64 node (${node ? 'check 2 installed nothing' : 'no .cache/node-arm64-*'}): the loader's trace instead`);
        }
        const rep = loaderReport(file, t.arch, t.libc);
        if (rep.skip) {
          skip(name, rep.skip);
          continue;
        }
        const allowed = t.kind === 'addon' ? FROM_NODE : /^$/;
        const wrong = rep.unresolved.filter((sym) => !allowed.test(sym));
        const problems = [...rep.problems, ...(wrong.length ? [`symbols not found: ${wrong.join(', ')}`] : [])];
        const how = `${basename(rep.cmd[0])}${rep.cmd[0] === 'qemu-aarch64' ? ` + ${basename(rep.cmd.at(-2))}` : ''}`;
        record(name, problems.length === 0, problems.length ? `${how}: ${problems.join('; ')}`
          : `${how}: links ${rep.libs.map((l) => l.split(' ')[0]).join(' ') || 'nothing'}; ` +
            (t.kind === 'addon' ? `${rep.unresolved.length} unresolved, all node's (napi_/node_api_/uv_)` : 'nothing unresolved'));
      } catch (err) {
        record(name, false, err.message.split('\n').slice(0, 6).join('\n      '));
      }
    }
  }

  // ------------------------------------ 6. on the oldest glibc we have here
  // The glibc addons were built against Debian bullseye (glibc 2.31); its
  // sysroot (prebuild:all's, in .cache/sysroot/) has the loader, libc and
  // libstdc++ a node needs. A node started by bullseye's loader with
  // bullseye's libraries is a node on glibc 2.31: the installed package
  // must pick its glibc addon there, and the addon must work.
  for (const arch of ['x64', 'arm64']) {
    const name = `prebuilds/linux-${arch}/posix-daemon.napi.glibc.node: works on glibc 2.31 (bullseye)`;
    const root = join(process.env.PREBUILD_CACHE_DIR ?? join(repoDir, '.cache'), 'sysroot', `bullseye-${arch}`);
    const triplet = arch === 'x64' ? 'x86_64-linux-gnu' : 'aarch64-linux-gnu';
    const loader = join(root, 'lib', triplet, 'ld-2.31.so');
    const node = arch === process.arch ? process.execPath : arm64Node();
    if (!existsSync(loader)) { skip(name, `no bullseye sysroot in ${root} (npm run prebuild:all makes it)`); continue; }
    if (!node || !prebuildProject || !runsHere(arch)) { skip(name, `no ${arch} node to run here`); continue; }
    try {
      writeFileSync(join(prebuildProject, 'old-glibc.cjs'), oldGlibcScript);
      const libs = [join(root, 'lib', triplet), join(root, 'usr/lib', triplet)].join(':');
      // x64: bullseye's loader runs this node; arm64: qemu-user with the
      // sysroot as its prefix (the node's PT_INTERP and libraries from it).
      const [cmd, args, env] = arch === process.arch
        ? [loader, ['--library-path', libs, node, 'old-glibc.cjs'], process.env]
        : [node, ['old-glibc.cjs'], { ...process.env, QEMU_LD_PREFIX: root }];
      const r = spawnSync(cmd, args, { cwd: prebuildProject, encoding: 'utf8', timeout: 300000, env });
      log(`$ ${cmd} ${args.join(' ')} -> ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`);
      let res = null;
      try { res = JSON.parse((r.stdout ?? '').trim().split('\n').pop()); } catch { /* below */ }
      if (!res) throw new Error(`node failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
      const ok = res.glibc === '2.31' && res.addon === `prebuilds/linux-${arch}/posix-daemon.napi.glibc.node` && res.forked && res.exitCode === 0;
      record(name, ok, `node ${res.version} ${res.arch} on glibc ${res.glibc} picked ${res.addon}; fork+wait4 /bin/true → ${res.exitCode}`);
    } catch (err) {
      record(name, false, err.message.split('\n').slice(0, 6).join('\n      '));
    }
  }
} catch (err) {
  record('stage and pack', false, err.message.split('\n').slice(0, 12).join('\n      '));
}

const failed = results.filter((r) => !r.ok).length;
if (failed || keep) console.log(`log and projects kept in ${work}`);
else rmSync(work, { recursive: true, force: true });
const skipped = results.filter((r) => r.skipped).length;
console.log(`package: ${results.length - failed - skipped} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
