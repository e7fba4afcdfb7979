// gracefulShutdown() in a single server process: real process, real
// signals, real connections.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { fileScope, fixtures } from './helpers.mjs';
import { startService } from './workers-helpers.mjs';
import { notifyReceiver } from './systemd-helpers.mjs';
import { gracefulShutdown } from '../dist/monitor.mjs';

const { reaper, dir } = fileScope('graceful-test-');

const app = join(fixtures, 'graceful-app.cjs');
const start = (env) => startService(env, { script: app, reaper });
const portOf = (svc) => svc.line(/^PORT /).then((l) => Number(l.split(' ')[1]));

function request(port, path, agent) {
  return new Promise((resolve) => {
    http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({ body, connection: res.headers.connection }));
    }).on('error', (err) => resolve({ error: err.code }));
  });
}

test('SIGTERM: STOPPING=1, in-flight requests finish, idle keep-alive connections close, exit 0', async () => {
  const address = join(dir, 'notify.sock');
  const rx = await notifyReceiver(address, reaper);
  try {
    const svc = start({ NOTIFY_SOCKET: address });
    const port = await portOf(svc);
    // An idle keep-alive connection (one request done), and a request in flight.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await request(port, '/', agent)).body, 'ok');
    const [idle] = Object.values(agent.freeSockets).flat();
    const idleClosed = new Promise((resolve) => idle.on('close', resolve));
    const slow = request(port, '/slow');
    await svc.line(/^REQ \/slow$/);
    process.kill(svc.pid, 'SIGTERM');
    assert.deepEqual(await slow, { body: 'slow done', connection: 'close' });
    await idleClosed;
    const r = await svc.exited;
    assert.equal(r.code, 0, svc.stderr);
    assert.ok(svc.lines.includes('ON_SHUTDOWN'));
    assert.ok(rx.from(svc.pid).some((m) => m.data === 'STOPPING=1'));
  } finally {
    rx.stop();
  }
});

test('delay: the server keeps accepting for `delay` ms after the signal', async () => {
  const svc = start({ GR_DELAY: '3000' });
  const port = await portOf(svc);
  process.kill(svc.pid, 'SIGTERM');
  await svc.line(/^STOPPING$/);
  // New connections are still served during the delay (Kubernetes may still route to us).
  assert.equal((await request(port, '/')).body, 'ok');
  const r = await svc.exited;
  assert.equal(r.code, 0);
});

test('timeout: a request that never ends is cut and the process exits 1', async () => {
  const svc = start({ GR_TIMEOUT: '500' });
  const port = await portOf(svc);
  const hang = request(port, '/hang');
  await svc.line(/^REQ \/hang$/);
  process.kill(svc.pid, 'SIGTERM');
  assert.equal((await hang).error, 'ECONNRESET');
  const r = await svc.exited;
  assert.equal(r.code, 1);
});

test('bad options are rejected', () => {
  assert.throws(() => gracefulShutdown({ servers: [{}] }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => gracefulShutdown({ signals: ['SIGNOPE'] }), { code: 'ERR_UNKNOWN_SIGNAL' });
  assert.throws(() => gracefulShutdown({ delay: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => gracefulShutdown({ timeout: '1' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => gracefulShutdown(null), { code: 'ERR_INVALID_ARG_TYPE' });
});
