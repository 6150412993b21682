/**
 * hugetlb pages: the pools the administrator reserves (one per page size,
 * /sys/kernel/mm/hugepages), and the hugetlbfs mounts that named regions on
 * huge pages live in (/proc/mounts). Regions on huge pages take every page
 * from the pool of their size; nothing here changes a pool.
 */
import * as fs from 'node:fs';
import { native } from './native';
import { cowshmError, explain, outOfRange, systemError, type SystemError } from './errors';
import { formatBytes } from './reserve';

const HUGETLBFS_MAGIC = 0x958458f6;
const SYSFS = '/sys/kernel/mm/hugepages';
const ENOSPC = 28;

/** One pool of hugetlb pages, as /sys/kernel/mm/hugepages/hugepages-NkB reports it. */
export interface HugePool {
  /** The page size in bytes. */
  pageSize: number;
  /** Pages in the pool (nr_hugepages). */
  total: number;
  /** Pages no mapping uses yet (free_hugepages); `reserved` of them are promised to mappings already. */
  free: number;
  /** Free pages promised to shared mappings made but not yet touched (resv_hugepages). */
  reserved: number;
  /** Pages allocated beyond `total` because of nr_overcommit_hugepages (surplus_hugepages). */
  surplus: number;
  /** How many surplus pages the kernel may allocate on demand (nr_overcommit_hugepages). */
  overcommit: number;
  /** Where to write a new size for this pool. */
  control: string;
}

/** A mounted hugetlbfs: where named regions of its page size are created and found. */
export interface HugetlbfsMount {
  path: string;
  pageSize: number;
  /** The mount options, as /proc/mounts prints them. */
  options: string;
}

function readNumber(file: string): number {
  return Number(fs.readFileSync(file, 'utf8').trim());
}

const kib = (size: number): string => `${size / 1024}kB`;

/** A page size in words: "4 KiB", "2 MiB", "1 GiB". */
export function pageSizeText(size: number): string {
  if (size >= 2 ** 30 && size % 2 ** 30 === 0) return `${size / 2 ** 30} GiB`;
  if (size >= 2 ** 20 && size % 2 ** 20 === 0) return `${size / 2 ** 20} MiB`;
  return `${size / 1024} KiB`;
}

/** The hugetlb page sizes this kernel offers, ascending (empty without hugetlb support). */
export function hugePageSizes(): number[] {
  try {
    return fs
      .readdirSync(SYSFS)
      .map((d) => /^hugepages-(\d+)kB$/.exec(d))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]) * 1024)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/** The default hugetlb page size (Hugepagesize in /proc/meminfo), or null. */
export function defaultHugePageSize(): number | null {
  try {
    const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** The pool of `pageSize` pages, or null when the kernel has none of that size. */
export function hugePool(pageSize: number): HugePool | null {
  const dir = `${SYSFS}/hugepages-${kib(pageSize)}`;
  try {
    return {
      pageSize,
      total: readNumber(`${dir}/nr_hugepages`),
      free: readNumber(`${dir}/free_hugepages`),
      reserved: readNumber(`${dir}/resv_hugepages`),
      surplus: readNumber(`${dir}/surplus_hugepages`),
      overcommit: readNumber(`${dir}/nr_overcommit_hugepages`),
      control: `${dir}/nr_hugepages`,
    };
  } catch {
    return null;
  }
}

/** Every pool, by ascending page size. */
export function hugePools(): HugePool[] {
  return hugePageSizes()
    .map(hugePool)
    .filter((p): p is HugePool => p !== null);
}

/** "2M", "2048k", "1G" or bytes, as the pagesize= mount option spells it. */
function parseSizeOption(text: string): number | null {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text);
  if (!m) return null;
  const unit = (m[2] ?? '').toLowerCase();
  return Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 2 ** 20 : unit === 'g' ? 2 ** 30 : 1);
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The hugetlbfs mounts of this process's mount namespace, in /proc/mounts order. */
export function hugetlbfsMounts(): HugetlbfsMount[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return [];
  }
  const fallback = defaultHugePageSize();
  const out: HugetlbfsMount[] = [];
  for (const line of text.split('\n')) {
    const [, where, type, options = ''] = line.split(' ');
    if (type !== 'hugetlbfs' || where === undefined) continue;
    const opt = options.split(',').find((o) => o.startsWith('pagesize='));
    const pageSize = opt === undefined ? fallback : parseSizeOption(opt.slice('pagesize='.length));
    if (pageSize === null) continue;
    out.push({ path: unescapeMount(where), pageSize, options });
  }
  return out;
}

/** The page size of the hugetlbfs that `file` (or the descriptor path) is on, or null for any other filesystem. */
export function hugetlbfsPageSize(file: string): number | null {
  try {
    const st = fs.statfsSync(file);
    return st.type === HUGETLBFS_MAGIC ? st.bsize : null;
  } catch {
    return null;
  }
}

/** The mount a named region with `pageSize` pages is created in: the first writable one of that size. */
export function mountFor(pageSize: number): HugetlbfsMount {
  const all = hugetlbfsMounts();
  const sized = all.filter((m) => m.pageSize === pageSize);
  for (const m of sized) {
    try {
      fs.accessSync(m.path, fs.constants.W_OK);
      return m;
    } catch {
      // Read-only, or not ours: try the next one.
    }
  }
  const seen = all.length === 0 ? 'none is mounted' : `mounted: ${all.map((m) => `${m.path} (${pageSizeText(m.pageSize)} pages)`).join(', ')}`;
  throw cowshmError(
    'ERR_COWSHM_NO_HUGETLBFS',
    `A named region on ${pageSizeText(pageSize)} pages lives on a hugetlbfs mount, and ` +
      `${sized.length > 0 ? `no mount of that page size is writable by this process (${sized.map((m) => m.path).join(', ')})` : `there is none for that page size (${seen})`}; ` +
      `mount one (as root: mkdir -p /dev/hugepages && mount -t hugetlbfs -o pagesize=${pageSizeText(pageSize).replace(/ (.)iB/, '$1')} none /dev/hugepages), ` +
      'or omit "name" for an anonymous region',
  );
}

/** Throws the RangeError for a `pageSize` option this kernel does not offer; returns the size. */
export function checkPageSize(value: number, what: string): number {
  if (value === native.pageSize) return value;
  const sizes = hugePageSizes();
  if (sizes.includes(value)) return value;
  const offered = [native.pageSize, ...sizes].map((s) => `${s} (${pageSizeText(s)})`).join(', ');
  throw outOfRange(what, `one of the page sizes this kernel offers: ${offered}`, value);
}

/** A huge page size's log2, as memfd_create and the addon take it. */
export function pageShift(pageSize: number): number {
  return pageSize === native.pageSize ? 0 : Math.log2(pageSize);
}

/** The sentence that says what the pool of `pageSize` has and how to raise it. */
export function poolFigures(pageSize: number, pagesNeeded?: number): string {
  const p = hugePool(pageSize);
  if (p === null) return `this kernel has no pool of ${pageSizeText(pageSize)} pages`;
  const need = pagesNeeded === undefined ? '' : `; this needs ${pagesNeeded} more`;
  const raise = p.total + Math.max(pagesNeeded ?? 1, 1);
  return (
    `the pool of ${pageSizeText(pageSize)} hugetlb pages has ${p.total} pages, ${p.free} free ` +
    `(${p.reserved} of them reserved, ${p.surplus} surplus)${need}; raise it as root: ` +
    `echo ${raise} > ${p.control}` +
    (pageSize === defaultHugePageSize() ? ' (or /proc/sys/vm/nr_hugepages)' : '')
  );
}

/** Pages of the pool that a new reservation can still take. */
export function poolAvailable(pageSize: number): number {
  const p = hugePool(pageSize);
  if (p === null) return 0;
  return Math.max(0, p.free - p.reserved) + Math.max(0, p.overcommit - p.surplus);
}

/**
 * Throws ENOSPC (syscall 'fallocate', path `target`) when the pool cannot
 * give `size` bytes of `pageSize` pages now: checked before anything is
 * allocated, so a region that can't fit takes no page from under another one.
 */
export function checkPool(size: number, pageSize: number, target: string | undefined): void {
  const pages = Math.ceil(size / pageSize);
  if (pages <= poolAvailable(pageSize)) return;
  throw explainPool(systemError(ENOSPC, 'fallocate', target), size, pageSize);
}

/** Adds the pool's figures to an error from allocating or mapping `size` bytes of huge pages. */
export function explainPool(err: SystemError, size: number, pageSize: number): SystemError {
  const pages = Math.ceil(size / pageSize);
  return explain(err, `${formatBytes(size)} on huge pages is ${pages} page${pages === 1 ? '' : 's'}, and ${poolFigures(pageSize, Math.max(0, pages - poolAvailable(pageSize)))}`);
}
