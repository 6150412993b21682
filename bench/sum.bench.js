// Summing an int32 view: cowshm's sum() (native kernel) and a plain JS loop
// against the question's C loop (size_t sum += A[i], gcc -O3 -march=native),
// on the same reserved shm segment, each through its own populated, warm
// MAP_SHARED mapping. Rounds alternate C and cowshm (the machine is shared).
// Options: --sizes BYTES,BYTES (default 1 GiB, and 4 GiB when memory allows), --runs N, --rounds N.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const { Region, sum } = require('cowshm');
const { compileC, runC, measure, median, report, benchName, option, intOption, gbps } = require('./lib');

const runs = intOption('runs', 5);
const rounds = intOption('rounds', 7);
const jsLoopRuns = 3;
const GiB = 2 ** 30;

function shmFree() {
  const st = fs.statfsSync('/dev/shm');
  return st.bavail * st.bsize;
}

function wantedSizes() {
  const given = option('sizes', undefined);
  if (given !== undefined) return String(given).split(',').map((x) => Number(x));
  const sizes = [GiB];
  // One segment (C maps the one cowshm filled), plus headroom for the rest of the machine.
  if (Math.min(os.freemem(), shmFree()) > 4 * GiB + 4 * GiB) sizes.push(4 * GiB);
  else console.log(`  (4 GiB skipped: ${(os.freemem() / GiB).toFixed(1)} GiB free memory, ${(shmFree() / GiB).toFixed(1)} GiB free in /dev/shm)`);
  return sizes;
}

function jsLoop(a) {
  let s = 0n;
  // Blocks small enough that a double sum stays exact, then into a bigint.
  for (let start = 0; start < a.length; start += 1 << 20) {
    const end = Math.min(a.length, start + (1 << 20));
    let acc = 0;
    for (let i = start; i < end; i++) acc += a[i];
    s += BigInt(acc);
  }
  return s;
}

const fmtGBs = (x) => `${x.toFixed(2)} GB/s`;

async function main() {
  const c = compileC('sum');
  const rows = [];
  for (const size of wantedSizes()) {
    const label = size % GiB === 0 ? `${size / GiB} GiB` : `${size} bytes`;
    const r = Region.create({ name: benchName('sum'), size });
    try {
      const a = new Int32Array(r.map().buffer);
      for (let i = 0; i < a.length; i++) a[i] = i; // populates every page, like the C fill
      // Rounds alternate C and cowshm so both see the same machine (2 vCPUs, shared).
      const cT = [], sumT = [], loopT = [];
      for (let round = 0; round < rounds; round++) {
        const cr = runC(c, [r.name, size, runs]);
        cT.push(cr.seconds);
        let got;
        sumT.push(await measure(() => { got = sum(a); }, { runs }));
        if (String(got) !== cr.sum) throw new Error(`sum() gave ${got}, C gave ${cr.sum}`);
        if (round === 0) {
          let loopGot;
          loopT.push(await measure(() => { loopGot = jsLoop(a); }, { runs: jsLoopRuns, warmup: 1 }));
          if (String(loopGot) !== cr.sum) throw new Error(`the JS loop gave ${loopGot}, C gave ${cr.sum}`);
        }
      }
      const base = gbps(size, median(cT));
      rows.push({ name: `sum() int32, ${label}`, cowshm: gbps(size, median(sumT)), baseline: base, higherIsBetter: true, target: 0.8, format: fmtGBs });
      rows.push({ name: `plain JS loop, ${label} (reference)`, cowshm: gbps(size, median(loopT)), baseline: base, higherIsBetter: true, format: fmtGBs });
      console.log(`  ${label} rounds (GB/s): C ${cT.map((t) => gbps(size, t).toFixed(1)).join(' ')}; sum() ${sumT.map((t) => gbps(size, t).toFixed(1)).join(' ')}`);
    } finally {
      r.close();
      r.unlink();
    }
  }
  return report(`sum of an int32 view, throughput (median of ${rounds} rounds × ${runs} runs; baseline: C loop, gcc -O3 -march=native)`, rows);
}

main().then(
  (ok) => { process.exitCode = ok ? 0 : 1; },
  (err) => { console.error(err); process.exitCode = 1; },
);
