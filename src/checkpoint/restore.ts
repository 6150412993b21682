/**
 * Restoring checkpoints. A full checkpoint becomes a read-only region backed
 * by the checkpoint file itself, its views shifted past the header: opening it
 * reads one header block, and pages load when first touched. A delta chain is
 * materialised into a new memfd region (base data, then each delta's pages),
 * which costs a read of the region's size. The checkpoint files are opened
 * read-only and never written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as fsc } from 'node:fs';
import { native } from '../native';
import { explain, outOfRange, systemError, type SystemError } from '../errors';
import { availableMemory, formatBytes } from '../reserve';
import { ACCESS, F_SEAL_SHRINK, MAP_FLAG_HUGE_SHIFT, NO_OWNER } from '../constants';
import * as check from '../validate';
import * as hugetlb from '../hugetlb';
import { openRegular, type FileStat } from '../file';
import { invalid, readHeader, verifyData, type CheckpointFile } from './format';

export interface RestoreOptions {
  /**
   * `'header'` (default): check magic, version, lengths and the header
   * checksum of every file in the chain; O(1) for a full checkpoint.
   * `'full'`: also hash every file's data and compare it with its header.
   */
  verify?: 'header' | 'full';
  /**
   * Restore into a new region on hugetlb pages of this size (`2 << 20`,
   * `1 << 30`). That is a copy of every byte into pages taken from the pool
   * at once, not the O(1) mapping of a full checkpoint; the checkpoint keeps
   * its 4 KiB page unit, and its region size must be a multiple of the huge
   * page. Default: the system page (no copy for a full checkpoint).
   */
  pageSize?: number;
}

/**
 * @internal What a restored checkpoint is made of. `Region.restore()` builds
 * a region from it, which owns `fd` from then on; anyone else closes `fd`.
 */
export interface RestoredCheckpoint {
  /** `'file'`: the full checkpoint itself. `'memfd'`: a delta chain copied into memory. */
  kind: 'file' | 'memfd';
  fd: number;
  /** The checkpoint's path, or `/proc/PID/fd/N` for the memfd. */
  path: string;
  readOnly: boolean;
  /** The region's size in bytes. */
  size: number;
  /** Where the region's bytes start in `fd`: past the header for a full checkpoint, 0 for a memfd. */
  dataOffset: number;
  /** The page size of `fd`: the system page, or the hugetlb page size asked for. */
  pageSize: number;
  /** fstat of `fd` when it was already taken: the region need not ask again. */
  stat?: FileStat;
}

/** One link of a chain: its header and an open read-only descriptor. */
export interface ChainLink {
  header: CheckpointFile;
  fd: number;
  /** fstat of `fd`, taken when it was opened. */
  stat: FileStat;
}

const MAX_CHAIN = 4096;
const ENOMEM = 12;

function openCheckpoint(file: string): ChainLink {
  const { fd, stat } = openRegular(file, fsc.O_RDONLY, 0, 'a checkpoint is a regular file');
  try {
    return { header: readHeader(fd, file, stat[0]), fd, stat };
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

export function closeChain(chain: ChainLink[]): void {
  for (const link of chain) native.close(link.fd);
}

/**
 * Opens `file` and every base it depends on, oldest (the full checkpoint)
 * first, checking that each delta's recorded base identity matches the file
 * found at its base path.
 */
export function openChain(file: string, verify: 'header' | 'full'): ChainLink[] {
  const chain: ChainLink[] = [];
  const seen = new Set<string>();
  try {
    let current = path.resolve(file);
    // Each base is opened once: the descriptor whose header was checked
    // against the delta is the one the chain keeps.
    let link = openCheckpoint(current);
    for (;;) {
      chain.push(link);
      const h = link.header;
      if (seen.has(h.id)) throw invalid(current, 'its chain of bases loops back on itself');
      seen.add(h.id);
      if (verify === 'full') verifyData(link.fd, h);
      if (h.base === null) break;
      if (chain.length >= MAX_CHAIN) throw invalid(file, `its chain of bases is longer than ${MAX_CHAIN}`);
      const basePath = path.resolve(path.dirname(current), h.base.path);
      let baseLink: ChainLink;
      try {
        baseLink = openCheckpoint(basePath);
      } catch (err) {
        const e = err as Error & { code?: string };
        if (e.code === 'ENOENT')
          throw invalid(current, `it is a delta and its base '${basePath}' does not exist`);
        throw err;
      }
      const b = baseLink.header;
      if (b.id !== h.base.id || b.checksum !== h.base.checksum || b.regionSize !== h.base.regionSize) {
        native.close(baseLink.fd);
        throw invalid(
          current,
          `it is a delta of checkpoint ${h.base.id} (data checksum ${h.base.checksum}), but '${basePath}' ` +
            `is checkpoint ${b.id} (data checksum ${b.checksum}): the base was replaced or is another region's`,
        );
      }
      if (b.regionSize !== h.regionSize || b.pageSize !== h.pageSize) {
        native.close(baseLink.fd);
        throw invalid(current, `its base '${basePath}' has another region size or page size`);
      }
      link = baseLink;
      current = basePath;
    }
    return chain.reverse();
  } catch (err) {
    closeChain(chain);
    throw err;
  }
}

function readInto(fd: number, target: Uint8Array, offset: number, length: number, position: number, file: string): void {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, target, offset + done, Math.min(length - done, 1 << 30), position + done);
    if (n === 0) throw invalid(file, 'truncated while being restored');
    done += n;
  }
}

/**
 * Reads `[position, position + length)` of `fd` into `target` at `offset`,
 * its holes (SEEK_DATA/SEEK_HOLE) left out: the target is a fresh memfd,
 * whose holes read as zeros too, so a sparse checkpoint restores sparse.
 */
function readDataInto(fd: number, target: Uint8Array, offset: number, length: number, position: number, file: string): void {
  const end = position + length;
  for (let at = position; at < end; ) {
    const data = native.seekData(fd, at, 0);
    if (data === -1 || data >= end) break;
    const hole = native.seekData(fd, data, 1);
    const to = hole === -1 || hole > end ? end : hole;
    readInto(fd, target, offset + (data - position), to - data, data, file);
    at = to;
  }
  // A hole to the end, or a file cut short since its header was checked.
  if ((native.fstat(fd, file)[0] as number) < end) throw invalid(file, 'truncated while being restored');
}

/**
 * @internal Maps `[offset, offset + length)` of a restored checkpoint's bytes
 * for the caller alone: no Region owns the mapping, so no ArrayBuffer is made
 * unless the caller asks for one, and the caller unmaps it (`native.unmap`).
 */
export function mapRestored(r: RestoredCheckpoint, offset: number, length: number, access: 'read' | 'write', label: string): number {
  const st = native.fstat(r.fd, r.path);
  return native.mapView(r.fd, r.dataOffset + offset, length, ACCESS[access], label, NO_OWNER, st[4], st[5], hugetlb.pageShift(r.pageSize) << MAP_FLAG_HUGE_SHIFT);
}

/** Copies a chain's bytes into a fresh memfd (on hugetlb pages of `pageSize` when that is not the system page). */
function materialise(chain: ChainLink[], pageSize: number): RestoredCheckpoint {
  const last = (chain[chain.length - 1] as ChainLink).header;
  const size = (chain[0] as ChainLink).header.regionSize;
  const huge = pageSize !== native.pageSize;
  // Every byte of the chain lands in memory (or in the hugetlb pool, checked
  // there). Each header's size was checked against its file, but a file can
  // be sparse: a crafted base declaring a huge region over a hole would
  // otherwise be read until the OOM killer ended this process (or another one).
  const available = huge ? Number.POSITIVE_INFINITY : availableMemory();
  if (size > available) {
    throw explain(
      systemError(ENOMEM, 'ftruncate', last.path),
      `restoring this chain of ${chain.length} checkpoints materialises its ${formatBytes(size)} region in memory, ` +
        `more than is available (${formatBytes(available)}: MemAvailable + SwapFree, within the cgroup limit)`,
    );
  }
  if (huge) hugetlb.checkPool(size, pageSize, last.path);
  const fd = native.memfdCreate('cowshm-restore', hugetlb.pageShift(pageSize));
  const restored: RestoredCheckpoint = { kind: 'memfd', fd, path: `/proc/${process.pid}/fd/${fd}`, readOnly: false, size, dataOffset: 0, pageSize };
  try {
    native.ftruncate(fd, size);
    // Every huge page now: a pool emptied meanwhile fails here, not with SIGBUS mid-copy.
    if (huge) {
      try {
        native.fallocate(fd, 0, size);
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOSPC') throw hugetlb.explainPool(err as SystemError, size, pageSize);
        throw err;
      }
    }
    native.addSeals(fd, F_SEAL_SHRINK);
    // Mappings are limited to the largest ArrayBuffer: fill in slices.
    const slice = 1 << 30;
    for (let at = 0; at < size; at += slice) {
      const length = Math.min(slice, size - at);
      const id = mapRestored(restored, at, length, 'write', `restore of '${last.path}'`);
      try {
        const bytes = new Uint8Array(native.viewBuffer(id));
        for (const { header: h, fd: cfd } of chain) {
          if (h.pages === null) {
            readDataInto(cfd, bytes, 0, length, h.dataOffset + at, h.path);
            continue;
          }
          // Runs of consecutive pages are consecutive in the file too: one read per run.
          const pages = h.pages;
          const ps = h.pageSize;
          for (let i = 0; i < pages.length; ) {
            const p0 = pages[i] as number;
            let j = i + 1;
            while (j < pages.length && (pages[j] as number) === p0 + (j - i)) j++;
            const start = Math.max(p0 * ps, at);
            const end = Math.min((p0 + (j - i)) * ps, at + length, size);
            if (start < end) readInto(cfd, bytes, start - at, end - start, h.dataOffset + i * ps + (start - p0 * ps), h.path);
            i = j;
          }
        }
      } finally {
        native.unmap(id);
      }
    }
    return restored;
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

/**
 * @internal Opens and checks a checkpoint (and its chain of bases) and returns
 * what a region is built from: the full checkpoint's own descriptor, or a
 * memfd holding a delta chain's bytes.
 */
export function restoreCheckpoint(file: unknown, options: unknown): RestoredCheckpoint {
  check.path(file, '"path" argument');
  const o = check.options<RestoreOptions>(options);
  const verify = check.oneOf(o.verify, '"verify" option', ['header', 'full'] as const, 'header');
  const pageSize =
    o.pageSize === undefined ? native.pageSize : hugetlb.checkPageSize(check.integer(o.pageSize, '"pageSize" option', 1), '"pageSize" option');
  const chain = openChain(file as string, verify);
  const last = chain[chain.length - 1] as ChainLink;
  const h = last.header;
  if (h.pageSize !== native.pageSize) {
    closeChain(chain);
    throw invalid(h.path, `written with ${h.pageSize}-byte pages; this system's pages are ${native.pageSize} bytes`);
  }
  if (pageSize !== native.pageSize && h.regionSize % pageSize !== 0) {
    closeChain(chain);
    throw outOfRange(
      '"pageSize" option',
      `a page size the checkpoint's region size (${h.regionSize}) is a multiple of; ${pageSize} is not`,
      pageSize,
    );
  }
  if (chain.length === 1 && pageSize === native.pageSize) {
    // The caller takes over the descriptor.
    return { kind: 'file', fd: last.fd, path: h.path, readOnly: true, size: h.regionSize, dataOffset: h.dataOffset, pageSize, stat: last.stat };
  }
  try {
    return materialise(chain, pageSize);
  } finally {
    closeChain(chain);
  }
}
