// Region lifecycle against the same syscalls made from C, in the same run:
//  - create + map + close + unlink of a reserved region (shm_open O_CREAT|O_EXCL,
//    fchmod, ftruncate, fallocate, mmap, munmap, close, shm_unlink);
//  - open + map + close of an existing one (shm_open, fstat, geteuid for the
//    owner check, mmap, munmap, close).
// Options: --size BYTES (default 1 GiB), --rounds N (default 7 for create, 3×N for open).
'use strict';
const fs = require('node:fs');
const { Region } = require('cowshm');
const { compileC, runC, measure, median, pairedRatio, report, benchName, intOption } = require('./lib');

const size = intOption('size', 2 ** 30);
const createRounds = intOption('rounds', 7);
const openRounds = 3 * createRounds;
// Creating a reserved GiB costs a few hundred milliseconds (fallocate zeroes
// it, unlink frees it): one per run. Opening costs microseconds: many.
const createIters = 1;
const openIters = 500;
const runs = 3;
// V8 starts a garbage collection whenever an external ArrayBuffer of more
// than 64 MiB appears (its external-memory heuristic), so opening is also
// measured below that size, where only cowshm's own overhead shows.
const smallSize = 32 * 2 ** 20;

const c = compileC('region');

function createOnce(name) {
  const r = Region.create({ name, size });
  r.map();
  r.close();
  r.unlink();
}

function openOnce(name) {
  const r = Region.open(name);
  r.map();
  r.close();
}

// The same with the view's ArrayBuffer taken, as JS code reading it would:
// V8 then accounts the mapping as external memory (a collection starts for
// each buffer over 64 MiB). For information; C has no counterpart.
function openBufferOnce(name) {
  const r = Region.open(name);
  void r.map().buffer;
  r.close();
}

const fmtSize = (n) => (n % 2 ** 30 === 0 ? `${n / 2 ** 30} GiB` : `${n / 2 ** 20} MiB`);

async function main() {
  const gc = globalThis.gc ?? (() => {});
  const cCreate = [], jsCreate = [];
  const opens = [size, smallSize].map((n) => ({ size: n, name: benchName('open'), c: [], js: [] }));
  const withBuffer = [];
  const held = opens.map((o) => Region.create({ name: o.name, size: o.size }));
  try {
    // Rounds alternate C and cowshm so both see the same machine (2 vCPUs, shared).
    for (let round = 0; round < createRounds; round++) {
      cCreate.push(runC(c, ['create', benchName('c-create'), size, runs, createIters]).seconds);
      const jsName = benchName('js-create');
      gc();
      jsCreate.push((await measure(() => { for (let i = 0; i < createIters; i++) createOnce(jsName); }, { runs })) / createIters);
    }
    // Opening is cheap: many short rounds keep each C/cowshm pair close in time.
    for (let round = 0; round < openRounds; round++) {
      for (const o of opens) {
        o.c.push(runC(c, ['open', o.name, o.size, runs, openIters]).seconds);
        gc();
        o.js.push((await measure(() => { for (let i = 0; i < openIters; i++) openOnce(o.name); }, { runs })) / openIters);
      }
      gc();
      withBuffer.push((await measure(() => { for (let i = 0; i < openIters; i++) openBufferOnce(opens[0].name); }, { runs })) / openIters);
    }
  } finally {
    for (const r of held) {
      r.close();
      r.unlink();
    }
  }
  const ok = report(`region lifecycle: medians of ${createRounds} (create) / ${openRounds} (open) rounds × ${runs} runs; ratio = median of per-round ratios (baseline: C, gcc -O3 -march=native)`, [
    { name: `create+map+close+unlink, ${fmtSize(size)} reserved`, cowshm: median(jsCreate), baseline: median(cCreate), ratio: pairedRatio(jsCreate, cCreate), target: 1.3 },
    ...opens.map((o) => ({
      name: `open+map+close, ${fmtSize(o.size)}`,
      cowshm: median(o.js),
      baseline: median(o.c),
      ratio: pairedRatio(o.js, o.c),
      target: o.size === size ? 1.3 : undefined,
    })),
    { name: `open+map+buffer+close, ${fmtSize(size)} (information)`, cowshm: median(withBuffer), baseline: median(opens[0].c), ratio: pairedRatio(withBuffer, opens[0].c) },
  ]);
  const us = (xs) => xs.map((x) => (x * 1e6).toFixed(1)).join(' ');
  console.log(`  rounds (µs): create C ${us(cCreate)} | cowshm ${us(jsCreate)}`);
  for (const o of opens) console.log(`               open ${fmtSize(o.size)} C ${us(o.c)} | cowshm ${us(o.js)}`);
  console.log(`               open+buffer ${fmtSize(size)} cowshm ${us(withBuffer)}`);
  const left = fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`cowshm-bench-${process.pid}-`));
  if (left.length) throw new Error(`left behind in /dev/shm: ${left.join(', ')}`);
  return ok;
}

main().then(
  (ok) => { process.exitCode = ok ? 0 : 1; },
  (err) => { console.error(err); process.exitCode = 1; },
);
