// Copy-on-write views.
//  1. Making one is O(1) in the region's size and close to the cost of the
//     mmap(MAP_PRIVATE) call itself: region.map({ access: 'cow' }) at 64 MiB,
//     1 GiB and 4 GiB against bench/c/cow.c on the same segment, rounds
//     alternating C and cowshm.
//  2. Reading the whole view copies nothing (Private_Dirty = Anonymous = 0);
//     writing k pages copies exactly k pages (k × 4096 bytes), by memory.usage().
// Options: --sizes BYTES,BYTES (default 64 MiB, 1 GiB, and 4 GiB when memory
// allows), --rounds N, --pages K (pages written in part 2, default 1000).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const { Region, memory, sum, pageSize } = require('cowshm');
const { compileC, runC, measure, median, pairedRatio, report, benchName, option, intOption } = require('./lib');

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const rounds = intOption('rounds', 7);
const runs = 3;
const iters = 200; // views made per run (then closed, untimed)
const k = intOption('pages', 1000);

const fmtSize = (n) => (n % GiB === 0 ? `${n / GiB} GiB` : `${n / MiB} MiB`);

function sizes() {
  const given = option('sizes', undefined);
  if (given !== undefined) return String(given).split(',').map(Number);
  const st = fs.statfsSync('/dev/shm');
  const room = Math.min(os.freemem(), st.bavail * st.bsize);
  const out = [64 * MiB, GiB];
  if (room > 4 * GiB + 4 * GiB) out.push(4 * GiB);
  else console.log(`  (4 GiB skipped: ${(room / GiB).toFixed(1)} GiB of memory or /dev/shm free)`);
  return out;
}

async function creation(c) {
  const results = [];
  for (const size of sizes()) {
    const r = Region.create({ name: benchName('cow'), size });
    try {
      const cT = [], jsT = [], bufT = [];
      const views = new Array(iters);
      for (let round = 0; round < rounds; round++) {
        cT.push(runC(c, [r.name, size, runs, iters]).seconds);
        // Like the C program: time the mmaps, not the munmaps that follow.
        const xs = [];
        for (let run = -1; run < runs; run++) {
          await new Promise(setImmediate);
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < iters; i++) views[i] = r.map({ access: 'cow' });
          const dt = Number(process.hrtime.bigint() - t0) / 1e9 / iters;
          if (run >= 0) xs.push(dt);
          for (const v of views) v.close();
        }
        jsT.push(median(xs));
        // Made, its ArrayBuffer taken, closed: V8 accounts for the buffer and
        // starts a collection for each one over 64 MiB. For information.
        bufT.push((await measure(() => {
          for (let i = 0; i < 20; i++) {
            const v = r.map({ access: 'cow' });
            void v.buffer;
            v.close();
          }
        }, { runs })) / 20);
        for (let i = 0; i < 3; i++) { globalThis.gc?.(); await new Promise(setImmediate); }
      }
      results.push({ size, cT, jsT, bufT });
    } finally {
      r.close();
      r.unlink();
    }
  }
  return results;
}

// Part 2: what reading and writing a cow view costs in memory, from smaps.
function proof() {
  const size = GiB;
  const r = Region.create({ name: benchName('proof'), size });
  try {
    const shared = new Int32Array(r.map().buffer);
    for (let i = 0; i < shared.length; i += pageSize / 4) shared[i] = i; // every page of the region exists
    const view = r.map({ access: 'cow' });
    const a = new Int32Array(view.buffer);
    const s = sum(a); // reads every page of the cow view
    const afterRead = memory.usage(view);
    const step = Math.floor(size / pageSize / k) * (pageSize / 4);
    for (let j = 0; j < k; j++) a[j * step] = -1; // one write in each of k distinct pages
    const afterWrite = memory.usage(view);
    const unchanged = shared[step] === step;
    view.close();
    return { s, afterRead, afterWrite, unchanged, size };
  } finally {
    r.close();
    r.unlink();
  }
}

async function main() {
  const c = compileC('cow');
  const results = await creation(c);
  const rows = [];
  for (const x of results) {
    rows.push({ name: `cow view, ${fmtSize(x.size)}`, cowshm: median(x.jsT), baseline: median(x.cT), ratio: pairedRatio(x.jsT, x.cT), target: 2 });
  }
  const small = results[0];
  for (const x of results.slice(1)) {
    rows.push({
      name: `cowshm ${fmtSize(x.size)} vs ${fmtSize(small.size)} (O(1): ≈ 1)`,
      cowshm: median(x.jsT),
      baseline: median(small.jsT),
      ratio: pairedRatio(x.jsT, small.jsT),
      target: 1.5,
    });
  }
  for (const x of results) {
    rows.push({ name: `cow view + .buffer + close, ${fmtSize(x.size)} (information)`, cowshm: median(x.bufT), baseline: median(x.cT), ratio: pairedRatio(x.bufT, x.cT) });
  }
  let ok = report(`making a copy-on-write view: medians of ${rounds} rounds × ${runs} runs × ${iters} views; ratio = median of per-round ratios (baseline: C mmap(MAP_PRIVATE))`, rows);

  const p = proof();
  const kib = (n) => `${n / 1024} KiB`;
  const checks = [
    ['after reading the whole view: Private_Dirty', p.afterRead.privateDirty, 0],
    ['after reading the whole view: Anonymous', p.afterRead.anonymous, 0],
    [`after writing ${k} pages: Private_Dirty`, p.afterWrite.privateDirty, k * pageSize],
    [`after writing ${k} pages: Anonymous`, p.afterWrite.anonymous, k * pageSize],
  ];
  console.log(`\ncopy-on-write view of ${fmtSize(p.size)}, memory.usage() (sum read: ${p.s}; Rss after reading ${kib(p.afterRead.rss)})`);
  for (const [what, got, want] of checks) {
    const pass = got === want;
    ok &&= pass;
    console.log(`  ${what.padEnd(44)} ${String(got).padStart(10)} bytes  expected ${String(want).padStart(10)}  ${pass ? 'ok' : 'MISSED'}`);
  }
  console.log(`  region unchanged by the writes: ${p.unchanged ? 'ok' : 'MISSED'}`);
  ok &&= p.unchanged;
  return ok;
}

main().then(
  (ok) => { process.exitCode = ok ? 0 : 1; },
  (err) => { console.error(err); process.exitCode = 1; },
);
