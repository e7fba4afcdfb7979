// workers: 'auto' counts the CPUs this process may use: affinity and the
// cgroup CPU quota. Real cgroups, made here (root only), real processes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixtures, root, Reaper, isAlive } from './helpers.mjs';
import { availableCpus } from '../dist/monitor.mjs';

const reaper = new Reaper();
const dir = mkdtempSync(join(tmpdir(), 'workers-cpus-'));
const made = [];
after(async () => {
  await reaper.killAll();
  for (const d of made.reverse()) try { rmdirSync(d); } catch { /* still busy or gone */ }
  rmSync(dir, { recursive: true, force: true });
});

/** Where this host lets us set a CPU quota: { version, dir } or a reason why not. */
function cpuCgroupRoot() {
  if (process.platform !== 'linux') return { reason: 'cgroups are Linux only' };
  if (process.getuid() !== 0) return { reason: 'making a cgroup needs root' };
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const v1 = mountinfo.find((l) => / - cgroup cgroup /.test(l) && /[ ,]cpu(,|$)/.test(l.split(' - ')[1].split(' ')[2] ?? ''));
  if (v1) return { version: 1, dir: v1.split(' ')[4] };
  const v2 = mountinfo.find((l) => / - cgroup2 /.test(l));
  if (v2) {
    const point = v2.split(' ')[4];
    const controllers = readFileSync(join(point, 'cgroup.controllers'), 'utf8');
    if (!/\bcpu\b/.test(controllers)) return { reason: `cgroup v2 at ${point} has no cpu controller (${controllers.trim() || 'none'})` };
    return { version: 2, dir: point };
  }
  return { reason: 'no cgroup file system with a cpu controller is mounted' };
}

/** A node process in a new cgroup with `quota` CPUs; resolves with what it printed. */
function runInCgroup(cg, quota, script, env = {}) {
  const d = join(cg.dir, `posix-daemon-workers-test-${process.pid}-${made.length}`);
  mkdirSync(d);
  made.push(d);
  if (cg.version === 1) {
    writeFileSync(join(d, 'cpu.cfs_period_us'), '100000');
    writeFileSync(join(d, 'cpu.cfs_quota_us'), String(Math.round(quota * 100000)));
  } else {
    writeFileSync(join(d, 'cpu.max'), `${Math.round(quota * 100000)} 100000`);
  }
  return new Promise((resolve) => {
    // The shell moves itself into the cgroup, then becomes node.
    const child = spawn('/bin/sh', ['-c', `echo $$ > ${d}/cgroup.procs && exec "$0" "$@"`, process.execPath, ...script],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    reaper.add(child.pid);
    let out = '';
    let err = '';
    child.stdout.on('data', (x) => { out += x; reaper.watchOutput(String(x)); });
    child.stderr.on('data', (x) => { err += x; });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

const cg = cpuCgroupRoot();

test('availableCpus() outside a quota: the host, narrowed by affinity', () => {
  const c = availableCpus();
  assert.equal(c.host, cpus().length);
  assert.ok(c.count >= 1 && c.count <= c.host);
  const r = spawnSync('taskset', ['-c', '0', process.execPath, '--input-type=module', '-e',
    `import { availableCpus } from ${JSON.stringify(join(root, 'dist', 'monitor.mjs'))}; console.log(JSON.stringify(availableCpus()))`], { encoding: 'utf8' });
  if (r.error) return;  // no taskset here
  const pinned = JSON.parse(r.stdout);
  assert.equal(pinned.affinity, 1);
  assert.equal(pinned.count, 1);
});

test(`'auto' under a cgroup CPU quota counts the quota (cgroup v${cg.version ?? '?'})`, { skip: cg.reason }, async () => {
  const probe = ['--input-type=module', '-e',
    `import { availableCpus } from ${JSON.stringify(join(root, 'dist', 'monitor.mjs'))}; console.log(JSON.stringify(availableCpus()))`];
  const r = await runInCgroup(cg, 1.5, probe);
  assert.equal(r.code, 0, r.err);
  const c = JSON.parse(r.out);
  assert.equal(c.quota, 1.5);
  assert.equal(c.count, 1, '1.5 CPUs make 1 worker');
  // A whole service with workers: 'auto' in that cgroup starts one worker.
  const version = join(dir, 'version');
  writeFileSync(version, 'v1');
  const s = await runInCgroup(cg, 1.5, [join(fixtures, 'workers-app.cjs')], {
    WK_WORKERS: 'auto', WK_VERSION: version, WK_STOP_WHEN_READY: '1',
  });
  assert.match(s.out, /^REJECTED /m, s.err);
  const starts = [...s.out.matchAll(/^EVENT (.*)$/gm)].map((m) => JSON.parse(m[1])).filter((e) => e.type === 'start');
  assert.deepEqual(starts.map((e) => e.slot), [0]);
  for (const e of starts) assert.equal(isAlive(e.pid), false);
});

test('cgroup v2 cpu.max', { skip: cg.version === 2 ? false : `the cpu controller on this host is not on cgroup v2 (${cg.version === 1 ? 'it is bound to the v1 hierarchy' : cg.reason})` }, async () => {
  const probe = ['--input-type=module', '-e',
    `import { availableCpus } from ${JSON.stringify(join(root, 'dist', 'monitor.mjs'))}; console.log(JSON.stringify(availableCpus()))`];
  const r = await runInCgroup(cg, 1, probe);
  assert.equal(JSON.parse(r.out).count, 1);
});

test("issue 22: workers: 'max' (pm2's word) is 'auto': pinned to one CPU, one worker", async (t) => {
  if (spawnSync('taskset', ['-c', '0', 'true']).error) return t.skip('no taskset here');
  const version = join(dir, 'version-max');
  writeFileSync(version, 'v1');
  const s = await new Promise((resolve) => {
    const child = spawn('taskset', ['-c', '0', process.execPath, join(fixtures, 'workers-app.cjs')], {
      env: { ...process.env, WK_WORKERS: 'max', WK_VERSION: version, WK_STOP_WHEN_READY: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    reaper.add(child.pid);
    let out = '';
    let err = '';
    child.stdout.on('data', (x) => { out += x; reaper.watchOutput(String(x)); });
    child.stderr.on('data', (x) => { err += x; });
    child.on('close', (code) => resolve({ code, out, err }));
  });
  assert.match(s.out, /^REJECTED {2}enough$/m, s.out + s.err);
  const events = [...s.out.matchAll(/^EVENT (.*)$/gm)].map((m) => JSON.parse(m[1]));
  assert.deepEqual(events.filter((e) => e.type === 'start').map((e) => e.slot), [0]);
  assert.deepEqual(events.find((e) => e.type === 'all-ready'), { ...events.find((e) => e.type === 'all-ready'), workers: 1 });
  for (const e of events) if (e.pid) assert.equal(isAlive(e.pid), false);
});
