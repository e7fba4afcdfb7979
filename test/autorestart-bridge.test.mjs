// Issue 17: a restart no client can see, and no bad version survives.
// Real processes, real sockets, real files: an HTTP server restarted under
// load (preflight + bridge), a version that throws at start-up and then a
// fixed file, `node --env-file`, a plain `server.listen(port)`, and systemd's
// notify-reload protocol on every way a reload can end.
import { test, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, putFile as put, root, startNode, waitFor, procStat, zombieChildren } from './helpers.mjs';
import { freePort, notifyReceiver } from './systemd-helpers.mjs';
import { childPids } from '../dist/posix.mjs';

const { reaper, dirs } = fileScope();

const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;

const tempDir = () => dirs.make('pd-bridge-');

// POSIX_DAEMON_* variables set around the test run itself (such as
// POSIX_DAEMON_TEST_CONCURRENCY): the program inherits them, and they stay.
const ownVariablesOutside = Object.keys(process.env).filter((k) => k.startsWith('POSIX_DAEMON_'));

/**
 * The app: an HTTP server answering "V <version> PID <pid> BRIDGE <bool>",
 * restarted by `trigger` ('signal': SIGUSR2; 'change': restartOnChange).
 * `plain`: the server listens with a plain server.listen(port) in every
 * image, not with our listen(). Lines on stdout: READY, REFUSED, STATE.
 */
function writeApp(dir, { port, trigger = 'signal', plain = false, options = '{}' }) {
  put(dir, 'app.mjs', `
import http from 'node:http';
import { listen, restartOnSignal, restartOnChange, isBridge } from ${JSON.stringify(lib)};
import { version } from './version.mjs';
const server = http.createServer((req, res) => {
  setTimeout(() => res.end('V ' + version + ' PID ' + process.pid + ' BRIDGE ' + isBridge() + '\\n'), 1);
});
const ready = () => console.log('READY V ' + version + ' PID ' + process.pid + ' BRIDGE ' + isBridge() + ' STATE ' + JSON.stringify({
  execArgv: process.execArgv, argv: process.argv.slice(2),
  ours: Object.keys(process.env).filter((k) => k.startsWith('POSIX_DAEMON_')), FOO: process.env.FOO, BAR: process.env.BAR,
}));
${plain ? `server.listen(${port}, '127.0.0.1', ready);` : `listen(server, { port: ${port}, host: '127.0.0.1' }).then(ready);`}
const onError = (err) => console.log('REFUSED ' + JSON.stringify({ code: err.code, exitCode: err.exitCode, stderr: err.stderr, message: err.message }));
const options = { servers: [server], onError, ...${options} };
${trigger === 'signal' ? 'restartOnSignal(\'SIGUSR2\', options);' : 'restartOnChange({ ...options, persistent: true });'}
process.on('SIGTERM', () => process.exit(0));
`);
}

function start(dir, { nodeArgs = [], env = {} } = {}) {
  const state = startNode(join(dir, 'app.mjs'), { args: ['arg1'], nodeArgs, cwd: dir, env: { ...process.env, ...env }, reaper });
  const { child } = state;
  state.lines = (re) => state.out.split('\n').filter((l) => re.test(l));
  state.readyOf = (version) => state.lines(new RegExp(`^READY V ${version} PID ${child.pid} BRIDGE false`));
  state.stateOf = (version) => JSON.parse(state.readyOf(version).at(-1).replace(/^.* STATE /, ''));
  return state;
}

/** A temp project at `version`, its app started and up (READY of that version from the service's PID). */
async function startAt(version, { app: appOptions = {}, files = {}, nodeArgs, env, dir = tempDir() } = {}) {
  const port = await freePort();
  put(dir, 'version.mjs', `export const version = ${version};\n`);
  for (const [name, text] of Object.entries(files)) put(dir, name, text);
  writeApp(dir, { port, ...appOptions });
  const app = start(dir, { nodeArgs, env });
  await waitFor(() => app.readyOf(version).length > 0, { what: `v${version}`, timeout: 30000 });
  return { dir, port, app };
}

function get(port, agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ ok: res.statusCode === 200, body }));
    });
    req.on('error', (err) => resolve({ ok: false, error: err.code }));
  });
}

/** Loads not stopped yet: a test that fails before stop() must not leave its clients spinning. */
const loads = new Set();
afterEach(() => Promise.all([...loads].map((l) => l.stop())));

/** 4 keep-alive clients in a loop until stop(). */
function load(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const s = { ok: 0, failed: 0, errors: {}, bodies: new Set(), running: true };
  const loops = Array.from({ length: 4 }, async () => {
    while (s.running) {
      const r = await get(port, agent);
      if (r.ok) {
        s.ok++;
        s.bodies.add(r.body.trim().replace(/ PID \d+/, (m) => m));
        s.last = r.body;
      } else {
        s.failed++;
        s.errors[r.error] = (s.errors[r.error] ?? 0) + 1;
      }
    }
  });
  s.stop = async () => {
    loads.delete(s);
    s.running = false;
    await Promise.all(loops);
    agent.destroy();
  };
  loads.add(s);
  return s;
}

test('under load, every restart has a preflight and a bridge: no request fails, same PID, bridges reaped', { timeout: 180000 }, async () => {
  const { dir, port, app } = await startAt(0);
  const l = load(port);
  const restarts = 10;
  for (let n = 1; n <= restarts; n++) {
    put(dir, 'version.mjs', `export const version = ${n};\n`);
    process.kill(app.child.pid, 'SIGUSR2');
    await waitFor(() => app.readyOf(n).length > 0, { what: `v${n}`, timeout: 30000 });
  }
  // The last bridge ends once the last image took its socket.
  await waitFor(() => childPids(app.child.pid).length === 0, { what: 'bridges to end', timeout: 30000 });
  await l.stop();
  assert.equal(l.failed, 0, `failed requests: ${JSON.stringify(l.errors)}`);
  assert.ok(l.ok > restarts, `${l.ok} requests`);
  const bridges = [...l.bodies].filter((b) => / BRIDGE true$/.test(b));
  assert.ok(bridges.length > 0, 'some requests were answered by a bridge');
  assert.deepEqual(zombieChildren(app.child.pid), []);
  // Every bridge was a child of the service's PID, and said so; its lines
  // come through the service's output marked with its PID.
  // (Copied by whichever image holds the bridge's output pipe: possibly
  // after that image's own lines.)
  await waitFor(() => app.lines(/READY V \d+ PID \d+ BRIDGE true/).length >= restarts, { what: () => `every bridge's line: ${app.out}` });
  const bridgeLines = app.lines(/READY V \d+ PID \d+ BRIDGE true/);
  assert.equal(bridgeLines.length, restarts, app.out);
  for (const line of bridgeLines) {
    const [, marked, pid] = /^\[(?:preflight|bridge) (\d+)\] READY V \d+ PID (\d+) /.exec(line);
    assert.equal(marked, pid);
    assert.notEqual(Number(pid), app.child.pid);
  }
  // What the program sees is a first start's view.
  const st = app.stateOf(restarts);
  assert.deepEqual(st.execArgv, []);
  assert.deepEqual(st.argv, ['arg1']);
  assert.deepEqual(st.ours, ownVariablesOutside, 'none of the library\'s variables is left');
  assert.match(await get(port).then((r) => r.body), new RegExp(`^V ${restarts} PID ${app.child.pid} BRIDGE false`));
});

test('a version that throws at start-up is refused by its preflight: the old one answers throughout; the fix restarts', { timeout: 120000 }, async () => {
  const { dir, port, app } = await startAt(1);
  const l = load(port);
  // Parses (a syntax check passes), throws when evaluated.
  put(dir, 'version.mjs', 'export const version = 2;\nnotDefinedAnywhere();\n');
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => app.lines(/^REFUSED /).length > 0, { what: 'refusal', timeout: 30000 });
  const refusal = JSON.parse(app.lines(/^REFUSED /)[0].slice(8));
  assert.equal(refusal.code, 'ERR_RESTART_REFUSED');
  assert.equal(refusal.exitCode, 1);
  assert.match(refusal.stderr, /ReferenceError: notDefinedAnywhere is not defined/);
  assert.match(refusal.message, /restart refused/);
  assert.match((await get(port)).body, new RegExp(`^V 1 PID ${app.child.pid} BRIDGE false`));
  // The next trigger tries again, with the fix.
  put(dir, 'version.mjs', 'export const version = 3;\n');
  process.kill(app.child.pid, 'SIGUSR2');
  await waitFor(() => app.readyOf(3).length > 0, { what: 'v3', timeout: 30000 });
  await l.stop();
  assert.equal(l.failed, 0, `failed requests: ${JSON.stringify(l.errors)}`);
  assert.ok(![...l.bodies].some((b) => b.startsWith('V 2')), 'the broken version never answered');
  assert.match((await get(port)).body, new RegExp(`^V 3 PID ${app.child.pid}`));
});

test('without a preflight, a start that throws keeps the PID and the socket, waits, and the fixed file restarts it', { timeout: 120000 }, async () => {
  const { dir, port, app } = await startAt(1, { app: { trigger: 'change', options: '{ preflight: false }' } });
  put(dir, 'version.mjs', 'export const version = 2;\nnotDefinedAnywhere();\n');
  await waitFor(() => /the new code failed at start-up: ReferenceError: notDefinedAnywhere is not defined; waiting for a change/.test(app.err),
    { what: 'the failure message', timeout: 30000 });
  assert.equal(procStat(app.child.pid)?.state !== 'Z' && procStat(app.child.pid) !== null, true, 'still running');
  // The socket is still open (connections queue in the kernel until the fix).
  const pending = get(port);
  put(dir, 'version.mjs', 'export const version = 3;\n');
  await waitFor(() => app.readyOf(3).length > 0, { what: 'v3', timeout: 30000 });
  assert.match((await pending).body, new RegExp(`^V 3 PID ${app.child.pid}`));
  const st = app.stateOf(3);
  assert.deepEqual(st.execArgv, []);
  assert.deepEqual(st.argv, ['arg1']);
  assert.deepEqual(st.ours, ownVariablesOutside, 'none of the library\'s variables is left');
});

test('a plain server.listen(port) in the next image takes the handed-over socket (no EADDRINUSE)', { timeout: 120000 }, async () => {
  const { dir, port, app } = await startAt(1, { app: { plain: true } });
  const l = load(port);
  for (const v of [2, 3]) {
    put(dir, 'version.mjs', `export const version = ${v};\n`);
    process.kill(app.child.pid, 'SIGUSR2');
    await waitFor(() => app.readyOf(v).length > 0, { what: `v${v}`, timeout: 30000 });
  }
  await l.stop();
  assert.doesNotMatch(app.err, /EADDRINUSE/);
  assert.equal(l.failed, 0, `failed requests: ${JSON.stringify(l.errors)}`);
  assert.match((await get(port)).body, new RegExp(`^V 3 PID ${app.child.pid}`));
});

// --env-file came in Node 20.6: older lines cannot start such a program at all.
const [nodeMajor, nodeMinor] = process.versions.node.split('.').map(Number);
const noEnvFile = nodeMajor < 20 || (nodeMajor === 20 && nodeMinor < 6) ? `node ${process.versions.node} has no --env-file` : false;

test('--env-file: the edited file is seen after a restart; a value set outside the file still wins', { timeout: 120000, skip: noEnvFile }, async () => {
  const { dir, app } = await startAt(1, {
    app: { trigger: 'change' }, files: { '.env': 'FOO=one\nBAR=from-file\n' },
    nodeArgs: ['--env-file=.env'], env: { BAR: 'outside' },
  });
  assert.equal(app.stateOf(1).FOO, 'one');
  assert.equal(app.stateOf(1).BAR, 'outside');
  // The env file is part of the program: editing it restarts.
  put(dir, '.env', 'FOO=two\nBAR=from-file-2\n');
  await waitFor(() => app.readyOf(1).length > 1, { what: 'a restart on the .env change', timeout: 30000 });
  const st = app.stateOf(1);
  assert.equal(st.FOO, 'two');
  assert.equal(st.BAR, 'outside');
  assert.deepEqual(st.execArgv, ['--env-file=.env']);
});

test('Type=notify-reload: a reload whose entry file is missing, or whose preflight fails, ends with READY=1 and a STATUS=', { timeout: 120000 }, async () => {
  const dir = tempDir();
  const address = join(dir, 'notify.sock');
  const rx = await notifyReceiver(address, reaper);
  after(() => rx.stop());
  const { port, app } = await startAt(1, { dir, app: { options: '{ retryInterval: 60000 }' }, env: { NOTIFY_SOCKET: address } });
  const pid = app.child.pid;
  // 1. A refused preflight.
  put(dir, 'version.mjs', 'export const version = 2;\nnotDefinedAnywhere();\n');
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => rx.from(pid).some((m) => /READY=1/.test(m.data)), { what: 'READY=1 after the refusal', timeout: 30000 });
  const msgs = rx.from(pid).map((m) => m.data);
  assert.match(msgs[0], /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
  assert.match(msgs[1], /^READY=1\nSTATUS=reload refused: the new version \(preflight pid \d+\) failed at start-up \(ReferenceError: notDefinedAnywhere is not defined at \/.*\/version\.mjs:2:1\) and exited with code 1; the running version goes on$/);
  assert.equal(rx.messages.filter((m) => m.pid !== pid).length, 0, 'the preflight sent nothing');
  // 2. The entry file is gone.
  put(dir, 'version.mjs', 'export const version = 3;\n');
  renameSync(join(dir, 'app.mjs'), join(dir, 'app.mjs.away'));
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => rx.from(pid).filter((m) => /READY=1/.test(m.data)).length >= 2, { what: 'READY=1 after ENOENT', timeout: 30000 });
  const last = rx.from(pid).map((m) => m.data).slice(-2);
  assert.match(last[0], /^RELOADING=1/);
  assert.match(last[1], /^READY=1\nSTATUS=restart failed \(ENOENT.*\); retrying\nERRNO=2$/);
  assert.match((await get(port)).body, new RegExp(`^V 1 PID ${pid}`));
  unlinkSync(join(dir, 'app.mjs.away'));
});
