// Issue 22, items 8, 17, 18 and 22: what the preflight/bridge leaves
// behind, what it prints, and what a refusal says. Real processes, real
// sockets, /proc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, isAlive, procStat, putFile as put, root, startNode, waitFor } from './helpers.mjs';
import { freePort } from './systemd-helpers.mjs';
import { childPids } from '../dist/posix.mjs';

const { reaper, dirs } = fileScope();
const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;

/**
 * An HTTP server restarted by SIGUSR2 with a preflight. version.mjs holds
 * the version (and whatever a test wants the start to do). Prints
 * "READY <version> <pid> <isBridge>" once listening, "REFUSED <json>" for a
 * refusal, and with `fds`, "FDS <pid> <isBridge> <json>" at start-up: the
 * pipes above 2 that a child started at that moment (ls) inherits.
 */
function writeApp(dir, port, { fds = false } = {}) {
  put(dir, 'app.mjs', `
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { listen, restartOnSignal, isBridge } from ${JSON.stringify(lib)};
console.log('START ' + process.pid + ' ' + isBridge());
console.error('START ' + process.pid);
process.on('exit', () => console.log('EXIT ' + process.pid + ' ' + isBridge()));
${fds ? `
const listing = execFileSync('ls', ['-l', '/proc/self/fd'], { encoding: 'utf8' });
const pipes = listing.split('\\n').map((l) => / (\\d+) -> (pipe:.*)$/.exec(l)).filter((m) => m && Number(m[1]) > 2).map((m) => m[1] + ' ' + m[2]);
console.log('FDS ' + process.pid + ' ' + isBridge() + ' ' + JSON.stringify(pipes));
` : ''}
const { version } = await import('./version.mjs');
const server = http.createServer((req, res) => res.end('V ' + version + ' PID ' + process.pid + '\\n'));
await listen(server, { port: ${port}, host: '127.0.0.1' });
const onError = (err) => {
  console.error('REFUSAL ' + err.message);
  console.log('REFUSED ' + JSON.stringify({ code: err.code, message: err.message, stderr: err.stderr }));
};
// Armed before READY: the test signals as soon as it reads it.
restartOnSignal('SIGUSR2', { servers: [server], onError, preflightTimeout: 120000 });
console.log('READY ' + version + ' ' + process.pid + ' ' + isBridge());
process.on('SIGTERM', () => process.exit(0));
`);
}

async function startApp({ version = '1', env = {}, fds = false } = {}) {
  const dir = dirs.make('pd-preflight-');
  const port = await freePort();
  put(dir, 'version.mjs', `export const version = ${version};\n`);
  writeApp(dir, port, { fds });
  const app = startNode(join(dir, 'app.mjs'), { cwd: dir, env: { ...process.env, ...env }, reaper });
  app.lines = (re) => app.out.split('\n').filter((l) => re.test(l));
  await waitFor(() => app.lines(new RegExp(`^READY 1 ${app.child.pid} false`)).length > 0, { what: 'v1', timeout: 30000 });
  return { dir, port, app };
}

function canListen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** SIGKILLs the service while the preflight of version 2 (`source`) is starting: it must end, and free the port. */
async function killDuringPreflight(source) {
  const { dir, port, app } = await startApp({ env: { NODE_DEBUG: 'posix-daemon' } });
  const pid = app.child.pid;
  put(dir, 'version.mjs', source);
  process.kill(pid, 'SIGUSR2');
  // The preflight runs our code (its debug line came through the forwarder).
  const [, bridge] = await waitFor(() => new RegExp(`POSIX-DAEMON (\\d+): bridge: started by ${pid}`).exec(app.err),
    { what: 'the preflight to start', timeout: 30000 });
  const bridgePid = reaper.add(Number(bridge));
  assert.deepEqual(childPids(pid), [bridgePid]);
  process.kill(pid, 'SIGKILL');
  await app.exited;
  // Gone (not a zombie: it was reparented and reaped), and the port is free.
  await waitFor(() => procStat(bridgePid) === null, {
    what: () => `the preflight ${bridgePid} to end (${JSON.stringify(procStat(bridgePid))})`, timeout: 30000,
  });
  assert.equal(isAlive(bridgePid), false);
  assert.equal(await canListen(port), true, 'the port is free');
}

test('with NODE_DEBUG=posix-daemon, a preflight whose parent is SIGKILLed ends and frees the port', { timeout: 120000 }, async () => {
  // Version 2 never comes up: its start waits for good.
  await killDuringPreflight('export const version = 2;\nawait new Promise(() => setInterval(() => {}, 1000));\n');
});

test('... also when the program ignores SIGTERM (the control pipe\'s EOF ends it) and writes to stdout and stderr meanwhile', { timeout: 120000 }, async () => {
  await killDuringPreflight(`export const version = 2;
process.on('SIGTERM', () => console.error('SIGTERM ignored'));
setInterval(() => { console.log('still starting'); console.error('still starting'); }, 50);
await new Promise(() => {});
`);
});

test('no pipe of the preflight/bridge machinery leaks into a child of the bridge or of the new image', { timeout: 120000 }, async () => {
  const { dir, app } = await startApp({ fds: true });
  const pid = app.child.pid;
  const fdsOf = (p, bridge) => app.lines(new RegExp(`^(\\[preflight ${p}\\] )?FDS ${p} ${bridge} `))
    .map((l) => JSON.parse(l.replace(/^(\[preflight \d+\] )?FDS \d+ \w+ /, '')));
  // (A child of the first start may see pipes the test run inherited from
  // outside; the restarts start from a fork plan and an exec that close
  // every fd they do not keep.)
  assert.equal(fdsOf(pid, false).length, 1, app.out);
  put(dir, 'version.mjs', 'export const version = 2;\n');
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => app.lines(new RegExp(`^READY 2 ${pid} false`)).length > 0, { what: () => `v2: ${app.out} ${app.err}`, timeout: 30000 });
  // The preflight's line, marked with its PID (or not, before issue 22's item 17).
  const bridgeLine = app.lines(/^FDS \d+ true /).concat(app.lines(/^\[preflight \d+\] FDS \d+ true /).map((l) => l.replace(/^\[.*?\] /, '')));
  assert.equal(bridgeLine.length, 1, app.out);
  const bridgePid = reaper.add(Number(bridgeLine[0].split(' ')[1]));
  // A child the preflight started at start-up (control and readiness pipes
  // open then), and one the new image started while the bridge still ran
  // (its control and stderr pipes open then).
  assert.deepEqual(fdsOf(bridgePid, true), [[]], 'a child of the preflight');
  assert.deepEqual(fdsOf(pid, false).slice(1), [[]], 'a child of the new image');
  await waitFor(() => childPids(pid).length === 0, { what: 'the bridge to end', timeout: 30000 });
});

const { checkFile } = createRequire(import.meta.url)('../dist/autorestart/check.js');

test('a file that does not parse: the error shows file:line:column, the source line and its caret', { timeout: 60000 }, async () => {
  const dir = dirs.make('pd-check-');
  const cases = [
    // ESM: acorn refuses, node --check has the last word (its arrow was dropped).
    ['routes.mjs', 'import { a } from "./a.mjs";\nconsole.log(a(1, 2;\n', 2, 18, 'SyntaxError: missing ) after argument list'],
    // CommonJS: V8's own compile.
    ['lib.cjs', 'const a = 1;\n\tfoo(1, 2;\n', 2, 9, 'SyntaxError: missing ) after argument list'],
    ['data.json', '{\n  "a": 1,\n}\n', 3, 1, 'SyntaxError: '],
  ];
  for (const [name, text, line, column, message] of cases) {
    put(dir, name, text);
    const file = join(dir, name);
    const err = await checkFile(file).then(() => null, (e) => e);
    assert.ok(err instanceof SyntaxError, `${name}: ${err}`);
    const lines = err.message.split('\n');
    assert.ok(lines[0].startsWith(`${file} does not parse: ${message}`), err.message);
    assert.equal(lines[1], `${file}:${line}:${column}`, err.message);
    const source = text.split('\n')[line - 1];
    assert.equal(lines[2], source, err.message);
    // The caret sits under the column (a tab stays a tab).
    assert.equal(lines[3].replace(/\^+$/, '').length, column - 1, err.message);
    assert.equal(lines[3].replace(/\^+$/, ''), source.slice(0, column - 1).replace(/[^\t]/g, ' '), err.message);
    assert.deepEqual([err.path, err.line, err.column], [file, line, column]);
  }
});

test('a refused preflight names the file, line and column its start failed at', { timeout: 120000 }, async () => {
  const { dir, app } = await startApp();
  const pid = app.child.pid;
  const file = join(dir, 'version.mjs');
  const cases = [
    ['export const version = 2;\nnotDefinedAnywhere();\n', `ReferenceError: notDefinedAnywhere is not defined at ${file}:2:1`],
    // Not checked before a signal's restart: the preflight's loader finds it.
    ['export const version = 3;\nconsole.log((1, 2;\n', `SyntaxError: Unexpected token ';' at ${file}:2:18`],
  ];
  for (const [i, [source, where]] of cases.entries()) {
    put(dir, 'version.mjs', source);
    process.kill(pid, 'SIGUSR2');
    await waitFor(() => app.lines(/^REFUSED /).length > i, { what: 'a refusal', timeout: 30000 });
    const refusal = JSON.parse(app.lines(/^REFUSED /)[i].slice('REFUSED '.length));
    assert.equal(refusal.code, 'ERR_RESTART_REFUSED');
    assert.equal(refusal.message.split('\n')[0], `restart refused: the new version (preflight pid ${/pid (\d+)/.exec(refusal.message)[1]}) failed at start-up (${where}) and exited with code 1; the running version goes on`);
  }
});

test('every line of the preflight and the bridge is marked with its PID; a refusal prints its stack once', { timeout: 120000 }, async () => {
  const { dir, app } = await startApp();
  const pid = app.child.pid;
  put(dir, 'version.mjs', 'export const version = 2;\n');
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => app.lines(new RegExp(`^READY 2 ${pid} false`)).length > 0, { what: 'v2', timeout: 30000 });
  // Its start-up lines, on stdout and on stderr.
  const m = /^\[preflight (\d+)\] START (\d+) true$/m.exec(app.out);
  assert.ok(m, app.out);
  const bridge = reaper.add(Number(m[1]));
  assert.equal(Number(m[2]), bridge);
  assert.match(app.err, new RegExp(`^\\[preflight ${bridge}\\] START ${bridge}$`, 'm'));
  // None of its lines goes unmarked: READY came before or after it was up.
  // Its lines come through the new image's copy of its output pipe, maybe
  // after the new image's own (READY): wait for them.
  const itsLines = () => [...app.out.split('\n'), ...app.err.split('\n')].filter((l) => l.includes(` ${bridge}`));
  await waitFor(() => itsLines().length >= 3, { what: () => `3 lines of the bridge: ${itsLines().join('\n')}`, timeout: 30000 });
  const its = itsLines();
  for (const l of its) assert.match(l, new RegExp(`^\\[(preflight|bridge) ${bridge}\\] `));
  await waitFor(() => childPids(pid).length === 0, { what: 'the bridge to end', timeout: 30000 });
  // Its last line, written after the exec, came through the new image.
  await waitFor(() => app.out.includes(`\n[bridge ${bridge}] EXIT ${bridge} true\n`), { what: () => `the bridge's last line: ${app.out}` });

  // A refusal: the preflight's stack comes through once, marked, and the
  // error's message (which the program prints) does not repeat it.
  put(dir, 'version.mjs', 'export const version = 3;\nnotDefinedAnywhere();\n');
  process.kill(pid, 'SIGUSR2');
  await waitFor(() => app.lines(/^REFUSED /).length > 0, { what: 'a refusal', timeout: 30000 });
  const refusal = JSON.parse(app.lines(/^REFUSED /)[0].slice('REFUSED '.length));
  const preflight = Number(/preflight pid (\d+)/.exec(refusal.message)[1]);
  const frames = app.err.split('\n').filter((l) => /^(\[preflight \d+\] )?\s+at .*version\.mjs:2:1\)?$/.test(l));
  assert.deepEqual(frames.map((l) => l.replace(/\s+at .*$/, '')), [`[preflight ${preflight}]`], app.err);
  assert.match(app.err, new RegExp(`^\\[preflight ${preflight}\\] ReferenceError: notDefinedAnywhere is not defined$`, 'm'));
  assert.equal(refusal.message.split('\n').length, 1, refusal.message);
  // The end of its stderr is still there for the program.
  assert.match(refusal.stderr, /ReferenceError: notDefinedAnywhere is not defined/);
});
