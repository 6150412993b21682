/**
 * Cross-process snapshots (`snapshot({ scope: 'processes' })`): taking part as
 * a writer, and a reader's mapping that must outlive every push into it.
 * The mechanism is in native/xproc.c; docs/api.md says what it covers.
 */
import { native } from './native';
import { ACCESS } from './constants';

/** Mapping owners that no Region has: Region.close() must not unmap a snapshot a stopped writer may still push into. */
let nextOwner = 2 ** 52;

/** Takes part in cross-process snapshots of a writable region; returns the participant id. */
export function join(dev: number, ino: number, size: number, mode: number): number {
  return native.xprocJoin(dev, ino, size, mode & 0o666);
}

export function leave(id: number): void {
  native.xprocLeave(id);
}

/** A reader's frozen mapping of the whole region, armed in every participant. */
export interface Armed {
  id: number;
  reader: number;
  buffer: ArrayBuffer;
}

/** Readers released (or failed) whose mapping waits until no participant may push into it. */
const draining = new Map<number, number>();
/**
 * Each reader's ArrayBuffer, held until its mapping is unmapped: once made,
 * a buffer owns its mapping, and its collection would unmap the range while
 * writer processes may still push into that address.
 */
const buffers = new Map<number, ArrayBuffer>();
let timer: NodeJS.Timeout | undefined;

function drain(): void {
  for (const [reader, id] of draining) {
    if (!native.xprocDrained(reader)) continue;
    draining.delete(reader);
    native.unmap(id);
    buffers.delete(reader);
  }
  if (draining.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

/** Ends a reader: its mapping goes once every participant has let go (at once, unless one is stopped). */
export function release(reader: number, id: number): void {
  native.xprocRelease(reader);
  draining.set(reader, id);
  drain();
  if (draining.size !== 0 && timer === undefined) {
    timer = setInterval(drain, 20);
    timer.unref();
  }
}

/**
 * Maps the region privately and arms every participant (cowshm's native
 * thread in each writer process) for it. Throws ETIMEDOUT naming a writer
 * that did not answer within timeoutMs.
 */
export function arm(
  fd: number, size: number, mode: number, dev: number, ino: number, label: string, timeoutMs: number,
): Armed {
  const id = native.mapView(fd, 0, size, ACCESS.cow, label, nextOwner++, dev, ino, 0);
  let reader: number;
  let buffer: ArrayBuffer | undefined;
  try {
    buffer = native.viewBuffer(id);
    reader = native.xprocArm(dev, ino, size, mode & 0o666, native.address(id), timeoutMs);
    buffers.set(reader, buffer);
    return { id, reader, buffer };
  } catch (err) {
    const r = (err as { readerId?: unknown }).readerId;
    if (typeof r === 'number') {
      delete (err as { readerId?: unknown }).readerId;
      if (buffer !== undefined) buffers.set(r, buffer); // armed writers may push until drained
      release(r, id);
    } else native.unmap(id);
    throw err;
  }
}

/** errno of a push that failed (the snapshot is no longer exact), or 0. */
export function broken(reader: number): number {
  return native.xprocBroken(reader);
}
