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
import { writeFrom, type CheckpointResult, type KnownChanges, type WriteOptions } from './checkpoint/write';
import { createCheckpointStream, type ReadStreamOptions } from './checkpoint/stream';
import type { Readable } from 'node:stream';
import { keepSignalHandlers } from './signals';
import * as xproc from './xproc';
import type { PushPath } from './xproc';

/** A writer process armed for a snapshot with scope 'processes', and how it pushes pages into it. */
export interface SnapshotWriter {
  readonly pid: number;
  readonly push: PushPath;
}
import { unregisteredWriters, type UnregisteredWriters } from './coordination';

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
  /**
   * `'process'` (the default): frozen against writes made by this process.
   * `'processes'`: frozen against writes through cowshm views in every
   * process that opened the region for writing with `crossProcess: true`,
   * from one instant for all of them; the whole region only. Writers that are
   * not such processes (another language, `pwrite`) are not covered.
   */
  scope?: 'process' | 'processes';
  /**
   * With `scope: 'processes'`: how long to wait for every writer process to
   * arm, in milliseconds, before failing with ETIMEDOUT naming the one that
   * did not. Default 2000.
   */
  timeoutMs?: number;
  /**
   * How many bytes the first write after the snapshot copies at a time, a
   * power of two: fewer, larger copies (fewer faults) for more memory. At
   * least the region's page size (`region.pageSize`: a whole huge page on
   * hugetlb regions) and, with the mprotect backend, its protection chunk for
   * the region (a RangeError names it). Default: the least the backend can
   * do, `snapshot.chunkSize` reports what was used. Live snapshots with
   * different chunk sizes each copy their own chunk; a write mapping becomes
   * writable again only where every live snapshot has its copy. With
   * `scope: 'processes'`, what each writer process pushes around its first
   * write to a page (default: the page).
   */
  chunkSize?: number;
}

const info = native.snapshotInfo();
keepSignalHandlers();

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
/** How many snapshots this process took: a snapshot's number orders it before later ones. */
let taken = 0;

/**
 * Checkpoints written in this process by snapshots, by checkpoint id. A delta
 * against one whose snapshot is still live and older than the writer's needs
 * no comparison: that snapshot's changedPages() lists what differs.
 */
const writers = new Map<string, WeakRef<Snapshot>>();

/** Whether `s` can still say which pages changed: not released, and every page it holds copied. */
function live(s: Snapshot): boolean {
  try {
    return !s.released && s.exact;
  } catch {
    return false; // closed, or a page could not be copied
  }
}

function brokenError(snapshot: Snapshot, errno: number): Error {
  const cause = systemError(errno, 'madvise', snapshot.region.toString());
  // Across processes, ETIMEDOUT: a writer waited for this process's answer (or
  // for another writer) longer than it agreed to, and went on.
  const why =
    snapshot.scope === 'processes' && cause.code === 'ETIMEDOUT'
      ? 'a writer process waited longer than its handshakeTimeoutMs for this process to copy a page ' +
        '(this process was stopped, or a debugger held it) and let its write go through (ETIMEDOUT). ' +
        'Release it and take another.'
      : `a page could not be copied into it before a write went through (${cause.code}). ` +
        'Release it and take another once memory is available.';
  const err = cowshmError('ERR_COWSHM_SNAPSHOT_BROKEN', `This snapshot of ${snapshot.region.toString()} is no longer exact: ${why}`);
  (err as Error & { cause: unknown }).cause = cause;
  return err;
}

/**
 * A point-in-time copy of a region. `buffer` is a private mapping: reading it
 * gives the region's bytes at the instant `snapshot()` returned; writing it
 * changes only the snapshot.
 */
// A Snapshot collected without release() gives its mapping (and the
// region's write protection) back, unless its ArrayBuffer was made: that then
// owns the mapping, and its own finalizers release it (see View).
const mappings = new FinalizationRegistry<{ readonly id: number; open: boolean }>((m) => {
  if (!m.open) return;
  m.open = false;
  try {
    native.releaseView(m.id);
  } catch {
    // Nothing to report to: the Snapshot is gone.
  }
});

export class Snapshot {
  // Made on first use: V8 may start a garbage collection for every new large
  // external ArrayBuffer, which would cost more than taking the snapshot.
  #buffer: ArrayBuffer | undefined;
  readonly #id: number;
  readonly #mapping: { readonly id: number; open: boolean };
  readonly #taken = ++taken;
  /** With scope 'processes': the reader in native/xproc.c, and where the buffer, once made, is kept until the release drained (see `unreleased`). */
  readonly #armed: xproc.Armed | undefined;
  /** With scope 'processes': the reader's id in native/xproc.c. */
  readonly #reader: number | undefined;
  #released = false;
  #holders: Readonly<UnregisteredWriters> | undefined;

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
   * snapshot: the `chunkSize` asked for, else the least the backend can do
   * (the page with userfaultfd, the huge page on hugetlb regions; with
   * mprotect, a power of two chosen per region so the process stays far
   * below vm.max_map_count). `copiedPages` counts every page of a chunk.
   */
  readonly chunkSize: number;
  /**
   * `'process'`: frozen against this process's writes; `'processes'`: against
   * every participating writer process's (each writer pushes a page's old
   * bytes into it before its first write to the page lands: see `writers`).
   */
  readonly scope: 'process' | 'processes';

  /** @internal Snapshots are made by `Region.snapshot()`. */
  constructor(
    region: Region, id: number, byteOffset: number, byteLength: number, backend: SnapshotBackend, chunkSize: number,
    armed?: xproc.Armed,
  ) {
    this.region = region;
    this.#armed = armed;
    this.#reader = armed?.reader;
    this.scope = armed === undefined ? 'process' : 'processes';
    this.#id = id;
    this.byteOffset = byteOffset;
    this.byteLength = byteLength;
    this.backend = backend;
    this.chunkSize = chunkSize;
    // A cross-process snapshot's mapping goes only by xproc.release (also when
    // collected: see `unreleased`), once no writer may push into it.
    this.#mapping = { id, open: armed === undefined };
    mappings.register(this, this.#mapping);
  }

  /**
   * Writes the snapshot to `path` as a checkpoint, off the event loop, while
   * the region keeps changing; with `base`, only the pages that differ from
   * that earlier checkpoint. See docs/api.md, Checkpoints.
   */
  writeTo(path: string, options?: WriteOptions): Promise<CheckpointResult> {
    const known: KnownChanges = {
      changedSince: (id) => this.#changedSince(id),
      wrote: (id) => this.#wrote(id),
      copied: () => this.changedPages(),
    };
    return writeFrom(this, path, options, known);
  }

  /**
   * The checkpoint `writeTo()` would write, as a Readable: full, or with
   * `base` a delta against that checkpoint. See docs/api.md, Checkpoint streams.
   */
  createReadStream(options?: ReadStreamOptions): Readable {
    return createCheckpointStream(this, options, { changedSince: () => null, wrote: () => undefined, copied: () => this.changedPages() });
  }

  /**
   * The frozen bytes. Throws `ERR_COWSHM_SNAPSHOT_BROKEN` once the snapshot is
   * no longer exact (see `exact`). A buffer or TypedArray taken earlier keeps
   * reading: check `exact` after reading through it.
   */
  get buffer(): ArrayBuffer {
    this.#checkExact();
    if (this.#buffer === undefined) {
      this.#buffer = native.viewBuffer(this.#id);
      // From now on the buffer owns the mapping (and releases it when collected).
      this.#mapping.open = false;
      if (this.#armed !== undefined) this.#armed.held.buffer = this.#buffer;
    }
    return this.#buffer;
  }

  /**
   * Whether the snapshot still holds the region's bytes as they were at
   * `snapshot()`. It turns false, for good, when a page could not be copied
   * into it before a write went through (the memory cgroup or the system ran
   * out of memory): the write is never held up,
   * the snapshot is broken instead. From then on `buffer`, `copiedPages`,
   * `changedPages()` and `writeTo()` throw `ERR_COWSHM_SNAPSHOT_BROKEN`.
   */
  get exact(): boolean {
    this.#check();
    return this.#stats()[1] === 0;
  }

  /**
   * With scope `'processes'`: the writer processes armed for this snapshot
   * right now (those that joined after it was taken included, those that
   * left or died not), each with the push path it uses for it: `'direct'`
   * (process_vm_writev into this process) or `'handshake'` (it posts the page
   * and this process's helper thread copies it; used for a writer of another
   * user, where the kernel refuses the direct path, e.g. Yama ptrace_scope
   * >= 1, and everywhere under COWSHM_XPROC_HANDSHAKE=1). A fresh array on
   * every read, as the writers reported themselves in the coordination file.
   * With scope `'process'`: empty.
   */
  get writers(): SnapshotWriter[] {
    this.#check();
    return this.#reader === undefined ? [] : xproc.writers(this.#reader);
  }

  /**
   * With scope `'processes'`: the pids of processes that can write the region
   * but do not take part, so this snapshot is not frozen against them (see
   * docs/api.md, Snapshots across processes): a shared writable mapping of
   * the region (or one that may be made writable), or a descriptor of it open
   * for writing, in a process whose descriptors hold no participant's lock
   * on the coordination file. Another language's writer, `pwrite`, or a
   * cowshm process that opened the region without `crossProcess` (this one
   * included). Read-only holders and copy-on-write mappings cannot write the
   * region and are not listed. Found through /proc when first read (this or
   * `uninspectedProcesses`; milliseconds: every process's maps and
   * descriptors), then kept: only processes of this pid namespace, and only
   * those this user may inspect (see `uninspectedProcesses`). Empty does not
   * prove the snapshot exact; non-empty says it may not be. null with scope
   * `'process'` (every other process is outside it).
   */
  get unregisteredHolders(): readonly number[] | null {
    return this.#holderScan()?.pids ?? null;
  }

  /**
   * With scope `'processes'`: the pids whose /proc files could not be read
   * when `unregisteredHolders` was found (other users' processes unless root,
   * undumpable ones): any of them might write the region unseen. null with
   * scope `'process'`.
   */
  get uninspectedProcesses(): readonly number[] | null {
    return this.#holderScan()?.uninspected ?? null;
  }

  #holderScan(): Readonly<UnregisteredWriters> | null {
    if (this.#reader === undefined) return null;
    if (this.#holders === undefined) {
      const found = unregisteredWriters(this.region.dev, this.region.ino);
      this.#holders = Object.freeze({ pids: Object.freeze(found.pids) as number[], uninspected: Object.freeze(found.uninspected) as number[] });
    }
    return this.#holders;
  }

  /** The mapping's start address in this process (for /proc lookups and the memory API). */
  get address(): number {
    return native.address(this._id);
  }

  /** Pages copied into this snapshot so far: its private memory is this many pages. */
  get copiedPages(): number {
    return this.#checkExact();
  }

  /**
   * Indexes (from the snapshot's start, in pages) of the pages written
   * through this process's views since the snapshot was taken, ascending.
   * With the mprotect backend a write marks its whole chunk.
   */
  changedPages(): Uint32Array {
    this.#checkExact();
    if (this.#reader !== undefined)
      throw cowshmError('ERR_COWSHM_UNSUPPORTED', 'A snapshot with scope \'processes\' does not know which pages other processes changed');
    const pages = native.snapshotChanged(this.#id);
    this.#checkExact(); // a copy that failed while the list was read
    return pages;
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
    this.#mapping.open = false;
    if (this.#armed !== undefined) {
      unreleased.unregister(this);
      xproc.release(this.#armed);
    } else native.unmap(this.#id);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  /** @internal For writeTo(): throws unless the snapshot is still exact. */
  _assertExact(): void {
    this.#checkExact();
  }

  #check(): void {
    if (this.released) throw closedError(`This snapshot of ${this.region.toString()}`);
  }

  /** The pages that may differ from checkpoint `id`, if a live, older snapshot of this region wrote it. */
  #changedSince(id: string): Uint32Array | null {
    const older = writers.get(id)?.deref();
    if (older === undefined || older.#reader !== undefined || this.#reader !== undefined || older === this || older.region !== this.region || older.#taken >= this.#taken) return null;
    return live(older) ? older.changedPages() : null;
  }

  #wrote(id: string): void {
    for (const [key, ref] of writers) {
      const w = ref.deref();
      if (w === undefined || !live(w)) writers.delete(key);
    }
    writers.set(id, new WeakRef(this));
  }

  /** Throws ERR_COWSHM_SNAPSHOT_BROKEN if a copy failed; returns the pages copied. */
  #checkExact(): number {
    this.#check();
    const [copied, error] = this.#stats();
    if (error !== 0) throw brokenError(this, error);
    return copied;
  }

  /** [pages copied (unknown across processes: 0), errno of a failed copy or push]. */
  #stats(): [number, number] {
    if (this.#reader === undefined) return native.snapshotStats(this.#id);
    if (this.region.closed) return [0, 0];
    return [0, xproc.broken(this.#reader)];
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
  const scope = o.scope ?? 'process';
  if (scope !== 'process' && scope !== 'processes') throw outOfRange('"scope" option', "'process' or 'processes'", scope);
  const [offset, length] = check.range(o, size, region, 'snapshot', region.pageSize);
  const chunkSize = o.chunkSize === undefined ? 0 : check.chunkSize(o.chunkSize, '"chunkSize" option', region.pageSize);
  const hugeShift = region.pageSize === native.pageSize ? 0 : Math.log2(region.pageSize);
  if (scope === 'processes') return crossProcess(region, fd, owner, o, offset, length, chunkSize);

  const label = `${region.toString()}, snapshot ${++labels}`;
  const [id, chunk, backend] = native.snapshotCreate(fd, offset, length, label, owner, region.dev, region.ino, size, chunkSize, hugeShift);
  return new Snapshot(region, id, offset, length, backend, chunk);
}

/** Releases cross-process snapshots whose object was collected without release(). */
const unreleased = new FinalizationRegistry<xproc.Armed>((armed) => xproc.release(armed));

function crossProcess(region: Region, fd: number, owner: number, o: SnapshotOptions, offset: number, length: number, chunkSize: number): Snapshot {
  const size = region.size;
  if (offset !== 0 || length !== size)
    throw cowshmError('ERR_COWSHM_UNSUPPORTED', "A snapshot with scope 'processes' covers the whole region: omit offset and length");
  const timeoutMs = check.integer(o.timeoutMs ?? 2000, '"timeoutMs" option', 0, 600_000);
  const label = `${region.toString()}, snapshot ${++labels} (processes)`;
  if (region.pageSize !== native.pageSize)
    throw cowshmError('ERR_COWSHM_UNSUPPORTED', "A snapshot with scope 'processes' of a hugetlb region is not supported yet");
  // Every writer pushes this much around its first write to a page (a
  // writer whose backend protects larger chunks pushes those).
  const chunk = chunkSize || native.pageSize;
  const armed = xproc.arm(fd, size, region._mode, region.dev, region.ino, label, timeoutMs, chunk, owner);
  const s = new Snapshot(region, armed.id, 0, size, info.backend, chunk, armed);
  // The held value keeps the buffer, once made (and so the mapping), until the release drained.
  unreleased.register(s, armed, s);
  return s;
}

/** @internal `Region.prepareWrite()`. */
export function prepareWrite(region: Region, offset: unknown, length: unknown): void {
  const size = region.size;
  const off = check.integer(offset, '"offset" argument', 0, size);
  const len = check.integer(length, '"length" argument', 0, size - off);
  native.prepareWrite(region.dev, region.ino, off, len);
}
