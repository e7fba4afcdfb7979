// posix-daemon/initstatus: real child processes, real pipes and sockets.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import { connect, createServer } from 'node:net';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reaper, fixtures, isAlive, runNode } from './helpers.mjs';
import { receiver, report } from '../dist/initstatus.mjs';

// String#isWellFormed is Node >= 20; the suite also runs on 18.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const reporter = join(fixtures, 'daemon-reporter.mjs');
const reaper = new Reaper();
const started = new Set();
const tmp = mkdtempSync(join(tmpdir(), 'posix-daemon-initstatus-'));

after(async () => {
  await reaper.killAll();
  rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual([...started].filter(isAlive), [], 'no child may outlive the tests');
});

/**
 * Starts the reporter with the receiver's pipe end on fd 3 of the child
 * (address 'fd:3' there), or with an http address. Resolves with the parsed
 * JSON lines it printed, once it exited.
 */
function startReporter(mode, rx, { address, env = {} } = {}) {
  const stdio = ['pipe', 'pipe', 'pipe'];
  let addr = address ?? rx.address;
  if (rx?.childFd != null && address === undefined) {
    stdio[3] = rx.childFd;
    addr = 'fd:3';
  }
  const child = spawn(process.execPath, [reporter, mode], { stdio, env: { ...process.env, ...env, ADDR: addr } });
  reaper.add(child.pid);
  started.add(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const done = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      let lines = [];
      try {
        lines = stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
      } catch {
        // asserted by the caller through code/stdout
      }
      resolve({ code, signal, stdout, stderr, lines });
    });
  });
  return { child, done };
}

describe('pipe transport', () => {
  test('ready: wait() resolves, a second report is a no-op, the variable is marked', async () => {
    const rx = await receiver();
    assert.equal(rx.transport, 'pipe');
    assert.match(rx.address, /^fd:\d+$/);
    assert.equal(rx.address, `fd:${rx.childFd}`);
    const { done } = startReporter('ready', rx);
    rx.childStarted();
    await rx.wait();
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.lines[0], { pid: r.lines[0].pid, first: true, second: false, env: 'reported:fd:3' });
    rx.close();
  });

  test('an Error status arrives as the rejection message, newlines and UTF-8 intact', async () => {
    const rx = await receiver();
    const { done } = startReporter('error', rx);
    rx.childStarted();
    await assert.rejects(rx.wait(), (err) => {
      assert.ok(err instanceof Error);
      assert.equal(err.message, 'bad\nthing: ünïcode');
      return true;
    });
    assert.equal((await done).lines[0].first, true);
  });

  test('a string status is a failure message', async () => {
    const rx = await receiver();
    const { done } = startReporter('string', rx);
    rx.childStarted();
    await assert.rejects(rx.wait(), { message: 'plain failure' });
    await done;
  });

  test('EOF without a status: the child exited before it reported', async () => {
    const rx = await receiver();
    const { done } = startReporter('none', rx);
    rx.childStarted();
    await assert.rejects(rx.wait(), { code: 'ERR_INITSTATUS_EOF', message: /exited before it reported/ });
    assert.equal((await done).code, 0);
  });

  test('a report after the receiver went away returns false, does not throw or hang', async () => {
    const rx = await receiver();
    const { child, done } = startReporter('late', rx);
    rx.childStarted();
    rx.close();
    await assert.rejects(rx.wait(), { code: 'ERR_INITSTATUS_CLOSED', message: /file already closed/ });
    child.stdin.end('go\n');
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.signal, null);
    assert.equal(r.lines[0].first, false);
    assert.equal(r.lines[0].second, false);
    // The receiver is gone for good: the variable is marked so a restarted image won't try.
    assert.equal(r.lines[0].env, 'reported:fd:3');
  });

  test('an image restarted in place by execve sees the marker and does not report again', async () => {
    const rx = await receiver();
    const { done } = startReporter('exec-restart', rx);
    rx.childStarted();
    await rx.wait();
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    const [before, afterExec] = r.lines;
    assert.deepEqual(before, { pid: before.pid, first: true, env: 'reported:fd:3' });
    assert.deepEqual(afterExec, { pid: before.pid, restarted: true, env: 'reported:fd:3', again: false });
  });

  test('a message over the pipe line limit is cut on a character boundary', async () => {
    for (const [ch, n] of [['😀', 2000], ['€', 3000], ['é\n', 2000], ['a', 5000]]) {
      const rx = await receiver();
      const message = ch.repeat(n);
      const { done } = startReporter('long', rx, { env: { MESSAGE: message } });
      rx.childStarted();
      const got = await rx.wait().then(() => assert.fail('not ready'), (e) => e.message);
      assert.equal((await done).lines[0].first, true);
      assert.doesNotMatch(got, LONE_SURROGATE, `${JSON.stringify(ch)}: no lone surrogate`);
      assert.ok(!got.includes('\ufffd'), `${JSON.stringify(ch)}: no U+FFFD`);
      assert.ok(message.startsWith(got), `${JSON.stringify(ch)}: a prefix of the message`);
      const line = Buffer.byteLength(`error ${JSON.stringify(got)}\n`);
      assert.ok(line <= 4096, `line of ${line} bytes`);
      // Cut where the limit is, not far below it.
      assert.ok(line > 4096 - Buffer.byteLength(JSON.stringify(ch)), `${JSON.stringify(ch)}: line of ${line} bytes`);
    }
  });

  test('an fd:N address whose fd is not a pipe is left alone', async () => {
    const file = join(tmp, 'not-a-pipe.txt');
    writeFileSync(file, 'untouched');
    const fd = openSync(file, 'r+');
    try {
      assert.equal(await report(`fd:${fd}`), false);
      assert.ok(fstatSync(fd).isFile(), 'still open');
      assert.equal(readFileSync(file, 'utf8'), 'untouched');
    } finally {
      closeSync(fd);
    }
    assert.equal(await report('fd:987654'), false, 'a closed fd');
  });
});

describe('http transport', () => {
  /** A hand-written POST (as Go's Report sends it) to the address's path, or to `path`. */
  function rawPost(address, body, path = new URL(address).pathname) {
    const { port } = new URL(address);
    return new Promise((resolve, reject) => {
      const s = connect(Number(port), '127.0.0.1', () => {
        s.end(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/plain\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      });
      let res = '';
      s.setEncoding('utf8');
      s.on('data', (d) => { res += d; });
      s.on('end', () => resolve(res));
      s.on('error', reject);
    });
  }

  test('a raw HTTP POST with a body is the failure message; the first POST wins', async () => {
    const rx = await receiver({ transport: 'http' });
    assert.equal(rx.transport, 'http');
    assert.equal(rx.childFd, null);
    assert.match(rx.address, /^http:\/\/127\.0\.0\.1:\d+\/[A-Za-z0-9_-]{22,}$/);
    const waiting = assert.rejects(rx.wait(), { message: 'cannot bind :80' });
    const res = await rawPost(rx.address, 'cannot bind :80');
    assert.match(res, /^HTTP\/1\.1 200 /);
    await waiting;
    // The server is closed once a status arrived.
    await assert.rejects(rawPost(rx.address, ''), { code: 'ECONNREFUSED' });
    await assert.rejects(rx.wait(), { message: 'cannot bind :80' }, 'the first status stays');
  });

  test('a POST to any other path gets 404 and decides nothing; only the token path counts', async () => {
    const rx = await receiver({ transport: 'http' });
    const token = new URL(rx.address).pathname;
    assert.ok(Buffer.from(token.slice(1), 'base64url').length >= 16, 'at least 128 random bits');
    const other = await receiver({ transport: 'http' });
    assert.notEqual(new URL(other.address).pathname, token, 'a fresh token per receiver');
    other.close();
    let settled = null;
    const waiting = rx.wait().then(() => { settled = 'resolved'; }, (e) => { settled = `rejected: ${e.message}`; });
    // What another local user can do without the token: the root, a guess
    // of the same length, the token as a prefix, with a query.
    const guess = `/${'A'.repeat(token.length - 1)}`;
    for (const path of ['/', guess, `${token}x`, `${token}/`, `${token}?a=1`, '/status']) {
      assert.match(await rawPost(rx.address, 'forged failure', path), /^HTTP\/1\.1 404 /, path);
      assert.match(await rawPost(rx.address, '', path), /^HTTP\/1\.1 404 /, path);
    }
    // The 404s were answered: had any of them decided, wait() would have settled by now.
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, null, 'wait() neither resolved nor rejected');
    assert.match(await rawPost(rx.address, ''), /^HTTP\/1\.1 200 /);
    await waiting;
    assert.equal(settled, 'resolved');
  });

  test('a body over the 64 KiB cap is cut on a character boundary (receiving)', async () => {
    for (const ch of ['é', '€', '😀']) {
      const rx = await receiver({ transport: 'http' });
      // The cap falls inside the last character.
      const body = 'a'.repeat(64 * 1024 - 1) + ch.repeat(3);
      const waiting = rx.wait().then(() => assert.fail('not ready'), (e) => e.message);
      assert.match(await rawPost(rx.address, body), /^HTTP\/1\.1 200 /);
      const message = await waiting;
      assert.equal(message, 'a'.repeat(64 * 1024 - 1), `${ch}: no U+FFFD, nothing after the last whole character`);
    }
  });

  test('a message over the 64 KiB cap is cut on a character boundary (reporting)', async () => {
    const bodies = [];
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        res.end();
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    try {
      const base = `http://127.0.0.1:${server.address().port}`;
      const message = 'a'.repeat(64 * 1024 - 2) + '€'.repeat(3);
      assert.equal(await report(`${base}/one`, message), true);
      const body = bodies[0];
      assert.ok(body.length <= 64 * 1024, `sent ${body.length} bytes`);
      assert.equal(body.toString('utf8'), 'a'.repeat(64 * 1024 - 2), 'valid UTF-8, cut before the split character');
      // Under the cap nothing is cut.
      assert.equal(await report(`${base}/two`, '€'.repeat(100)), true);
      assert.equal(bodies[1].toString('utf8'), '€'.repeat(100));
    } finally {
      server.close();
    }
  });

  test('a raw HTTP POST with an empty body means ready', async () => {
    const rx = await receiver({ transport: 'http' });
    const waiting = rx.wait();
    assert.match(await rawPost(rx.address, ''), /^HTTP\/1\.1 200 /);
    await waiting;
  });

  test('report() from a child process over HTTP', async () => {
    const rx = await receiver({ transport: 'http' });
    const { done } = startReporter('error', rx);
    await assert.rejects(rx.wait(), { message: 'bad\nthing: ünïcode' });
    assert.equal((await done).lines[0].first, true);
  });

  test('report() speaks plain HTTP to a hand-written server (ours to theirs)', async () => {
    const requests = [];
    const server = createServer((s) => {
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d) => {
        buf += d;
        const head = buf.indexOf('\r\n\r\n');
        if (head === -1) return;
        const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
        if (Buffer.byteLength(buf.slice(head + 4)) < len) return;
        requests.push({ head: buf.slice(0, head), body: buf.slice(head + 4) });
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      });
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const address = `http://127.0.0.1:${server.address().port}/status`;
    try {
      assert.equal(await report(address, 'it broke'), true);
      assert.equal(await report(address, 'again'), false, 'second report is a no-op');
      const other = `http://127.0.0.1:${server.address().port}/other`;
      assert.equal(await report(other), true);
    } finally {
      server.close();
    }
    assert.equal(requests.length, 2);
    assert.match(requests[0].head, /^POST \/status HTTP\/1\.1\r\n/);
    assert.equal(requests[0].body, 'it broke');
    assert.match(requests[1].head, /^POST \/other HTTP\/1\.1\r\n/);
    assert.equal(requests[1].body, '', 'ready is an empty body');
  });

  test('a report to a receiver that is gone returns false', async () => {
    const rx = await receiver({ transport: 'http' });
    const address = rx.address;
    rx.close();
    assert.equal(await report(address), false);
  });
});

describe('receiver lifecycle', () => {
  for (const transport of ['pipe', 'http']) {
    test(`${transport}: close() rejects a pending and a later wait() with ERR_INITSTATUS_CLOSED`, async () => {
      const rx = await receiver({ transport });
      const pending = rx.wait();
      rx.close();
      await assert.rejects(pending, { code: 'ERR_INITSTATUS_CLOSED' });
      await assert.rejects(rx.wait(), { code: 'ERR_INITSTATUS_CLOSED' });
      rx.close();  // idempotent
    });

    test(`${transport}: wait(signal) rejects with signal.reason; receiver({ signal }) ends the receiver`, async () => {
      const rx = await receiver({ transport });
      const ac = new AbortController();
      const pending = rx.wait(ac.signal);
      const reason = new Error('gave up');
      ac.abort(reason);
      await assert.rejects(pending, (err) => err === reason);
      rx.close();

      const owner = new AbortController();
      const rx2 = await receiver({ transport, signal: owner.signal });
      const pending2 = rx2.wait();
      owner.abort(new Error('context cancelled'));
      await assert.rejects(pending2, { message: 'context cancelled' });
      if (transport === 'http') assert.equal(await report(rx2.address), false, 'server closed');
    });
  }

  test('receivers nobody waits on never keep the process alive', async () => {
    const r = await runNode(join(fixtures, 'daemon-idle-receivers.mjs'), [], { reaper });
    started.add(r.pid);
    assert.equal(r.signal, null, 'ended by itself');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^created fd:\d+ http:\/\/127\.0\.0\.1:\d+\/[\w-]+$/m);
  });
});

describe('validation', () => {
  test("report('') and report(undefined) are no-ops, as in Go", async () => {
    assert.equal(await report(''), false);
    assert.equal(await report(undefined, new Error('x')), false);
  });

  test('bad argument types throw with Node codes', async () => {
    await assert.rejects(report(5), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(report('fd:3', 5), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(report('fd:3', {}), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(report('fd:3', ''), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(receiver('pipe'), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(receiver({ transport: 'udp' }), { code: 'ERR_INVALID_ARG_VALUE' });
    await assert.rejects(receiver({ transport: 1 }), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(receiver({ signal: {} }), { code: 'ERR_INVALID_ARG_TYPE' });
    await assert.rejects(receiver({ signal: AbortSignal.abort() }), { name: 'AbortError' });
    const rx = await receiver();
    assert.throws(() => rx.wait('no'), { code: 'ERR_INVALID_ARG_TYPE' });
    rx.close();
  });

  test('malformed addresses are not delivered and do not throw', async () => {
    assert.equal(await report('fd:abc'), false);
    assert.equal(await report('ftp://127.0.0.1/'), false);
    assert.equal(await report('not a url'), false);
  });
});
