// The start-up guard of an image a restart started (dist/autorestart/guard.js):
// issue 22's items on what it must not change in the program.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, freePort, jsonLines, putFile as put, root, startNode, waitFor } from './helpers.mjs';

const { reaper, dirs } = fileScope();

const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;


test('a worker_threads Worker that throws at start-up emits error and exits 1, after a restart as on the first start', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-guard-worker-');
  put(dir, 'app.mjs', `
import { Worker } from 'node:worker_threads';
import { restartOnSignal } from ${JSON.stringify(lib)};
const w = new Worker("throw new Error('boom')", { eval: true });
let error = null;
w.on('error', (e) => { error = e.message; });
w.on('exit', (code) => {
  console.log('WORKER ' + JSON.stringify({ error, code }));
  restartOnSignal('SIGUSR2');
  setInterval(() => {}, 1 << 30);
  console.log('READY');
});
`);
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  await waitFor(() => app.out.includes('READY'), { what: () => `the first start (${app.err})`, timeout: 30000 });
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => jsonLines(app.out, 'WORKER ').length === 2 || app.child.exitCode !== null,
    { what: () => `the restarted image (${app.out}; ${app.err})`, timeout: 30000 });
  assert.deepEqual(jsonLines(app.out, 'WORKER '), [{ error: 'boom', code: 1 }, { error: 'boom', code: 1 }], app.err);
  assert.doesNotMatch(app.err, /failed at start-up/);
  assert.equal(app.child.exitCode, null, 'still running');
});

for (const [what, nodeOptions, title] of [
  ['without NODE_OPTIONS', undefined, false],
  ['with its own NODE_OPTIONS (a preload in a path with a space)', '--require "./pre load/pre.cjs" --max-old-space-size=200', false],
  ['when the program sets process.title (which overwrites the command line)', undefined, true],
]) {
  test(`after a restart the command line, execArgv and NODE_OPTIONS are the first start's, ${what}`, { timeout: 60000 }, async () => {
    const dir = dirs.make('pd-guard-cmdline-');
    mkdirSync(join(dir, 'pre load'));
    put(join(dir, 'pre load'), 'pre.cjs', 'console.log("PRELOAD " + process.pid);\n');
    put(dir, 'app.mjs', `
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { restartOnSignal } from ${JSON.stringify(lib)};
console.log('STATE ' + JSON.stringify({
  cmdline: readFileSync('/proc/self/cmdline', 'latin1'),
  argv0: process.argv0,
  execArgv: process.execArgv,
  argv: process.argv.slice(1),
  nodeOptions: process.env.NODE_OPTIONS ?? null,
  // What a child the program starts gets.
  child: execFileSync('/bin/sh', ['-c', 'echo "\${NODE_OPTIONS-unset}"'], { encoding: 'utf8' }).trim(),
}));
restartOnSignal('SIGUSR2');
${title ? "process.title = 'renamed';" : ''}
setInterval(() => {}, 1 << 30);
console.log('READY');
`);
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    if (nodeOptions !== undefined) env.NODE_OPTIONS = nodeOptions;
    const app = startNode('app.mjs', { args: ['an arg', basename(dir)], nodeArgs: ['--no-warnings'], argv0: 'node', cwd: dir, env, reaper });
    await waitFor(() => app.out.includes('READY'), { what: () => `the first start (${app.err})`, timeout: 30000 });
    process.kill(app.child.pid, 'SIGUSR2');
    await waitFor(() => jsonLines(app.out, 'STATE ').length === 2 || app.child.exitCode !== null,
      { what: () => `the restarted image (${app.out}; ${app.err})`, timeout: 30000 });
    const [first, second] = jsonLines(app.out, 'STATE ');
    assert.equal(first.cmdline, `node\0--no-warnings\0app.mjs\0an arg\0${basename(dir)}\0`);
    assert.deepEqual(second, first, 'the restarted image looks like the first start');
    assert.equal(first.child, nodeOptions ?? 'unset');
    if (nodeOptions !== undefined) {
      assert.equal(app.out.match(/^PRELOAD /gm)?.length, 2, 'the program\'s own preload ran in both images');
    }
    // Monitoring that matches the command line still finds it (the title, if set, is what it shows).
    const pgrep = spawnSync('pgrep', ['-f', '-x', title ? 'renamed' : `node --no-warnings app.mjs an arg ${basename(dir)}`],
      { encoding: 'utf8' });
    assert.equal(pgrep.stdout.trim(), String(app.child.pid));
    assert.equal(app.child.exitCode, null, 'still running');
  });
}

test('SIGUSR2 every 15 ms under restartOnSignal({ servers }): the service lives on under its PID across restarts', { timeout: 120000 }, async () => {
  const dir = dirs.make('pd-guard-storm-');
  const port = await freePort();
  put(dir, 'app.mjs', `
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { listen, restartOnSignal } from ${JSON.stringify(lib)};
const gen = Number(process.env.PD_GEN ?? 0);
process.env.PD_GEN = String(gen + 1);
const server = http.createServer((req, res) => res.end('ok'));
await listen(server, { port: ${port}, host: '127.0.0.1' });
restartOnSignal('SIGUSR2', { servers: [server] });
const sig = Object.fromEntries(readFileSync('/proc/self/status', 'latin1').split('\\n')
  .filter((l) => /^Sig(Blk|Ign|Cgt):/.test(l)).map((l) => l.split(/:\\s*/)));
console.log('STATE ' + JSON.stringify({ pid: process.pid, sig, ldPreload: process.env.LD_PRELOAD ?? null,
  hold: process.env.POSIX_DAEMON_HOLD ?? null }));
console.log('READY ' + gen + ' ' + process.pid);
`);
  // The program's own LD_PRELOAD (libc: harmless) is what every image sees.
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper, env: { ...process.env, LD_PRELOAD: 'libc.so.6' } });
  await waitFor(() => app.out.includes('READY 0'), { what: () => `the first start (${app.err})`, timeout: 30000 });
  const pid = app.child.pid;
  let sent = 0;
  const storm = setInterval(() => {
    try {
      process.kill(pid, 'SIGUSR2');
      sent++;
    } catch {
      clearInterval(storm);
    }
  }, 15);
  try {
    // Each preflight prints its READY line too, under its own PID.
    await waitFor(() => app.out.includes(`READY 4 ${pid}`) || app.child.exitCode !== null || app.child.signalCode !== null,
      { what: () => `four restarts (${app.out}; ${app.err})`, timeout: 90000 });
  } finally {
    clearInterval(storm);
  }
  assert.deepEqual({ code: app.child.exitCode, signal: app.child.signalCode }, { code: null, signal: null },
    `alive after ${sent} signals: ${app.out}`);
  // Signals already sent may start one more restart: the first five count.
  assert.deepEqual([...app.out.matchAll(new RegExp(`^READY (\\d+) ${pid}$`, 'gm'))].map((m) => Number(m[1])).slice(0, 5),
    [0, 1, 2, 3, 4], 'one image after another, same PID');
  // Every image's signal state and environment (read by the image itself,
  // once armed: from outside, a restart in progress blocks signals for a
  // moment) are the first start's: nothing stays blocked or held once the
  // guard ran, no variable is left.
  const states = jsonLines(app.out, 'STATE ').filter((st) => st.pid === pid).slice(0, 5);
  assert.equal(states.length, 5);
  for (const st of states) assert.deepEqual(st, states[0]);
  assert.deepEqual(states[0].sig.SigBlk, '0000000000000000');
  assert.deepEqual([states[0].ldPreload, states[0].hold], ['libc.so.6', null]);
});

/** GET / on 127.0.0.1:port: the body, or the error's code. */
function get(port) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve(body));
    }).on('error', (err) => resolve(err.code));
  });
}

for (const preflight of [true, false]) {
  test(`restartOnChange (preflight: ${preflight}): a version that throws 100 ms after listen() keeps the PID and the socket, waits for a change, and the fix restarts it`, { timeout: 120000 }, async () => {
    const dir = dirs.make('pd-guard-devloop-');
    const port = await freePort();
    put(dir, 'version.mjs', 'export const version = 1;\nexport async function warmUp() {}\n');
    put(dir, 'app.mjs', `
import http from 'node:http';
import { listen, restartOnChange } from ${JSON.stringify(lib)};
import { version, warmUp } from './version.mjs';
const server = http.createServer((req, res) => res.end('V ' + version + ' PID ' + process.pid));
await listen(server, { port: ${port}, host: '127.0.0.1' });
restartOnChange({ servers: [server], preflight: ${preflight}, persistent: true });
console.log('READY ' + version + ' ' + process.pid);
await warmUp();
`);
    const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
    const pid = app.child.pid;
    await waitFor(() => app.out.includes(`READY 1 ${pid}`), { what: () => `v1 (${app.err})`, timeout: 30000 });
    put(dir, 'version.mjs', `export const version = 2;
export async function warmUp() {
  await new Promise((resolve) => setTimeout(resolve, 100));
  throw new Error('warm-up failed');
}
`);
    await waitFor(() => /the new code crashed: Error: warm-up failed; waiting for a change/.test(app.err) ||
      app.child.exitCode !== null || app.child.signalCode !== null,
    { what: () => `the crash message (${app.out}; ${app.err})`, timeout: 30000 });
    assert.deepEqual({ code: app.child.exitCode, signal: app.child.signalCode }, { code: null, signal: null },
      `still running: ${app.out}\n${app.err}`);
    assert.ok(app.out.includes(`READY 2 ${pid}`), 'v2 came up under the same PID before it crashed');
    // The socket is still open.
    assert.notEqual(await get(port), 'ECONNREFUSED');
    put(dir, 'version.mjs', 'export const version = 3;\nexport async function warmUp() {}\n');
    await waitFor(() => app.out.includes(`READY 3 ${pid}`) || app.child.exitCode !== null,
      { what: () => `v3 (${app.out}; ${app.err})`, timeout: 30000 });
    assert.equal(await get(port), `V 3 PID ${pid}`);
    // A crash of the fixed image is a crash to wait out too: the dev loop never ends.
    put(dir, 'version.mjs', 'export const version = 4;\nexport async function warmUp() { setTimeout(() => process.exit(3), 100); }\n');
    await waitFor(() => /the new code crashed: Error: process\.exit\(3\)/.test(app.err) || app.child.exitCode !== null,
      { what: () => `the second crash (${app.out}; ${app.err})`, timeout: 30000 });
    assert.equal(app.child.exitCode, null, 'still running');
    put(dir, 'version.mjs', 'export const version = 5;\nexport async function warmUp() {}\n');
    await waitFor(() => app.out.includes(`READY 5 ${pid}`), { what: () => `v5 (${app.out}; ${app.err})`, timeout: 30000 });
    assert.equal(await get(port), `V 5 PID ${pid}`);
  });
}

test('restartOnChange: a preflight that was up and ended while the old image drained refuses the restart; the old version goes on', { timeout: 120000 }, async () => {
  const dir = dirs.make('pd-guard-preflight-ended-');
  const port = await freePort();
  put(dir, 'version.mjs', 'export const version = 1;\nexport async function warmUp() {}\n');
  put(dir, 'app.mjs', `
import http from 'node:http';
import { listen, restartOnChange } from ${JSON.stringify(lib)};
import { version, warmUp } from './version.mjs';
const server = http.createServer((req, res) => {
  if (req.url === '/slow') {
    console.log('SLOW');
    setTimeout(() => res.end('slow ' + version), 2000);
  } else res.end('V ' + version + ' PID ' + process.pid);
});
await listen(server, { port: ${port}, host: '127.0.0.1' });
restartOnChange({ servers: [server], persistent: true, onError: (e) => console.log('REFUSED ' + e.code + ' ' + e.message.split('\\n')[0]) });
console.log('READY ' + version + ' ' + process.pid);
await warmUp();
`);
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  const pid = app.child.pid;
  await waitFor(() => app.out.includes(`READY 1 ${pid}`), { what: () => `v1 (${app.err})`, timeout: 30000 });
  // The drain waits for this request: the preflight ends meanwhile.
  const slow = new Promise((resolve) => http.get({ host: '127.0.0.1', port, path: '/slow', agent: false }, (res) => {
    let body = '';
    res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve(body));
  }).on('error', (err) => resolve(err.code)));
  await waitFor(() => app.out.includes('SLOW'), { what: 'the slow request' });
  put(dir, 'version.mjs', `export const version = 2;
export async function warmUp() {
  await new Promise((resolve) => setTimeout(resolve, 100));
  throw new Error('warm-up failed');
}
`);
  await waitFor(() => app.out.includes('REFUSED') || app.out.includes(`READY 2 ${pid}`) || app.child.exitCode !== null,
    { what: () => `the refusal (${app.out}; ${app.err})`, timeout: 30000 });
  assert.match(app.out, /^REFUSED ERR_RESTART_REFUSED restart refused: the new version \(preflight pid \d+\) ended after it was up, before the exec; the running version goes on$/m);
  assert.equal(await slow, 'slow 1');
  assert.equal(await get(port), `V 1 PID ${pid}`, 'the old version serves again');
  assert.ok(!app.out.includes(`READY 2 ${pid}`), 'never exec\'d');
  put(dir, 'version.mjs', 'export const version = 3;\nexport async function warmUp() {}\n');
  await waitFor(() => app.out.includes(`READY 3 ${pid}`), { what: () => `v3 (${app.out}; ${app.err})`, timeout: 30000 });
  assert.equal(await get(port), `V 3 PID ${pid}`);
});

// A local build's name, and a prebuild's for each libc (src/native.ts companionPath).
for (const holdName of ['posix_daemon_hold.so', 'posix_daemon_hold.glibc.so', 'posix_daemon_hold.musl.so']) {
  test(`when the hold preload could not run (LD_PRELOAD ignored), the guard still takes it out of the environment, and nothing stays blocked (${holdName})`, { timeout: 30000 }, async () => {
    const dir = dirs.make('pd-guard-nohold-');
    put(dir, 'app.cjs', `
const { readFileSync } = require('node:fs');
const st = readFileSync('/proc/self/status', 'latin1');
console.log(JSON.stringify({ ld: process.env.LD_PRELOAD ?? null, hold: process.env.POSIX_DAEMON_HOLD ?? null,
  nodeOptions: process.env.NODE_OPTIONS ?? null, sigBlk: /SigBlk:\\s*(\\w+)/.exec(st)[1] }));
  `);
    const guard = join(root, 'dist', 'autorestart', 'guard.js');
    // As a restart starts it: the guard's variable is always set (guard.ts acts only where it is).
    const env = { ...process.env, NODE_OPTIONS: `--require ${guard}`, POSIX_DAEMON_GUARD: '{}', POSIX_DAEMON_HOLD: '12',
      LD_PRELOAD: `/nonexistent/${holdName} libc.so.6` };
    const app = startNode(join(dir, 'app.cjs'), { cwd: dir, env, reaper });
    assert.deepEqual(await app.exited, { code: 0, signal: null }, app.err);
    assert.deepEqual(JSON.parse(app.out), { ld: 'libc.so.6', hold: null, nodeOptions: null, sigBlk: '0000000000000000' });
  });
}

test('restartOnChange: an edit saved while the crashing version was still starting is not lost: the fix restarts', { timeout: 120000 }, async () => {
  const dir = dirs.make('pd-guard-edit-during-start-');
  const port = await freePort();
  put(dir, 'version.mjs', 'export const version = 1;\n');
  put(dir, 'app.mjs', `
import http from 'node:http';
import { listen, restartOnChange } from ${JSON.stringify(lib)};
import { version } from './version.mjs';
console.log('START ' + version);
const server = http.createServer((req, res) => res.end('V ' + version + ' PID ' + process.pid));
await listen(server, { port: ${port}, host: '127.0.0.1' });
restartOnChange({ servers: [server], persistent: true, preflight: false });
console.log('READY ' + version + ' ' + process.pid);
`);
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  const pid = app.child.pid;
  await waitFor(() => app.out.includes(`READY 1 ${pid}`), { what: () => `v1 (${app.err})`, timeout: 30000 });
  // v2 takes 1.5 s to fail its start; v3 is saved while it is still starting.
  put(dir, 'version.mjs', "export const version = 2;\nconsole.log('V2 STARTING');\nawait new Promise((r) => setTimeout(r, 1500));\nthrow new Error('v2 fails late');\n");
  await waitFor(() => app.out.includes('V2 STARTING'), { what: () => `v2's start (${app.err})`, timeout: 30000 });
  put(dir, 'version.mjs', 'export const version = 3;\n');
  await waitFor(() => app.err.includes('v2 fails late'), { what: () => `v2's failure (${app.err})`, timeout: 30000 });
  await waitFor(() => app.out.includes(`READY 3 ${pid}`), { what: () => `v3 (${app.out}; ${app.err})`, timeout: 30000 });
  assert.equal(await get(port), `V 3 PID ${pid}`);
});
