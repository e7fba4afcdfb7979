// The one place the addon is loaded. node-gyp-build picks a prebuild from
// prebuilds/<platform>-<arch>/ when one matches, else build/Release.
import { basename, dirname, join } from 'node:path';
import { featureUnavailable } from './errors';

export interface RawWaitResult {
  pid: number;
  status: number;
  exitCode: number | null;
  termSignal: number;
  coreDumped: boolean;
  stopSignal: number;
  continued: boolean;
  rusage?: Record<string, number>;
}

export interface RawSocketInfo {
  type: 'stream' | 'dgram' | 'seqpacket' | 'raw' | 'other';
  listening: boolean;
  family: 'IPv4' | 'IPv6' | 'unix' | 'other';
  address?: string;
  port?: number;
  path?: string;
}

export interface RawExitWatcher {
  close(): void;
  ref(): this;
  unref(): this;
  readonly kind: 'pidfd' | 'kqueue' | 'sigchld';
}

export interface RawProcessHandle {
  readonly fd: number;
  kill(signal: number): boolean;
  watch(callback: () => void): void;
  close(): void;
  ref(): this;
  unref(): this;
}

export interface RawAddon {
  fork(plan: unknown): number;
  /** `pidfd`: the exec level's, opened by its parent intermediate (nested plans on Linux), else -1. */
  fork(plan: unknown, withPidfd: true): { pid: number; pidfd: number };
  execve(file: string, args: string[], env: string[], keepFds?: number[], moveFds?: undefined, blockSignals?: number[]): never;
  dup(fd: number, minFd?: number): number;
  waitpid(pid: number, flags?: number): RawWaitResult;
  wait4(pid: number, flags?: number): RawWaitResult;
  ExitWatcher: new (pid: number, callback: () => void) => RawExitWatcher;
  setsid(): number;
  getsid(pid?: number): number;
  getpgid(pid?: number): number;
  exit(code?: number): never;
  setChildSubreaper(on: boolean): boolean;
  isChildSubreaper(): boolean;
  childPids(pid: number): number[];
  setCloexec(fd: number, on: boolean): void;
  pipe(): [number, number];
  getFdFlags(fd: number): { cloexec: boolean; nonblocking: boolean };
  // init.c (Linux only), pidfd.c, files.c
  initRuntime?(): { interpreter: string | null; glibc: string | null };
  becomeInit?(file: string, argv: string[], env: string[]): never;
  /** With `pidfd`: adopts it (it must be a pidfd of `pid`, or of a reaped process). */
  ProcessHandle: new (pid: number, pidfd?: number) => RawProcessHandle;
  flock(fd: number, operation: 'ex' | 'sh' | 'un'): boolean;
  dup2Stdio(fd: number, target: 1 | 2): void;
  NotifySocket: new (address: string) => RawNotifySocket;
  monotonicUsec(): bigint;
  socketInfo(fd: number): RawSocketInfo | null;
  constants: { WNOHANG: number; WUNTRACED: number; WCONTINUED: number };
  /** Linux only (native/inotify.c). */
  Inotify?: new (callback: (events: Array<number | string | null>) => void) => RawInotify;
  inotifyConstants?: Record<string, number>;
}

export interface RawNotifySocket {
  /** true: queued with the manager; false: its queue is full (EAGAIN), nothing sent. */
  send(message: string, fds?: number[]): boolean;
  /** Calls back whenever the socket is writable, until close(); keeps the loop alive. */
  watch(callback: () => void): void;
  close(): void;
}

export interface RawInotify {
  add(path: string, mask: number): number;
  remove(wd: number): void;
  close(): void;
  ref(): this;
  unref(): this;
  readonly fd: number;
}

if (process.platform === 'win32') {
  throw featureUnavailable('posix-daemon (POSIX process control)');
}

const packageRoot = join(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const nodeGypBuild = require('node-gyp-build') as ((dir: string) => RawAddon) & {
  resolve(dir: string): string;
  parseTags(file: string): { libc?: string } | undefined;
};

/** The raw bindings. Prefer the validated wrappers in `posix`. */
export const addon: RawAddon = nodeGypBuild(packageRoot);

/** Absolute path of the .node file that was loaded (a prebuild or a local build). */
export const addonPath: string = nodeGypBuild.resolve(packageRoot);

/**
 * The libc tag of the loaded file, read the way node-gyp-build reads it
 * (`posix-daemon.napi.musl.node`: 'musl'); null for a local build
 * (build/Release) or an untagged prebuild.
 */
export const addonLibc: 'glibc' | 'musl' | null = (() => {
  const libc = nodeGypBuild.parseTags(basename(addonPath))?.libc;
  return libc === 'glibc' || libc === 'musl' ? libc : null;
})();

/**
 * A file built with the addon, next to it, for the same libc:
 * `companionPath('posix_daemon_hold', '.so')` is `posix_daemon_hold.musl.so`
 * beside a musl prebuild and `posix_daemon_hold.so` in build/Release. Picked
 * by the .node actually loaded, so it always matches it (LIBC, Alpine or
 * not).
 */
export function companionPath(base: string, ext: string): string {
  return join(dirname(addonPath), addonLibc === null ? `${base}${ext}` : `${base}.${addonLibc}${ext}`);
}
