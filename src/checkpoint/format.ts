/**
 * The checkpoint file format (version 1). All integers little-endian.
 *
 * ```
 * offset size  field
 *      0    8  magic "COWSHMCK"
 *      8    4  version (1)
 *     12    4  kind: 1 full, 2 delta
 *     16    8  region size in bytes
 *     24    4  page size in bytes
 *     28    4  page count: data pages in this file
 *     32    8  data offset (a multiple of the page size; 4096 for 4 KiB pages)
 *     40    8  page list offset (delta; 0 for a full checkpoint)
 *     48    8  data checksum: XXH64 (seed 0) of the data section
 *     56   16  id: random, names this checkpoint
 *     72   16  base id (delta; zero for a full checkpoint)
 *     88    8  base data checksum (delta)
 *     96    8  base region size (delta)
 *    104    8  creation time, milliseconds since the epoch (float64)
 *    112    4  base path length in bytes (delta)
 *    116    4  reserved, zero
 *    120    8  header checksum: XXH64 of the header block with this field
 *              zeroed, followed by the page list
 *    128  ...  base path, UTF-8, relative to the delta's directory
 * ```
 * The header block fills the first `data offset` bytes. Data follows, page
 * aligned, so a full checkpoint is mapped rather than read. A full checkpoint
 * holds every page of the region in order; a delta holds only the pages in
 * its page list (uint32 page indexes, strictly increasing), placed after the
 * data because a writer that compares against its base learns the list only
 * as it goes.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { native } from '../native';
import { cowshmError } from '../errors';

export const MAGIC = 'COWSHMCK';
export const VERSION = 1;
export const HEADER_FIXED = 128;
/** The header block: 4 KiB, or one page where pages are larger, so the data stays page aligned. */
export const HEADER_BLOCK = Math.max(4096, native.pageSize);
export const MAX_BASE_PATH = HEADER_BLOCK - HEADER_FIXED;

export type CheckpointKind = 'full' | 'delta';

export interface CheckpointHeader {
  version: number;
  kind: CheckpointKind;
  regionSize: number;
  pageSize: number;
  pageCount: number;
  dataOffset: number;
  pageListOffset: number;
  /** 16 hex digits. */
  checksum: string;
  /** 32 hex digits. */
  id: string;
  /** Delta only: the base's id, data checksum, region size and path (relative to this file's directory). */
  base: { id: string; checksum: string; regionSize: number; path: string } | null;
  created: Date;
  headerChecksum: string;
}

/** What a header plus its page list describe, read from a file. */
export interface CheckpointFile extends CheckpointHeader {
  path: string;
  fileSize: number;
  /** Delta: the page indexes its data holds, in order. Full: null. */
  pages: Uint32Array | null;
}

export function newId(): string {
  return randomBytes(16).toString('hex');
}

/** The bytes a file with this header occupies. */
export function expectedFileSize(h: Pick<CheckpointHeader, 'kind' | 'dataOffset' | 'pageCount' | 'pageSize'>): number {
  return h.dataOffset + h.pageCount * h.pageSize + (h.kind === 'delta' ? h.pageCount * 4 : 0);
}

function hashHeader(block: Uint8Array, pages: Uint32Array | null): string {
  const copy = new Uint8Array(block.length + (pages ? pages.byteLength : 0));
  copy.set(block);
  copy.fill(0, 120, 128);
  if (pages) copy.set(new Uint8Array(pages.buffer, pages.byteOffset, pages.byteLength), block.length);
  return native.xxh64(copy);
}

/** Encodes a header block (with its header checksum filled in). */
export function encodeHeader(h: Omit<CheckpointHeader, 'headerChecksum' | 'version'>, pages: Uint32Array | null): Uint8Array {
  const block = new Uint8Array(h.dataOffset);
  const dv = new DataView(block.buffer);
  block.set(Buffer.from(MAGIC, 'latin1'), 0);
  dv.setUint32(8, VERSION, true);
  dv.setUint32(12, h.kind === 'full' ? 1 : 2, true);
  dv.setBigUint64(16, BigInt(h.regionSize), true);
  dv.setUint32(24, h.pageSize, true);
  dv.setUint32(28, h.pageCount, true);
  dv.setBigUint64(32, BigInt(h.dataOffset), true);
  dv.setBigUint64(40, BigInt(h.pageListOffset), true);
  dv.setBigUint64(48, BigInt(`0x${h.checksum}`), true);
  block.set(Buffer.from(h.id, 'hex'), 56);
  if (h.base) {
    block.set(Buffer.from(h.base.id, 'hex'), 72);
    dv.setBigUint64(88, BigInt(`0x${h.base.checksum}`), true);
    dv.setBigUint64(96, BigInt(h.base.regionSize), true);
    const p = Buffer.from(h.base.path, 'utf8');
    if (p.length > MAX_BASE_PATH) throw new RangeError(`the base path is longer than ${MAX_BASE_PATH} bytes`);
    dv.setUint32(112, p.length, true);
    block.set(p, HEADER_FIXED);
  }
  dv.setFloat64(104, h.created.getTime(), true);
  const sum = hashHeader(block, pages);
  dv.setBigUint64(120, BigInt(`0x${sum}`), true);
  return block;
}

export function invalid(file: string, what: string): Error & { code: string; path: string } {
  const err = cowshmError('ERR_COWSHM_CHECKPOINT_INVALID', `'${file}' is not a valid cowshm checkpoint: ${what}`) as Error & {
    code: string;
    path: string;
  };
  err.path = file;
  return err;
}

const hex64 = (dv: DataView, at: number): string => dv.getBigUint64(at, true).toString(16).padStart(16, '0');

function readExactly(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got === length ? buf : buf.subarray(0, got);
}

/**
 * Reads and checks a checkpoint's header from an open descriptor: magic,
 * version, field sanity, the file's length, and the header checksum (which
 * covers a delta's page list). Never reads the data. `fileSize`: the
 * descriptor's size when the caller has just taken its fstat.
 */
export function readHeader(fd: number, file: string, fileSize: number): CheckpointFile {
  const fixed = readExactly(fd, HEADER_FIXED, 0);
  if (fixed.length < 8 || fixed.subarray(0, 8).toString('latin1') !== MAGIC) {
    // The file's own bytes are not shown: a base path may name anybody's file.
    throw invalid(file, fixed.length ? `wrong magic (it does not start with '${MAGIC}')` : `wrong magic (an empty file)`);
  }
  if (fixed.length < HEADER_FIXED) throw invalid(file, `truncated inside its header (${fileSize} bytes)`);
  const dv = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== VERSION) throw invalid(file, `version ${version}, and this cowshm reads version ${VERSION}`);
  const kindCode = dv.getUint32(12, true);
  if (kindCode !== 1 && kindCode !== 2) throw invalid(file, `unknown kind ${kindCode}`);
  const kind: CheckpointKind = kindCode === 1 ? 'full' : 'delta';
  const regionSize = Number(dv.getBigUint64(16, true));
  const pageSize = dv.getUint32(24, true);
  const pageCount = dv.getUint32(28, true);
  const dataOffset = Number(dv.getBigUint64(32, true));
  const pageListOffset = Number(dv.getBigUint64(40, true));
  const basePathLength = dv.getUint32(112, true);
  const sane =
    Number.isSafeInteger(regionSize) && regionSize > 0 && pageSize >= 512 && (pageSize & (pageSize - 1)) === 0 &&
    Number.isSafeInteger(dataOffset) && dataOffset >= HEADER_FIXED && dataOffset % pageSize === 0 &&
    dataOffset <= 1 << 20 && basePathLength <= dataOffset - HEADER_FIXED &&
    pageCount <= Math.ceil(regionSize / pageSize) &&
    (kind === 'full'
      ? pageCount === Math.ceil(regionSize / pageSize) && pageListOffset === 0
      : pageListOffset === dataOffset + pageCount * pageSize);
  if (!sane) throw invalid(file, 'its header fields are inconsistent (corrupt header)');
  const expected = expectedFileSize({ kind, dataOffset, pageCount, pageSize });
  if (fileSize < expected) throw invalid(file, `truncated: ${fileSize} bytes, and its header describes ${expected}`);
  if (fileSize > expected) throw invalid(file, `${fileSize} bytes, longer than the ${expected} its header describes`);

  const block = readExactly(fd, dataOffset, 0);
  let pages: Uint32Array | null = null;
  if (kind === 'delta') {
    const raw = readExactly(fd, pageCount * 4, pageListOffset);
    pages = new Uint32Array(pageCount);
    new Uint8Array(pages.buffer).set(raw);
  }
  const stored = hex64(dv, 120);
  const actual = hashHeader(block, pages);
  if (stored !== actual) throw invalid(file, `header checksum mismatch (stored ${stored}, computed ${actual})`);
  if (pages) {
    const last = Math.ceil(regionSize / pageSize);
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i] as number;
      if (p >= last || (i > 0 && p <= (pages[i - 1] as number)))
        throw invalid(file, `its page list is out of order or out of range at entry ${i}`);
    }
  }
  const basePath = Buffer.from(block.subarray(HEADER_FIXED, HEADER_FIXED + basePathLength)).toString('utf8');
  // The system would open the path only up to its first NUL: some other file.
  if (basePath.includes('\0')) throw invalid(file, 'its base path holds a NUL byte (corrupt header)');
  const base =
    kind === 'delta'
      ? {
          id: Buffer.from(block.subarray(72, 88)).toString('hex'),
          checksum: hex64(dv, 88),
          regionSize: Number(dv.getBigUint64(96, true)),
          path: basePath,
        }
      : null;
  return {
    path: file,
    fileSize,
    version,
    kind,
    regionSize,
    pageSize,
    pageCount,
    dataOffset,
    pageListOffset,
    checksum: hex64(dv, 48),
    id: Buffer.from(block.subarray(56, 72)).toString('hex'),
    base,
    created: new Date(dv.getFloat64(104, true)),
    headerChecksum: stored,
    pages,
  };
}

/** Hashes a checkpoint's data section and compares it with its header. */
export function verifyData(fd: number, h: CheckpointFile): void {
  let actual: string;
  try {
    actual = native.hashFile(fd, h.dataOffset, h.pageCount * h.pageSize);
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_COWSHM_CHECKPOINT_TRUNCATED') throw invalid(h.path, 'truncated while being verified');
    throw err;
  }
  if (actual !== h.checksum) throw invalid(h.path, `data checksum mismatch (header says ${h.checksum}, data hashes to ${actual})`);
}
