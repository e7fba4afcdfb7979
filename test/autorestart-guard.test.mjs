// The start-up guard of an image a restart started (dist/autorestart/guard.js):
// issue 22's items on what it must not change in the program.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fileScope, putFile as put, root, startNode, waitFor } from './helpers.mjs';

const { reaper, dirs } = fileScope();

const lib = pathToFileURL(join(root, 'dist', 'autorestart.mjs')).href;

/** The lines of `text` that start with `prefix`, parsed as JSON after it. */
function jsonLines(text, prefix) {
  return text.split('\n').filter((l) => l.startsWith(prefix)).map((l) => JSON.parse(l.slice(prefix.length)));
}

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
