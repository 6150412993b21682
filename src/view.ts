/**
 * A View is one mapping of a Region, exposed as an ArrayBuffer without
 * copying. Closing it detaches the ArrayBuffer: TypedArrays over it read as
 * length 0 and nothing can reach the unmapped memory. A buffer the addon
 * cannot detach (moved out by transfer(), or an asm.js heap) is left with
 * private zero pages of its own instead (native/mapping.c).
 */
import { native } from './native';
import { closedError, cowshmError, invalidType } from './errors';
import { MADV_DONTNEED } from './constants';
import * as check from './validate';
import type { Region } from './region';
import { writeFrom, type CheckpointResult, type WriteOptions } from './checkpoint/write';

/** How a view maps its region. */
export type Access = 'read' | 'write' | 'cow';

/** What the finalizer of a View needs: its mapping's id, and whether close() already released it. */
interface Mapping {
  readonly id: number;
  open: boolean;
}

// A View collected without close() gives its mapping back, unless its
// ArrayBuffer was made: that then owns the mapping and may outlive the View.
// close() marks the entry instead of unregistering it (see Region's
// descriptors): the finalizer of a closed View does nothing.
const mappings = new FinalizationRegistry<Mapping>((m) => {
  if (!m.open) return;
  m.open = false;
  try {
    native.releaseView(m.id);
  } catch {
    // Nothing to report to: the View is gone.
  }
});

// Which Region a view's buffer maps, for code handed only the buffer (a
// Mutex finds the region's file through it). Weak both ways: a buffer still
// outlives its View and Region, as before.
const regionsByBuffer = new WeakMap<ArrayBuffer, WeakRef<Region>>();

/** @internal The Region a view's `buffer` maps, while that Region is reachable. */
export function regionOfBuffer(buffer: ArrayBufferLike): Region | undefined {
  return regionsByBuffer.get(buffer as ArrayBuffer)?.deref();
}

export class View {
  // Dropped at close(): the closed range stays reserved until the buffer
  // object is collected, so a closed View must not keep it alive.
  #buffer: ArrayBuffer | undefined;
  readonly #id: number;
  readonly #mapping: Mapping;
  #closed = false;

  /** The region this view maps. */
  readonly region: Region;
  /** `'read'` (read-only, shared), `'write'` (shared), or `'cow'` (private copy-on-write). */
  readonly access: Access;
  /** Where the view starts in the region, in bytes (a multiple of the page size). */
  readonly byteOffset: number;
  /** The view's length in bytes. */
  readonly byteLength: number;

  /** @internal Views are made by `Region.map()`. */
  constructor(region: Region, id: number, byteOffset: number, byteLength: number, access: Access) {
    this.region = region;
    this.#id = id;
    this.byteOffset = byteOffset;
    this.byteLength = byteLength;
    this.access = access;
    this.#mapping = { id, open: true };
    mappings.register(this, this.#mapping);
  }

  /**
   * The mapped memory. Once the view or its region is closed, a buffer taken
   * earlier is detached (byteLength 0) and asking for it throws ERR_COWSHM_CLOSED.
   * Made on first access: V8 starts a garbage collection for every new
   * ArrayBuffer over 64 MiB, which a view used only through cowshm's
   * functions never needs to pay for.
   */
  get buffer(): ArrayBuffer {
    this.#check();
    if (this.#buffer === undefined) {
      this.#buffer = native.viewBuffer(this.#id);
      regionsByBuffer.set(this.#buffer, new WeakRef(this.region));
    }
    return this.#buffer;
  }

  /** Whether `close()` was called on this view or on its region. */
  get closed(): boolean {
    return this.#closed || this.region.closed;
  }

  /** @internal The addon's id for this mapping. */
  get _id(): number {
    this.#check();
    return this.#id;
  }

  /** The mapping's start address in this process (for /proc lookups). */
  get address(): number {
    return native.address(this._id);
  }

  /**
   * Writes the view's dirty pages back to the file (msync with MS_SYNC).
   * Only file-backed regions need it; shared memory has no backing store.
   */
  flush(offset?: number, length?: number): void {
    const [off, len] = this.#range(offset, length);
    native.msync(this.#id, off, len);
  }

  /**
   * Copy-on-write views only: throws away the private copies of the pages in
   * the range (madvise MADV_DONTNEED), so the range shows the region's current
   * bytes again and its private memory is returned to the system.
   */
  revert(offset?: number, length?: number): void {
    const [off, len] = this.#range(offset, length);
    if (this.access !== 'cow')
      throw cowshmError('ERR_COWSHM_NOT_COW', `revert() needs a copy-on-write view; this view has access '${this.access}'`);
    native.madvise(this.#id, off, len, MADV_DONTNEED);
  }

  /**
   * Unmaps the view and detaches its buffer. A buffer that cannot be detached
   * (moved by `transfer()`, or an asm.js heap) keeps its length and reads
   * zeros from then on; the region's memory is released either way. Safe to
   * call more than once.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffer = undefined;
    this.#mapping.open = false;
    native.unmap(this.#id);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #check(): void {
    if (this.closed) throw closedError(`This view of ${this.region.toString()}`);
  }

  /** Validates an (offset, length) pair within the view; offset must be page aligned. */
  #range(offset: unknown, length: unknown): [number, number] {
    this.#check();
    const off = offset === undefined ? 0 : check.integer(offset, '"offset" argument', 0, this.byteLength);
    const page = this.region.pageSize;
    if (off % page !== 0)
      throw check.pageAligned('"offset" argument', off, page);
    const len =
      length === undefined ? this.byteLength - off : check.integer(length, '"length" argument', 0, this.byteLength - off);
    // The kernel works on whole huge pages of a hugetlb mapping.
    if (page !== native.pageSize && len % page !== 0) throw check.pageAligned('"length" argument', len, page);
    return [off, len];
  }
}

/**
 * Writes a view of a whole region as a checkpoint. The view's bytes are read
 * while the write runs: for a consistent checkpoint of a region that keeps
 * changing, write a snapshot (`snapshot.writeTo()`) instead.
 */
export function writeCheckpoint(view: View, file: string, options?: WriteOptions): Promise<CheckpointResult> {
  if (!(view instanceof View)) return Promise.reject(invalidType('"view" argument', 'a View', view));
  return writeFrom(view, file, options);
}
