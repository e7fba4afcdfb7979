// Shared by test-package.mjs and test-matrix.mjs: a throw-away copy of the
// repository with the addon built ONCE as a prebuild (prebuildify --napi
// --strip) and the TypeScript compiled, so neither script touches the
// repository's own build/, dist/ or prebuilds/ while others work in it.
import { spawnSync } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
export const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** Runs a command; returns its stdout, throws with its output when it fails. */
export function run(cmd, args, { cwd, env = process.env, quiet = true, log } = {}) {
  const r = spawnSync(cmd, args, {
    cwd, env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024,
    stdio: quiet ? ['ignore', 'pipe', 'pipe'] : 'inherit',
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (log) log(`$ ${cmd} ${args.join(' ')}\n${out}`);
  if (r.error) throw r.error;
  if (r.status !== 0) {
    const err = new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal} in ${cwd}\n${out.slice(-4000)}`);
    err.output = out;
    throw err;
  }
  return r.stdout ?? '';
}

/** The package.json script that runs prebuildify (its name may change). */
export function prebuildScriptName(pkg) {
  const entry = Object.entries(pkg.scripts ?? {}).find(([, cmd]) => /^prebuildify\b/.test(cmd));
  if (!entry) throw new Error('package.json has no script that runs prebuildify');
  return entry[0];
}

/** Files of the working tree: tracked plus untracked-but-not-ignored. */
function treeFiles() {
  const r = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo, encoding: 'utf8',
  });
  if (r.status !== 0) return null;
  return r.stdout.split('\0')
    .filter((f) => f !== '' && !/^(node_modules|build)(\/|$)/.test(f) && existsSync(join(repo, f)));
}

/**
 * Makes the staged copy: sources, tests and scripts copied, node_modules
 * linked, the addon built with the package's prebuildify script (build/
 * removed afterwards, so node-gyp-build can only find the prebuild), and
 * dist/ compiled with `npm run build:ts`.
 */
export function stage({ log = () => {}, allTargets = false, hostTargets = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'posix-daemon-stage-'));
  const files = treeFiles();
  if (files) {
    for (const f of files) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      cpSync(join(repo, f), join(dir, f));
    }
  } else {
    const skip = new Set(['node_modules', 'build', 'dist', '.git', '.cache']);
    for (const e of readdirSync(repo)) {
      if (!skip.has(e) && !e.endsWith('.tgz')) cpSync(join(repo, e), join(dir, e), { recursive: true });
    }
    rmSync(join(dir, 'prebuilds'), { recursive: true, force: true });
  }
  if (!existsSync(join(repo, 'node_modules'))) throw new Error('run npm install (or npm ci) first');
  symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'), 'dir');

  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  // What a release packs (allTargets, where the package has prebuild:all):
  // every Linux target, built with the repository's sysroots and objects
  // (PREBUILD_CACHE_DIR: no second debootstrap in the staged copy). Else
  // this platform's prebuild only, with prebuildify.
  // hostTargets: this machine's architecture, both libcs, as a release
  // names and ships them (tagged files, the static init), so a run on
  // another Node version tests what users install.
  const all = allTargets && pkg.scripts?.['prebuild:all'];
  const host = !all && hostTargets && process.platform === 'linux' && pkg.scripts?.['prebuild:all'];
  const script = all || host ? 'prebuild:all' : prebuildScriptName(pkg);
  const args = host ? ['--', '--target', `linux-${process.arch}-glibc,linux-${process.arch}-musl`] : [];
  log(`stage: ${dir}\nstage: npm run ${script} ${args.join(' ')}`);
  try {
    run(npm, ['run', script, ...args], {
      cwd: dir, log, env: all || host ? { ...process.env, PREBUILD_CACHE_DIR: join(repo, '.cache') } : process.env,
    });
  } catch (err) {
    // prebuild:all builds every target it can and exits 1 naming the
    // others: what it built is packed, and the package test's contents check
    // names what is missing (test:container needs only this platform's).
    if (!all || !findPrebuild(dir)) throw err;
    const why = (err.output ?? err.message).trim().split('\n').filter((l) => /cannot|not built|fail|error/i.test(l)).slice(-4);
    console.log(`stage: npm run ${script} did not build every target; packing what it built (${why.join(' | ') || 'see the log'})`);
  }
  rmSync(join(dir, 'build'), { recursive: true, force: true });
  const prebuild = findPrebuild(dir);
  if (!prebuild) throw new Error(`npm run ${script} produced no prebuilds/${process.platform}-${process.arch}/*.node`);
  log('stage: npm run build:ts');
  run(npm, ['run', 'build:ts'], { cwd: dir, log });
  return { dir, prebuild, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function findPrebuild(dir) {
  const p = join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!existsSync(p)) return null;
  // The one node-gyp-build loads here: tagged with this machine's libc (its
  // rule: musl where /etc/alpine-release exists), else untagged.
  const libc = existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
  const nodes = readdirSync(p).filter((n) => n.endsWith('.node'));
  const f = nodes.find((n) => n.split('.').includes(libc)) ?? nodes.find((n) => !/\.(glibc|musl)\./.test(n)) ?? nodes[0];
  return f ? join(p, f) : null;
}

/**
 * What `npm install posix-daemon` would download: the staged copy (every
 * target's prebuild + dist/) packed with `npm pack` into `dest`. Returns the
 * tarball's path.
 */
export function packTarball(dest, { log = () => {}, keep = false } = {}) {
  const s = stage({ log, allTargets: true });
  try {
    // Staged = built already: --ignore-scripts skips prepack's second build
    // (test-package's check 4 packs with prepack, from a bare clone).
    const packed = JSON.parse(run(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', dest], { cwd: s.dir, log }));
    return join(dest, packed[0].filename);
  } finally {
    if (!keep) s.cleanup();
  }
}
