/** Reading a checkpoint's header (and its chain of bases) without restoring it. */
import * as check from '../validate';
import { closeChain, openChain } from './restore';

export interface CheckpointInfo {
  path: string;
  kind: 'full' | 'delta';
  version: number;
  regionSize: number;
  pageSize: number;
  /** Data pages in this file. */
  pageCount: number;
  dataOffset: number;
  fileSize: number;
  /** XXH64 of the data section, 16 hex digits. */
  checksum: string;
  headerChecksum: string;
  id: string;
  created: Date;
  /** Delta only: the base it was written against (path relative to this file's directory). */
  base: { id: string; checksum: string; regionSize: number; path: string } | null;
  /** Every file a restore reads, the full checkpoint first and this file last. */
  chain: string[];
  /** What was checked: `'header'` (every header in the chain) or `'full'` (every data checksum too). */
  verified: 'header' | 'full';
}

/**
 * Reads and verifies a checkpoint and the chain of bases it rests on. Throws
 * the same errors as `Region.restore()` does for the same file.
 */
export function checkpointInfo(file: string, options?: { verify?: 'header' | 'full' }): CheckpointInfo {
  check.path(file, '"path" argument');
  const o = check.options<{ verify?: 'header' | 'full' }>(options);
  const verify = check.oneOf(o.verify, '"verify" option', ['header', 'full'] as const, 'header');
  const chain = openChain(file, verify);
  closeChain(chain);
  const h = chain[chain.length - 1]!.header;
  return {
    path: h.path,
    kind: h.kind,
    version: h.version,
    regionSize: h.regionSize,
    pageSize: h.pageSize,
    pageCount: h.pageCount,
    dataOffset: h.dataOffset,
    fileSize: h.fileSize,
    checksum: h.checksum,
    headerChecksum: h.headerChecksum,
    id: h.id,
    created: h.created,
    base: h.base,
    chain: chain.map((l) => l.header.path),
    verified: verify,
  };
}
