/**
 * "Is this path the very file behind this fd?": the check that makes a path
 * named in an untrusted environment variable (log files, PID files) safe to
 * act on, and that tells whether a file was renamed or replaced under us.
 */
import { fstatSync, lstatSync } from 'node:fs';

/**
 * True when `path` (lstat: a symlink put there is not the file) is the
 * same inode on the same device as the file open on `fd`; false when
 * either is gone. `regularFile`: and it is a regular file.
 */
export function isFileOnFd(fd: number, path: string, { regularFile = false } = {}): boolean {
  try {
    const a = fstatSync(fd, { bigint: true });
    const b = lstatSync(path, { bigint: true });
    return (!regularFile || b.isFile()) && a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}
