/**
 * Proof of what is shared and what was copied, from the kernel's own
 * accounting: /proc/PID/smaps per mapping, /proc/PID/pagemap per page, and
 * /proc/kpagecount per physical frame.
 */
import { native } from '../native';
import { outOfRange } from '../errors';
import * as check from '../validate';
import { mapsTotal, parseRollup, parseSmaps as parseSmapsText } from './smaps';
import { pidArgument, readProcText } from './procfs';
import { countFlags, frameOf, framesOf, hasSysAdmin, isPresent, readPagemap, statesOf } from './pagemap';
import { mapCounts } from './kpagecount';
import { mappedArgument, roundUp, usageIn } from './usage';
import type { Figures, Mapped, PageReport, PageStates, SmapsEntry } from './types';

export type { Figures, Mapped, PageReport, PageState, PageStates, SmapsEntry } from './types';

export interface PagesOptions {
  /** Where to start in the mapping, in bytes: a multiple of the page size. Default 0. */
  offset?: number;
  /** How many bytes to look at. Default: to the end of the mapping. */
  length?: number;
  /** Another process whose pages at that address to read (needs the right to ptrace it). Default: this process. */
  pid?: number;
}

/** Parses smaps text (saved from another machine, say): what `smaps()` does to /proc/PID/smaps. */
export function parseSmaps(text: string): SmapsEntry[] {
  return parseSmapsText(check.string(text, '"text" argument'));
}

/** Every mapping of a process, from /proc/PID/smaps. */
export function smaps(pid?: number): SmapsEntry[] {
  const p = pidArgument(pid);
  return parseSmapsText(readProcText(p, 'smaps'));
}

/**
 * A whole process's figures from /proc/PID/smaps_rollup. The kernel prints no
 * Size line there: `size` is the total of the ranges in /proc/PID/maps.
 */
export function rollup(pid?: number): Figures {
  const p = pidArgument(pid);
  const figures = parseRollup(readProcText(p, 'smaps_rollup'));
  figures.size = mapsTotal(readProcText(p, 'maps'));
  return figures;
}

/** The smaps entry of a mapping of this process: the figures of that mapping alone. */
export function usage(m: Mapped): SmapsEntry {
  const mapped = mappedArgument(m, '"mapping" argument');
  return usageIn(smaps(), mapped);
}

function range(m: unknown, options: unknown, what = '"mapping" argument'): { pid: number; address: number; pages: number } {
  const { address, byteLength } = mappedArgument(m, what);
  const o = check.options<PagesOptions>(options);
  const limit = roundUp(byteLength);
  const offset = o.offset === undefined ? 0 : check.integer(o.offset, '"offset" option', 0, limit - 1);
  if (offset % native.pageSize !== 0) throw check.pageAligned('"offset" option', offset);
  const length = o.length === undefined ? limit - offset : check.integer(o.length, '"length" option', 0);
  if (offset + length > limit)
    throw outOfRange('"length" option', `at most ${limit - offset} (the mapping's length minus the offset)`, length);
  const pid = o.pid === undefined ? process.pid : pidArgument(o.pid, '"pid" option');
  return { pid, address: address + offset, pages: Math.ceil(length / native.pageSize) };
}

/** Page-by-page facts about a mapping (or part of it) from the process's pagemap. */
export function pages(m: Mapped, options?: PagesOptions): PageReport {
  const { pid, address, pages: n } = range(m, options);
  const raw = readPagemap(pid, address, n);
  const flags = countFlags(raw);
  const { frames, reason } = framesOf(raw, flags.present);
  const counts = frames ? mapCounts(frames) : { counts: null, reason: `it needs the frame numbers, and ${reason}` };
  return {
    address,
    pages: n,
    ...flags,
    frames,
    framesUnavailable: reason,
    mapCounts: counts.counts,
    mapCountsUnavailable: counts.reason,
  };
}

/**
 * What each page of a mapping (or part of it) is, from the process's pagemap:
 * the picture behind `cowshm inspect --map`. The counts are those of
 * `pages()` for the same range: shared = present - anonymous, copied =
 * anonymous, swapped, notResident = the rest.
 */
export function pageStates(m: Mapped, options?: PagesOptions): PageStates {
  const { pid, address, pages: n } = range(m, options);
  const states = statesOf(readPagemap(pid, address, n));
  const counts = { shared: 0, copied: 0, swapped: 0, notResident: 0 };
  const names = ['notResident', 'shared', 'copied', 'swapped'] as const;
  for (let i = 0; i < n; i++) counts[names[states[i] as number] as keyof typeof counts]++;
  return { address, pages: n, pageSize: native.pageSize, states, ...counts };
}

/**
 * How many pages of `a` sit on the same physical frame as the page at the same
 * index of `b` (both in this process), or null when frame numbers can't be read.
 */
export function sharedFrames(a: Mapped, b: Mapped): number | null {
  const ra = range(a, undefined, '"a" argument');
  const rb = range(b, undefined, '"b" argument');
  if (!hasSysAdmin()) return null;
  const n = Math.min(ra.pages, rb.pages);
  const pa = readPagemap(process.pid, ra.address, n);
  if (countFlags(pa).present === 0) return 0;
  const pb = readPagemap(process.pid, rb.address, n);
  let shared = 0;
  let present = 0;
  let nonZero = 0;
  for (let i = 0; i < n; i++) {
    if (!isPresent(pa, i)) continue;
    present++;
    const f = frameOf(pa, i);
    if (f !== 0) nonZero++;
    if (f !== 0 && isPresent(pb, i) && f === frameOf(pb, i)) shared++;
  }
  return present > 0 && nonZero === 0 ? null : shared;
}
