// Issue 24: what a restart costs the new image before the program's first
// line (the guard loads only its own few files), and the module compile
// cache the preflight fills and the new image reads (Node >= 22.8).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileScope, freePort, jsonLines, procStat, putFile as put, root, startNode, waitFor, zombieChildren } from './helpers.mjs';

const { reaper, dirs } = fileScope();
const lib = join(root, 'dist', 'autorestart.js');
const sockets = join(root, 'dist', 'sockets.js');
const cacheApi = typeof createRequire(import.meta.url)('node:module').enableCompileCache === 'function';


/** The guard's own files: what an image without sockets may have loaded before its first line. */
const GUARD_FILES = ['dist/autorestart/guard.js', 'dist/autorestart/guard-env.js', 'dist/node-options.js',
  'dist/autorestart/guard-start.js', 'dist/autorestart/guard-hold.js', 'dist/restart-env.js'];

test('before the first line of an image a restart started, the guard has loaded only its own files (no sockets handed)', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-guard-');
  put(dir, 'app.cjs', `
// The first line: what is loaded so far (this file is in the cache too).
console.log('LOADED ' + JSON.stringify(Object.keys(require.cache)));
const { restartViaExec } = require(${JSON.stringify(lib)});
process.on('SIGUSR2', () => restartViaExec());
setInterval(() => {}, 1 << 30);
console.log('READY');
`);
  const app = startNode(join(dir, 'app.cjs'), { cwd: dir, reaper });
  await waitFor(() => app.out.includes('READY'), { what: () => `the first start (${app.err})`, timeout: 30000 });
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => jsonLines(app.out, 'LOADED ').length === 2 || app.child.exitCode !== null,
    { what: () => `the restarted image (${app.out}; ${app.err})`, timeout: 30000 });
  const [first, second] = jsonLines(app.out, 'LOADED ');
  assert.deepEqual(first, [join(dir, 'app.cjs')], 'a first start has loaded nothing of ours');
  const ours = second.filter((f) => f !== join(dir, 'app.cjs')).map((f) => relative(root, f)).sort();
  // With the compile cache API, the module that turns it on too.
  const expected = [...GUARD_FILES, ...(cacheApi ? ['dist/autorestart/compile-cache.js'] : [])].sort();
  assert.deepEqual(ours, expected, 'the guard loads nothing else before the program');
  assert.ok(!ours.some((f) => f.endsWith('.node')), 'no addon');
});

test('with sockets handed over, the guard loads the socket machinery before the first line: a plain server.listen() takes its socket', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-guard-sockets-');
  const port = await freePort();
  put(dir, 'app.cjs', `
console.log('LOADED ' + JSON.stringify(Object.keys(require.cache).filter((f) => f.endsWith('/sockets.js') || f.endsWith('/bridge.js')).length));
const http = require('node:http');
const server = http.createServer((q, r) => r.end(String(process.pid)));
// A plain listen, before the library is required: the handed-over socket must be taken.
server.listen(${port}, '127.0.0.1', () => {
  const { restartOnSignal } = require(${JSON.stringify(lib)});
  restartOnSignal('SIGUSR2', { servers: [server] });
  console.log('READY ' + process.pid);
});
`);
  const app = startNode(join(dir, 'app.cjs'), { cwd: dir, reaper });
  await waitFor(() => /READY/.test(app.out), { what: () => `the first start (${app.err})`, timeout: 30000 });
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => (app.out.match(/^READY /gm) ?? []).length >= 2 || app.child.exitCode !== null,
    { what: () => `the restarted image (${app.out}; ${app.err})`, timeout: 60000 });
  // First start, preflight (its output is prefixed, so not counted), new image.
  assert.deepEqual(jsonLines(app.out, 'LOADED '), [0, 2], app.out);
  assert.doesNotMatch(app.err, /EADDRINUSE|failed at start-up/);
  assert.equal(app.child.exitCode, null, 'still running');
});

/** An app that restarts with its server (preflight on) and prints what the cache looks like from inside. */
function cacheApp(dir, port, options) {
  put(dir, 'app.cjs', `
const http = require('node:http');
const { restartOnSignal } = require(${JSON.stringify(lib)});
const { listen } = require(${JSON.stringify(sockets)});
const server = http.createServer((q, r) => r.end('ok'));
listen(server, { port: ${port}, host: '127.0.0.1' }).then(() => {
  console.log('CACHE ' + JSON.stringify({ dir: require('node:module').getCompileCacheDir?.() ?? null,
    env: process.env.NODE_COMPILE_CACHE ?? null, guardEnv: process.env.POSIX_DAEMON_GUARD ?? null }));
});
restartOnSignal('SIGUSR2', { servers: [server], ${options} });
`);
}

async function restartOnce(dir, env) {
  const app = startNode(join(dir, 'app.cjs'), { cwd: dir, env, reaper });
  await waitFor(() => jsonLines(app.out, 'CACHE ').length === 1, { what: () => `the first start (${app.err})`, timeout: 30000 });
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => jsonLines(app.out, 'CACHE ').length === 2 || app.child.exitCode !== null,
    { what: () => `the restarted image (${app.out}; ${app.err})`, timeout: 60000 });
  return { app, states: jsonLines(app.out, 'CACHE ') };
}

function cacheEnv(tmp) {
  const env = { ...process.env, TMPDIR: tmp };
  delete env.NODE_COMPILE_CACHE;
  return env;
}

test('the preflight fills a private compile cache and the new image reads it; the program sees no NODE_COMPILE_CACHE', { skip: !cacheApi && 'module.enableCompileCache needs Node >= 22.8', timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-cache-');
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  cacheApp(dir, await freePort(), '');
  const { app, states } = await restartOnce(dir, cacheEnv(tmp));
  const own = join(tmp, `posix-daemon-compile-cache-${process.getuid()}`);
  assert.equal(states[0].dir, null, 'a first start runs as the user started it');
  assert.ok(states[1].dir?.startsWith(`${own}/`), JSON.stringify(states[1]));
  assert.deepEqual([states[1].env, states[1].guardEnv], [null, null], 'nothing of it in the program\'s environment');
  const st = statSync(own);
  assert.equal(st.mode & 0o777, 0o700);
  assert.equal(st.uid, process.getuid());
  // The preflight wrote its entries (flushed once up): the app's and the library's.
  assert.ok(readdirSync(states[1].dir).length >= 10, readdirSync(states[1].dir).join(' '));
  assert.equal(app.child.exitCode, null);
});

test('compileCache: false starts the next images without the cache', { skip: !cacheApi && 'module.enableCompileCache needs Node >= 22.8', timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-nocache-');
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  cacheApp(dir, await freePort(), 'compileCache: false');
  const { states } = await restartOnce(dir, cacheEnv(tmp));
  assert.deepEqual(states.map((s) => s.dir), [null, null]);
  assert.deepEqual(readdirSync(tmp), [], 'nothing made');
});

test('a cache directory that others can write is not used: the restart goes on without the cache', { skip: !cacheApi && 'module.enableCompileCache needs Node >= 22.8', timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-hostile-');
  const tmp = join(dir, 'tmp');
  const planted = join(tmp, `posix-daemon-compile-cache-${process.getuid()}`);
  mkdirSync(planted, { recursive: true });
  chmodSync(planted, 0o777);
  cacheApp(dir, await freePort(), '');
  const { app, states } = await restartOnce(dir, cacheEnv(tmp));
  assert.deepEqual(states.map((s) => s.dir), [null, null]);
  assert.deepEqual(readdirSync(planted), [], 'nothing written into it');
  assert.equal(app.child.exitCode, null);
});

// ---------------------------------------------------------------------------
// bridgeAfter: a preflight that came up within it stands by instead of bridging.

const http = await import('node:http');

function get(port) {
  return new Promise((resolve) => http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
    let body = '';
    res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve(body));
  }).on('error', (err) => resolve(err.code)));
}

/**
 * An app whose exec'd image (not its preflight: another PID) does what
 * mode.txt says before it listens: 'slow' waits 1500 ms, 'throw' throws.
 */
function bridgeApp(dir, port, options) {
  put(dir, 'mode.txt', 'fast');
  put(dir, 'app.mjs', `
import http from 'node:http';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { listen, restartOnSignal } from ${JSON.stringify(join(root, 'dist', 'autorestart.mjs'))};
const pidFile = ${JSON.stringify(join(dir, 'first.pid'))};
if (!existsSync(pidFile)) writeFileSync(pidFile, String(process.pid));
const execd = process.env.GEN === '2' && String(process.pid) === readFileSync(pidFile, 'utf8');
console.log('START ' + process.pid + ' ' + (process.env.GEN ?? '1'));
const mode = readFileSync(${JSON.stringify(join(dir, 'mode.txt'))}, 'utf8');
if (execd && mode === 'slow') await new Promise((resolve) => setTimeout(resolve, 1500));
if (execd && mode === 'throw') throw new Error('the exec\\'d image fails');
const server = http.createServer((req, res) => res.end((process.env.GEN ?? '1') + ' ' + process.pid));
await listen(server, { port: ${port}, host: '127.0.0.1' });
restartOnSignal('SIGUSR2', { servers: [server], env: { ...process.env, GEN: '2' }, ${options} });
console.log('READY ' + process.pid + ' ' + (process.env.GEN ?? '1'));
`);
}

async function startBridgeApp(dir, mode) {
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, reaper });
  const pid = app.child.pid;
  await waitFor(() => app.out.includes(`READY ${pid} 1`), { what: () => `the first start (${app.err})`, timeout: 30000 });
  put(dir, 'mode.txt', mode);
  process.kill(pid, 'SIGUSR2');
  // The preflight's lines come through the server, marked with its PID.
  // (Marked [preflight PID] until it is up, [bridge PID] from then on.)
  const readyLine = /\[(?:preflight|bridge) (\d+)\] READY \1 2/;
  await waitFor(() => readyLine.test(app.out), { what: () => `the preflight (${app.out}; ${app.err})`, timeout: 30000 });
  const bridge = Number(readyLine.exec(app.out)[1]);
  // The exec'd image has started (its first line) and has not listened yet.
  await waitFor(() => new RegExp(`^START ${pid} 2$`, 'm').test(app.out), { what: () => `the new image (${app.out}; ${app.err})`, timeout: 30000 });
  return { app, pid, bridge };
}

test('bridgeAfter: a preflight that came up within it stands by, stopped, while the new image starts: a request waits for the new image', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-standby-');
  const port = await freePort();
  bridgeApp(dir, port, 'bridgeAfter: 20000');
  const { app, pid, bridge } = await startBridgeApp(dir, 'slow');
  const st = procStat(bridge);
  assert.deepEqual([st?.state, st?.ppid], ['T', pid], 'the bridge is our child, stopped');
  // Sent while only the stopped bridge has the socket open besides the
  // starting image: the kernel queues it, the new image answers it.
  assert.equal(await get(port), `2 ${pid}`);
  // Once up, the new image ended the bridge: continued, drained, exited, reaped.
  await waitFor(() => procStat(bridge) === null, { what: () => `the bridge's end (${JSON.stringify(procStat(bridge))})` });
  assert.deepEqual(zombieChildren(pid), []);
  assert.equal(app.child.exitCode, null);
});

test('by default (bridgeAfter: 0) the preflight keeps accepting while the new image starts: the bridge answers', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-bridge0-');
  const port = await freePort();
  bridgeApp(dir, port, '');
  const { app, pid, bridge } = await startBridgeApp(dir, 'slow');
  assert.notEqual(procStat(bridge)?.state, 'T');
  assert.equal(await get(port), `2 ${bridge}`, 'the bridge serves the new version meanwhile');
  await waitFor(() => procStat(bridge) === null, { what: 'the bridge\'s end' });
  assert.equal(await get(port), `2 ${pid}`);
  assert.equal(app.child.exitCode, null);
});

test('a new image that fails at start-up while the preflight stands by: it is continued and serves', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-cost-standby-fail-');
  const port = await freePort();
  bridgeApp(dir, port, 'bridgeAfter: 20000');
  const { app, pid, bridge } = await startBridgeApp(dir, 'throw');
  await waitFor(() => app.err.includes('failed at start-up'), { what: () => `the guard's report (${app.err})`, timeout: 30000 });
  assert.notEqual(procStat(bridge)?.state, 'T', 'continued');
  assert.equal(await get(port), `2 ${bridge}`, 'the bridge serves while the image waits for a fix');
  assert.equal(app.child.exitCode, null, 'the service lives on');
});

test('bridgeAfter is validated like every duration', () => {
  // Before anything starts: a bad value is the caller's to fix.
  const r = spawnSync(process.execPath, ['-e', `
const { restartViaExec } = require(${JSON.stringify(lib)});
(async () => {
  for (const v of [-1, '10', NaN, Infinity]) await restartViaExec({ bridgeAfter: v }).then(() => console.log('accepted ' + v), (e) => console.log(e.code));
})();`], { encoding: 'utf8' });
  assert.deepEqual(r.stdout.trim().split('\n'), ['ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_TYPE', 'ERR_OUT_OF_RANGE', 'ERR_OUT_OF_RANGE'], r.stderr);
});
