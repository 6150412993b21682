/**
 * Opening a path that must name a regular file: a file region's target, a
 * checkpoint and every base of a delta. The one place cowshm opens files by
 * path, so the one place that refuses what is not a file.
 *
 * O_NONBLOCK: opening a FIFO read-only would wait for a writer (forever)
 * before any check could run; with it the open returns at once, and fstat
 * refuses the FIFO. Devices (/dev/zero reads forever) are refused the same
 * way. Regular files ignore O_NONBLOCK. O_NOFOLLOW: a symlink is refused
 * (ELOOP), as a region or checkpoint path never names one.
 */
import { native } from './native';
import * as c from './constants';
import { cowshmError } from './errors';

/** fstat as the addon returns it: [size, uid, gid, mode, dev, ino, nlink]. */
export type FileStat = [number, number, number, number, number, number, number];

/** `'FILE' is not a regular file: WHY`, code ERR_COWSHM_NOT_A_FILE, with `path`. */
export function notAFile(file: string, why: string): Error & { code: string; path: string } {
  const err = cowshmError('ERR_COWSHM_NOT_A_FILE', `'${file}' is not a regular file: ${why}`);
  return Object.assign(err, { path: file });
}

/** Opens `file` with `flags` (plus O_NONBLOCK | O_NOFOLLOW) and returns it only if it is a regular file. */
export function openRegular(file: string, flags: number, mode: number, why: string): { fd: number; stat: FileStat } {
  const fd = native.open(file, flags | c.O_NONBLOCK | c.O_NOFOLLOW, mode);
  try {
    const stat = native.fstat(fd, file);
    if ((stat[3] & c.S_IFMT) !== c.S_IFREG) throw notAFile(file, why);
    return { fd, stat };
  } catch (err) {
    native.close(fd);
    throw err;
  }
}
