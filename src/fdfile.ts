/**
 * "Is this path the very file behind this fd?": the check that makes a path
 * named in an untrusted environment variable (log files, PID files) safe to
 * act on, and that tells whether a file was renamed or replaced under us.
 */
import { closeSync, fstatSync, lstatSync, openSync } from 'node:fs';
import { addon } from './native';

/**
 * Options for every fstatSync of an fd that may be a pipe or a socket.
 * Without options, Node's sync stat calls write into one process-wide
 * array that fs.realpathSync reads back for path components it has cached:
 * after an fstat of a pipe or socket, realpathSync stops at the first
 * cached directory and returns the rest unresolved. The module loaders use
 * it, so an import through a symlink (pnpm's node_modules) resolved to the
 * symlink path: a second copy of this library, with its own state. bigint
 * stats use a separate array.
 */
export const NO_SHARED_STAT = { bigint: true } as const;

/**
 * True when `path` (lstat: a symlink put there is not the file) is the
 * same inode on the same device as the file open on `fd`; false when
 * either is gone. `regularFile`: and it is a regular file.
 */
export function isFileOnFd(fd: number, path: string, { regularFile = false } = {}): boolean {
  try {
    const a = fstatSync(fd, NO_SHARED_STAT);
    const b = lstatSync(path, { bigint: true });
    return (!regularFile || b.isFile()) && a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Whether `fd` is open on a pipe (false when it is closed or anything else). */
export function isPipeFd(fd: number): boolean {
  try {
    return fstatSync(fd, NO_SHARED_STAT).isFIFO();
  } catch {
    return false;
  }
}

/** Closes `fd` if it is given and open; an fd already closed is no error. */
export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * Puts /dev/null on stdout or stderr, atomically (dup2 over it while other
 * threads run: the fd is never closed, not even for an instant). For a
 * stdio fd that is ours to give up: a capture file once it served, or a
 * pipe whose reader is gone, where every write would fail with EPIPE.
 */
export function stdioToDevNull(target: 1 | 2): void {
  const nullFd = openSync('/dev/null', 'w');
  try {
    addon.dup2Stdio(nullFd, target);
  } finally {
    closeSync(nullFd);
  }
}
