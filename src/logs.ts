/**
 * Log files that survive logrotate: a daemon's stdout/stderr files can be
 * reopened at their original paths after a rename.
 *
 * The foreground opens the files (openLogFile, with the daemon's umask) and
 * tells the daemon their paths in POSIX_DAEMON_LOGS (logFilesEnv). The
 * daemon checks them once at start (adoptLogFiles: each path must be the
 * very file on its fd 1 or 2, so the variable cannot point it at any other
 * file), and reopenLogs() later opens the same paths again and puts them on
 * fds 1 and 2.
 */
import { closeSync, constants as fsConstants, fchmodSync, fstatSync, openSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { debuglog } from 'node:util';
import { addon } from './native';
import { isFileOnFd, NO_SHARED_STAT } from './fdfile';
import { toCatchableSignal, validateCString, validateInteger, validateObject } from './validators';

const debug = debuglog('posix-daemon');

/** JSON `{"1": "/abs/out.log", "2": "/abs/err.log"}`, set by the foreground. */
export const LOGS_ENV = 'POSIX_DAEMON_LOGS';

export interface LogFiles {
  stdout?: string;
  stderr?: string;
}

const APPEND = fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT;

/**
 * Opens `path` for appending (O_WRONLY | O_APPEND | O_CREAT, close-on-exec)
 * and returns the fd. A file it creates gets mode `0o666 & ~umask` for the
 * given umask, whatever this process's umask is: created with that mode
 * (the process umask can only take bits away), then widened with fchmod
 * when the process umask took more. Never wider than asked, at any moment.
 * Without `umask`, the process umask applies, as for any open(2).
 */
export function openLogFile(path: string, umask?: number): number {
  validateCString(path, 'path', { allowEmpty: false });
  if (umask === undefined) return openSync(path, APPEND, 0o666);
  validateInteger(umask, 'umask', 0, 0o777);
  const mode = 0o666 & ~umask;
  let fd: number;
  try {
    fd = openSync(path, APPEND | fsConstants.O_EXCL, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return openSync(path, APPEND, mode);  // an existing file keeps its mode
  }
  try {
    if (Number(fstatSync(fd, NO_SHARED_STAT).mode & 0o777n) !== mode) fchmodSync(fd, mode);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return fd;
}

/** For the foreground: the daemon's environment entry naming its log files (absolute paths). */
export function logFilesEnv(files: LogFiles): Record<string, string> {
  validateObject(files as unknown, 'files');
  const out: Record<string, string> = {};
  if (files.stdout !== undefined) {
    validateCString(files.stdout, 'files.stdout', { allowEmpty: false });
    out[1] = resolve(files.stdout);
  }
  if (files.stderr !== undefined) {
    validateCString(files.stderr, 'files.stderr', { allowEmpty: false });
    out[2] = resolve(files.stderr);
  }
  return Object.keys(out).length === 0 ? {} : { [LOGS_ENV]: JSON.stringify(out) };
}

let adopted: Map<1 | 2, string> | null = null;

/**
 * For the daemon, at start (before any rotation): reads POSIX_DAEMON_LOGS
 * and keeps each path that is the file currently on its fd. Anything else
 * in the variable (a path that is not our fd's file, a relative path, junk)
 * is ignored. Returns the adopted paths. Called again (e.g. after
 * restartViaExec) it checks afresh.
 */
export function adoptLogFiles(): LogFiles {
  adopted = new Map();
  const raw = process.env[LOGS_ENV];
  if (raw !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = null;
    }
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
      for (const target of [1, 2] as const) {
        const p = (parsed as Record<string, unknown>)[target];
        if (typeof p !== 'string' || !isAbsolute(p) || p.includes('\0')) continue;
        if (isFileOnFd(target, p, { regularFile: true })) adopted.set(target, p);
        else debug('logs: %s names %j for fd %d, which is not that file; ignored', LOGS_ENV, p, target);
      }
    }
  }
  return { stdout: adopted.get(1), stderr: adopted.get(2) };
}

/**
 * Reopens the log files this daemon was given, at their original paths
 * with the same flags (O_WRONLY | O_APPEND | O_CREAT; a new file gets the
 * daemon's umask), and puts them on fds 1 and 2. Returns the paths
 * reopened. The usual trigger: logrotate renamed the files and sent a
 * signal (see reopenLogsOn).
 */
export function reopenLogs(): LogFiles {
  if (adopted === null) adoptLogFiles();
  const byPath = new Map<string, Array<1 | 2>>();
  for (const [target, path] of adopted!) byPath.set(path, [...(byPath.get(path) ?? []), target]);
  for (const [path, targets] of byPath) {
    const fd = openLogFile(path);
    try {
      // dup2 over 1 and 2 while other threads run (principle 2): harmless.
      // dup2 is atomic: fd 1 is never closed, not even for an instant, so
      // a concurrent write() (Node's stdout is synchronous for files) goes
      // entirely to the old file or entirely to the new one, and no other
      // thread's open() can be handed the number 1 in between. Both files
      // are log files of this daemon; nothing else relies on which one.
      // When stdout and stderr were one file, they stay one open file.
      for (const t of targets) addon.dup2Stdio(fd, t);
    } finally {
      closeSync(fd);
    }
    debug('logs: reopened %s on fd %j', path, targets);
  }
  return { stdout: adopted!.get(1), stderr: adopted!.get(2) };
}

/**
 * Installs a handler that calls reopenLogs() on `signal` (default SIGUSR1,
 * as for daemonize({ reopenLogsOn: 'SIGUSR1' })). Adopts the log files now
 * if that has not happened yet. Returns a function that uninstalls it.
 * Note: a SIGUSR1 listener replaces Node's default SIGUSR1 (inspector).
 */
export function reopenLogsOn(signal: NodeJS.Signals = 'SIGUSR1'): () => void {
  const name = toCatchableSignal(signal, 'signal');
  if (adopted === null) adoptLogFiles();
  const onSignal = (): void => {
    try {
      reopenLogs();
    } catch (err) {
      // A full disk or a removed directory must not kill the daemon; it
      // keeps writing to the files it has.
      debug('logs: reopen failed: %s', (err as Error).message);
      process.emitWarning(`posix-daemon: could not reopen log files: ${(err as Error).message}`);
    }
  };
  process.on(name, onSignal);
  return () => { process.removeListener(name, onSignal); };
}
