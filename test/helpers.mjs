// Shared helpers for tests that run real processes. Every test that starts a
// process registers it with a Reaper and kills it in an after() hook:
// daemons outlive their parent, so nothing else would.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { after } from 'node:test';
import { mkdtempSync, readFileSync, readlinkSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const fixtures = join(root, 'test', 'fixtures');

export function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code === 'ESRCH') return false;
    throw err;
  }
  // A zombie still "exists" for kill(0); it is not running.
  const st = procStat(pid);
  return st !== null && st.state !== 'Z';
}

/** Fields of /proc/PID/stat, or null when the process is gone. */
/** The lines of `text` that start with `prefix`, parsed as JSON after it. */
export function jsonLines(text, prefix) {
  return text.split('\n').filter((l) => l.startsWith(prefix)).map((l) => JSON.parse(l.slice(prefix.length)));
}

export function procStat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    state: rest[0],
    ppid: Number(rest[1]),
    pgrp: Number(rest[2]),
    session: Number(rest[3]),
    ttyNr: Number(rest[4]),
  };
}

export function procStatus(pid) {
  const out = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'latin1').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

export function procEnv(pid) {
  const env = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
    if (kv === '') continue;
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

export function procCwd(pid) {
  return readlinkSync(`/proc/${pid}/cwd`);
}

/** fd number → link target, for every open fd of `pid`. */
export function procFds(pid) {
  const out = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out[fd] = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Children of `pid` that are zombies. */
export function zombieChildren(pid) {
  const out = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = procStat(Number(e));
    if (st && st.ppid === pid && st.state === 'Z') out.push(Number(e));
  }
  return out;
}

/**
 * Polls `fn` until it returns a truthy value. For tests only: the library
 * itself never polls. The limit is a safety net against hanging, not a
 * performance assertion. `what` may be a function: it is called at the
 * timeout, so the message shows the state then, not at the call.
 */
export async function waitFor(fn, { timeout = 15000, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(interval);
  }
}

/** Kills everything registered with it; use one per test file. */
export class Reaper {
  pids = new Set();

  add(pid) {
    if (Number.isInteger(pid) && pid > 0) this.pids.add(pid);
    return pid;
  }

  /** Also registers PIDs a child reports on a line like "PID 1234". */
  watchOutput(text) {
    for (const m of String(text).matchAll(/\bPID[ =:](\d+)/g)) this.add(Number(m[1]));
  }

  async killAll() {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const pid of this.pids) {
      await waitFor(() => !isAlive(pid), { timeout: 5000, what: `pid ${pid} to die` }).catch(() => {});
    }
    this.pids.clear();
  }
}

/**
 * Runs `node [nodeArgs] script [args]` and resolves with its exit code,
 * signal, stdout and stderr. Killed after `timeout` ms as a safety net.
 */
export function runNode(script, args = [], { env = process.env, nodeArgs = [], timeout = 30000, cwd, input, reaper } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
      env, cwd, stdio: ['pipe', 'pipe', 'pipe'],
    });
    reaper?.add(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; reaper?.watchOutput(d); });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, pid: child.pid });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Writes `name` in `dir` atomically (a temp file renamed over it), as editors do. */
export function putFile(dir, name, text) {
  const tmp = join(dir, `.${name}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, join(dir, name));
}

/** Temp dirs made by `make()`, all removed by `removeAll()` (an after() hook). */
export class TempDirs {
  #dirs = [];
  make(prefix = 'pd-test-') {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.#dirs.push(d);
    return d;
  }
  removeAll() {
    for (const d of this.#dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * `node [nodeArgs] file [args]` (argv[0] `argv0`, default the node binary's path), registered with `reaper`: `out` and `err`
 * are what it printed so far, `exited` resolves with { code, signal }.
 */
export function startNode(file, { args = [], nodeArgs = [], cwd, env = process.env, reaper, argv0 } = {}) {
  const child = spawn(process.execPath, [...nodeArgs, file, ...args], { cwd, env, argv0, stdio: ['ignore', 'pipe', 'pipe'] });
  reaper?.add(child.pid);
  const run = { child, out: '', err: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => { run.out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { run.err += d; });
  run.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return run;
}

/**
 * A test file's Reaper and TempDirs, with the after() hook that kills what
 * the file started and removes its dirs. Call once, at the top of the file.
 * With `prefix`, `dir` is one temp dir made now, for the whole file.
 */
export function fileScope(prefix) {
  const reaper = new Reaper();
  const dirs = new TempDirs();
  after(async () => {
    await reaper.killAll();
    dirs.removeAll();
  });
  return { reaper, dirs, dir: prefix === undefined ? undefined : dirs.make(prefix) };
}

/** The lowest port of the kernel's ephemeral range (what listen(0) and every outgoing connection take ports from). */
function ephemeralLow() {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function canListen(port, host) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

let hasIPv6;

/**
 * A loopback port free now on 127.0.0.1 (and ::1 where there is one),
 * picked at random BELOW the ephemeral range. A port listen(0) gave is in
 * that range, and until the test binds it again any outgoing connection
 * may take it as its local port (another test file's load client: files
 * run in parallel): EADDRINUSE, seen in CI. Below the range only another
 * test's random pick can collide.
 */
export async function freePort() {
  hasIPv6 ??= await canListen(0, '::1');
  const high = ephemeralLow() - 1;
  const low = Math.max(1024, high - 15000);
  for (let i = 0; i < 200; i++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await canListen(port, '127.0.0.1') && (!hasIPv6 || await canListen(port, '::1'))) return port;
  }
  throw new Error(`no free loopback port between ${low} and ${high}`);
}

/**
 * The calls of an `strace -f -o log` file as { pid, text }, each call's
 * "<unfinished ...>" and "<... resumed>" halves joined and placed where the
 * call STARTED: a clone's result may be logged after its child's first
 * calls (its execve, say), but the clone came first.
 */
export function straceCalls(log) {
  const calls = [];
  const pending = new Map();
  for (const raw of readFileSync(log, 'utf8').split('\n')) {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (!m) continue;
    const [, p, text] = m;
    if (text.endsWith('<unfinished ...>')) {
      pending.set(p, calls.push({ pid: Number(p), text: text.replace(/\s*<unfinished \.\.\.>$/, '') }) - 1);
      continue;
    }
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(text);
    if (resumed) {
      if (pending.has(p)) calls[pending.get(p)].text += resumed[1];
      else calls.push({ pid: Number(p), text: resumed[1] });
      pending.delete(p);
      continue;
    }
    calls.push({ pid: Number(p), text });
  }
  return calls;
}
