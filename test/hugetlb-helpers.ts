/**
 * The hugetlb pool for tests. scripts/test.js reserves it for the run (as
 * root) and says in COWSHM_TEST_HUGETLB what each page size got; tests that
 * use it take `hugeLock()` for their duration, a lock shared by every run of
 * the suite on the machine (and taken by scripts/test.js to change the pool),
 * so a test may count (or use up) the free pages without another test taking
 * some, or another run adding or removing some, meanwhile.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from './helpers';

export const MiB2 = 2 << 20;
export const GiB1 = 1 << 30;

interface PoolLock {
  /** Where scripts/test.js keeps its per-run pool records, and the lock. */
  STATE: string;
  tryLock(): { taken: boolean; holder?: number };
  unlock(): void;
}

/** scripts/hugetlb-lock.js, loaded when first used: a copy of the package staged for another user has no scripts/ (nor a pool to lock). */
export function poolLock(): PoolLock {
  return require(path.join(packageRoot, 'scripts', 'hugetlb-lock.js')) as PoolLock;
}

/** Pages of `pageSize` this run reserved, or the reason the tests that need them skip (printed by node:test). */
export function hugePool(pageSize = MiB2): { pages: number; skip: string | false } {
  if (process.geteuid?.() !== 0) return { pages: 0, skip: 'not root: only root can reserve a hugetlb pool for the tests' };
  const env = process.env['COWSHM_TEST_HUGETLB'];
  if (env === undefined) return { pages: 0, skip: 'run through scripts/test.js (npm test), which reserves the hugetlb pool for the run' };
  const entry = (JSON.parse(env) as Record<string, { pages: number; reason: string | null }>)[String(pageSize)];
  if (entry === undefined) return { pages: 0, skip: `no pool of ${pageSize}-byte pages was asked for` };
  return entry.pages > 0 ? { pages: entry.pages, skip: false } : { pages: 0, skip: entry.reason ?? 'no pages' };
}

/** Free pages of the pool of `pageSize` now. */
export function freePages(pageSize = MiB2): number {
  return Number(fs.readFileSync(`/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB/free_hugepages`, 'utf8'));
}

/**
 * Waits for the machine-wide hugetlb test lock; release it with `using` (or
 * call the disposer: once releases it, again does nothing). scripts/test.js
 * takes the same lock to change the pool, so while a test holds it no run of
 * the suite adds pages to or takes pages from the pool.
 */
export async function hugeLock(): Promise<{ [Symbol.dispose](): void }> {
  const lock = poolLock();
  while (!lock.tryLock().taken) await new Promise((resolve) => setTimeout(resolve, 10));
  let held = true;
  return {
    [Symbol.dispose]() {
      if (!held) return;
      held = false;
      lock.unlock();
    },
  };
}
