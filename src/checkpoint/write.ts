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
import { native } from '../native';
import { invalidType, outOfRange } from '../errors';
import * as check from '../validate';
import { encodeHeader, expectedFileSize, HEADER_BLOCK, invalid, MAX_BASE_PATH, newId, type CheckpointFile } from './format';
import { closeChain, mapRestored, openChain, restoreCheckpoint, type ChainLink, type RestoredCheckpoint } from './restore';

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
  readonly region: { readonly size: number };
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

/** Removes temporary files a crashed writer of the same target left behind (their process is gone). */
async function removeStaleTemporaries(dir: string, base: string): Promise<void> {
  const prefix = `.${base}.`;
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const m = /^(\d+)\.[0-9a-f]{12}\.tmp$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // alive: maybe writing it right now
    } catch (err) {
      if ((err as { code?: string }).code !== 'ESRCH') continue;
    }
    await fs.promises.rm(path.join(dir, name), { force: true }).catch(() => undefined);
  }
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
    await removeStaleTemporaries(dir, path.basename(target));
    const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${newId().slice(0, 12)}.tmp`);
    const handle = await fs.promises.open(tmp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    let closed = false;
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
    const timer = onProgress ? setInterval(() => state && report(Atomics.load(state, 1) * pageSize), 15) : undefined;
    try {
      const [written, shared] = native.writePages(
        handle.fd, HEADER_BLOCK, sourceId, candidates, examined, compareId,
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
        await handle.write(new Uint8Array(pages.buffer, pages.byteOffset, pages.byteLength), 0, pages.byteLength, header.pageListOffset);
      await handle.write(block, 0, block.length, 0);
      const bytes = expectedFileSize(header);
      await handle.truncate(bytes);
      await handle.sync();
      await handle.close();
      closed = true;
      if (signal?.aborted) throw abortError(signal);
      source._assertExact?.(); // a snapshot that broke while it was read is never renamed into place
      await fs.promises.rename(tmp, target);
      renamed = true;
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
      if (!closed) await handle.close().catch(() => undefined);
      if (!renamed) await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
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
