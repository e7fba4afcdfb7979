// The prebuilds' names (issue 23, item 5): one path per target, and the
// loader's pick. node-gyp-build chooses the .node by its tags (napi,
// glibc|musl; LIBC overrides the libc it detects); src/native.ts then takes
// the companions (the hold .so) by the libc tag of the .node it actually
// loaded, and the static init image beside any prebuild. Runs against
// prebuilds/ as `npm run prebuild:all` left it; skips when it holds nothing
// for this machine. PREBUILDS_ONLY=1 makes node-gyp-build ignore build/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { root } from './helpers.mjs';
import { expectedFiles, LIBCS } from '../scripts/prebuild-names.mjs';

const folder = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const present = existsSync(folder) ? readdirSync(folder) : [];
const noPrebuild = present.some((f) => f.endsWith('.node')) ? false : `no prebuild in ${folder} (npm run prebuild:all)`;
// The libc node-gyp-build detects here (its own rule).
const hostLibc = existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
const nodeFile = (libc) => `posix-daemon.napi.${libc}.node`;

/** Runs `code` (CommonJS) in a child node with the package root as cwd; returns its JSON line or its error. */
function probe(code, env = {}) {
  const r = spawnSync(process.execPath, ['-e', code], {
    cwd: root, encoding: 'utf8', env: { ...process.env, PREBUILDS_ONLY: '1', ...env },
  });
  const line = r.stdout.trim().split('\n').pop();
  return { status: r.status, stderr: r.stderr, json: r.status === 0 ? JSON.parse(line) : null };
}

const LOAD = `
const n = require('./dist/native.js');
const i = require('./dist/init.js');
const { existsSync } = require('node:fs');
// The same syscall through another implementation (python's os.getsid, in a
// child: same session). Not /proc/self/stat, whose field is translated into
// the namespace /proc was mounted for, nor '> 0': 0 when the session leader
// is outside this PID namespace (CI's container showed both).
const py = require('node:child_process').spawnSync('python3', ['-c', 'import os; print(os.getsid(0))'], { encoding: 'utf8' });
const otherSid = py.status === 0 ? Number(py.stdout) : null;
const hold = n.companionPath('posix_daemon_hold', '.so');
console.log(JSON.stringify({ addonPath: n.addonPath, addonLibc: n.addonLibc, hold, holdExists: existsSync(hold),
  initImagePath: i.initImagePath, initImageStatic: i.initImageStatic, sid: n.addon.getsid(0), otherSid }));`;

test('no two targets share a path: the libc is in every name', () => {
  const files = expectedFiles();
  const paths = files.map((f) => f.path);
  assert.equal(new Set(paths).size, paths.length, paths.join(', '));
  // The only file two targets would share is the static init, and only the musl target builds it.
  for (const f of files) {
    assert.match(basename(f.path), /\.(glibc|musl)\.(node|so|static)$/, f.path);
    if (!f.path.endsWith('.static')) assert.ok(basename(f.path).includes(`.${f.libc}.`), `${f.path} names ${f.target}'s libc`);
  }
  // node-gyp-build reads the same tags from the names (napi, libc).
  const { parseTags } = createRequire(import.meta.url)('node-gyp-build');
  for (const libc of LIBCS) assert.deepEqual({ ...parseTags(nodeFile(libc)), file: undefined, specificity: undefined },
    { file: undefined, specificity: undefined, napi: true, libc });
});

test('the files in prebuilds/ are the targets\' and nothing else', { skip: noPrebuild }, () => {
  const known = new Set(expectedFiles().map((f) => basename(f.path)));
  assert.deepEqual(present.filter((f) => !known.has(f)), [], 'a stray file could be picked instead of a tagged one');
});

test('node-gyp-build picks the .node of the libc it detects, or of LIBC', { skip: noPrebuild }, () => {
  for (const libc of [hostLibc, ...LIBCS.filter((l) => l !== hostLibc)]) {
    if (!present.includes(nodeFile(libc))) continue;
    const env = libc === hostLibc ? {} : { LIBC: libc };
    const r = probe("console.log(JSON.stringify(require('node-gyp-build').resolve('.')))", env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json, join(folder, nodeFile(libc)), `LIBC=${env.LIBC ?? '(unset)'}`);
  }
});

test('the addon for the running libc loads; its companions and the init image are its own', { skip: noPrebuild || (!present.includes(nodeFile(hostLibc)) && `no ${nodeFile(hostLibc)}`) }, () => {
  const r = probe(LOAD);
  assert.equal(r.status, 0, r.stderr);
  const got = r.json;
  assert.equal(got.addonPath, join(folder, nodeFile(hostLibc)));
  // The tag of the loaded path is addonLibc, and the companion carries the same.
  assert.equal(got.addonLibc, hostLibc);
  assert.equal(got.hold, join(folder, `posix_daemon_hold.${got.addonLibc}.so`));
  if (process.platform === 'linux') assert.equal(got.holdExists, true, `${got.hold} is missing`);
  assert.equal(dirname(got.initImagePath), folder);
  if (present.includes('posix_daemon_init.musl.static')) {
    assert.deepEqual([basename(got.initImagePath), got.initImageStatic], ['posix_daemon_init.musl.static', true]);
  }
  // The addon's getsid answers what python's does (a call through the loaded file).
  assert.ok(Number.isInteger(got.sid) && got.sid >= 0, String(got.sid));
  if (got.otherSid !== null) assert.equal(got.sid, got.otherSid);
});

test('LIBC naming the other libc: the other file is picked and, not loadable here, fails the load (never a silent mismatch)', { skip: noPrebuild }, () => {
  const other = LIBCS.find((l) => l !== hostLibc);
  const r = probe(LOAD, { LIBC: other });
  if (r.status === 0) {
    // A loader that could load it after all: then everything follows it.
    assert.equal(r.json.addonLibc, other);
    assert.match(basename(r.json.hold), new RegExp(`\\.${other}\\.so$`));
    return;
  }
  // Either the other libc's file is absent (node-gyp-build says which libc
  // it looked for) or it was picked and this libc's loader refused it.
  if (present.includes(nodeFile(other))) {
    assert.doesNotMatch(r.stderr, /No native build was found/, r.stderr);
  } else {
    assert.match(r.stderr, new RegExp(`No native build was found for .*libc=${other}`), r.stderr);
  }
});
