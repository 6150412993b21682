// Snapshots on hugetlb pages and copy granularity, against their anchors in
// the same run (CPU time of the measuring process, rounds alternating with
// the C baselines; ratio = median of the per-round ratios):
//  1. taking a snapshot of 1 GiB resident on 2 MiB pages vs fork() of a C
//     process with 1 GiB of resident 4 KiB anonymous memory, and vs the same
//     mechanism in C (bench/c/hugetlb.c: uffd-wp + MADV_POPULATE_WRITE);
//  2. the first write to each 2 MiB page after it vs the C program's;
//  3. with { chunkSize: 64 KiB } on 4 KiB pages (userfaultfd backend): the
//     first write per 4 KiB page, over a fully written region, in random and
//     in sequential order, vs the kernel's own MAP_PRIVATE COW fault (C),
//     and vs the same mechanism in C with 64 KiB chunks (its floor).
// Needs root for the pool (raised for the run and given back at exit), or a
// pool of about 1100 free 2 MiB pages.
// Usage: node bench/hugetlb.bench.js [--rounds 5] [--mib 1024] [--chunk-mib 256]
'use strict';
const { compileC, runC, median, pairedRatio, report, fmtSeconds, intOption, reservePool, cpuSeconds: cpu, shuffled, writePages: writeAt } = require('./lib');
const { Region, snapshotBackend, pageSize } = require('..');

const HUGE = 2 << 20;
const rounds = intOption('rounds', 5);
const mib = intOption('mib', 1024);
const chunkMib = intOption('chunk-mib', 256);
const snapBin = compileC('snapshot');
const hugeBin = compileC('hugetlb');
console.log(`snapshot backend: ${snapshotBackend}; page size ${pageSize}`);

// 1 and 2. The region (mib), its snapshot's copies (mib), one C run at a time (2 × mib).
reservePool(Math.ceil((2 * mib * 2 ** 20) / HUGE) + 16);
const pages = (mib * 2 ** 20) / HUGE;
const order = shuffled(pages);
const take = [], cTake = [], forks = [], first = [], cFirst = [];
let mismatched = 0;
for (let round = 0; round < rounds; round++) {
  forks.push(runC(snapBin, ['fork', mib / 1024, 3]).fork_s);
  const c = runC(hugeBin, ['snap', mib, 3]);
  if (c.mismatched !== 0) throw new Error(`the C baseline's snapshot differs in ${c.mismatched} pages`);
  cTake.push(c.snapshot_s);
  cFirst.push(c.first_write_s_per_huge_page);
  const r = Region.create({ size: mib * 2 ** 20, pageSize: HUGE });
  try {
    const bytes = new Uint8Array(r.map().buffer);
    // snapshot() in the steady state, as the C program's runs after its
    // first: each of these arms the region's view again (UFFDIO_REGISTER),
    // as the first snapshot after the last one's release must.
    const xs = [];
    for (let i = 0; i < 6; i++) {
      const t = cpu();
      const warm = r.snapshot();
      xs.push(cpu() - t);
      warm.release();
    }
    take.push(median(xs.slice(1)));
    const value = round + 1;
    bytes.fill(value);
    const s = r.snapshot();
    const t1 = cpu();
    writeAt(bytes, order, HUGE, value + 100);
    first.push((cpu() - t1) / pages);
    if (s.copiedPages !== (mib * 2 ** 20) / pageSize) throw new Error(`copiedPages ${s.copiedPages}`);
    const frozen = new Uint8Array(s.buffer);
    for (let i = 0; i < frozen.length; i += pageSize) if (frozen[i] !== value) mismatched++;
    s.release();
  } finally {
    r.close();
  }
}
if (mismatched !== 0) throw new Error(`the snapshot differs from the data at the snapshot in ${mismatched} pages`);
const ms = (s) => fmtSeconds(s);
report(`Snapshot of ${mib} MiB resident on 2 MiB pages (${snapshotBackend}); medians of ${rounds} rounds, 0 mismatched pages`, [
  { name: `snapshot() vs fork() with ${mib} MiB of 4 KiB anon (C)`, cowshm: median(take), baseline: median(forks), ratio: pairedRatio(take, forks), target: 0.02, format: ms },
  { name: 'snapshot() vs the same mechanism in C', cowshm: median(take), baseline: median(cTake), ratio: pairedRatio(take, cTake), target: 2, format: ms },
  { name: 'first write per 2 MiB page vs C', cowshm: median(first), baseline: median(cFirst), ratio: pairedRatio(first, cFirst), target: 1.5, format: (s) => `${fmtSeconds(s)}/page` },
]);

// 3. Copy granularity on 4 KiB pages.
if (snapshotBackend !== 'userfaultfd') {
  console.log('\n(64 KiB chunks: skipped, the userfaultfd backend is unavailable here)');
} else {
  const n = (chunkMib * 2 ** 20) / pageSize;
  const rows = [];
  for (const mode of ['random', 'sequential']) {
    const ord = mode === 'random' ? shuffled(n) : Uint32Array.from({ length: n }, (_, i) => i);
    const js = [], kernel = [], floor = [];
    for (let round = 0; round < rounds; round++) {
      kernel.push(runC(snapBin, ['cow', chunkMib, ...(mode === 'sequential' ? ['sequential'] : [])]).cow_fault_s_per_page);
      floor.push(runC(snapBin, ['uffd', chunkMib, 64 << 10, mode]).uffd_s_per_page);
      const r = Region.create({ size: chunkMib * 2 ** 20 });
      try {
        const bytes = new Uint8Array(r.map().buffer);
        bytes.fill(1);
        writeAt(bytes, ord, pageSize, 2); // warm the loop
        bytes.fill(2);
        const s = r.snapshot({ chunkSize: 64 << 10 });
        if (s.chunkSize !== 64 << 10) throw new Error(`chunkSize ${s.chunkSize}`);
        const t0 = cpu();
        writeAt(bytes, ord, pageSize, 3);
        js.push((cpu() - t0) / n);
        if (s.copiedPages !== n) throw new Error(`copiedPages ${s.copiedPages} of ${n}`);
        if (new Uint8Array(s.buffer).some((x) => x !== 2)) throw new Error('the snapshot changed');
        s.release();
      } finally {
        r.close();
      }
    }
    const per = (s) => `${fmtSeconds(s)}/page`;
    rows.push({ name: `first write per 4 KiB page, ${mode} order, vs kernel COW fault`, cowshm: median(js), baseline: median(kernel), ratio: pairedRatio(js, kernel), target: 1.2, format: per });
    // The same mechanism in C with 64 KiB chunks: what any implementation of it can reach.
    rows.push({ name: `  the same, vs the mechanism in C with 64 KiB chunks (its floor)`, cowshm: median(js), baseline: median(floor), ratio: pairedRatio(js, floor), format: per });
    rows.push({ name: `  the C mechanism itself vs kernel COW fault`, cowshm: median(floor), baseline: median(kernel), ratio: pairedRatio(floor, kernel), format: per });
  }
  report(`64 KiB chunks on 4 KiB pages, ${chunkMib} MiB fully written (userfaultfd); medians of ${rounds} rounds`, rows);
}
