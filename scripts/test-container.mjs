// npm run test:container: init() as PID 1 of real OCI containers, run by
// crun and runc, side by side with tini (the reference), dumb-init and plain
// node as PID 1, all running the same program (test/container/app.mjs).
//
// A second rootfs has no C library at all: busybox-static and its applets,
// the package's static init image (prebuilds/<platform>/
// posix_daemon_init.musl.static, taken from the package installed in the
// first rootfs) and tini-static as the reference. There the init image runs
// a non-Node program (busybox sh) as the container's process; the rootfs is
// checked first to hold no loader, no libc.so and no dynamic ELF file.
//
// The rootfs: this node, the libraries `ldd` names for it, tini, dumb-init
// and the addon, busybox (static) for sh/sleep/cat, and the package as
// `npm pack` makes it installed in /app. Built once into
// .cache/container/rootfs-<key>/ (the key hashes the package's sources, the
// node and the tools) and reused; the program is bind-mounted read-only, so
// editing it needs no rebuild.
//
// crun 1.8.1 refuses a cgroup v1 "hybrid" host ("cgroups in hybrid mode not
// supported"), even with --cgroup-manager=disabled: there each crun call runs
// in a private mount namespace with the cgroup2 mount taken away. runc runs
// as is. Both keep their state in a temporary --root of our own, and every
// container is deleted at the end, whatever happened.
//
//   node scripts/test-container.mjs [--runtimes crun,runc] [--inits ours,image,tini,dumb-init,node]
//                                   [--checks <substring>] [--rebuild] [--keep]
//                                   [--rootfs node,static] [--static-inits static,tini-static]
//                                   [--static-init FILE]   (instead of the package's image: development only)
//
// Prints, per runtime, a table check × PID 1: init() (the program calls it),
// the init image as ENTRYPOINT (where the package has one), tini, dumb-init,
// plain node. Ours and tini are graded (tini is the reference: a failure
// there means the check itself is wrong); dumb-init and plain node are shown
// for information. Ends with "container: N passed, N failed".
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repo } from './stage.mjs';
import { buildRootfs, buildStaticRootfs, libcCheck, STATIC_INIT_NAME, which } from './container/rootfs.mjs';
import { containers } from './container/runtime.mjs';

const argv = process.argv.slice(2);
const opt = (name, def) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : def);
const RUNTIMES = opt('--runtimes', 'crun,runc').split(',');
let INITS = opt('--inits', 'ours,image,tini,dumb-init,node').split(',');
const checkFilter = opt('--checks', '');
const rebuild = argv.includes('--rebuild');
const keep = argv.includes('--keep');
const ROOTFS = opt('--rootfs', 'node,static').split(',');
let STATIC_INITS = opt('--static-inits', 'static,tini-static').split(',');
const staticInitFile = opt('--static-init', '');
// Columns: ours = the program calls init(); image = the package's init image
// is the container's ENTRYPOINT (where the package has one) and the
// program's init() then does nothing; tini and dumb-init as ENTRYPOINT;
// node = plain node as PID 1 (the program skips init()).
// The no-libc rootfs's columns: static = the static init image as the OCI
// process; tini-static = the reference.
const LABEL = {
  ours: 'init()', image: 'init image', tini: 'tini', 'dumb-init': 'dumb-init', node: 'node',
  static: 'static init', 'tini-static': 'tini-static',
};
const GRADED = new Set(['ours', 'image', 'tini', 'static', 'tini-static']);

// Documented limits: shown and reported, not counted as failures (the README
// says so and names the way around). One that passes is reported so: then
// the entry must go.
const KNOWN = {
  ours: {
    'early SIGTERM (5 ms after the entry point starts) → 143':
      'documented (README, "Starting in the init"): until the program reaches init(), PID 1 is plain node, and the ' +
      "kernel drops a SIGTERM with no handler sent to a namespace's PID 1; the init image as ENTRYPOINT (column " +
      '"init image") closes that window',
  },
};

const work = mkdtempSync(join(tmpdir(), 'posix-daemon-container-'));
const logFile = join(work, 'test-container.log');
const log = (text) => appendFileSync(logFile, `${text}\n`);
const cacheRoot = join(repo, '.cache', 'container');
const appFile = join(repo, 'test', 'container', 'app.mjs');
const { makeRuntime, startContainer, cleanupAll } = containers({ work, appFile, log });


/** Resolves with `p`, or with `onTimeout` after ms milliseconds (the failure path only). */
const within = (p, ms, onTimeout = 'timeout') => Promise.race([p, new Promise((r) => setTimeout(r, ms, onTimeout))]);
const parse = (line, word) => (line ? JSON.parse(line.slice(word.length + 1)) : null);

/**
 * The container's status after the program was asked to stop: waits for it,
 * and if it keeps running (a lost signal), SIGKILLs it and says so.
 */
async function statusOrKill(c, ms = 5000) {
  const code = await within(c.exited, ms);
  if (code !== 'timeout') return { code, killed: false };
  await c.kill('KILL');
  return { code: await c.exited, killed: true };
}

// ------------------------------------------------------------------ checks
// Each scenario runs one container and yields results for one or more
// checks: { check, ok, detail }.
const SIGNALS = ['SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];
const CHECKS = [
  '5 orphans reaped',
  '3 orphans left by `exec` reaped',
  'child exit code kept (7)',
  ...SIGNALS.map((s) => `${s} forwarded`),
  'SIGTERM → handler (exit 43)',
  'SIGTERM ignored, then SIGKILL → 137',
  'no handler: SIGTERM → 143',
  'exit 42',
  'SIGSEGV → 139',
  'read-only rootfs',
  'uid 1000',
  'early SIGTERM (5 ms after the entry point starts) → 143',
];

// Waits (inside the container) until the given PIDs are gone, for at most
// 5 s; prints how many are left (zombies nobody reaps).
const WAIT_GONE = 'n=0; while [ $n -lt 250 ]; do left=0; for p in "$@"; do [ -e /proc/$p ] && left=$((left+1)); done; ' +
  '[ $left -eq 0 ] && break; n=$((n+1)); sleep 0.02; done; echo LEFT $left';

const scenarios = {
  async main(c) {
    const results = [];
    const report = parse(await within(c.line(/^REPORT /), 30000, null), 'REPORT');
    results.push({ check: '5 orphans reaped', ok: report?.zombieOrphans === 0, detail: report ? `${report.zombieOrphans} left as zombies` : 'no report' });
    results.push({ check: 'child exit code kept (7)', ok: report?.childCode === 7, detail: `got ${report?.childCode}` });
    // Orphans made by a process the runtime execs into the container: when
    // its `sh` exits, its three `sleep`s are handed to the container's PID 1.
    const made = await c.exec(['sh', '-c', 'for i in 1 2 3; do sleep 0.1 & echo $!; done']);
    const pids = made.out.trim().split('\n').filter((l) => /^\d+$/.test(l));
    const waited = pids.length === 3 ? await c.exec(['sh', '-c', WAIT_GONE, 'sh', ...pids]) : { out: made.out };
    const left = /LEFT (\d+)/.exec(waited.out)?.[1];
    results.push({ check: '3 orphans left by `exec` reaped', ok: left === '0', detail: left === undefined ? `exec failed: ${waited.out.trim()}` : `${left} left as zombies` });
    await within(c.line(/^WAITING/), 30000, null);
    for (const sig of SIGNALS) {
      await c.kill(sig);
      const got = await within(c.line(new RegExp(`^GOT "${sig}"`)), 5000, null);
      results.push({ check: `${sig} forwarded`, ok: got !== null, detail: got ? 'the program\'s handler ran' : 'the program never saw it' });
    }
    await c.kill('TERM');
    const s = await statusOrKill(c);
    results.push({ check: 'SIGTERM → handler (exit 43)', ok: s.code === 43, detail: `exit ${s.code}${s.killed ? ' (SIGKILLed after 5 s)' : ''}` });
    return results;
  },
  async ignore(c) {
    await within(c.line(/^WAITING/), 30000, null);
    await c.kill('TERM');
    const seen = await within(c.line(/^IGNORED/), 5000, null);
    await c.kill('KILL');
    const code = await c.exited;
    return [{ check: 'SIGTERM ignored, then SIGKILL → 137', ok: seen !== null && code === 137, detail: `${seen ? 'handler ran' : 'handler never ran'}, exit ${code}` }];
  },
  async nohandler(c) {
    await within(c.line(/^WAITING/), 30000, null);
    await c.kill('TERM');
    const s = await statusOrKill(c);
    return [{ check: 'no handler: SIGTERM → 143', ok: s.code === 143, detail: `exit ${s.code}${s.killed ? ' (SIGTERM lost: SIGKILLed after 5 s)' : ''}` }];
  },
  async exit42(c, spec) {
    const report = parse(await within(c.line(/^REPORT /), 30000, null), 'REPORT');
    const code = (await statusOrKill(c, 30000)).code;
    const base = report !== null && code === 42 && report.zombieOrphans === 0 && report.childCode === 7;
    const detail = `exit ${code}, ${report ? `${report.zombieOrphans} zombies, child code ${report.childCode}` : 'no report'}`;
    if (spec.readonly) {
      return [{ check: 'read-only rootfs', ok: base && report.rootfsWritable === 'EROFS', detail: `${detail}, write to /app: ${report?.rootfsWritable}` }];
    }
    if (spec.uid) {
      return [{ check: 'uid 1000', ok: base && report.uid === 1000 && report.gid === 1000, detail: `${detail}, uid ${report?.uid} gid ${report?.gid}` }];
    }
    return [{ check: 'exit 42', ok: code === 42, detail: `exit ${code}` }];
  },
  async segv(c) {
    const s = await statusOrKill(c, 30000);
    const survived = /SURVIVED-SIGSEGV/.test(c.output());
    return [{ check: 'SIGSEGV → 139', ok: s.code === 139, detail: `exit ${s.code}${survived ? ' (the program survived its own SIGSEGV)' : ''}` }];
  },
  async early(c) {
    // 5 ms after the container's PID 1 has exec'd its entry point, while the
    // program is still starting: nothing sent may be lost. (Before that exec
    // PID 1 is still the runtime's own code: runc's Go init exits 2 on a
    // SIGTERM, which says nothing about the entry point.) The kernel does
    // not announce another process's exec: /proc is read every millisecond.
    const pid = await c.pidSeen;
    const exe = () => { try { return readlinkSync(`/proc/${pid}/exe`); } catch { return null; } };
    for (let e = exe(); e !== null && /runc|crun/.test(e); e = exe()) await new Promise((r) => setTimeout(r, 1));
    await new Promise((r) => setTimeout(r, 5));
    await c.kill('TERM');
    const s = await statusOrKill(c);
    const reached = /^WAITING/m.test(c.output());
    return [{
      check: 'early SIGTERM (5 ms after the entry point starts) → 143', ok: s.code === 143,
      detail: `exit ${s.code}${s.killed ? ` (SIGTERM lost${reached ? ', the program ran on' : ''}: SIGKILLed after 5 s)` : ''}`,
    }];
  },
};

// One container per entry (per runtime and per PID 1); the checks it answers.
const RUNS = [
  { scenario: 'main', spec: {}, checks: CHECKS.filter((ch) => /orphans|child exit|forwarded|exit 43/.test(ch)) },
  { scenario: 'ignore', spec: {}, checks: ['SIGTERM ignored, then SIGKILL → 137'] },
  { scenario: 'nohandler', spec: {}, checks: ['no handler: SIGTERM → 143'] },
  { scenario: 'exit42', spec: {}, checks: ['exit 42'] },
  { scenario: 'segv', spec: {}, checks: ['SIGSEGV → 139'] },
  { scenario: 'exit42', spec: { readonly: true }, checks: ['read-only rootfs'] },
  { scenario: 'exit42', spec: { uid: 1000 }, checks: ['uid 1000'] },
  { scenario: 'nohandler', spec: {}, run: 'early', checks: ['early SIGTERM (5 ms after the entry point starts) → 143'] },
];

// ------------------------------------------------ the no-libc rootfs's checks
// The program is busybox sh; the init runs it as `<init> [options] -- /bin/sh
// -c SCRIPT`. What it reports comes as lines; what it leaves comes in /out.
const STATIC_CHECKS = [
  'PID 1 is the init, the program its child',
  '3 orphans adopted by PID 1 and reaped',
  '3 orphans left by `exec` reaped',
  "SIGTERM → the program's trap (file written, exit 43)",
  'no handler: SIGTERM → 143',
  'exit 42 (an orphan left running)',
  'exit 42 as uid 1000',
  'kill -SEGV $$ → 139',
  'early SIGTERM (5 ms after the entry point starts) → 143',
];
const LOOP = 'echo WAITING; while :; do sleep 0.05; done';
const SH = {
  // Three orphans: each `sh -c` exits at once, its `sleep` goes to PID 1.
  // Their parent is read while they sleep, then they are killed: their
  // zombies must go (WAIT_GONE with them as "$@").
  main: [
    "trap 'echo TERM > /out/got-term; echo GOT-TERM; exit 43' TERM",
    'echo "SELF $$ $PPID"',
    'echo "PID1 $(cat /proc/1/comm) $(readlink /proc/1/exe)"',
    'echo "CHILDREN $(cat /proc/1/task/1/children)"',
    'o=""; for i in 1 2 3; do o="$o $(sh -c \'sleep 1000 >/dev/null 2>&1 & echo $!\')"; done',
    'pp=""; for p in $o; do pp="$pp $(grep ^PPid: /proc/$p/status | cut -f2)"; done',
    'kill $o; set -- $o',
    `echo "ORPHANS$o PPIDS$pp $(${WAIT_GONE})"`,
    LOOP,
  ].join('\n'),
  nohandler: LOOP,
  exit42: 'sh -c "sleep 1000 >/dev/null 2>&1 &"; echo "UID $(id -u)"; exit 42',
  segv: 'kill -SEGV $$; echo SURVIVED-SIGSEGV',
};
const STATIC_ENTRY = {
  static: (rootfs, script) => [rootfs.initImage, '-t', '3000', '--', '/bin/sh', '-c', script],
  'tini-static': (rootfs, script) => [rootfs.tini, '--', '/bin/sh', '-c', script],
};
const words = (line, word) => (line ? line.slice(word.length + 1).trim().split(/\s+/).filter(Boolean) : null);

const staticScenarios = {
  async main(c, { exe }) {
    const results = [];
    const self = words(await within(c.line(/^SELF /), 30000, null), 'SELF');
    const pid1 = words(await within(c.line(/^PID1 /), 5000, null), 'PID1');
    const kids = words(await within(c.line(/^CHILDREN/), 5000, null), 'CHILDREN');
    const okPid = self !== null && self[0] !== '1' && self[1] === '1' && pid1?.[1] === exe && kids?.includes(self[0]);
    results.push({
      check: 'PID 1 is the init, the program its child', ok: okPid,
      detail: self ? `program PID ${self[0]}, parent ${self[1]}; PID 1 ${pid1?.[0]} = ${pid1?.[1]}; its children: ${kids?.join(' ')}` : 'no report',
    });
    const orph = await within(c.line(/^ORPHANS /), 30000, null);
    const m = /^ORPHANS (.*) PPIDS (.*) LEFT (\d+)$/.exec(orph ?? '');
    const ppids = m ? m[2].trim().split(/\s+/) : [];
    results.push({
      check: '3 orphans adopted by PID 1 and reaped',
      ok: m !== null && ppids.length === 3 && ppids.every((p) => p === '1') && m[3] === '0',
      detail: m ? `orphans ${m[1].trim()}, their parent ${ppids.join(' ')}, ${m[3]} left as zombies` : `no report (${orph})`,
    });
    await within(c.line(/^WAITING/), 30000, null);
    const made = await c.exec(['sh', '-c', 'for i in 1 2 3; do sleep 0.1 & echo $!; done']);
    const pids = made.out.trim().split('\n').filter((l) => /^\d+$/.test(l));
    const waited = pids.length === 3 ? await c.exec(['sh', '-c', WAIT_GONE, 'sh', ...pids]) : { out: made.out };
    const left = /LEFT (\d+)/.exec(waited.out)?.[1];
    results.push({ check: '3 orphans left by `exec` reaped', ok: left === '0', detail: left === undefined ? `exec failed: ${waited.out.trim()}` : `${left} left as zombies` });
    await c.kill('TERM');
    const s = await statusOrKill(c);
    let file = null;
    try { file = readFileSync(join(c.out, 'got-term'), 'utf8'); } catch { /* never written */ }
    results.push({
      check: "SIGTERM → the program's trap (file written, exit 43)", ok: s.code === 43 && file === 'TERM\n',
      detail: `exit ${s.code}${s.killed ? ' (SIGKILLed after 5 s)' : ''}, /out/got-term ${file === null ? 'absent' : JSON.stringify(file)}`,
    });
    return results;
  },
  // The same check as the node rootfs's: busybox sh waits without a trap.
  nohandler: scenarios.nohandler,
  async exit42(c, spec) {
    const uid = words(await within(c.line(/^UID /), 30000, null), 'UID')?.[0];
    const { code, killed } = await statusOrKill(c, 30000);
    const want = String(spec.uid ?? 0);
    return [{
      check: spec.uid ? 'exit 42 as uid 1000' : 'exit 42 (an orphan left running)', ok: code === 42 && uid === want,
      detail: `exit ${code}${killed ? ' (SIGKILLed after 30 s)' : ''}, the program's uid ${uid}`,
    }];
  },
  async segv(c) {
    const s = await statusOrKill(c, 30000);
    const survived = /SURVIVED-SIGSEGV/.test(c.output());
    return [{ check: 'kill -SEGV $$ → 139', ok: s.code === 139, detail: `exit ${s.code}${survived ? ' (the program survived its own SIGSEGV)' : ''}` }];
  },
  early: (c) => scenarios.early(c),
};
const STATIC_RUNS = [
  { scenario: 'main', spec: {}, checks: STATIC_CHECKS.slice(0, 4) },
  { scenario: 'nohandler', spec: {}, checks: ['no handler: SIGTERM → 143'] },
  { scenario: 'exit42', spec: {}, checks: ['exit 42 (an orphan left running)'] },
  { scenario: 'exit42', spec: { uid: 1000 }, checks: ['exit 42 as uid 1000'] },
  { scenario: 'segv', spec: {}, checks: ['kill -SEGV $$ → 139'] },
  { scenario: 'nohandler', spec: {}, run: 'early', checks: ['early SIGTERM (5 ms after the entry point starts) → 143'] },
];

/** Runs one container and its scenario; the results, whatever happened. */
async function runOne(rt, rootfs, spec, fn, checks) {
  const c = startContainer(rt, rootfs, spec);
  let got;
  try {
    got = await within(fn(c), 90000, null);
    if (got === null) got = checks.map((check) => ({ check, ok: false, detail: 'no result within 90 s' }));
  } catch (err) {
    got = checks.map((check) => ({ check, ok: false, detail: `harness error: ${err.message}` }));
  } finally {
    await c.remove();
  }
  log(`--- ${rt.name} ${spec.init} ${JSON.stringify(spec).slice(0, 300)}\n${c.output()}`);
  return got;
}

// ------------------------------------------------------------------- main
const results = [];  // { runtime, init, check, ok, detail }
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    interrupted = true;
    cleanupAll();
    console.log(`interrupted by ${sig}: every container deleted; log ${logFile}`);
    process.exit(1);
  });
}

let setupError = null;
let staticSetupError = null;
let libcResult = null;  // the no-libc rootfs's own check: { ok, detail }
const t0 = performance.now();
try {
  for (const tool of ['ldd', 'unshare', ...RUNTIMES]) if (!which(tool)) throw new Error(`${tool} is not installed`);
  const rootfs = buildRootfs({ cacheRoot, rebuild, log });
  // The no-libc rootfs, with the init image the package ships (in the first
  // rootfs's /app, as npm installed it), unless --static-init names one.
  let staticRootfs = null;
  if (ROOTFS.includes('static')) {
    try {
      const shipped = join(rootfs.dir, 'app', 'node_modules', 'posix-daemon', 'prebuilds', `${process.platform}-${process.arch}`, STATIC_INIT_NAME);
      const image = staticInitFile || shipped;
      if (!existsSync(image)) {
        throw new Error(`the package ships no prebuilds/${process.platform}-${process.arch}/${STATIC_INIT_NAME} ` +
          '(npm run prebuild:all makes it; --static-init FILE tries another during development)');
      }
      staticRootfs = buildStaticRootfs({ dir: join(work, 'static'), initImage: image, log });
      const { problems, elves } = libcCheck(staticRootfs.dir);
      libcResult = {
        ok: problems.length === 0 && elves.length >= 2,
        detail: problems.length ? problems.join('; ')
          : `${elves.length} ELF files, none with a loader (${elves.map((e) => e.path).join(', ')}); no ld-linux*, ld-musl*, libc.so* or other *.so`,
      };
      console.log(`rootfs without libc: busybox-static (${staticRootfs.applets} applets), the init image ` +
        `${staticInitFile ? `${staticInitFile} (--static-init)` : `from the package (${STATIC_INIT_NAME})`}${staticRootfs.tini ? ', tini-static' : ''}`);
      if (!staticRootfs.tini) STATIC_INITS = STATIC_INITS.filter((i) => i !== 'tini-static');
    } catch (err) {
      staticSetupError = err;
      staticRootfs = null;
    }
  }
  console.log(`rootfs: .cache/container/rootfs-${rootfs.key} (${rootfs.built ? 'built' : 'cached'}; node ${process.version}, tini, dumb-init, busybox, the packed package in /app)`);
  if (rootfs.initImage) console.log(`init image: ${rootfs.initImage}`);
  else INITS = INITS.filter((i) => i !== 'image');
  for (const name of RUNTIMES) {
    const rt = makeRuntime(name);
    const version = spawnSync(name, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
    console.log(`${name}: ${version}${rt.note ? `; ${rt.note}` : ''}`);
    for (const r of ROOTFS.includes('node') ? RUNS : []) {
      const { checks } = r;
      if (checkFilter && !checks.some((ch) => ch.includes(checkFilter))) continue;
      for (const init of INITS) {
        const got = await runOne(rt, rootfs, { init, scenario: r.scenario, ...r.spec },
          (c) => scenarios[r.run ?? r.scenario](c, r.spec), checks);
        for (const g of got) results.push({ runtime: name, rootfs: 'node', init, ...g });
      }
    }
    for (const r of staticRootfs ? STATIC_RUNS : []) {
      const { checks } = r;
      if (checkFilter && !checks.some((ch) => ch.includes(checkFilter))) continue;
      for (const init of STATIC_INITS) {
        const exe = init === 'static' ? staticRootfs.initImage : staticRootfs.tini;
        const spec = {
          init, readonly: true, tmpfs: true, out: true, ...r.spec,
          args: STATIC_ENTRY[init](staticRootfs, SH[r.scenario]),
        };
        const got = await runOne(rt, staticRootfs, spec, (c) => staticScenarios[r.run ?? r.scenario](c, { ...r.spec, exe }), checks);
        for (const g of got) results.push({ runtime: name, rootfs: 'static', init, ...g });
      }
    }
  }
} catch (err) {
  setupError = err;
} finally {
  if (!interrupted) cleanupAll();
}

// ------------------------------------------------------------------ report
let passed = 0;
let failed = 0;
const known = [];
const notes = [];
const pad = (s, n) => s + ' '.repeat(Math.max(0, n - s.length));
function table(name, fs, title, checks, inits) {
  const mine = results.filter((r) => r.runtime === name && r.rootfs === fs);
  const rows = checks.filter((ch) => mine.some((r) => r.check === ch));
  if (!rows.length) return;
  const w = Math.max(...rows.map((r) => r.length)) + 2;
  const info = inits.filter((i) => !GRADED.has(i)).map((i) => LABEL[i]);
  console.log(`\n${name}${title}: check × PID 1 (${inits.filter((i) => GRADED.has(i)).map((i) => LABEL[i]).join(', ')} graded` +
    `${info.length ? `; ${info.join(', ')} for information` : ''})`);
  console.log(`${pad('check', w)}${inits.map((i) => pad(LABEL[i], 12)).join('')}`);
  for (const check of rows) {
    const cells = inits.map((init) => {
      const r = mine.find((x) => x.init === init && x.check === check);
      if (!r) return '-';
      const knownReason = KNOWN[init]?.[check];
      if (GRADED.has(init)) {
        if (r.ok) {
          passed++;
          if (knownReason) notes.push(`${name}/${LABEL[init]} "${check}" is marked as a documented limit but PASSED: remove the mark`);
        } else if (knownReason) {
          known.push(`${name}/${LABEL[init]} "${check}": ${r.detail}`);
        } else {
          failed++;
          notes.push(`FAIL ${name}/${LABEL[init]} "${check}": ${r.detail}`);
        }
      } else if (!r.ok) {
        notes.push(`(info) ${name}/${LABEL[init]} "${check}": ${r.detail}`);
      }
      return r.ok ? 'ok' : knownReason ? 'limit' : GRADED.has(init) ? 'FAIL' : 'no';
    });
    console.log(`${pad(check, w)}${cells.map((c) => pad(c, 12)).join('')}`);
  }
}
for (const name of RUNTIMES) {
  table(name, 'node', '', CHECKS, INITS);
  table(name, 'static', ', rootfs without libc (busybox sh as the program)', STATIC_CHECKS, STATIC_INITS);
}
console.log('');
if (libcResult) {
  if (libcResult.ok) passed++;
  else failed++;
  console.log(`${libcResult.ok ? 'ok  ' : 'FAIL'} rootfs without libc: ${libcResult.detail}`);
}
for (const n of notes) console.log(n);
if (known.length) {
  const why = Object.values(KNOWN).flatMap((k) => Object.entries(k)).map(([c, w]) => `"${c}": ${w}`);
  console.log(`documented limits, not counted (${why.join('; ')}):`);
  for (const k of known) console.log(`  ${k}`);
}
if (setupError) {
  failed++;
  console.log(`setup FAILED: ${setupError.message.split('\n').slice(0, 12).join('\n  ')}`);
}
if (staticSetupError) {
  failed++;
  console.log(`setup of the rootfs without libc FAILED: ${staticSetupError.message.split('\n').slice(0, 12).join('\n  ')}`);
}
const left = RUNTIMES.flatMap((name) => {
  const st = join(work, `state-${name}`);
  return existsSync(st) ? readdirSync(st) : [];
});
if (left.length) {
  failed++;
  console.log(`containers left behind: ${left.join(', ')}`);
}
console.log(`took ${((performance.now() - t0) / 1000).toFixed(0)} s; log ${keep || failed ? logFile : '(removed; --keep keeps it)'}`);
if (!keep && !failed) rmSync(work, { recursive: true, force: true });
console.log(`container: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
