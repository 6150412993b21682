/**
 * The experiment of the original question, step by step: fill a named shm
 * segment with A[i] = i, map it again copy-on-write, sum both, and after each
 * step take the kernel's figures for both mappings. With `write`, write the
 * whole copy and show that only then are pages copied.
 *
 * Long steps run in chunks and yield to the event loop between them, so a
 * signal handler (or an AbortSignal) can stop the run and remove the segment.
 */
import * as fs from 'node:fs';
import { Region } from '../region';
import type { View } from '../view';
import { iota, sum } from '../kernels';
import { native } from '../native';
import * as memory from '../memory';
import { usageIn } from '../memory/usage';
import { cowshmError } from '../errors';
import * as hugetlb from '../hugetlb';

export interface DemoOptions {
  /** Number of int32 elements. */
  elements: number;
  /** Write the whole copy after summing it. */
  write: boolean;
  /** The shm segment's name. */
  name: string;
  /**
   * The region's page size: the system page (default), or a hugetlb page
   * size. On huge pages the region is named on a hugetlbfs mount of that size
   * if there is one, else an anonymous memfd; the checks read smaps'
   * Shared_Hugetlb / Private_Hugetlb, where the kernel counts hugetlb memory.
   */
  pageSize?: number;
  /** Called as long steps advance. */
  onProgress?: (phase: string, done: number, total: number) => void;
  /** Called after each phase with its figures, while both views are mapped (for page maps). */
  onPhase?: (phase: DemoPhase, views: { region: View; copy: View | null }) => void;
  /** Awaited after the last phase, while both mappings are still there. */
  hold?: () => Promise<void>;
  /** Stops the run between chunks; the segment is removed. */
  signal?: AbortSignal;
}

/** The figures of one mapping after a phase, in bytes. */
export type MappingFigures = Omit<memory.Figures, 'fields'>;

export interface DemoPhase {
  name: string;
  seconds: number;
  region: MappingFigures;
  /** null before the copy is mapped. */
  copy: MappingFigures | null;
  /** Pages of the copy on the same frame as the region's page, or null (no copy yet, or frames unreadable). */
  sharedFrames: number | null;
  /** What `top`, `ps` and `free` show after the phase, in bytes. */
  totals: Totals;
}

/** The process's totals (/proc/self/status) and the machine's shared memory (/proc/meminfo Shmem). */
export interface Totals {
  vmRss: number;
  rssAnon: number;
  rssShmem: number;
  /** All shmem/tmpfs pages in memory, machine-wide: the segment counts once, however often it is mapped. */
  meminfoShmem: number;
}

function kB(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** The totals now. */
export function totals(): Totals {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  return { vmRss: kB(status, 'VmRSS'), rssAnon: kB(status, 'RssAnon'), rssShmem: kB(status, 'RssShmem'), meminfoShmem: kB(meminfo, 'Shmem') };
}

export interface DemoCheck {
  what: string;
  ok: boolean;
  /** Why a check could not be made (it then counts as passed). */
  skipped?: string;
}

export interface DemoResult {
  name: string;
  /** Where the region is: /dev/shm/NAME, MOUNT/NAME on hugetlbfs, or an anonymous memfd. */
  path: string;
  pageSize: number;
  elements: number;
  bytes: number;
  pages: number;
  expectedSum: bigint;
  sumRegion: bigint;
  sumCopy: bigint;
  /** With `write`: the copy holds 2i now, the region still i. */
  sumCopyAfterWrite: bigint | null;
  sumRegionAfterWrite: bigint | null;
  pagesWritten: number;
  phases: DemoPhase[];
  /** The totals before the segment was created. */
  before: Totals;
  checks: DemoCheck[];
  /** Why shared frames could not be counted, or null. */
  framesUnavailable: string | null;
  ok: boolean;
}

/** The largest element count the demo takes: one view is one ArrayBuffer, and 2i must fit an int32. */
export const maxElements = Math.min(Math.floor(Region.maxViewLength / 4), 2 ** 30);

const CHUNK = 1 << 22;

function pick(f: memory.Figures): MappingFigures {
  return {
    size: f.size, rss: f.rss, pss: f.pss, pssDirty: f.pssDirty, sharedClean: f.sharedClean,
    sharedDirty: f.sharedDirty, privateClean: f.privateClean, privateDirty: f.privateDirty,
    anonymous: f.anonymous, swap: f.swap, sharedHugetlb: f.sharedHugetlb, privateHugetlb: f.privateHugetlb,
  };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function framesReason(view: View): string | null {
  return memory.pages(view, { length: native.pageSize }).framesUnavailable;
}

/** What the demo needs and what the machine has, checked before anything is created. */
export interface Preflight {
  ok: boolean;
  /** Bytes of memory the run needs (the region, and the copy's pages with `write`). */
  memoryNeeded: number;
  memoryAvailable: number;
  shmNeeded: number;
  shmAvailable: number;
  /** The largest power-of-two element count that fits, or 0. */
  suggestedElements: number;
}

// Node itself, its heap and the page tables of two mappings.
const HEADROOM = 256 * 2 ** 20;

export function preflight(elements: number, write: boolean, pageSize = native.pageSize): Preflight {
  if (pageSize !== native.pageSize) return hugePreflight(elements, write, pageSize);
  const bytes = elements * 4;
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo);
  const memoryAvailable = m ? Number(m[1]) * 1024 : Infinity;
  const st = fs.statfsSync('/dev/shm');
  const shmAvailable = st.bavail * st.bsize;
  const memoryNeeded = bytes * (write ? 2 : 1) + HEADROOM;
  const fits = (n: number): boolean => n * 4 * (write ? 2 : 1) + HEADROOM <= memoryAvailable && n * 4 <= shmAvailable;
  let suggestedElements = 0;
  for (let n = 2 ** 30; n >= 1024; n /= 2) {
    if (fits(n)) {
      suggestedElements = n;
      break;
    }
  }
  return { ok: fits(elements), memoryNeeded, memoryAvailable, shmNeeded: bytes, shmAvailable, suggestedElements };
}

/** The bytes `elements` int32 take on pages of `pageSize`. */
export function regionBytes(elements: number, pageSize: number): number {
  return Math.ceil((elements * 4) / pageSize) * pageSize;
}

/**
 * On huge pages the region and the copy's pages come from the pool, not from
 * /dev/shm or MemAvailable: its available pages stand in for both figures.
 */
function hugePreflight(elements: number, write: boolean, pageSize: number): Preflight {
  const size = regionBytes(elements, pageSize);
  const available = hugetlb.poolAvailable(pageSize) * pageSize;
  const needed = size * (write ? 2 : 1);
  const fits = (n: number): boolean => regionBytes(n, pageSize) * (write ? 2 : 1) <= available;
  let suggestedElements = 0;
  for (let n = 2 ** 30; n >= pageSize / 4; n /= 2) {
    if (fits(n)) {
      suggestedElements = n;
      break;
    }
  }
  return { ok: fits(elements), memoryNeeded: needed, memoryAvailable: available, shmNeeded: size, shmAvailable: available, suggestedElements };
}

export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const { elements: N, write, name, onProgress, onPhase, hold, signal } = options;
  if (!Number.isSafeInteger(N) || N < 1 || N > maxElements)
    throw cowshmError('ERR_OUT_OF_RANGE', `elements must be an integer from 1 to ${maxElements}; received ${N}`);
  const bytes = N * 4;
  const pageSize = options.pageSize ?? native.pageSize;
  const huge = pageSize !== native.pageSize;
  // Pages in smaps' and pagemap's unit (4 KiB entries even on huge pages),
  // and the huge pages the region and a full copy take from the pool.
  const size = regionBytes(N, pageSize);
  const pages = size / native.pageSize;
  const expectedSum = (BigInt(N) * BigInt(N - 1)) / 2n;
  const phases: DemoPhase[] = [];
  const checks: DemoCheck[] = [];
  const check = (what: string, ok: boolean): void => void checks.push({ what, ok });

  const stop = (): void => {
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : cowshmError('ABORT_ERR', `stopped (${String(signal.reason)})`);
  };
  async function chunked(phase: string, fn: (start: number, end: number) => void): Promise<void> {
    for (let start = 0; start < N; start += CHUNK) {
      const end = Math.min(N, start + CHUNK);
      fn(start, end);
      onProgress?.(phase, end, N);
      await tick();
      stop();
    }
  }
  async function sumOf(phase: string, a: Int32Array): Promise<bigint> {
    let total = 0n;
    await chunked(phase, (s, e) => {
      total += sum(a.subarray(s, e)) as bigint;
    });
    return total;
  }

  stop();
  const before = totals();
  let t0 = process.hrtime.bigint();
  const named = !huge || hugetlb.hugetlbfsMounts().some((m) => m.pageSize === pageSize);
  const region = Region.create({ ...(named ? { name } : {}), size: huge ? size : bytes, ...(huge ? { pageSize } : {}) });
  try {
    let copyView: View | null = null;
    const regionView = region.map();
    let framesUnavailable: string | null = null;
    const record = (phaseName: string, t0: bigint): DemoPhase => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      // One read of smaps for both: each read walks the page tables of both mappings.
      const entries = memory.smaps();
      const phase: DemoPhase = {
        name: phaseName,
        seconds,
        region: pick(usageIn(entries, regionView)),
        copy: copyView ? pick(usageIn(entries, copyView)) : null,
        sharedFrames: copyView ? memory.sharedFrames(copyView, regionView) : null,
        totals: totals(),
      };
      if (copyView && phase.sharedFrames === null) framesUnavailable ??= framesReason(copyView);
      phases.push(phase);
      onPhase?.(phase, { region: regionView, copy: copyView });
      return phase;
    };

    const A = new Int32Array(regionView.buffer);
    await chunked('fill', (s, e) => iota(A.subarray(s, e), s, 1));
    // Not checked: the region's Rss can be a few pages short for a moment
    // while the kernel migrates pages (compaction), which proves nothing here.
    record('fill', t0);

    t0 = process.hrtime.bigint();
    copyView = region.map({ access: 'cow' });
    const copy = new Int32Array(copyView.buffer);
    const mapped = record('map copy', t0);
    check(
      huge ? 'mapping the copy reads nothing: its Rss, Shared_Hugetlb and Private_Hugetlb are 0' : 'mapping the copy reads nothing: its Rss is 0',
      mapped.copy?.rss === 0 && mapped.copy.sharedHugetlb === 0 && mapped.copy.privateHugetlb === 0,
    );

    t0 = process.hrtime.bigint();
    const sumRegion = await sumOf('sum region', A);
    record('sum region', t0);
    check('the sum of the region is N(N-1)/2', sumRegion === expectedSum);

    t0 = process.hrtime.bigint();
    const sumCopy = await sumOf('sum copy', copy);
    const read = record('sum copy', t0);
    const c = read.copy as MappingFigures;
    check('the sum of the copy is N(N-1)/2', sumCopy === expectedSum);
    if (huge) {
      // hugetlb pages are counted apart from Rss and Pss: a page mapped by both mappings is Shared_Hugetlb in each.
      check('reading the copy copied nothing: its Private_Hugetlb is 0', c.privateHugetlb === 0);
      check('both mappings map every huge page together: Shared_Hugetlb is the whole region in each', c.sharedHugetlb === size && read.region.sharedHugetlb === size);
    } else {
      check('reading the copy copied nothing: its Private_Dirty and Anonymous are 0', c.privateDirty === 0 && c.anonymous === 0);
      check('each mapping\'s Pss is half its Rss (every page is mapped twice)', c.rss > 0 && c.pss * 2 === c.rss && read.region.pss * 2 === read.region.rss);
    }
    if (read.sharedFrames === null) checks.push({ what: 'both mappings use the same frames', ok: true, skipped: framesUnavailable ?? 'frames unavailable' });
    else check('both mappings use the same frames', read.sharedFrames === pages);

    let sumCopyAfterWrite: bigint | null = null;
    let sumRegionAfterWrite: bigint | null = null;
    let pagesWritten = 0;
    if (write) {
      t0 = process.hrtime.bigint();
      // Twice the original values: still an int32 for i < 2^30, and the copy's sum doubles.
      await chunked('write copy', (s, e) => iota(copy.subarray(s, e), 2 * s, 2));
      pagesWritten = size / pageSize;
      const wrote = record('write copy', t0);
      const w = wrote.copy as MappingFigures;
      if (huge) {
        check('writing the copy copied every huge page written: Private_Hugetlb = pages written × page size', w.privateHugetlb === pagesWritten * pageSize && w.sharedHugetlb === 0);
        check('the region alone maps its pages now: its Private_Hugetlb is the whole region', wrote.region.privateHugetlb === size && wrote.region.sharedHugetlb === 0);
      } else {
        check('writing the copy copied every page written: Private_Dirty = pages written × page size', w.privateDirty === pagesWritten * pageSize);
        check('the copied pages are anonymous memory: Anonymous = pages written × page size', w.anonymous === pagesWritten * pageSize);
        check('the region alone maps its pages now: its Pss equals its Rss', wrote.region.pss === wrote.region.rss && wrote.region.anonymous === 0);
      }
      if (wrote.sharedFrames === null) checks.push({ what: 'no frame is shared any more', ok: true, skipped: framesUnavailable ?? 'frames unavailable' });
      else check('no frame is shared any more', wrote.sharedFrames === 0);

      t0 = process.hrtime.bigint();
      sumCopyAfterWrite = await sumOf('sum copy again', copy);
      sumRegionAfterWrite = await sumOf('sum region again', A);
      record('sum after write', t0);
      check('the copy sums to N(N-1): it holds 2i', sumCopyAfterWrite === 2n * expectedSum);
      check('the region still sums to N(N-1)/2: it is untouched', sumRegionAfterWrite === expectedSum);
    }

    await hold?.();
    return {
      name, path: region.path, pageSize, elements: N, bytes, pages, expectedSum, sumRegion, sumCopy, sumCopyAfterWrite, sumRegionAfterWrite,
      pagesWritten, phases, before, checks, framesUnavailable, ok: checks.every((x) => x.ok),
    };
  } finally {
    region.unlink();
    region.close();
  }
}
