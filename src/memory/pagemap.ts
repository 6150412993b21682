/**
 * /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst): one 64-bit
 * entry per virtual page, at offset (address / page size) * 8.
 *   bits 0-54  page frame number (when present)   bit 55  soft-dirty
 *   bit 56     exclusively mapped                 bit 57  uffd write-protected
 *   bit 61     file page or shared anonymous      bit 62  swapped
 *   bit 63     present
 * Since Linux 4.2 the frame numbers read as 0 unless the reader has
 * CAP_SYS_ADMIN; the flags are still there.
 */
import * as fs from 'node:fs';
import { native } from '../native';
import { openProc, preadFully } from './procfs';
import type { PageFlags } from './types';

// Bits of the upper 32-bit half of an entry.
const HI_PFN = 0x007fffff;
const HI_EXCLUSIVE = 1 << 24;
const HI_UFFD_WP = 1 << 25;
const HI_FILE = 1 << 29;
const HI_SWAPPED = 1 << 30;
const HI_PRESENT = 1 << 31;

const CAP_SYS_ADMIN = 21n;
const CHUNK_PAGES = 1 << 16;

/** Raw entries as pairs of 32-bit halves: [lo0, hi0, lo1, hi1, ...] (little-endian). */
export interface RawPages {
  pages: number;
  words: Uint32Array;
}

/** Reads the pagemap entries of `pages` pages from `address` in process `pid`. */
export function readPagemap(pid: number, address: number, pages: number): RawPages {
  const words = new Uint32Array(pages * 2);
  const bytes = new Uint8Array(words.buffer);
  const fd = openProc(pid, 'pagemap');
  try {
    const first = BigInt(address / native.pageSize) * 8n;
    for (let p = 0; p < pages; p += CHUNK_PAGES) {
      const n = Math.min(CHUNK_PAGES, pages - p);
      preadFully(fd, bytes.subarray(p * 8, (p + n) * 8), first + BigInt(p) * 8n);
    }
  } finally {
    fs.closeSync(fd);
  }
  return { pages, words };
}

export function isPresent(raw: RawPages, i: number): boolean {
  return ((raw.words[2 * i + 1] as number) & HI_PRESENT) !== 0;
}

/** The frame number of page i, 0 when it is not present. */
export function frameOf(raw: RawPages, i: number): number {
  const hi = raw.words[2 * i + 1] as number;
  if ((hi & HI_PRESENT) === 0) return 0;
  return (hi & HI_PFN) * 2 ** 32 + (raw.words[2 * i] as number);
}

export function countFlags(raw: RawPages): PageFlags {
  const c: PageFlags = { present: 0, swapped: 0, exclusive: 0, file: 0, anonymous: 0, writeProtected: 0 };
  const w = raw.words;
  for (let i = 0; i < raw.pages; i++) {
    const hi = w[2 * i + 1] as number;
    if (hi & HI_PRESENT) {
      c.present++;
      if (!(hi & HI_FILE)) c.anonymous++;
    }
    if (hi & HI_SWAPPED) c.swapped++;
    if (hi & HI_EXCLUSIVE) c.exclusive++;
    if (hi & HI_FILE) c.file++;
    if (hi & HI_UFFD_WP) c.writeProtected++;
  }
  return c;
}

/** Whether this process has CAP_SYS_ADMIN in its effective set (the kernel's test for showing PFNs). */
export function hasSysAdmin(): boolean {
  try {
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    return m !== null && ((BigInt(`0x${m[1]}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
  } catch {
    return false;
  }
}

/**
 * The frames of the pages, or why they can't be had. Without CAP_SYS_ADMIN
 * the kernel reports every frame as 0: that is hidden data, not data.
 */
export function framesOf(raw: RawPages, present: number): { frames: number[] | null; reason: string | null } {
  if (!hasSysAdmin())
    return { frames: null, reason: 'the kernel shows physical frame numbers only to readers with CAP_SYS_ADMIN (run as root)' };
  const frames = new Array<number>(raw.pages);
  let nonZero = 0;
  for (let i = 0; i < raw.pages; i++) {
    const f = frameOf(raw, i);
    frames[i] = f;
    if (f !== 0) nonZero++;
  }
  if (present > 0 && nonZero === 0)
    return { frames: null, reason: 'the kernel reported frame 0 for every present page: frame numbers are hidden from this reader' };
  return { frames, reason: null };
}

/** A page's state in a page map: what `pageStates()` puts in each byte. */
export const PAGE_NOT_RESIDENT = 0;
export const PAGE_SHARED = 1;
export const PAGE_COPIED = 2;
export const PAGE_SWAPPED = 3;

/**
 * One state per page: present and a file or shared page (PAGE_SHARED), present
 * and anonymous (PAGE_COPIED: in a file or shm mapping, a private copy),
 * swapped, or neither (PAGE_NOT_RESIDENT). The same bits as countFlags().
 */
export function statesOf(raw: RawPages): Uint8Array {
  const states = new Uint8Array(raw.pages);
  const w = raw.words;
  for (let i = 0; i < raw.pages; i++) {
    const hi = w[2 * i + 1] as number;
    states[i] = hi & HI_PRESENT ? (hi & HI_FILE ? PAGE_SHARED : PAGE_COPIED) : hi & HI_SWAPPED ? PAGE_SWAPPED : PAGE_NOT_RESIDENT;
  }
  return states;
}
