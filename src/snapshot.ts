/**
 * Snapshots: the bytes of a region exactly as they were at one instant,
 * whatever this process writes to the region afterwards, from any thread.
 * Taking one costs a walk over the page tables of the region's write views;
 * its memory grows only with the pages written after it.
 */
import { native } from './native';
import { closedError, cowshmError, outOfRange, systemError } from './errors';
import * as check from './validate';
import type { Region } from './region';
import { noteSnapshotTaken, writeFrom, type CheckpointResult, type WriteOptions } from './checkpoint/write';

/** How write protection is done: see `snapshotBackend`. */
export type SnapshotBackend = 'userfaultfd' | 'mprotect';

export interface SnapshotOptions {
  /** Where the snapshot starts in the region, in bytes: a multiple of the page size. Default 0. */
  offset?: number;
  /**
   * Length in bytes. Default: to the end of the region. At most `Region.maxViewLength`:
   * snapshot a larger region in parts.
   */
  length?: number;
}

const info = native.snapshotInfo();

/**
 * The write-protection mechanism snapshots use in this process:
 * `'userfaultfd'` (write-protect with synchronous SIGBUS delivery; no VMA
 * splits) or `'mprotect'` (the fallback where userfaultfd is refused).
 * `COWSHM_SNAPSHOT_BACKEND=mprotect|userfaultfd` forces one.
 */
export const snapshotBackend: SnapshotBackend = info.backend;

/** Why `snapshotBackend` is what it is, in a sentence. */
export const snapshotBackendReason: string = info.reason;

/** @internal The addon's full findings, for `doctor`. */
export const snapshotProbe = info;

let labels = 0;

/**
 * A point-in-time copy of a region. `buffer` is a private mapping: reading it
 * gives the region's bytes at the instant `snapshot()` returned; writing it
 * changes only the snapshot.
 */
export class Snapshot {
  readonly #buffer: ArrayBuffer;
  readonly #id: number;
  #released = false;

  /** The region this is a snapshot of. */
  readonly region: Region;
  /** Where the snapshot starts in the region, in bytes. */
  readonly byteOffset: number;
  /** The snapshot's length in bytes. */
  readonly byteLength: number;
  /** The write-protection mechanism used for this snapshot's region. */
  readonly backend: SnapshotBackend;
  /**
   * How many bytes are copied at a time on the first write after the
   * snapshot: the page size with userfaultfd; with mprotect, a power of two
   * chosen per region so the process stays far below vm.max_map_count.
   */
  readonly chunkSize: number;

  /** @internal Snapshots are made by `Region.snapshot()`. */
  constructor(region: Region, buffer: ArrayBuffer, id: number, byteOffset: number, backend: SnapshotBackend, chunkSize: number) {
    this.region = region;
    this.#buffer = buffer;
    this.#id = id;
    this.byteOffset = byteOffset;
    this.byteLength = buffer.byteLength;
    this.backend = backend;
    this.chunkSize = chunkSize;
    noteSnapshotTaken(this);
  }

  /**
   * Writes the snapshot to `path` as a checkpoint, off the event loop, while
   * the region keeps changing; with `base`, only the pages that differ from
   * that earlier checkpoint. See docs/api.md, Checkpoints.
   */
  writeTo(path: string, options?: WriteOptions): Promise<CheckpointResult> {
    return writeFrom(this, path, options);
  }

  /**
   * The frozen bytes. Throws if a page could not be copied (the system ran
   * out of memory, or /dev/shm out of space), since the snapshot is then no
   * longer exact.
   */
  get buffer(): ArrayBuffer {
    this.#check();
    const [, error] = native.snapshotStats(this.#id);
    if (error !== 0) {
      const err = systemError(error, 'madvise', this.region.toString());
      err.message += ' (a page could not be copied into the snapshot: it is no longer exact; release it)';
      throw err;
    }
    return this.#buffer;
  }

  /** The mapping's start address in this process (for /proc lookups and the memory API). */
  get address(): number {
    return native.address(this._id);
  }

  /** Pages copied into this snapshot so far: its private memory is this many pages. */
  get copiedPages(): number {
    this.#check();
    return native.snapshotStats(this.#id)[0];
  }

  /**
   * Indexes (from the snapshot's start, in pages) of the pages written
   * through this process's views since the snapshot was taken, ascending.
   * With the mprotect backend a write marks its whole chunk.
   */
  changedPages(): Uint32Array {
    this.#check();
    return native.snapshotChanged(this.#id);
  }

  /** Whether `release()` was called, or the region was closed. */
  get released(): boolean {
    return this.#released || this.region.closed;
  }

  /** @internal The addon's id for the snapshot's mapping. */
  get _id(): number {
    this.#check();
    return this.#id;
  }

  /**
   * Unmaps the snapshot and detaches its buffer; when it was the region's last
   * live snapshot, the region's views are no longer write-protected. Safe to
   * call more than once.
   */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    native.unmap(this.#id);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  #check(): void {
    if (this.released) throw closedError(`This snapshot of ${this.region.toString()}`);
  }
}

/** @internal `Region.snapshot()`; the region has checked it is open. */
export function takeSnapshot(region: Region, fd: number, owner: number, options: unknown): Snapshot {
  const o = check.options<SnapshotOptions>(options);
  const size = region.size;
  if (size === 0)
    throw cowshmError('ERR_COWSHM_EMPTY', `${region.toString()} is empty (size 0): there is nothing to snapshot`);
  if (info.error !== 0) {
    if (info.forced !== 'mprotect' && info.forced !== 'userfaultfd' && info.forced !== '')
      throw outOfRange('COWSHM_SNAPSHOT_BACKEND environment variable', "'mprotect' or 'userfaultfd'", info.forced);
    throw cowshmError('ERR_COWSHM_SNAPSHOT_BACKEND', `cowshm: snapshots are unavailable: ${info.reason}`);
  }
  const offset = o.offset === undefined ? 0 : check.integer(o.offset, '"offset" option', 0);
  if (offset % region.pageSize !== 0) throw check.pageAligned('"offset" option', offset, region.pageSize);
  if (offset >= size) throw outOfRange('"offset" option', `less than the region's size (${size})`, offset);
  const max = (region.constructor as typeof Region).maxViewLength;
  if (o.length === undefined && size - offset > max) {
    throw outOfRange(
      '"length" option',
      `given for a region larger than ${max} bytes (the largest ArrayBuffer Node.js ${process.version} allows); ` +
        `snapshot it in parts with { offset, length }, each at most ${max}`,
      o.length,
    );
  }
  const length = o.length === undefined ? size - offset : check.integer(o.length, '"length" option', 1);
  if (offset + length > size)
    throw outOfRange('"length" option', `at most ${size - offset} (the region's size minus the offset)`, length);
  if (length > max)
    throw outOfRange('"length" option', `at most ${max}, the largest ArrayBuffer Node.js ${process.version} allows`, length);
  if (region.pageSize !== native.pageSize && length % region.pageSize !== 0)
    throw check.pageAligned('"length" option', length, region.pageSize);
  if (region.pageSize !== native.pageSize)
    throw cowshmError('ERR_COWSHM_SNAPSHOT_BACKEND', `cowshm: snapshots of regions on huge pages are not supported yet (${region.toString()})`);

  const label = `${region.toString()}, snapshot ${++labels}`;
  const [buffer, id, chunk, backend] = native.snapshotCreate(fd, offset, length, label, owner, region.dev, region.ino, size);
  return new Snapshot(region, buffer, id, offset, backend, chunk);
}

/** @internal `Region.prepareWrite()`. */
export function prepareWrite(region: Region, offset: unknown, length: unknown): void {
  const size = region.size;
  const off = check.integer(offset, '"offset" argument', 0, size);
  const len = check.integer(length, '"length" argument', 0, size - off);
  native.prepareWrite(region.dev, region.ino, off, len);
}
