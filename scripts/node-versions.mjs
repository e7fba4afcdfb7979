// The one place that finds other Node versions, for test:matrix, bench,
// test:container and test:arm64: this very node when the major and the
// architecture match, else the npm registry's node-linux-<arch>@<version>
// package (the official Linux build), unpacked once into .cache/ and reused
// from there: .cache/node-<version>/ for x64 (the names test:container's
// cache already uses), .cache/node-<arch>-<version>/ for another arch.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { npm, repo, run } from './stage.mjs';

export const cacheDir = join(repo, '.cache');

/** Every major line this package supports, oldest first (engines: >=18). */
export const SUPPORTED_MAJORS = [18, 20, 22, 24, 26];

export const cmpVer = (a, b) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
};

/** The .cache/ folder name of `version` for `arch`. */
export const cacheName = (version, arch = 'x64') => (arch === 'x64' ? `node-${version}` : `node-${arch}-${version}`);

/** Versions of `major` for `arch` already unpacked in .cache/, oldest first. */
export function cachedVersions(major, { arch = 'x64' } = {}) {
  if (!existsSync(cacheDir)) return [];
  const re = new RegExp(`^${cacheName('(\\d+\\.\\d+\\.\\d+)', arch)}$`);
  return readdirSync(cacheDir)
    .map((d) => re.exec(d)?.[1])
    .filter((v) => v && Number(v.split('.')[0]) === major && existsSync(join(cacheDir, cacheName(v, arch), 'bin', 'node')))
    .sort(cmpVer);
}

// Only Linux hosts fetch: an x64 host runs x64 builds natively and arm64
// builds under qemu-user (test:arm64).
function checkHost(arch) {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`Node packages are fetched (node-linux-${arch}) on linux-x64 only; this is ${process.platform}-${process.arch}`);
  }
}

/** Unpacks node-linux-<arch>@<exact version> into .cache/ unless it is there. */
export function fetchVersion(version, { arch = 'x64' } = {}) {
  const name = cacheName(version, arch);
  const dest = join(cacheDir, name);
  const bin = join(dest, 'bin', 'node');
  if (existsSync(bin)) return { version, bin, dir: dest, source: `.cache/${name}` };
  checkHost(arch);
  mkdirSync(cacheDir, { recursive: true });
  const tmp = mkdtempSync(join(cacheDir, 'fetch-'));
  try {
    const packed = JSON.parse(run(npm, ['pack', `node-linux-${arch}@${version}`, '--json', '--pack-destination', tmp], { cwd: tmp }));
    run('tar', ['xzf', join(tmp, packed[0].filename), '-C', tmp]);
    rmSync(dest, { recursive: true, force: true });
    renameSync(join(tmp, 'package'), dest);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { version, bin, dir: dest, source: `npm node-linux-${arch}@${version} (now in .cache/${name})` };
}

/**
 * A node binary of `major` for `arch` (the newest release of that line):
 * this one, the cache, or the npm registry. Without the registry, the newest
 * cached one. Returns { version, bin, source } (and dir, the unpacked
 * package, unless it is this node).
 */
export function nodeFor(major, { arch = 'x64' } = {}) {
  if (Number(process.versions.node.split('.')[0]) === major && process.arch === arch) {
    return { version: process.versions.node, bin: process.execPath, source: 'this machine' };
  }
  checkHost(arch);
  let version;
  try {
    const out = run(npm, ['view', `node-linux-${arch}@${major}`, 'version', '--json']);
    version = [].concat(JSON.parse(out)).sort(cmpVer).pop();
  } catch (err) {
    version = cachedVersions(major, { arch }).pop();
    if (!version) throw new Error(`cannot ask the npm registry for node-linux-${arch}@${major} and nothing is cached: ${err.message.split('\n')[0]}`);
    const dir = join(cacheDir, cacheName(version, arch));
    return { version, bin: join(dir, 'bin', 'node'), dir, source: `.cache/${cacheName(version, arch)} (registry unreachable)` };
  }
  return fetchVersion(version, { arch });
}
