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

/**
 * A reader's frozen mapping of the whole region, armed in every participant.
 * Its ArrayBuffer is made when first asked for (as any snapshot's: a new
 * external buffer of the region's size makes V8 collect); once made, it owns
 * the mapping (its collection unmaps it), so whoever holds the reader keeps
 * it in `held` and hands it to release().
 */
export interface Armed {
  id: number;
  reader: number;
  held: { buffer: ArrayBuffer | undefined };
}

/**
 * Readers released (or failed) whose mapping waits until no participant may
 * push into it: reader -> [mapping id, the ArrayBuffer that owns the mapping
 * if one was made]. Held here, the buffer cannot be collected (which would
 * unmap the range) while a push may still land there.
 */
const draining = new Map<number, [number, ArrayBuffer | undefined]>();
let timer: NodeJS.Timeout | undefined;

function drain(): void {
  for (const [reader, [id]] of draining) {
    if (!native.xprocDrained(reader)) continue;
    draining.delete(reader);
    native.unmap(id);
  }
  if (draining.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

/** Ends a reader: its mapping goes once every participant has let go (at once, unless one is stopped). */
export function release(reader: number, id: number, buffer: ArrayBuffer | undefined): void {
  native.xprocRelease(reader);
  draining.set(reader, [id, buffer]);
  drain();
  if (draining.size !== 0 && timer === undefined) {
    timer = setInterval(drain, 20);
    timer.unref();
  }
}

/**
 * Maps the region privately and arms every participant (cowshm's native
 * thread in each writer process) for it, each to push `chunk` bytes (a power
 * of two, at least the page) around a first write. Throws ETIMEDOUT naming a
 * writer that did not answer within timeoutMs.
 */
export function arm(
  fd: number, size: number, mode: number, dev: number, ino: number, label: string, timeoutMs: number, chunk: number,
): Armed {
  const id = native.mapView(fd, 0, size, ACCESS.cow, label, nextOwner++, dev, ino, 0);
  let reader: number;
  try {
    reader = native.xprocArm(dev, ino, size, mode & 0o666, native.address(id), timeoutMs, chunk);
    return { id, reader, held: { buffer: undefined } };
  } catch (err) {
    const r = (err as { readerId?: unknown }).readerId;
    if (typeof r === 'number') {
      delete (err as { readerId?: unknown }).readerId;
      release(r, id, undefined);
    } else native.unmap(id);
    throw err;
  }
}

/** errno of a push that failed (the snapshot is no longer exact), or 0. */
export function broken(reader: number): number {
  return native.xprocBroken(reader);
}
