/**
 * Liveness through file locks: the one mechanism cowshm uses to tell whether
 * the owner of something (a checkpoint's temporary file, a lock in a region, a
 * segment held open) is still alive.
 *
 * The owner holds a lock; anyone else tries a non-blocking lock of their own,
 * and success means the owner is gone. The kernel drops the lock when the
 * owner's open file description goes away: on exit, kill -9, a worker closing
 * its descriptors, in any pid namespace, and on hosts sharing an NFS directory.
 * A pid cannot do this (reused, namespaced, shared by worker threads).
 *
 * Range locks (`lockRange`) are OFD locks (F_OFD_SETLK): bound to the open
 * file description, so they conflict between two descriptors of one process
 * too, and closing an unrelated descriptor of the same file drops nothing.
 * Whole-file locks (`lockFile`) are flock(2), which has the same binding.
 */
import { native } from './native';

/** What a lock excludes: `shared` conflicts only with `exclusive`. */
export type LockKind = 'shared' | 'exclusive';

const KIND = { shared: 1, exclusive: 2 } as const;

/**
 * Locks `length` bytes of `fd` from `start` (length 0: to the end of the
 * file, however it grows). With `wait: false` returns false at once when
 * another open file description holds a conflicting lock; with `wait: true`
 * sleeps until it is granted (never on the main thread of a server).
 */
export function lockRange(fd: number, start: number, length: number, kind: LockKind, wait = false): boolean {
  return native.ofdLock(fd, start, length, KIND[kind], wait ? 1 : 0);
}

/** Releases what `lockRange` took on the same descriptor and range. */
export function unlockRange(fd: number, start: number, length: number): void {
  native.ofdLock(fd, start, length, 0, 0);
}

/**
 * Whether another open file description holds a lock on some byte of the
 * range: a test that takes nothing (F_OFD_GETLK), so probing never makes a
 * free range look held to anyone else. Works on a read-only descriptor.
 */
export function rangeHeld(fd: number, start: number, length: number): boolean {
  return native.ofdHeld(fd, start, length);
}

/** flock(2) on the whole file: false at once when held elsewhere, unless `wait`. */
export function lockFile(fd: number, kind: LockKind, wait = false): boolean {
  return native.flock(fd, KIND[kind], wait ? 1 : 0);
}

/** Releases a `lockFile` lock held through this descriptor. */
export function unlockFile(fd: number): void {
  native.flock(fd, 0, 0);
}
