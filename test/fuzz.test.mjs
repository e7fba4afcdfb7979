// Garbage thrown straight at the raw addon must throw JS errors, never abort
// or crash the process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixtures, runNode, Reaper } from './helpers.mjs';

const reaper = new Reaper();
after(() => reaper.killAll());

for (const seed of [1, 2, 3, 4]) {
  test(`raw bindings survive random arguments (seed ${seed})`, async () => {
    const r = await runNode(join(fixtures, 'fuzz-raw.cjs'), [String(seed), '2500'], { reaper, timeout: 60000 });
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
    assert.equal(r.code, 0, r.stderr);
    const m = /SURVIVED (\d+) calls, (\d+) threw/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    assert.ok(Number(m[1]) > 1000, `made ${m[1]} calls`);
    assert.ok(Number(m[2]) > 0, 'garbage was rejected');
  });
}
