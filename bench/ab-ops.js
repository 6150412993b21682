#!/usr/bin/env node
// The operations bench/region.bench.js and bench/cow.bench.js time, for this
// tree and another build of cowshm (a checkout of main, say) loaded side by
// side in one process: rounds alternate between the two builds (the order
// swapping every round) within milliseconds of each other, so a busy machine
// slows both alike. bench/ab.js runs the bench scripts themselves, one
// process per run, which a shared machine makes far noisier.
//
// Usage: node --expose-gc bench/ab-ops.js --baseline DIR [--rounds N] [--iters N] [--target X]
//   DIR: a cowshm package root that was built (npm install).
'use strict';
const path = require('node:path');
const { median, benchName, option, intOption } = require('./lib');

const baselineDir = option('baseline', undefined);
if (!baselineDir) {
  console.error('usage: node --expose-gc bench/ab-ops.js --baseline DIR [--rounds N] [--iters N] [--target X]');
  process.exit(2);
}
const rounds = intOption('rounds', 31);
const iters = intOption('iters', 100);
const target = Number(option('target', '1.05'));
const builds = [
  { name: 'baseline', lib: require(path.resolve(baselineDir)) },
  { name: 'this tree', lib: require(path.join(__dirname, '..')) },
];
const gc = globalThis.gc ?? (() => {});
const GiB = 2 ** 30, MiB = 2 ** 20;

// Each op: setup(lib) -> state, run(lib, state) once, teardown(state).
const ops = [
  {
    name: 'create+map+close+unlink, 64 MiB reserved (region)',
    iters: 5,
    run: ({ Region }) => {
      const r = Region.create({ name: benchName('ab-create'), size: 64 * MiB });
      r.map();
      r.close();
      r.unlink();
    },
  },
  ...[GiB, 32 * MiB].map((size) => ({
    name: `open+map+close, ${size / MiB} MiB (region)`,
    setup: ({ Region }) => Region.create({ name: benchName('ab-open'), size }),
    run: ({ Region }, held) => {
      const r = Region.open(held.name);
      r.map();
      r.close();
    },
    teardown: (held) => { held.close(); held.unlink(); },
  })),
  {
    name: 'open+map+buffer+close, 1 GiB (region)',
    iters: 20,
    setup: ({ Region }) => Region.create({ name: benchName('ab-buffer'), size: GiB, reserve: false }),
    run: ({ Region }, held) => {
      const r = Region.open(held.name);
      void r.map().buffer;
      r.close();
    },
    teardown: (held) => { held.close(); held.unlink(); },
  },
  ...[64 * MiB, GiB].map((size) => ({
    name: `cow view, ${size / MiB} MiB (cow)`,
    setup: ({ Region }) => Region.create({ name: benchName('ab-cow'), size, reserve: false }),
    run: (_, held) => { held.map({ access: 'cow' }).close(); },
    teardown: (held) => { held.close(); held.unlink(); },
  })),
  {
    name: 'cow view + .buffer + close, 64 MiB (cow)',
    iters: 20,
    setup: ({ Region }) => Region.create({ name: benchName('ab-cowbuf'), size: 64 * MiB, reserve: false }),
    run: (_, held) => {
      const v = held.map({ access: 'cow' });
      void v.buffer;
      v.close();
    },
    teardown: (held) => { held.close(); held.unlink(); },
  },
];

async function main() {
  let ok = true;
  const lines = [['measure', 'baseline', 'this tree', 'ratio', 'target', '']];
  const detail = [];
  for (const op of ops) {
    const n = op.iters ?? iters;
    const states = builds.map((b) => (op.setup ? op.setup(b.lib) : undefined));
    const times = builds.map(() => []);
    try {
      // One untimed round each, to warm up both.
      for (let b = 0; b < builds.length; b++) for (let i = 0; i < n; i++) op.run(builds[b].lib, states[b]);
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? [0, 1] : [1, 0];
        for (const b of order) {
          gc();
          await new Promise(setImmediate); // finalizers run here, as in any Node program
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < n; i++) op.run(builds[b].lib, states[b]);
          times[b].push(Number(process.hrtime.bigint() - t0) / 1e9 / n);
        }
      }
    } finally {
      if (op.teardown) states.forEach((s) => op.teardown(s));
    }
    const ratios = times[1].map((t, i) => t / times[0][i]);
    const ratio = median(ratios);
    const pass = ratio <= target;
    ok &&= pass;
    const us = (s) => `${(s * 1e6).toFixed(2)} µs`;
    lines.push([op.name, us(median(times[0])), us(median(times[1])), `${ratio.toFixed(3)}×`, `≤ ${target}×`, pass ? 'ok' : 'MISSED']);
    detail.push(`  per-round ratios, ${op.name}: ${ratios.map((r) => r.toFixed(2)).join(' ')}`);
  }
  console.log(`\nthis tree vs ${path.resolve(baselineDir)}, one process: ${rounds} alternating rounds; ratio = median of per-round ratios (> 1: this tree is slower)`);
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => String(l[i]).length)));
  for (const l of lines) console.log('  ' + l.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd());
  for (const d of detail) console.log(d);
  return ok;
}

main().then((ok) => { process.exitCode = ok ? 0 : 1; }, (err) => { console.error(err); process.exitCode = 1; });
