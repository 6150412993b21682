/**
 * Checkpoints as streams: the bytes `writeTo()` would put in a file, as a
 * Readable, and a region restored from such a stream.
 *
 * The header comes first and holds the data's checksum (and a delta's page
 * count), so the stream reads its frozen source twice: a scan on the thread
 * pool hashes it (a delta's scan also compares every page with the base and
 * lists those that differ), then the data goes out one 1 MiB chunk at a
 * time, each copied by its own work item on the pool when the consumer asks
 * for more. The scan costs one read of the region (a delta: of the region and
 * its base) before the first byte; a trailer would have changed the format,
 * and the source is frozen, so both passes read the same bytes. A paused
 * consumer holds no pool thread: nothing is queued until `_read()`.
 *
 * A delta stream names its base by the base's id and data checksum only (its
 * base path is empty: a stream has no directory to be relative to);
 * whoever restores it checks them.
 */
import { Readable } from 'node:stream';
import { native } from '../native';
import { cowshmError, explain, invalidType, outOfRange, systemError } from '../errors';
import * as check from '../validate';
import { availableMemory, formatBytes } from '../reserve';
import { F_SEAL_SHRINK, MAX_VIEW_LENGTH } from '../constants';
import {
  checkHeaderChecksum, decodeFixed, encodeHeader, HEADER_BLOCK, HEADER_FIXED, invalid, MAGIC, newId, type CheckpointFile,
} from './format';
import { closeChain, mapRestored, openChain, restoreCheckpoint, type ChainLink, type RestoredCheckpoint } from './restore';
import type { CheckpointSource, KnownChanges } from './write';

export interface ReadStreamOptions {
  /** Path of an earlier checkpoint of the same region: stream a delta against it. */
  base?: string;
  /** Destroys the stream with an AbortError. */
  signal?: AbortSignal;
}

/** Pages copied per work item: 1 MiB (at most 256 pages, one iovec array in the addon). */
const CHUNK_PAGES = Math.max(1, Math.min(256, (1 << 20) / native.pageSize));
const STREAM_LABEL = 'checkpoint stream';
const ENOMEM = 12;

class CheckpointReadStream extends Readable {
  readonly #source: CheckpointSource;
  #keep: unknown[];
  readonly #sourceId: number;
  readonly #holesFd: number;
  readonly #copied: Uint32Array | null;
  readonly #base: CheckpointFile | null;
  #compare: RestoredCheckpoint | null;
  #compareId: number;
  /** The work item in flight and its cancel word. */
  #pending: Promise<unknown> | null = null;
  #state: Int32Array | null = null;
  #pages: Uint32Array | null = null;
  #count = 0;
  #next = 0;
  #tail: Uint8Array | null = null;

  constructor(source: CheckpointSource, base: CheckpointFile | null, compare: RestoredCheckpoint | null, compareId: number, known?: KnownChanges) {
    super({ highWaterMark: 4 << 20 });
    this.#source = source;
    this.#sourceId = source._id;
    this.#keep = [source.buffer];
    this.#base = base;
    this.#compare = compare;
    this.#compareId = compareId;
    const region = source.region;
    const skipHoles = region.kind !== 'file' || !region.readOnly;
    this.#holesFd = skipHoles ? region.fd : -1;
    this.#copied = skipHoles ? (known?.copied() ?? null) : null;
  }

  #run<T>(start: () => [Promise<T>, Int32Array]): Promise<T> {
    const [promise, state] = start();
    this.#state = state;
    const settled = promise.finally(() => {
      this.#pending = null;
      this.#state = null;
    });
    this.#pending = settled.catch(() => undefined);
    return settled;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    const size = this.#source.region.size;
    const totalPages = Math.ceil(size / native.pageSize);
    this.#run(() =>
      native.streamPages(this.#sourceId, null, 0, totalPages, this.#compareId, this.#holesFd, this.#copied, null),
    ).then(
      ([checksum, kept]) => {
        this.#releaseCompare();
        try {
          this.#source._assertExact?.();
        } catch (err) {
          callback(err as Error);
          return;
        }
        const base = this.#base;
        this.#pages = kept;
        this.#count = kept === null ? totalPages : kept.length;
        const header = {
          kind: base === null ? ('full' as const) : ('delta' as const),
          regionSize: size,
          pageSize: native.pageSize,
          pageCount: this.#count,
          dataOffset: HEADER_BLOCK,
          pageListOffset: kept === null ? 0 : HEADER_BLOCK + this.#count * native.pageSize,
          checksum,
          id: newId(),
          base: base === null ? null : { id: base.id, checksum: base.checksum, regionSize: base.regionSize, path: '' },
          created: new Date(),
        };
        const block = encodeHeader(header, kept);
        this.#tail = kept === null ? null : new Uint8Array(kept.buffer, kept.byteOffset, kept.byteLength);
        this.push(block);
        callback();
      },
      (err: Error) => callback(err),
    );
  }

  override _read(): void {
    if (this.#pending !== null || this.destroyed) return;
    if (this.#next >= this.#count) {
      try {
        this.#source._assertExact?.(); // a snapshot that broke while it was read never ends cleanly
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      if (this.#tail !== null && this.#tail.length > 0) this.push(this.#tail);
      this.#tail = null;
      this.#keep = [];
      this.push(null);
      return;
    }
    const first = this.#next;
    const n = Math.min(CHUNK_PAGES, this.#count - first);
    const dst = Buffer.allocUnsafe(n * native.pageSize);
    this.#run(() => native.streamPages(this.#sourceId, this.#pages, first, n, -1, this.#pages ? -1 : this.#holesFd, this.#copied, dst)).then(
      () => {
        if (this.destroyed) return;
        try {
          this.#source._assertExact?.();
        } catch (err) {
          this.destroy(err as Error);
          return;
        }
        this.#next = first + n;
        if (this.push(dst)) this._read();
      },
      (err: Error) => this.destroy(err),
    );
  }

  #releaseCompare(): void {
    if (this.#compareId !== -1) native.unmap(this.#compareId);
    this.#compareId = -1;
    if (this.#compare !== null) native.close(this.#compare.fd);
    this.#compare = null;
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#state) Atomics.store(this.#state, 0, 1);
    // The work in flight reads the mappings until it settles: release them after.
    const pending = this.#pending ?? Promise.resolve();
    void pending.then(() => {
      this.#releaseCompare();
      this.#keep = [];
      this.#pages = null;
      this.#tail = null;
      callback(error);
    });
  }
}

/** @internal A Readable of the checkpoint `source` would be written as (see the module comment). */
export function createCheckpointStream(source: CheckpointSource, options: unknown, known?: KnownChanges): Readable {
  const o = check.options<ReadStreamOptions>(options);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidType('"signal" option', 'an AbortSignal', signal);
  const basePath = o.base === undefined ? undefined : check.path(o.base, '"base" option');
  const size = source.region.size;
  if (source.byteOffset !== 0 || source.byteLength !== size)
    throw outOfRange('source', `a mapping of the whole region (${size} bytes from offset 0)`, source.byteLength);
  void source._id; // throws if closed or released
  source._assertExact?.();
  let base: CheckpointFile | null = null;
  let compare: RestoredCheckpoint | null = null;
  let compareId = -1;
  try {
    if (basePath !== undefined) {
      const chain: ChainLink[] = openChain(basePath, 'header');
      try {
        base = (chain[chain.length - 1] as ChainLink).header;
      } finally {
        closeChain(chain);
      }
      if (base.regionSize !== size)
        throw invalid(base.path, `it checkpoints a region of ${base.regionSize} bytes; this region has ${size}`);
      compare = restoreCheckpoint(base.path, { verify: 'header' });
      compareId = mapRestored(compare, 0, size, 'read', `checkpoint '${base.path}' (the base of a delta stream)`);
    }
    const stream = new CheckpointReadStream(source, base, compare, compareId, known);
    if (signal !== undefined) {
      const onAbort = (): void => {
        stream.destroy(abortError(signal));
      };
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        stream.once('close', () => signal.removeEventListener('abort', onAbort));
      }
    }
    return stream;
  } catch (err) {
    if (compareId !== -1) native.unmap(compareId);
    if (compare !== null) native.close(compare.fd);
    throw err;
  }
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}

/** @internal What a stream restored into: a memfd region's bytes, and the checkpoint it was. */
export interface StreamRestored extends RestoredCheckpoint {
  id: string;
  checksum: string;
}

function isReadable(x: unknown): x is AsyncIterable<unknown> & { destroy?: (e?: Error) => void } {
  return x !== null && typeof x === 'object' && typeof (x as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

type Fixed = ReturnType<typeof decodeFixed>;

/**
 * A stream's header block, gathered from chunks however they cut it: the
 * fixed part first (magic checked and decoded, then `onFixed` runs: the
 * caller's checks, before anything is allocated), then the rest of the block
 * up to the data, whose length the fixed part gives.
 */
class HeaderBlock {
  readonly bytes = new Uint8Array(1 << 20); // the largest header block decodeFixed accepts
  have = 0;
  fixed: Fixed | null = null;
  /** The block's length: HEADER_FIXED until the fixed part is decoded. */
  length = HEADER_FIXED;

  constructor(private readonly onFixed: (fixed: Fixed) => void) {}

  /** Whether the whole block is here. */
  get complete(): boolean {
    return this.fixed !== null && this.have >= this.length;
  }

  /** Takes what the block still lacks from `chunk` at `at`; returns how many bytes that was. */
  take(chunk: Uint8Array, at: number): number {
    const n = Math.min(this.length - this.have, chunk.length - at);
    this.bytes.set(chunk.subarray(at, at + n), this.have);
    this.have += n;
    if (this.fixed === null && this.have === HEADER_FIXED) {
      if (Buffer.from(this.bytes.subarray(0, 8)).toString('latin1') !== MAGIC)
        throw invalid(STREAM_LABEL, `wrong magic (it does not start with '${MAGIC}')`);
      const fixed = decodeFixed(this.bytes.subarray(0, HEADER_FIXED), STREAM_LABEL);
      this.onFixed(fixed);
      this.fixed = fixed;
      this.length = fixed.dataOffset;
    }
    return n;
  }

  block(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }
}

/**
 * @internal Reads a full checkpoint from `readable` into a new memfd,
 * verifying the header before allocating and the data checksum as it
 * arrives. On any failure the memfd is closed and the readable destroyed.
 */
export async function restoreFromStream(readable: unknown): Promise<StreamRestored> {
  if (!isReadable(readable)) throw invalidType('"readable" argument', 'a Readable stream (or an async iterable of Uint8Array)', readable);
  let fd = -1;
  let mapId = -1;
  let done = false;
  try {
    let size = 0;
    const head = new HeaderBlock((fixed) => {
      if (fixed.kind === 'delta')
        throw invalid(STREAM_LABEL, 'it is a delta: apply it to a region restored from its base (region.applyDelta())');
      if (fixed.pageSize !== native.pageSize)
        throw invalid(STREAM_LABEL, `written with ${fixed.pageSize}-byte pages; this system's pages are ${native.pageSize} bytes`);
      size = fixed.regionSize;
      // Checked before anything is allocated: a hostile header may declare any size.
      const available = availableMemory();
      if (size > available) {
        throw explain(
          systemError(ENOMEM, 'ftruncate', STREAM_LABEL),
          `restoring this stream materialises its ${formatBytes(size)} region in memory, ` +
            `more than is available (${formatBytes(available)}: MemAvailable + SwapFree, within the cgroup limit)`,
        );
      }
    });
    let hash: Uint8Array | null = null;
    let written = 0; // data bytes placed
    let dataBytes = 0;
    let slice: Uint8Array | null = null;
    let sliceStart = 0;
    const SLICE = 1 << 30;
    const ps = native.pageSize;
    const carry = new Uint8Array(ps);
    let carried = 0; // bytes of the next page gathered in carry
    let zeros = new Uint8Array(256);
    // Writes whole pages of data (from data byte `pos`, page-aligned) into the
    // memfd through a writable mapping, 1 GiB at a time. A page of zeros is
    // left out: the memfd is fresh, its holes read as zeros, and a sparse
    // checkpoint stays sparse in memory. The last page's tail past the
    // region's end is hashed, not placed.
    const placePages = (pos: number, bytes: Uint8Array): void => {
      const pages = bytes.length / ps;
      if (zeros.length < pages) zeros = new Uint8Array(pages);
      const zero = native.zeroPages(bytes, ps, zeros);
      if (zero === pages) return;
      for (let i = 0; i < pages; ) {
        if (zero > 0 && zeros[i] === 1) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < pages && !(zero > 0 && zeros[j] === 1)) j++;
        placeRun(pos + i * ps, bytes.subarray(i * ps, j * ps));
        i = j;
      }
    };
    const placeRun = (start: number, bytes: Uint8Array): void => {
      let off = 0;
      while (off < bytes.length) {
        const p = start + off;
        if (p >= size) return;
        if (slice === null || p >= sliceStart + slice.length) {
          if (mapId !== -1) native.unmap(mapId);
          mapId = -1;
          slice = null;
          sliceStart = p - (p % SLICE);
          const restored = { kind: 'memfd' as const, fd, path: STREAM_LABEL, readOnly: false, size, dataOffset: 0, pageSize: ps };
          mapId = mapRestored(restored, sliceStart, Math.min(SLICE, size - sliceStart), 'write', 'restore of a checkpoint stream');
          slice = new Uint8Array(native.viewBuffer(mapId));
        }
        const room = Math.min(slice.length - (p - sliceStart), bytes.length - off, size - p);
        slice.set(bytes.subarray(off, off + room), p - sliceStart);
        off += room;
      }
    };
    let id = '';
    let checksum = '';
    for await (const chunk of readable) {
      if (!(chunk instanceof Uint8Array)) throw invalidType('a chunk of the stream', 'a Buffer or Uint8Array', chunk);
      let at = 0;
      while (at < chunk.length) {
        if (hash === null) {
          at += head.take(chunk, at);
          if (!head.complete) continue;
          const fixed = head.fixed as Fixed;
          const block = head.block();
          checkHeaderChecksum(block, null, STREAM_LABEL);
          const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
          checksum = dv.getBigUint64(48, true).toString(16).padStart(16, '0');
          id = Buffer.from(block.subarray(56, 72)).toString('hex');
          dataBytes = fixed.pageCount * fixed.pageSize;
          fd = native.memfdCreate('cowshm-restore', 0);
          native.ftruncate(fd, size);
          native.addSeals(fd, F_SEAL_SHRINK);
          hash = native.xxh64Init();
          continue;
        }
        // Data: placed into the memfd page by page (see placePages).
        if (written >= dataBytes) throw invalid(STREAM_LABEL, `longer than the ${head.length + dataBytes} bytes its header describes`);
        const take = Math.min(dataBytes - written, chunk.length - at);
        const piece = chunk.subarray(at, at + take);
        native.xxh64Update(hash, piece);
        let off = 0;
        if (carried > 0 || take < ps) {
          // A page that arrives in pieces is gathered first.
          const n = Math.min(ps - carried, take);
          carry.set(piece.subarray(0, n), carried);
          carried += n;
          off = n;
          if (carried === ps) {
            placePages(written + n - ps, carry);
            carried = 0;
          }
        }
        const whole = Math.floor((take - off) / ps) * ps;
        if (whole > 0) placePages(written + off, piece.subarray(off, off + whole));
        off += whole;
        if (off < take) {
          carry.set(piece.subarray(off), 0);
          carried = take - off;
        }
        written += take;
        at += take;
      }
    }
    if (hash === null || written < dataBytes)
      throw invalid(STREAM_LABEL, `truncated: it ended after ${hash === null ? head.have : head.length + written} bytes, and its header describes ${head.length + dataBytes}`);
    const actual = native.xxh64Update(hash, null);
    if (actual !== checksum) throw invalid(STREAM_LABEL, `data checksum mismatch (header says ${checksum}, data hashes to ${actual})`);
    if (mapId !== -1) native.unmap(mapId);
    mapId = -1;
    done = true;
    return { kind: 'memfd', fd, path: `/proc/${process.pid}/fd/${fd}`, readOnly: false, size, dataOffset: 0, pageSize: native.pageSize, id, checksum };
  } catch (err) {
    readable.destroy?.();
    throw err;
  } finally {
    if (mapId !== -1) native.unmap(mapId);
    if (!done && fd !== -1) native.close(fd);
  }
}


/** @internal The checkpoint a region restored from a stream holds: what a delta applied to it must name as its base. */
export interface CheckpointIdentity {
  /** The checkpoint's id and data checksum: what a delta of it names as its base. */
  id: string;
  checksum: string;
  /** XXH64 of the region's bytes as that checkpoint left them (a full checkpoint's data checksum). */
  regionHash: string;
}

/** The data checksum of the region's bytes in `fd` (size bytes, the last page zero-padded), as a full checkpoint of it has. */
function hashRegion(fd: number, size: number): string {
  const hash = native.xxh64Init();
  const slice = 1 << 30;
  const r = { kind: 'memfd' as const, fd, path: STREAM_LABEL, readOnly: false, size, dataOffset: 0, pageSize: native.pageSize };
  for (let at = 0; at < size; at += slice) {
    const id = mapRestored(r, at, Math.min(slice, size - at), 'read', 'a region a delta is applied to');
    try {
      native.xxh64Update(hash, new Uint8Array(native.viewBuffer(id)));
    } finally {
      native.unmap(id);
    }
  }
  const tail = (native.pageSize - (size % native.pageSize)) % native.pageSize;
  return native.xxh64Update(hash, tail ? new Uint8Array(tail) : null);
}

/**
 * @internal Applies a delta stream to the region in `fd` (a memfd of `size`
 * bytes restored from the checkpoint `holds`). Refused unless the delta names
 * `holds` as its base and the region's bytes still hash to `holds.checksum`
 * (it was not written since: one pass over the region). The delta's pages are staged in a memfd of
 * their own until the whole stream has verified (header checksum, which
 * covers the page list at its end, and data checksum); only then are they
 * copied into the region. Returns the identity the region then holds.
 */
export async function applyDeltaStream(fd: number, size: number, holds: CheckpointIdentity | null, readable: unknown): Promise<CheckpointIdentity> {
  if (!isReadable(readable)) throw invalidType('"readable" argument', 'a Readable stream (or an async iterable of Uint8Array)', readable);
  let stage = -1;
  let stageMap = -1;
  try {
    if (holds === null)
      throw cowshmError('ERR_COWSHM_CHECKPOINT_INVALID', 'a delta applies only to a region restored from a checkpoint stream (Region.restoreStream())');
    let dataBytes = 0;
    let listBytes = 0;
    const head = new HeaderBlock((fixed) => {
      if (fixed.kind !== 'delta') throw invalid(STREAM_LABEL, 'it is a full checkpoint, not a delta: restore it with Region.restoreStream()');
      const header = head.bytes;
      const baseId = Buffer.from(header.subarray(72, 88)).toString('hex');
      const baseSum = fixed.dv.getBigUint64(88, true).toString(16).padStart(16, '0');
      if (baseId !== holds.id || baseSum !== holds.checksum)
        throw invalid(STREAM_LABEL, `it is a delta of checkpoint ${baseId} (data checksum ${baseSum}); this region holds checkpoint ${holds.id} (data checksum ${holds.checksum})`);
      if (fixed.regionSize !== size || fixed.pageSize !== native.pageSize)
        throw invalid(STREAM_LABEL, 'it has another region size or page size than this region');
      if (hashRegion(fd, size) !== holds.regionHash)
        throw cowshmError('ERR_COWSHM_CHECKPOINT_INVALID', `this region was written since it was restored from checkpoint ${holds.id}: a delta of that checkpoint would not restore its successor`);
      dataBytes = fixed.pageCount * fixed.pageSize;
      listBytes = fixed.pageCount * 4;
      const available = availableMemory();
      if (dataBytes > available)
        throw explain(systemError(ENOMEM, 'ftruncate', STREAM_LABEL), `staging this delta's ${formatBytes(dataBytes)} takes more than is available (${formatBytes(available)})`);
    });
    let got = 0; // bytes after the header block: data, then the page list
    let staged: Uint8Array | null = null;
    let list: Uint8Array | null = null;
    const hash = native.xxh64Init();
    for await (const chunk of readable) {
      if (!(chunk instanceof Uint8Array)) throw invalidType('a chunk of the stream', 'a Buffer or Uint8Array', chunk);
      let at = 0;
      while (at < chunk.length) {
        if (staged === null) {
          at += head.take(chunk, at);
          if (!head.complete) continue;
          list = new Uint8Array(listBytes);
          if (dataBytes > 0) {
            stage = native.memfdCreate('cowshm-delta-stage', 0);
            native.ftruncate(stage, dataBytes);
            const r = { kind: 'memfd' as const, fd: stage, path: STREAM_LABEL, readOnly: false, size: dataBytes, dataOffset: 0, pageSize: native.pageSize };
            if (dataBytes > MAX_VIEW_LENGTH) throw outOfRange('a delta stream', `at most ${MAX_VIEW_LENGTH} bytes of pages`, dataBytes);
            stageMap = mapRestored(r, 0, dataBytes, 'write', 'a delta stream being staged');
            staged = new Uint8Array(native.viewBuffer(stageMap));
          } else {
            staged = new Uint8Array(0);
          }
          continue;
        }
        if (got >= dataBytes + listBytes) throw invalid(STREAM_LABEL, `longer than the ${head.length + dataBytes + listBytes} bytes its header describes`);
        const take = Math.min(dataBytes + listBytes - got, chunk.length - at);
        const piece = chunk.subarray(at, at + take);
        const inData = Math.max(0, Math.min(take, dataBytes - got));
        if (inData > 0 && staged !== null) {
          native.xxh64Update(hash, piece.subarray(0, inData));
          staged.set(piece.subarray(0, inData), got);
        }
        if (take > inData && list !== null) list.set(piece.subarray(inData), got + inData - dataBytes);
        got += take;
        at += take;
      }
    }
    const fixed = head.fixed;
    if (fixed === null || staged === null || list === null || got < dataBytes + listBytes)
      throw invalid(STREAM_LABEL, `truncated: it ended after ${staged === null ? head.have : head.length + got} bytes`);
    const pages = new Uint32Array(fixed.pageCount);
    new Uint8Array(pages.buffer).set(list);
    checkHeaderChecksum(head.block(), pages, STREAM_LABEL);
    const checksum = fixed.dv.getBigUint64(48, true).toString(16).padStart(16, '0');
    const actual = native.xxh64Update(hash, null);
    if (actual !== checksum) throw invalid(STREAM_LABEL, `data checksum mismatch (header says ${checksum}, data hashes to ${actual})`);
    const last = Math.ceil(size / native.pageSize);
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i] as number;
      if (p >= last || (i > 0 && p <= (pages[i - 1] as number))) throw invalid(STREAM_LABEL, `its page list is out of order or out of range at entry ${i}`);
    }
    // Verified: now the region changes.
    const ps = native.pageSize;
    const r = { kind: 'memfd' as const, fd, path: STREAM_LABEL, readOnly: false, size, dataOffset: 0, pageSize: native.pageSize };
    const slice = 1 << 30;
    for (let at = 0, i = 0; at < size && i < pages.length; at += slice) {
      const length = Math.min(slice, size - at);
      const id = mapRestored(r, at, length, 'write', 'a region a delta is applied to');
      try {
        const bytes = new Uint8Array(native.viewBuffer(id));
        for (; i < pages.length && (pages[i] as number) * ps < at + length; i++) {
          const off = (pages[i] as number) * ps - at;
          const len = Math.min(ps, length - off);
          bytes.set(staged.subarray(i * ps, i * ps + len), off);
        }
      } finally {
        native.unmap(id);
      }
    }
    return { id: Buffer.from(head.bytes.subarray(56, 72)).toString('hex'), checksum, regionHash: hashRegion(fd, size) };
  } catch (err) {
    (readable as { destroy?: () => void }).destroy?.();
    throw err;
  } finally {
    if (stageMap !== -1) native.unmap(stageMap);
    if (stage !== -1) native.close(stage);
  }
}
