/**
 * Writing checkpoints: a snapshot's pages go to a temporary file in the
 * target's directory on the libuv thread pool (native/checkpoint.c), then
 * header, fsync, rename over the target, fsync of the directory. Until the
 * rename the target keeps whatever it held; after it, the new file is whole
 * and on disk.
 *
 * Deltas. A delta written by snapshot s2 against a checkpoint written by s1
 * must hold every page whose bytes differ between s1 and s2, i.e. every page
 * written to the region between the moments s1 and s2 were taken.
 * `s2.changedPages()` is the wrong list (pages written after s2). What is
 * right is `s1.changedPages()` read any time after s2 was taken, while s1 is
 * still live: it lists the pages written since s1, which includes all pages
 * written between s1 and s2; pages written after s2 are included too, but
 * their bytes in s2 equal their bytes in s1, so writing them is harmless.
 * This is the fast path, used when the base checkpoint was written in this
 * process by a snapshot that is still live and older than the one writing:
 * snapshot.ts keeps that record and hands the writer the list
 * (`KnownChanges`). Otherwise (base snapshot released, base written by
 * another process, or the source is a plain view) the delta compares every
 * page with the base checkpoint's bytes and keeps those that differ: always
 * right, at the price of reading the base.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { native } from '../native';
import * as c from '../constants';
import { lockRange } from '../locks';
import { cowshmError, invalidType, outOfRange } from '../errors';
import * as check from '../validate';
import { encodeHeader, expectedFileSize, HEADER_BLOCK, invalid, MAX_BASE_PATH, newId, type CheckpointFile } from './format';
import { closeChain, mapRestored, openChain, restoreCheckpoint, type ChainLink, type RestoredCheckpoint } from './restore';
import { notAFile } from '../file';

export interface WriteOptions {
  /** Cancels the write; the temporary file is removed and the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called with (bytesDone, bytesTotal) as pages are written: monotonic, ending at bytesTotal. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Path of an earlier checkpoint of the same region: write a delta against it. */
  base?: string;
}

export interface CheckpointResult {
  /** Bytes in the checkpoint file. */
  bytes: number;
  /** Wall-clock seconds from the call to the durable rename. */
  seconds: number;
  /** The data checksum (XXH64, 16 hex digits), as in the header. */
  checksum: string;
  /** `'full'` or `'delta'`. */
  kind: 'full' | 'delta';
  /** Data pages in the file. */
  pages: number;
  /** The checkpoint's id (32 hex digits); a delta names its base by it. */
  id: string;
}

/** @internal What can be written: a snapshot, or any mapping covering a whole region. */
export interface CheckpointSource {
  /** The addon's id of the mapping; throws once it is closed or released. */
  readonly _id: number;
  readonly buffer: ArrayBuffer;
  readonly byteLength: number;
  readonly byteOffset: number;
  /** The region: its size; for a full checkpoint, the file whose holes are skipped. */
  readonly region: { readonly size: number; readonly fd: number; readonly kind: string; readonly readOnly: boolean };
  /** Throws if the source no longer holds what it held when the write started. */
  _assertExact?(): void;
}

/**
 * @internal What the source of a write knows about its region's history
 * without reading any file (the snapshot module keeps it; see Deltas above).
 */
export interface KnownChanges {
  /**
   * Every page (index from the region's start) whose bytes may differ between
   * checkpoint `id` and the source, or null when that is not known.
   */
  changedSince(id: string): Uint32Array | null;
  /** The checkpoint `id`, written from the source, is in place. */
  wrote(id: string): void;
  /** The pages copied into the snapshot so far, ascending (they are not holes, whatever the region's file says). */
  copied(): Uint32Array;
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}

/** The pages a delta against `base` must hold when `known` can say, or null when it must compare. */
function knownCandidates(known: KnownChanges | undefined, base: CheckpointFile, pages: number): Uint32Array | null {
  const list = known?.changedSince(base.id) ?? null;
  // Chunk-granular backends may mark past the last page of an odd-sized region.
  return list !== null && list.length > 0 && (list[list.length - 1] as number) >= pages ? list.filter((p) => p < pages) : list;
}

/**
 * Removes the temporaries of `base` in `dir` whose writers are gone: those on
 * which a lock can be taken (a live writer holds an exclusive OFD lock on its
 * temporary, see tempCreate in native/checkpoint.c). The pid in a name is for
 * people: it means nothing in another pid namespace or on another host
 * sharing the directory, and a worker's pid outlives it.
 */
async function removeStaleTemporaries(dir: string, base: string): Promise<void> {
  const prefix = `.${base}.`;
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+\.[0-9a-f]{12}\.tmp$/.test(name.slice(prefix.length))) continue;
    const file = path.join(dir, name);
    let fd: number;
    try {
      fd = native.open(file, c.O_RDONLY | c.O_NONBLOCK | c.O_NOFOLLOW, 0);
    } catch {
      continue; // gone meanwhile, or not ours to read
    }
    try {
      const [, , , mode, dev, ino] = native.fstat(fd, file);
      if ((mode & c.S_IFMT) !== c.S_IFREG || !lockRange(fd, 0, 0, 'shared')) continue; // alive, or not a temporary
      // Still locked by us: the writer cannot come back, and the name still leads to this file.
      const now = await fs.promises.lstat(file).catch(() => null);
      if (now && now.dev === dev && now.ino === ino) await fs.promises.rm(file, { force: true }).catch(() => undefined);
    } finally {
      native.close(fd);
    }
  }
}

/** Creates the locked temporary a checkpoint of `target` is written to; returns its path and descriptor. */
function createTemporary(dir: string, target: string): { tmp: string; fd: number } {
  for (let attempt = 0; ; attempt++) {
    const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${newId().slice(0, 12)}.tmp`);
    const fd = native.tempCreate(tmp, 0o600);
    if (fd >= 0) return { tmp, fd };
    // A cleaner took the new file for a dead writer's: it removes it; take another name.
    if (attempt >= 16) throw cowshmError('ERR_COWSHM_INTERNAL', `could not create a temporary file for '${target}'`);
  }
}

const writeAt = promisify(fs.write) as unknown as (fd: number, b: Uint8Array, o: number, l: number, p: number) => Promise<number>;
const ftruncate = promisify(fs.ftruncate);
const fsync = promisify(fs.fsync);

async function writeFully(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) done += await writeAt(fd, bytes, done, bytes.length - done, position + done);
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * @internal Writes `source` to `file`. `known`, when given, may spare a delta
 * the comparison with its base; without it a delta always compares.
 */
export async function writeFrom(
  source: CheckpointSource, file: unknown, options: unknown, known?: KnownChanges,
): Promise<CheckpointResult> {
  const started = process.hrtime.bigint();
  check.path(file, '"path" argument');
  const o = check.options<WriteOptions>(options);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidType('"signal" option', 'an AbortSignal', signal);
  const onProgress = o.onProgress;
  if (onProgress !== undefined && typeof onProgress !== 'function')
    throw invalidType('"onProgress" option', 'a function', onProgress);
  const basePath = o.base === undefined ? undefined : check.path(o.base, '"base" option');

  const region = source.region;
  const pageSize = native.pageSize;
  const size = region.size;
  if (source.byteOffset !== 0 || source.byteLength !== size)
    throw outOfRange('source', `a mapping of the whole region (${size} bytes from offset 0)`, source.byteLength);
  const sourceId = source._id; // throws if closed or released
  const keep: unknown[] = [source.buffer];
  if (signal?.aborted) throw abortError(signal);

  const target = path.resolve(file as string);
  const dir = path.dirname(target);
  const totalPages = Math.ceil(size / pageSize);

  // A delta: its base must be a valid checkpoint of a region of this size,
  // and must not be the file about to be replaced (nor anything it rests on).
  let baseHeader: CheckpointFile | null = null;
  let candidates: Uint32Array | null = null;
  let compareBase: RestoredCheckpoint | null = null;
  let compareId = -1;
  try {
    if (basePath !== undefined) {
      const chain: ChainLink[] = openChain(basePath, 'header');
      try {
        baseHeader = (chain[chain.length - 1] as ChainLink).header;
        for (const link of chain) {
          if (path.resolve(link.header.path) === target)
            throw outOfRange('"path" argument', `a file other than the delta's base chain ('${link.header.path}')`, file);
        }
      } finally {
        closeChain(chain);
      }
      if (baseHeader.regionSize !== size)
        throw invalid(baseHeader.path, `it checkpoints a region of ${baseHeader.regionSize} bytes; this region has ${size}`);
      if (Buffer.byteLength(path.relative(dir, baseHeader.path)) > MAX_BASE_PATH)
        throw outOfRange('"base" option', `a path of at most ${MAX_BASE_PATH} bytes relative to the target directory`, basePath);
      candidates = knownCandidates(known, baseHeader, totalPages);
      if (candidates === null) {
        // Mapped for this write alone: no ArrayBuffer, nothing else can unmap it meanwhile.
        compareBase = restoreCheckpoint(baseHeader.path, { verify: 'header' });
        compareId = mapRestored(compareBase, 0, size, 'read', `checkpoint '${baseHeader.path}' (the base of a delta)`);
      }
    }

    const stat = await fs.promises.stat(dir);
    if (!stat.isDirectory()) throw outOfRange('"path" argument', 'a path in an existing directory', file);
    // The rename would replace a FIFO or device someone uses (and a directory
    // would fail only after all the data was written): refuse them now.
    const existing = await fs.promises.lstat(target).catch(() => null);
    if (existing && !existing.isFile() && !existing.isSymbolicLink())
      throw notAFile(target, 'a checkpoint replaces only a regular file');
    await removeStaleTemporaries(dir, path.basename(target));
    const { tmp, fd } = createTemporary(dir, target);
    let released = false;
    let renamed = false;
    // The writer's shared state: [0] = 1 asks it to stop, [1] counts pages done.
    let state: Int32Array | null = null;
    let cancelled = false;
    const cancel = (): void => {
      cancelled = true;
      if (state) Atomics.store(state, 0, 1);
    };
    const onAbort = (): void => cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) cancel();
    const examined = candidates ? candidates.length : totalPages;
    const totalBytes = examined * pageSize;
    let reported = -1;
    // A throwing onProgress cancels the write, and the promise rejects with its error.
    let progressError: { error: unknown } | null = null;
    const report = (done: number): void => {
      if (!onProgress || done <= reported || progressError) return;
      reported = done;
      try {
        onProgress(done, totalBytes);
      } catch (error) {
        progressError = { error };
        cancel();
      }
    };
    // A tick before the pool thread has written a page (a loaded machine) reports nothing: no progress yet.
    const tick = (): void => {
      const done = state ? Atomics.load(state, 1) * pageSize : 0;
      if (done > 0) report(done);
    };
    const timer = onProgress ? setInterval(tick, 15) : undefined;
    try {
      // A full checkpoint skips the pages that are holes in the region's file
      // (reading one through the mapping would allocate it): they stay holes
      // in the checkpoint too. A delta that compares every page reads a hole
      // as zeros without touching it. Not for a restored checkpoint, whose
      // file starts with a header (those are read-only).
      const skipHoles = (baseHeader === null || compareId !== -1) && (region.kind !== 'file' || !region.readOnly);
      const [written, shared] = native.writePages(
        fd, HEADER_BLOCK, sourceId, candidates, examined, compareId,
        skipHoles ? region.fd : -1, skipHoles ? (known?.copied() ?? null) : null,
      );
      state = shared;
      if (cancelled) cancel();
      const [checksum, kept] = await written;
      if (timer) clearInterval(timer);
      if (progressError) throw (progressError as { error: unknown }).error;
      if (signal?.aborted) throw abortError(signal);
      const pages = baseHeader === null ? null : (kept ?? candidates ?? new Uint32Array(0));
      const pageCount = pages === null ? totalPages : pages.length;
      const id = newId();
      const header = {
        kind: baseHeader === null ? ('full' as const) : ('delta' as const),
        regionSize: size,
        pageSize,
        pageCount,
        dataOffset: HEADER_BLOCK,
        pageListOffset: pages === null ? 0 : HEADER_BLOCK + pageCount * pageSize,
        checksum,
        id,
        base:
          baseHeader === null
            ? null
            : { id: baseHeader.id, checksum: baseHeader.checksum, regionSize: baseHeader.regionSize, path: path.relative(dir, baseHeader.path) },
        created: new Date(),
      };
      const block = encodeHeader(header, pages);
      if (pages !== null && pages.length > 0)
        await writeFully(fd, new Uint8Array(pages.buffer, pages.byteOffset, pages.byteLength), header.pageListOffset);
      await writeFully(fd, block, 0);
      const bytes = expectedFileSize(header);
      await ftruncate(fd, bytes);
      await fsync(fd);
      if (signal?.aborted) throw abortError(signal);
      source._assertExact?.(); // a snapshot that broke while it was read is never renamed into place
      // Renamed while still locked: until then no cleaner may take it for a dead writer's.
      await fs.promises.rename(tmp, target);
      renamed = true;
      released = true;
      native.tempRelease(fd, 0);
      await fsyncDirectory(dir);
      report(totalBytes); // the checkpoint is in place: an error thrown here is ignored
      known?.wrote(id);
      return {
        bytes,
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
        checksum,
        kind: header.kind,
        pages: pageCount,
        id,
      };
    } catch (err) {
      if (timer) clearInterval(timer);
      if (!released) {
        try {
          native.tempRelease(fd, renamed ? 0 : 1);
        } catch {
          // The temporary could not be removed: unlocked now, the next writer of this target removes it.
        }
      }
      if (progressError) throw (progressError as { error: unknown }).error;
      if ((err as { code?: string }).code === 'ABORT_ERR' && signal?.aborted) throw abortError(signal);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      keep.length = 0;
    }
  } finally {
    if (compareId !== -1) native.unmap(compareId);
    if (compareBase !== null) native.close(compareBase.fd);
  }
}
