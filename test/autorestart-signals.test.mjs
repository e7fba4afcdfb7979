// restartOnSignal: a repeated trigger never hurts. A second SIGUSR2 while the
// first restart drains the servers is folded into that restart: the
// in-flight request completes, and the process lives on under its PID.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Reaper, fixtures, root, waitFor } from './helpers.mjs';
import { App } from './fixtures/autorestart-harness.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

function get(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

test('two SIGUSR2 in a row during a slow drain: the request completes, one restart, same PID', async () => {
  const app = new App([join(fixtures, 'autorestart-slow-drain.cjs')], {
    reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, cwd: fixtures,
  });
  const [, , pid, port] = await app.nextLine(/^ready (0) (\d+) (\d+)$/, 'first start');
  assert.equal(Number(pid), app.pid);
  const slow = get(Number(port), '/slow');
  await app.nextLine(/^slow-started$/);
  process.kill(app.pid, 'SIGUSR2');
  await waitFor(() => /SIGUSR2 received, restarting/.test(app.stderr), { what: 'the restart to begin' });
  process.kill(app.pid, 'SIGUSR2');
  const res = await slow;
  assert.deepEqual(res, { status: 200, body: `slow done by 0 ${app.pid}\n` }, 'the in-flight request completed');
  const m = await app.nextLine(/^ready (\d+) (\d+) (\d+)$/, 'the new image');
  assert.deepEqual([m[1], Number(m[2]), m[3]], ['1', app.pid, port], 'one restart, same PID, same port');
  assert.deepEqual(await get(Number(port), '/'), { status: 200, body: `gen 1 ${app.pid}\n` });
  assert.equal(app.child.exitCode, null, 'still running');
  assert.equal(app.child.signalCode, null);
});

test('more SIGHUPs while the new image is still starting (not yet re-armed) fold into the restart, before and after the image counts as up: the service lives on', async () => {
  const app = new App([join(fixtures, 'autorestart-slow-start.mjs')], {
    reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, cwd: fixtures,
  });
  await app.nextLine(/^ready 0 (\d+)$/, 'first start');
  process.kill(app.pid, 'SIGHUP');
  await app.nextLine(new RegExp(`^starting 1 ${app.pid}$`), 'the new image starting');
  // The exec reset SIGHUP to its default action (terminate); the program
  // arms it again only once its start goes on ("go").
  process.kill(app.pid, 'SIGHUP');
  // On Node 22 and later the guard counts an ES main as evaluated (the
  // image as up) at once, long before the program arms SIGHUP: the hold
  // must outlast that. On 18 and 20 it is up only once the top-level await
  // settles, so there is nothing to wait for.
  await waitFor(() => /guard: up/.test(app.stderr), { what: 'the guard to count the image as up', timeout: 3000 }).catch(() => {});
  process.kill(app.pid, 'SIGHUP');
  // Each delivery was seen (and folded) before the program may go on.
  await waitFor(() => (app.stderr.match(/guard: SIGHUP while the new image starts: folded into the restart in progress/g) ?? []).length === 2,
    { what: () => `two folded SIGHUPs (exit ${app.child.exitCode ?? app.child.signalCode}); stderr: ${app.stderr}` });
  app.send('go');
  await app.nextLine(new RegExp(`^ready 1 ${app.pid}$`), 'the new image ready');
  assert.equal(app.child.exitCode, null, 'still running');
  assert.equal(app.child.signalCode, null, 'not killed by a held SIGHUP');
  assert.match(app.stderr, /guard: SIGHUP armed again by the program: no longer held/);
  assert.equal(app.lines.filter((l) => l.startsWith('starting ')).length, 2, 'the held SIGHUPs started no restart of their own');
  // Once the program armed it again, SIGHUP restarts as before.
  process.kill(app.pid, 'SIGHUP');
  await app.nextLine(new RegExp(`^starting 2 ${app.pid}$`), 'a restart after the held ones');
  app.send('go');
  await app.nextLine(new RegExp(`^ready 2 ${app.pid}$`), 'the next image ready');
});

test('an image whose top-level await never settles is up one preflightTimeout after the exec at the latest: a later crash ends it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pd-guard-timeout-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'app.mjs');
  writeFileSync(file, `
import { restartOnSignal } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href)};
const gen = Number(process.env.GEN ?? 0);
process.on('SIGUSR1', () => setImmediate(() => { throw new Error('crash in gen ' + gen); }));
setInterval(() => {}, 1000);   // its work (a server would keep it alive)
const restarting = restartOnSignal('SIGUSR2', { preflightTimeout: 1000, env: { ...process.env, GEN: String(gen + 1) } });
console.log('ready ' + gen + ' ' + process.pid);   // armed first: the test signals on reading this
// The main module's evaluation never ends: this await never settles.
await restarting;
`);
  const app = new App([file], { reaper, env: { ...process.env, NODE_DEBUG: 'posix-daemon' }, cwd: dir });
  await app.nextLine(/^ready 0 \d+$/, 'first start');
  process.kill(app.pid, 'SIGUSR2');
  await app.nextLine(new RegExp(`^ready 1 ${app.pid}$`), 'the new image');
  // The guard goes when the main module is evaluated if this Node can tell
  // (22 and later: at once, despite the pending await), else one
  // preflightTimeout after the exec at the latest (18, 20).
  await waitFor(() => /guard: up \((main module evaluated|timeout)\)/.test(app.stderr), { what: () => `the guard to go: ${app.stderr}` });
  process.kill(app.pid, 'SIGUSR1');
  const r = await new Promise((resolve) => {
    if (app.child.exitCode !== null || app.child.signalCode !== null) resolve({ code: app.child.exitCode });
    else app.child.once('exit', (code) => resolve({ code }));
  });
  assert.equal(r.code, 1, app.stderr);
  assert.match(app.stderr, /Error: crash in gen 1/);
  assert.doesNotMatch(app.stderr, /failed at start-up/);
});

test('notifyOnChange and restartOnChange take the documented node_modules option', async () => {
  const { notifyOnChange, restartOnChange } = await import('../dist/autorestart.mjs');
  const ac = new AbortController();
  const it = notifyOnChange({ node_modules: true, signal: ac.signal });
  ac.abort();
  await assert.rejects(it.next(), { name: 'AbortError' });
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(restartOnChange({ node_modules: true, signal: pre.signal }), { name: 'AbortError' });
});

const [major, minor] = process.versions.node.split('.').map(Number);
test('restartOnChange under --env-file-if-exists with no such file: watches the program, no ENOENT', {
  skip: major > 22 || (major === 22 && minor >= 9) ? false : 'no --env-file-if-exists before Node 22.9',
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pd-env-if-exists-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'app.mjs');
  writeFileSync(file, `
import { restartOnChange } from ${JSON.stringify(pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href)};
restartOnChange({ onError: (e) => console.log('ERROR ' + e.message) }).catch((e) => console.log('REJECTED ' + e.code + ' ' + e.message));
setTimeout(() => { console.log('still watching'); process.exit(0); }, 500);
`);
  const app = new App(['--env-file-if-exists=.env.missing', file], { reaper, cwd: dir });
  await app.nextLine(/^still watching$/, 'the program after its watch was set up');
  assert.deepEqual(app.lines.filter((l) => /^(ERROR|REJECTED)/.test(l)), []);
});
