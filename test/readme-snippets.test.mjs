// Every js/ts code block of README.md runs as pasted and does what it says
// (issue 16, item 15). Each block is preceded by a marker:
//   <!-- snippet: NAME -->      a program: the runner NAME below runs it and
//                               checks its claims
//   <!-- snippet: fragment -->  a fragment by design: it must say so itself
// A block without a marker, or with a name no runner knows, fails the test.
//
// A program is written to a project directory whose node_modules holds this
// package (and tsx, for the .ts blocks), and run from there, as a user would.
// Two substitutions only, so that tests never collide with anything else on
// the machine: the port 8080 becomes a free port, /tmp/my-app a temp path.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, Reaper, root, isAlive, procEnv, waitFor } from './helpers.mjs';
import { childPids } from '../dist/posix.mjs';

const reaper = new Reaper();
const tmp = realpathSync(mkdtempSync(join(tmpdir(), 'posix-daemon-readme-')));
const project = join(tmp, 'project');
mkdirSync(join(project, 'node_modules'), { recursive: true });
symlinkSync(root, join(project, 'node_modules', 'posix-daemon'));
symlinkSync(join(root, 'node_modules', 'tsx'), join(project, 'node_modules', 'tsx'));
// The snippets are ES modules with top-level await, as in a "type": "module" project.
writeFileSync(join(project, 'package.json'), '{ "type": "module" }\n');

after(async () => {
  await reaper.killAll();
  rmSync(tmp, { recursive: true, force: true });
});

/** The README's code blocks with their markers, in order. */
function snippets() {
  const text = readFileSync(join(root, 'README.md'), 'utf8');
  const out = [];
  const re = /(?:<!-- snippet: ([\w-]+) -->\n)?```(\w+)[^\n]*\n([^]*?)```/g;
  for (const m of text.matchAll(re)) {
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ name: m[1], lang: m[2], code: m[3], line });
  }
  return out;
}


/** Starts a program; `lines` collects its output, `exited` resolves with { code, signal }. */
function start(cmd, args, { cwd = project, env = process.env } = {}) {
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  reaper.add(child.pid);
  const p = { child, stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { p.stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { p.stderr += d; });
  p.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return p;
}

async function runToEnd(cmd, args, opts) {
  const p = start(cmd, args, opts);
  const r = await p.exited;
  return { ...r, stdout: p.stdout, stderr: p.stderr };
}

async function get(port) {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  return res.text();
}

async function waitServing(port) {
  return waitFor(() => get(port).catch(() => null), { what: `a server on port ${port}` });
}

function write(name, code, port) {
  const file = join(project, name);
  writeFileSync(file, code.replaceAll('8080', String(port)).replaceAll('/tmp/my-app', join(tmp, 'my-app')));
  return file;
}

const node = process.execPath;
const baseEnv = { PATH: process.env.PATH, HOME: process.env.HOME ?? '/root' };

const runners = {
  async daemonize(code) {
    const port = await freePort();
    write('daemonize.mjs', code, port);
    const r = await runToEnd(node, ['daemonize.mjs'], { env: baseEnv });
    const m = /^started, PID (\d+)$/m.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    const pid = reaper.add(Number(m[1]));
    assert.equal(r.code, 0);
    assert.equal(await get(port), `hello from ${pid}\n`, 'the daemon serves');
    // A second start cannot listen: its daemon reports the error, the foreground rejects with it.
    const again = await runToEnd(node, ['daemonize.mjs'], { env: baseEnv });
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /EADDRINUSE/);
    process.kill(pid, 'SIGTERM');
  },

  async monitor(code) {
    const port = await freePort();
    write('monitor.ts', code, port);
    const p = start(node, ['--import', 'tsx', 'monitor.ts']);
    await waitFor(() => /type: 'ready'/.test(p.stderr), { what: "the monitor's ready event" });
    const body = await get(port);
    const worker = reaper.add(Number(/^worker (\d+)$/m.exec(body)?.[1]));
    assert.ok(isAlive(worker), body);
    // Ctrl-C reaches the monitor only (the worker leads its own group).
    p.child.kill('SIGINT');
    const r = await p.exited;
    assert.equal(r.code, 0, p.stderr);
    assert.match(p.stderr, /monitor stopped: got SIGINT/);
    assert.equal((p.stderr.match(/type: 'start'/g) ?? []).length, 1, `one worker, never restarted:\n${p.stderr}`);
    assert.doesNotMatch(p.stderr, /type: 'kill'/, 'the worker stopped on SIGINT, no SIGKILL needed');
    assert.equal(isAlive(worker), false);
  },

  async autorestart(code) {
    const port = await freePort();
    const file = write('autorestart.ts', code, port);
    // NODE_DEBUG says when the watches are in place: edit only then.
    const p = start(node, ['--import', 'tsx', 'autorestart.ts'], { env: { ...process.env, NODE_DEBUG: 'posix-daemon' } });
    const first = await waitFor(() => /^serving, PID (\d+)$/m.exec(p.stdout), { what: 'the first image' });
    const pid = reaper.add(Number(first[1]));
    assert.equal(await waitServing(port), `pid ${pid}\n`);
    await waitFor(() => /autorestart: watching \d+ files/.test(p.stderr), { what: 'the watches' });
    writeFileSync(file, `${readFileSync(file, 'utf8')}// edited\n`);
    await waitFor(() => (p.stdout.match(/^serving, PID \d+$/gm) ?? []).length >= 2, { what: 'the restart in place' });
    assert.deepEqual(p.stdout.match(/^serving, PID \d+$/gm), [`serving, PID ${pid}`, `serving, PID ${pid}`], 'same PID');
    assert.equal(await waitServing(port), `pid ${pid}\n`);
    p.child.kill('SIGKILL');
  },

  async servers(code) {
    const port = await freePort();
    write('servers.mjs', code, port);
    const p = start(node, ['servers.mjs']);
    const pid = p.child.pid;
    assert.equal(await waitServing(port), `pid ${pid}\n`);
    assert.equal(procEnv(pid).POSIX_DAEMON_LISTEN_FDS, undefined);
    process.kill(pid, 'SIGUSR2');
    // The new image was given the listening socket (in its environment at exec).
    await waitFor(() => procEnv(pid).POSIX_DAEMON_LISTEN_FDS !== undefined, { what: 'the restart on SIGUSR2' });
    // Meanwhile the new code's preflight child serves as a bridge (another
    // PID); once the new image is up, the same PID answers on the same socket.
    await waitFor(async () => (await get(port).catch(() => '')) === `pid ${pid}\n`, { what: 'same PID, same socket', timeout: 30_000 });
    p.child.kill('SIGKILL');
  },

  async workers(code) {
    const port = await freePort();
    write('workers.mjs', code, port);
    const { availableCpus } = await import('../dist/monitor.mjs');
    const n = availableCpus().count;
    const p = start(node, ['workers.mjs']);
    const monitor = p.child.pid;
    // 'auto': one worker per CPU this process may use, each serving the monitor's socket.
    await waitFor(() => childPids(monitor).length === n, { what: `${n} workers` });
    const first = childPids(monitor);
    first.forEach((w) => reaper.add(w));
    assert.match(await waitServing(port), /^hello from \d+\n$/);
    const served = Number(/\d+/.exec(await get(port))[0]);
    assert.ok(first.includes(served), `a worker answers (${served} of ${first})`);
    // kill -HUP: a rolling reload leaves only new workers, the port always open.
    process.kill(monitor, 'SIGHUP');
    await waitFor(() => {
      const now = childPids(monitor);
      now.forEach((w) => reaper.add(w));   // new workers too, should this fail
      return now.length === n && now.every((w) => !first.includes(w));
    }, { what: `the rolling reload (workers before: ${first}; stderr: ${p.stderr})`, timeout: 60_000 });
    childPids(monitor).forEach((w) => reaper.add(w));
    assert.match(await get(port), /^hello from \d+\n$/);
    // SIGTERM: the monitor stops its workers and exits 0.
    const last = childPids(monitor);
    process.kill(monitor, 'SIGTERM');
    assert.deepEqual(await p.exited, { code: 0, signal: null }, p.stderr);
    for (const w of [...first, ...last]) assert.equal(isAlive(w), false, `worker ${w} stopped`);
  },

  async imports(code) {
    write('imports.mjs', code, 0);
    const r = await runToEnd(node, ['imports.mjs']);
    assert.equal(r.code, 0, r.stderr);
  },

  async 'socket-activate'(code, t) {
    if (!existsSync('/usr/bin/systemd-socket-activate') && !existsSync('/bin/systemd-socket-activate')) {
      t.skip('systemd-socket-activate is not installed');
      return;
    }
    const port = await freePort();
    // Run from the repository, as the README's path (examples/systemd/server.mjs) says.
    const r = await runToEnd('bash', ['-c', code.replaceAll('8080', String(port))], { cwd: root });
    // curl's output; the server's own log lines ("generation 0, pid N: serving ...") are not checked.
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('pid '));
    assert.equal(lines.length, 2, r.stdout + r.stderr);
    const [a, b] = lines.map((l) => /^pid (\d+), generation (\d+)$/.exec(l));
    assert.ok(a && b, r.stdout);
    reaper.add(Number(a[1]));
    assert.equal(a[2], '0');
    assert.equal(b[1], a[1], 'same PID');
    assert.equal(b[2], '1', 'the new image answers');
    await waitFor(() => !isAlive(Number(a[1])), { what: 'the server to stop on kill %1' });
  },

  async init(code, t) {
    write('init.mjs', code, 0);
    const p = start(node, ['init.mjs']);
    await waitFor(() => /^running as (\d+)$/m.test(p.stdout), { what: 'the program' });
    assert.match(p.stdout, new RegExp(`^running as ${p.child.pid}$`, 'm'), 'not PID 1: init() does nothing');
    p.child.kill('SIGTERM');
    assert.deepEqual(await p.exited, { code: 0, signal: null });
    // As PID 1 of a new PID namespace: it becomes the init, the program is its child.
    const probe = await runToEnd('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'true']).catch(() => ({ code: 1 }));
    if (probe.code !== 0) {
      t.diagnostic('unshare --pid is not available here: PID 1 case not run');
      return;
    }
    const q = start('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', node, 'init.mjs']);
    await waitFor(() => /^running as (\d+)$/m.test(q.stdout), { what: 'the program under the init' });
    const inside = Number(/^running as (\d+)$/m.exec(q.stdout)[1]);
    assert.ok(inside > 1, 'the program is not PID 1: the init is');
    const [pid1] = childPids(q.child.pid);
    reaper.add(pid1);
    // The init image (plain C: a local build's run by the dynamic loader, a
    // prebuild's static), not node.
    assert.match(readFileSync(`/proc/${pid1}/cmdline`, 'latin1'), /posix_daemon_init\.(so|musl\.static)/, 'PID 1 is the init');
    // docker stop: SIGTERM to PID 1, which forwards it to the program (exit 0).
    process.kill(pid1, 'SIGTERM');
    assert.deepEqual(await q.exited, { code: 0, signal: null });
  },

  async 'pidfile-daemon'(code) {
    write('pidfile-daemon.mjs', code, 0);
    const pidFile = join(tmp, 'my-app.pid');
    const r = await runToEnd(node, ['pidfile-daemon.mjs'], { env: baseEnv });
    assert.equal(r.code, 0, r.stderr);
    const pid = reaper.add(Number(readFileSync(pidFile, 'utf8')));
    assert.ok(isAlive(pid), 'the daemon keeps running');
    assert.ok(existsSync(join(tmp, 'my-app.log')), 'its log file');
    const again = await runToEnd(node, ['pidfile-daemon.mjs'], { env: baseEnv });
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /ERR_ALREADY_RUNNING/);
    const stop = await runToEnd(node, ['pidfile-daemon.mjs', 'stop'], { env: baseEnv });
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(stop.stdout.trim(), `{ pid: ${pid}, signal: 'SIGTERM', killed: false }`);
    assert.equal(isAlive(pid), false);
    assert.equal(existsSync(pidFile), false, 'a clean exit removed the PID file');
  },

  async 'pidfile-lock'(code) {
    write('pidfile-lock.mjs', code, 0);
    const r = await runToEnd(node, ['pidfile-lock.mjs']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'true\n');
  },
};

const all = snippets().filter((s) => s.lang === 'js' || s.lang === 'ts' || s.name !== undefined);

test('every js/ts block of the README is marked as a program or a fragment', () => {
  for (const s of all) {
    assert.ok(s.name !== undefined, `README.md:${s.line}: a ${s.lang} block without a <!-- snippet: ... --> marker`);
    assert.ok(s.name === 'fragment' || s.name in runners, `README.md:${s.line}: no runner for "${s.name}"`);
    if (s.name === 'fragment') assert.match(s.code, /fragment/i, `README.md:${s.line}: a fragment must say so`);
  }
});

for (const s of all) {
  if (s.name === undefined || s.name === 'fragment' || !(s.name in runners)) continue;
  test(`README.md:${s.line} (${s.name}) runs as pasted and does what it says`, (t) => runners[s.name](s.code, t));
}
