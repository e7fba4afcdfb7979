// Issue 16, item 22: the published types say what the code does. tsc
// compiles small ESM (.mts) and CommonJS (.cts) consumers that import the
// package by its name, every subpath included (test/fixtures/types):
// `import pd from 'posix-daemon'` works at run time, so it must type-check;
// `fork({ file, fork })` throws at run time, so it must not.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixtures, root } from './helpers.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'pd-edges-types-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let consumers = 0;
function consumerProject() {
  const dir = join(tmp, `consumer-${++consumers}`);
  cpSync(join(fixtures, 'types'), dir, { recursive: true });
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'posix-daemon'), 'dir');
  symlinkSync(join(root, 'node_modules', '@types'), join(dir, 'node_modules', '@types'), 'dir');
  return dir;
}

test('22: the public types compile for ESM and CJS consumers; fork({ file, fork }) does not', () => {
  const dir = consumerProject();
  const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir],
    { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});

test('the public types compile for a consumer with "types": [] (TypeScript >= 6\'s default): they reference Node\'s types themselves', () => {
  const dir = consumerProject();
  const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.no-node-types.json')],
    { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});

test('22: what type-checks also runs: the default export of every subpath is its namespace', async () => {
  for (const sub of ['', '/posix', '/autorestart', '/initstatus', '/monitor', '/init', '/systemd']) {
    const mod = await import(`posix-daemon${sub}`).catch(() => import(join(root, 'dist', `${sub.slice(1) || 'index'}.mjs`)));
    for (const [name, value] of Object.entries(mod)) {
      if (name !== 'default') assert.equal(mod.default[name], value, `${sub || '.'}: default.${name}`);
    }
  }
});
