// npm run test:package: what a user gets from `npm install posix-daemon`.
//
// 1. contents  - `npm pack` ships dist/ (JS, .d.ts, .mjs, .d.mts), native/,
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
//
// Prints one line per check and a closing "package: N passed, N failed".
import { spawnSync } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, appendFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join } from 'node:path';
import { findPrebuild, npm, packTarball, repo as repoDir, run } from './stage.mjs';

const keep = process.argv.includes('--keep');
const work = mkdtempSync(join(tmpdir(), 'posix-daemon-pkgtest-'));
const logFile = join(work, 'test-package.log');
const log = (text) => appendFileSync(logFile, `${text}\n`);
const results = [];

function record(name, ok, detail) {
  results.push({ name, ok });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
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
const okPath = (p) => p.startsWith(pkgDir) && wantRel.test(p.slice(pkgDir.length));
if (maps.length !== 1 || !okPath(maps[0])) problems.push('mapped addon ' + JSON.stringify(maps) + ' is not ' + pkgDir + wantRel.source);
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

function runCheck(project, expect, env) {
  const r = spawnSync(process.execPath, ['check.mjs', expect], { cwd: project, env, encoding: 'utf8' });
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

try {
  // ---------------------------------------------------- stage and pack
  const tarball = packTarball(work, { log, keep });

  // ------------------------------------------------------ 1. contents
  {
    const listing = run('tar', ['tzf', tarball]).split('\n').filter((l) => l && !l.endsWith('/'))
      .map((l) => l.replace(/^package\//, ''));
    const pkg = JSON.parse(run('tar', ['xzOf', tarball, 'package/package.json']));
    const plat = `${process.platform}-${process.arch}`;
    const allowed = [
      /^package\.json$/, /^README\.md$/, /^LICENSE$/, /^binding\.gyp$/,
      /^native\/[^/]+\.(cc|c|h)$/,
      /^dist\/[^/]+\.(js|d\.ts|mjs|d\.mts)$/,
      // One concern per file under a subpath's folder (src/autorestart/): CJS + types.
      /^dist\/[^/]+\/[^/]+\.(js|d\.ts)$/,
      // The systemd units and server the README installs from node_modules.
      /^examples\/systemd\/[^/]+\.(mjs|service|socket)$/,
      /^prebuilds\/[^/]+\/[^/]+\.node$/,
      // The init image (native/init-loop.c) and the restart-signal hold
      // (native/hold.c): plain-C shared objects, untagged (prebuildify's
      // copy of build/Release) or tagged with their libc
      // (scripts/prebuild-all.mjs), and the static init image.
      /^prebuilds\/[^/]+\/posix_daemon_(init|hold)(\.(glibc|musl))?\.so$/,
      /^prebuilds\/[^/]+\/posix_daemon_init\.musl\.static$/,
    ];
    const required = {
      'package.json': /^package\.json$/,
      'README.md': /^README\.md$/,
      LICENSE: /^LICENSE$/,
      'binding.gyp': /^binding\.gyp$/,
      'native/*.cc': /^native\/[^/]+\.cc$/,
      'dist/*.js': /^dist\/.+\.js$/,
      'dist/*.d.ts': /^dist\/.+\.d\.ts$/,
      'dist/*.mjs': /^dist\/.+\.mjs$/,
      'dist/*.d.mts': /^dist\/.+\.d\.mts$/,
      [`prebuilds/${plat}/*.node`]: new RegExp(`^prebuilds/${plat}/[^/]+\\.node$`),
      ...(process.platform === 'linux'
        ? {
          [`prebuilds/${plat}/posix_daemon_init.so`]: new RegExp(`^prebuilds/${plat}/posix_daemon_init\\.so$`),
          [`prebuilds/${plat}/posix_daemon_hold.so`]: new RegExp(`^prebuilds/${plat}/posix_daemon_hold\\.so$`),
        } : {}),
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
      run(npm, ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: project, env, log });
      const installed = join(project, 'node_modules', 'posix-daemon');
      if (existsSync(join(installed, 'build'))) throw new Error('a build/ directory appeared: something tried a source build');
      const r = runCheck(project, 'prebuild', env);
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
} catch (err) {
  record('stage and pack', false, err.message.split('\n').slice(0, 12).join('\n      '));
}

const failed = results.filter((r) => !r.ok).length;
if (failed || keep) console.log(`log and projects kept in ${work}`);
else rmSync(work, { recursive: true, force: true });
console.log(`package: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
