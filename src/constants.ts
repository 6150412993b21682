/** Linux constants the addon's callers pass by value. */
import { constants as fsc } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';

/** The largest ArrayBuffer this Node.js allows, so the longest one view or snapshot may be (`Region.maxViewLength`). */
export const MAX_VIEW_LENGTH: number = bufferConstants.MAX_LENGTH;

export const O_RDONLY = fsc.O_RDONLY;
export const O_RDWR = fsc.O_RDWR;
export const O_CREAT = fsc.O_CREAT;
export const O_EXCL = fsc.O_EXCL;
export const O_NOFOLLOW = fsc.O_NOFOLLOW;
export const O_NONBLOCK = fsc.O_NONBLOCK;
export const S_IFMT = fsc.S_IFMT;
export const S_IFREG = fsc.S_IFREG;

/** fcntl(2) seals (linux/fcntl.h). */
export const F_SEAL_SHRINK = 0x0002;

/** madvise(2) advice values (asm-generic/mman-common.h). */
export const MADV_DONTNEED = 4;
export const MADV_HUGEPAGE = 14;

/**
 * The owner token of mappings no Region made (a restore filling its memfd, a
 * delta writer's view of its base): Regions count from 1, so closing a region
 * never reaches them, and whoever maps them unmaps them.
 */
export const NO_OWNER = 0;

/** Access modes as the addon numbers them. */
export const ACCESS = { read: 0, write: 1, cow: 2 } as const;

/** mapView's flags (native/cowshm.h): populate, and log2 of a hugetlb page size from bit 8 up. */
export const MAP_FLAG_POPULATE = 1;
export const MAP_FLAG_HUGE_SHIFT = 8;
