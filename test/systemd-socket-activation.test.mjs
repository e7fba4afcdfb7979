// Socket activation by systemd's own tool: an HTTP server takes the sockets
// systemd-socket-activate hands it with listen() (by name or by address)
// and keeps serving through in-place restarts: same PID, no request refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fixtures, Reaper, waitFor, procFds } from './helpers.mjs';
import { freePort } from './systemd-helpers.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

function get(port, agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, agent, path: '/' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', (err) => resolve({ error: err.code }));
  });
}

/**
 * Starts the fixture under systemd-socket-activate with one -l per port,
 * SD_LISTEN as the listen() options, and `fdnames`; restarts it `restarts`
 * times with SIGHUP (what systemd sends a Type=notify-reload unit) while
 * clients keep requesting on every port.
 */
async function activateAndRestart({ ports, fdnames, listenOptions, restarts = 3 }) {
  const args = [];
  for (const p of ports) args.push('-l', `127.0.0.1:${p}`);
  if (fdnames) args.push(`--fdname=${fdnames}`);
  // systemd-socket-activate passes on only the environment it is told to.
  args.push('-E', `SD_LISTEN=${JSON.stringify(listenOptions)}`, process.execPath, join(fixtures, 'systemd-server.cjs'));
  const child = spawn('systemd-socket-activate', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  reaper.add(child.pid);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
  await waitFor(() => ports.every((p) => err.includes(`:${p} as`)), { what: `systemd-socket-activate listening: ${err}` });

  // The first connection makes systemd-socket-activate exec the server
  // (same PID); it waits in the accept queue meanwhile.
  const first = await get(ports[0]);
  assert.match(first.body ?? '', /^GEN 0 /, `first request: ${JSON.stringify(first)} ${out} ${err}`);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const seen = ports.map(() => ({ ok: 0, failed: [], newestGen: 0, pids: new Set(), names: new Set() }));
  let running = true;
  const clients = ports.flatMap((port, i) => Array.from({ length: 2 }, async () => {
    while (running) {
      const r = await get(port, agent);
      const m = /^GEN (\d+) PID (\d+) NAME (.*)\n$/.exec(r.body ?? '');
      if (r.status === 200 && m) {
        seen[i].ok++;
        seen[i].newestGen = Math.max(seen[i].newestGen, Number(m[1]));
        seen[i].pids.add(Number(m[2]));
        seen[i].names.add(m[3]);
      } else {
        seen[i].failed.push(r.error ?? r.status);
      }
    }
  }));
  // A failed wait must not leave the clients looping against a dead server
  // (the file would never finish): they stop on every way out.
  try {
    for (let n = 1; n <= restarts; n++) {
      // The image itself (a restart's bridge answers for the next generation
      // before the exec; a signal then folds into that restart).
      await waitFor(() => out.includes(`READY GEN ${n - 1} PID ${child.pid} `), { what: `generation ${n - 1}: ${out}` });
      process.kill(child.pid, 'SIGHUP');
      await waitFor(() => seen.every((s) => s.newestGen >= n) && out.includes(`READY GEN ${n} PID ${child.pid} `),
        { what: `generation ${n} on every port: ${out} ${err.slice(-3000)}`, timeout: 60000 });
    }
  } finally {
    running = false;
    await Promise.all(clients);
    agent.destroy();
  }
  // A bridge that answered has said so on a line the image holding its
  // output pipe copies, possibly after that image's own: wait for it.
  await waitFor(() => seen.every((s) => [...s.pids].every((p) => p === child.pid || out.includes(` PID ${p} `))),
    { what: () => `the bridges' lines: ${out}` });
  const fds = procFds(child.pid);
  process.kill(child.pid, 'SIGTERM');
  return { pid: child.pid, out, seen, fds };
}

function assertServedThrough(r, restarts) {
  for (const s of r.seen) {
    assert.deepEqual(s.failed, [], 'no request refused or reset');
    assert.ok(s.ok > restarts, `${s.ok} requests served`);
    // Every generation under systemd-socket-activate's PID; any other PID
    // that answered was a restart's bridge (its child).
    const bridges = new Set([...r.out.matchAll(/^(?:\[(?:preflight|bridge) \d+\] )?READY GEN \d+ PID (\d+) /gm)].map((m) => Number(m[1])).filter((p) => p !== r.pid));
    assert.ok(s.pids.has(r.pid));
    for (const p of s.pids) assert.ok(p === r.pid || bridges.has(p), `pid ${p} answered`);
  }
  const lines = r.out.trim().split('\n').filter((l) => l.includes(` PID ${r.pid} `));
  assert.equal(lines.length, restarts + 1, r.out);
  for (const line of lines) assert.doesNotMatch(line, /:bound:/, `every image took systemd's sockets: ${line}`);
}

test('without --fdname ("unknown"): listen({ port, host }) matches systemd\'s socket by address, through 3 restarts', { timeout: 120000 }, async () => {
  const port = await freePort();
  const r = await activateAndRestart({ ports: [port], listenOptions: [{ port, host: '127.0.0.1' }] });
  assertServedThrough(r, 3);
  assert.match(r.out, new RegExp(`READY GEN 3 PID ${r.pid} unknown:inherited:${port}`));
});

test('with --fdname=web: listen({ name: "web" }) finds it by name, and the name survives 3 restarts', { timeout: 120000 }, async () => {
  const port = await freePort();
  // port 0 never matches by address: only the name can find the socket,
  // in the first image and in every later one.
  const r = await activateAndRestart({ ports: [port], fdnames: 'web', listenOptions: [{ name: 'web', port: 0, host: '127.0.0.1' }] });
  assertServedThrough(r, 3);
  assert.match(r.out, new RegExp(`READY GEN 3 PID ${r.pid} web:inherited:${port}`));
  assert.deepEqual([...r.seen[0].names], ['web']);
});

test('two -l sockets (one named, one matched by a wildcard host): each server gets its own, through 3 restarts', { timeout: 120000 }, async () => {
  const [a, b] = [await freePort(), await freePort()];
  const r = await activateAndRestart({
    ports: [a, b], fdnames: 'api:unknown',
    listenOptions: [{ port: b }, { name: 'api', port: a, host: '127.0.0.1' }],
  });
  assertServedThrough(r, 3);
  assert.match(r.out, new RegExp(`READY GEN 3 PID ${r.pid} unknown:inherited:${b} api:inherited:${a}`));
  // Two sockets in the last image, nothing piling up across restarts.
  const sockets = Object.values(r.fds).filter((l) => l.startsWith('socket:'));
  assert.ok(sockets.length < 12, JSON.stringify(r.fds));
});
