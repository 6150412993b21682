// Snapshots against the mechanisms they replace, measured in the same run:
//  - taking a snapshot of N GiB resident (N = 1, 4) vs fork() of a C process
//    holding the same resident bytes, and vs copying them with memcpy;
//  - the first write to a page after a snapshot (4 KiB pages, random order)
//    vs the kernel's own MAP_PRIVATE copy-on-write fault, in C;
//  - second and later writes vs a region without snapshots.
// Times are CPU time of the measuring process, medians.
// Usage: node bench/snapshot.bench.js [--sizes 1,4] [--mib 256] [--no-fallback]
// After the automatic backend, the fallback (mprotect) is measured too, in a
// child with COWSHM_SNAPSHOT_BACKEND=mprotect and 1 GiB only.
'use strict';
const { spawnSync } = require('node:child_process');
const { compileC, runC, median, report, fmtSeconds, cpuSeconds: now, shuffled, writePages: writeAt } = require('./lib');
const { Region, snapshotBackend, pageSize } = require('..');

const argv = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i === -1 ? fallback : argv[i + 1];
};
const sizes = arg('sizes', '1,4').split(',').map(Number);
const mib = Number(arg('mib', '256'));
const GiB = 2 ** 30;
const writePages = (bytes, order, value) => writeAt(bytes, order, pageSize, value);

const bin = compileC('snapshot');
console.log(`snapshot backend: ${snapshotBackend}; page size ${pageSize}`);

// 1. Taking a snapshot.
const takeRows = [];
for (const n of sizes) {
  const { fork_s } = runC(bin, ['fork', n, 5]);
  const { memcpy_fresh_s, memcpy_warm_s } = runC(bin, ['memcpy', n, 3]);
  const r = Region.create({ size: n * GiB });
  try {
    const view = r.map({ populate: true });
    new Uint8Array(view.buffer).fill(1, 0, 1 << 20);
    const xs = [];
    for (let i = 0; i < 6; i++) {
      const t0 = now();
      const s = r.snapshot();
      xs.push(now() - t0);
      s.release();
    }
    const t = median(xs.slice(1));
    takeRows.push({ name: `snapshot of ${n} GiB resident vs fork()`, cowshm: t, baseline: fork_s, target: 1.5 });
    takeRows.push({ name: `snapshot of ${n} GiB vs memcpy (fresh memory)`, cowshm: t, baseline: memcpy_fresh_s, target: 0.01 });
    takeRows.push({ name: `snapshot of ${n} GiB vs memcpy (warm memory)`, cowshm: t, baseline: memcpy_warm_s });
    view.close();
  } finally {
    r.close();
  }
}
report(`Taking a snapshot (${snapshotBackend}); median of 5`, takeRows);

// 2 and 3. Writes after a snapshot.
const { cow_fault_s_per_page } = runC(bin, ['cow', mib]);
const { uffd_s_per_page } = runC(bin, ['uffd', mib]);
const pages = (mib << 20) / pageSize;
const order = shuffled(pages);
const firsts = [];
const seconds = [];
const plains = [];
for (let round = 0; round < 5; round++) {
  const r = Region.create({ size: mib << 20 });
  const plain = Region.create({ size: mib << 20 });
  try {
    const bytes = new Uint8Array(r.map({ populate: true }).buffer);
    const plainBytes = new Uint8Array(plain.map({ populate: true }).buffer);
    bytes.fill(1);
    plainBytes.fill(1);
    writePages(plainBytes, order, 2); // warm the JIT on the same loop
    const s = r.snapshot();
    let t0 = now();
    writePages(bytes, order, 2);
    firsts.push((now() - t0) / pages);
    if (s.copiedPages * pageSize !== s.chunkSize * Math.ceil(s.copiedPages * pageSize / s.chunkSize)) throw new Error('copied pages not whole chunks');
    // Alternate the two, so neither gets a warmer cache or a quieter moment.
    const a = [];
    const b = [];
    for (let rep = 0; rep < 4; rep++) {
      t0 = now();
      for (let k = 0; k < 8; k++) writePages(bytes, order, 3 + k);
      a.push((now() - t0) / pages / 8);
      t0 = now();
      for (let k = 0; k < 8; k++) writePages(plainBytes, order, 3 + k);
      b.push((now() - t0) / pages / 8);
    }
    seconds.push(median(a));
    plains.push(median(b));
    s.release();
  } finally {
    r.close();
    plain.close();
  }
}
const perPage = (s) => `${fmtSeconds(s)}/page`;
report(`Writes after a snapshot (${mib} MiB, 4 KiB pages, random order; ${snapshotBackend}); median of 5`, [
  { name: 'first write vs kernel MAP_PRIVATE COW fault (C)', cowshm: median(firsts), baseline: cow_fault_s_per_page, target: 1.5, format: perPage },
  ...(uffd_s_per_page && snapshotBackend === 'userfaultfd'
    ? [{ name: 'first write vs the same mechanism in C (its floor)', cowshm: median(firsts), baseline: uffd_s_per_page, format: perPage }]
    : []),
  { name: 'second write vs a region without snapshots', cowshm: median(seconds), baseline: median(plains), target: 1.1, format: perPage },
]);

if (snapshotBackend !== 'mprotect' && !argv.includes('--no-fallback')) {
  console.log('\n--- the fallback: COWSHM_SNAPSHOT_BACKEND=mprotect ---');
  const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--sizes', '1', '--mib', String(mib)], {
    stdio: 'inherit',
    env: { ...process.env, COWSHM_SNAPSHOT_BACKEND: 'mprotect' },
  });
  if (r.status !== 0) process.exitCode = 1;
}
