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

export const MiB2 = 2 << 20;
export const GiB1 = 1 << 30;

/** Where scripts/test.js keeps its per-run pool records, and the lock. */
export const poolState = fs.existsSync('/run') ? '/run/cowshm-test-hugetlb' : '/tmp/cowshm-test-hugetlb';

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

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Waits for the machine-wide hugetlb test lock; release it with `using` (or
 * call the disposer: once releases it, again does nothing). scripts/test.js
 * takes the same lock to change the pool, so while a test holds it no run of
 * the suite adds pages to or takes pages from the pool.
 */
export async function hugeLock(): Promise<{ [Symbol.dispose](): void }> {
  const lock = path.join(poolState, 'tests');
  const owner = path.join(lock, 'pid');
  for (;;) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(owner, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A holder that died (kill -9) leaves the lock behind: take it over.
      let pid = NaN;
      try {
        pid = Number(fs.readFileSync(owner, 'utf8'));
      } catch {
        // Being written or removed: look again.
      }
      if (Number.isSafeInteger(pid) && pid > 0 && !alive(pid)) fs.rmSync(lock, { recursive: true, force: true });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  let held = true;
  return {
    [Symbol.dispose]() {
      if (!held) return;
      held = false;
      fs.rmSync(lock, { recursive: true, force: true });
    },
  };
}
