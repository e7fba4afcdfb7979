// Runs every test/*.test.{mjs,cjs} file with node:test. Files are listed
// explicitly because `node --test <dir>` and glob support differ between
// Node 18 and 24.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
// Arguments pick files by a part of their name; `!part` leaves such files out.
const args = process.argv.slice(2);
const only = args.filter((a) => !a.startsWith('!'));
const without = args.filter((a) => a.startsWith('!')).map((a) => a.slice(1));
const files = readdirSync(dir)
  .filter((f) => /\.test\.(mjs|cjs)$/.test(f))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .filter((f) => !without.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
// Test files run two at a time where node:test can (Node >= 20.10): most of
// a test's time is spent waiting on real processes, not on the CPU. Every
// test uses its own temp dirs, its own ports (freePort() in helpers.mjs)
// and its own process names, so files do not interfere.
// POSIX_DAEMON_TEST_CONCURRENCY overrides (1: serial; 4 makes a loaded
// machine, which is how the races of the last CI runs were found).
const [major, minor] = process.versions.node.split('.').map(Number);
const concurrency = process.env.POSIX_DAEMON_TEST_CONCURRENCY ?? '2';
const flags = major > 20 || (major === 20 && minor >= 10) ? [`--test-concurrency=${concurrency}`] : [];
const r = spawnSync(process.execPath, [...flags, '--test', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
