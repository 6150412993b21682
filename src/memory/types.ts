/** The shapes the memory functions return. Every figure is in bytes. */

/** Anything cowshm maps: a View (or a Snapshot) has its start address and its length. */
export interface Mapped {
  /** The mapping's start address in this process. */
  readonly address: number;
  /** Its length in bytes (the mapping covers whole pages from `address`). */
  readonly byteLength: number;
}

/** The kernel's accounting for a mapping (or, from smaps_rollup, for a whole process). */
export interface Figures {
  /** Virtual size. */
  size: number;
  /** Resident: pages of the range in memory now, however many others map them too. */
  rss: number;
  /** Proportional: each resident page divided by the number of mappings of it. */
  pss: number;
  /** The dirty part of `pss`. */
  pssDirty: number;
  /** Resident pages mapped by others too, unchanged since read from their file. */
  sharedClean: number;
  /** Resident pages mapped by others too, written since (every shm page counts as dirty). */
  sharedDirty: number;
  /** Resident pages mapped only here, unchanged since read. */
  privateClean: number;
  /** Resident pages mapped only here, written since: for a cow view, the pages it copied. */
  privateDirty: number;
  /** Anonymous pages: for a file or shm mapping, the private copies copy-on-write made. */
  anonymous: number;
  /** Swapped out. */
  swap: number;
  /**
   * hugetlb pages (regions on huge pages) mapped by other mappings too. The
   * kernel counts hugetlb memory here and in `privateHugetlb`, never in
   * `rss`, `pss` or the Shared/Private figures above.
   */
  sharedHugetlb: number;
  /** hugetlb pages mapped only here: for a cow view or snapshot of a hugetlb region, the huge pages it copied (and the region's pages nobody else maps). */
  privateHugetlb: number;
  /** Every `Key: N kB` line the kernel printed, by its kernel name, in bytes. */
  fields: Record<string, number>;
}

/** One mapping of /proc/PID/smaps. */
export interface SmapsEntry extends Figures {
  start: number;
  /** One past the last byte. */
  end: number;
  /** As the kernel prints them: `rw-s` (shared) or `rw-p` (private: copy-on-write). */
  perms: string;
  /** Offset of the mapping in its file, in bytes. */
  offset: number;
  /** `major:minor` in hex, as printed. */
  device: string;
  inode: number;
  /** The file, `[heap]`, `[stack]`... or '' for an anonymous mapping; without the " (deleted)" mark. */
  path: string;
  /** Whether the kernel marked the file " (deleted)" (unlinked while mapped). */
  deleted: boolean;
  /** The two-letter flags of the VmFlags line (`rd`, `wr`, `sh`, `mr`...). */
  vmFlags: string[];
  /** Lines that are not in kB (`THPeligible`, `ProtectionKey`...), as printed. */
  other: Record<string, string>;
  /** The mapping's header line, as printed. */
  header: string;
}

/** How many pages of a range have each pagemap flag. */
export interface PageFlags {
  /** In memory now (bit 63). */
  present: number;
  /** In swap (bit 62). */
  swapped: number;
  /** Mapped exactly once (bit 56). */
  exclusive: number;
  /** A file page or shared anonymous page (bit 61): for a cow view, a page it still shares. */
  file: number;
  /** Present and not a file page: for a cow view, a page it copied. */
  anonymous: number;
  /** Write-protected by userfaultfd (bit 57). */
  writeProtected: number;
}

/** Page-by-page facts from /proc/PID/pagemap. */
export interface PageReport extends PageFlags {
  /** Address of the first page looked at. */
  address: number;
  pages: number;
  /** Physical frame number per page (0 for an absent page), or null when they cannot be read. */
  frames: number[] | null;
  /** Why `frames` is null. */
  framesUnavailable: string | null;
  /** How many times each page's frame is mapped, from /proc/kpagecount (0 for an absent page). */
  mapCounts: number[] | null;
  /** Why `mapCounts` is null. */
  mapCountsUnavailable: string | null;
}

/** A page's state in `PageStates.states`: 0 not resident, 1 shared, 2 copied, 3 swapped. */
export type PageState = 0 | 1 | 2 | 3;

/** Per page, what `pageStates()` found, and how many pages are in each state. */
export interface PageStates {
  /** Address of the first page looked at. */
  address: number;
  pages: number;
  pageSize: number;
  /** One PageState per page. */
  states: Uint8Array;
  /** Present, a file or shared page (bit 61): a page of the segment itself, seen by every mapping of it. */
  shared: number;
  /** Present, anonymous: in a file or shm mapping, a private copy that copy-on-write made. */
  copied: number;
  /** In swap (bit 62). */
  swapped: number;
  /** Neither present nor swapped: never touched, or reclaimed (a file page is read back on the next access). */
  notResident: number;
}
