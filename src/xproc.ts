/**
 * Cross-process snapshots (`snapshot({ scope: 'processes' })`): taking part as
 * a writer, and a reader's mapping that must outlive every push into it.
 * The mechanism is in native/xproc.c; docs/api.md says what it covers.
 */
import { native } from './native';
import { ACCESS } from './constants';
import { outOfRange } from './errors';

/** Mapping owners that no Region has: Region.close() must not unmap a snapshot a stopped writer may still push into. */
let nextOwner = 2 ** 52;

/** How a writer's first write after a snapshot gets the page's old bytes into the reader's snapshot: see `Snapshot.writers`. */
export type PushPath = 'direct' | 'handshake';

/**
 * COWSHM_XPROC_HANDSHAKE=1 in a writer's environment: its pushes use the
 * handshake; in a reader's: every writer's pushes into its snapshots do.
 * Unset, empty or '0': each pair of processes uses what the kernel allows.
 */
function handshakeForced(): number {
  const v = process.env['COWSHM_XPROC_HANDSHAKE'];
  if (v === undefined || v === '' || v === '0') return 0;
  if (v === '1') return 1;
  throw outOfRange('COWSHM_XPROC_HANDSHAKE environment variable', "'1' or '0'", v);
}

/**
 * Takes part in cross-process snapshots of a writable region; returns the
 * participant id. handshakeTimeoutMs: how long a write waits for a reader's
 * handshake answer before breaking that reader's snapshot (Infinity: as long
 * as the reader lives).
 */
export function join(dev: number, ino: number, size: number, mode: number, handshakeTimeoutMs: number): number {
  const wait = handshakeTimeoutMs === Number.POSITIVE_INFINITY ? -1 : handshakeTimeoutMs;
  return native.xprocJoin(dev, ino, size, mode & 0o666, wait, handshakeForced());
}

/** The participants armed for a reader's snapshot, with the push path each uses. */
export function writers(reader: number): { pid: number; push: PushPath }[] {
  const flat = native.xprocWriters(reader);
  const out: { pid: number; push: PushPath }[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2)
    out.push({ pid: flat[i] as number, push: flat[i + 1] === 2 ? 'handshake' : 'direct' });
  return out;
}

export function leave(id: number): void {
  native.xprocLeave(id);
}

/**
 * A reader's frozen mapping of the whole region, armed in every participant.
 * Its ArrayBuffer is made when first asked for (as any snapshot's: a new
 * external buffer of the region's size makes V8 collect); once made, it owns
 * the mapping (its collection unmaps it), so whoever holds the reader keeps
 * it in `held`, which release() hands on until the release drained.
 */
export interface Armed {
  readonly id: number;
  readonly reader: number;
  readonly held: { buffer: ArrayBuffer | undefined };
  /** The Region's owner token: closing the region releases it (`releaseOwner`). */
  readonly owner: number;
  /** release() was called: the reader's id may belong to another snapshot by now. */
  released: boolean;
}

/** The live readers of each Region (by owner token), for Region.close(). */
const live = new Map<number, Set<Armed>>();

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

/** Ends a reader (once: again does nothing): its mapping goes once every participant has let go (at once, unless one is stopped). */
export function release(armed: Armed): void {
  if (armed.released) return;
  armed.released = true;
  const set = live.get(armed.owner);
  set?.delete(armed);
  if (set?.size === 0) live.delete(armed.owner);
  letGo(armed.reader, armed.id, armed.held.buffer);
}

/** Releases every live reader a Region made (Region.close()). */
export function releaseOwner(owner: number): void {
  for (const armed of live.get(owner) ?? []) release(armed);
}

function letGo(reader: number, id: number, buffer: ArrayBuffer | undefined): void {
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
  fd: number, size: number, mode: number, dev: number, ino: number, label: string, timeoutMs: number, chunk: number, owner: number,
): Armed {
  const id = native.mapView(fd, 0, size, ACCESS.cow, label, nextOwner++, dev, ino, 0);
  let reader: number;
  let buffer: ArrayBuffer | undefined;
  try {
    reader = native.xprocArm(dev, ino, size, mode & 0o666, id, timeoutMs, chunk, handshakeForced());
    const armed: Armed = { id, reader, held: { buffer: undefined }, owner, released: false };
    const set = live.get(owner);
    if (set === undefined) live.set(owner, new Set([armed]));
    else set.add(armed);
    return armed;
  } catch (err) {
    const r = (err as { readerId?: unknown }).readerId;
    if (typeof r === 'number') {
      delete (err as { readerId?: unknown }).readerId;
      letGo(r, id, undefined);
    } else native.unmap(id);
    throw err;
  }
}

/** errno of a push that failed (the snapshot is no longer exact), or 0. */
export function broken(reader: number): number {
  return native.xprocBroken(reader);
}
