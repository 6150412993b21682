#!/usr/bin/env node
// Compares this tree with another build of cowshm (a checkout of main, say)
// on the same benches, in alternating rounds of one run. Each round runs every
// named bench once against each build, the order of the two alternating from
// round to round, and takes this tree's figure over the baseline's for every
// row (baseline over this tree for throughputs), so a ratio above 1 is slower.
// The table shows the median of those per-round ratios.
//
// Usage: node bench/ab.js --baseline DIR [--rounds N] [--target X] BENCH... [-- bench options]
//   DIR: a cowshm package root that was built (npm install). This tree's bench
//   scripts run against both builds: for the baseline they are copied into
//   DIR/.bench-ab, where require('cowshm') resolves to DIR.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { median } = require('./lib');

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const own = dash === -1 ? argv : argv.slice(0, dash);
const benchArgs = dash === -1 ? [] : argv.slice(dash + 1);
let baseline, rounds = 5, target = 1.05;
const benches = [];
for (let i = 0; i < own.length; i++) {
  if (own[i] === '--baseline') baseline = own[++i];
  else if (own[i] === '--rounds') rounds = Number(own[++i]);
  else if (own[i] === '--target') target = Number(own[++i]);
  else benches.push(own[i].replace(/(\.bench)?\.js$/, ''));
}
if (!baseline || benches.length === 0 || !(rounds >= 1)) {
  console.error('usage: node bench/ab.js --baseline DIR [--rounds N] [--target X] BENCH... [-- bench options]');
  process.exit(2);
}
baseline = path.resolve(baseline);
if (!fs.existsSync(path.join(baseline, 'build', 'Release', 'cowshm.node')))
  throw new Error(`${baseline} has no build/Release/cowshm.node: run npm install there first`);

// This tree's scripts, next to the baseline package.
const copy = path.join(baseline, '.bench-ab');
fs.rmSync(copy, { recursive: true, force: true });
fs.cpSync(__dirname, copy, { recursive: true, filter: (f) => !f.includes(`${path.sep}build`) });
const builds = [
  { name: 'baseline', dir: copy },
  { name: 'this tree', dir: __dirname },
];

// A run that fails outright (another program on the machine removing a
// bench's segment, say) is run again, up to twice.
function runOnce(build, bench, tries = 3) {
  try {
    return runOnceOnly(build, bench);
  } catch (err) {
    if (tries <= 1) throw err;
    process.stderr.write(`${err.message.split('\n').slice(0, 3).join(' ')}: running it again\n`);
    return runOnce(build, bench, tries - 1);
  }
}

function runOnceOnly(build, bench) {
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(build.dir, `${bench}.bench.js`), ...benchArgs], {
    cwd: build.dir,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    env: { ...process.env, COWSHM_BENCH_JSON: '1' },
  });
  const tables = r.stdout.split('\n').filter((l) => l.startsWith('COWSHM_BENCH_JSON ')).map((l) => JSON.parse(l.slice(18)));
  // A bench exits 1 when it misses its own targets against C: the figures still count.
  if (tables.length === 0) throw new Error(`${bench} (${build.name}) printed no figures:\n${r.stdout}\n${r.stderr}`);
  return tables.flatMap((t) => t.rows.map((row) => ({ ...row, name: `${bench}: ${row.name}` })));
}

const figures = new Map(); // row name -> { old: [], new: [], ratios: [], higherIsBetter }
for (let round = 0; round < rounds; round++) {
  for (const bench of benches) {
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    const got = {};
    for (const b of order) got[b.name] = runOnce(b, bench);
    for (const row of got['this tree']) {
      const old = got['baseline'].find((r) => r.name === row.name);
      if (!old) continue;
      const f = figures.get(row.name) ?? { old: [], new: [], ratios: [], higherIsBetter: row.higherIsBetter };
      f.old.push(old.value);
      f.new.push(row.value);
      f.ratios.push(row.higherIsBetter ? old.value / row.value : row.value / old.value);
      figures.set(row.name, f);
    }
  }
  process.stderr.write(`round ${round + 1}/${rounds} done\n`);
}
fs.rmSync(copy, { recursive: true, force: true });

console.log(`\nthis tree vs ${baseline}: ${rounds} alternating rounds; ratio = median of per-round ratios (> 1: this tree is slower)`);
const lines = [['measure', 'baseline', 'this tree', 'ratio', 'target', '']];
let ok = true;
const fmt = (v, hib) => (hib ? v.toFixed(2) : v < 1e-3 ? `${(v * 1e6).toFixed(2)} µs` : `${(v * 1e3).toFixed(2)} ms`);
for (const [name, f] of figures) {
  const ratio = median(f.ratios);
  const pass = ratio <= target;
  ok &&= pass;
  lines.push([name, fmt(median(f.old), f.higherIsBetter), fmt(median(f.new), f.higherIsBetter), `${ratio.toFixed(3)}×`, `≤ ${target}×`, pass ? 'ok' : 'MISSED']);
}
const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => String(l[i]).length)));
for (const l of lines) console.log('  ' + l.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd());
for (const [name, f] of figures) console.log(`  per-round ratios, ${name}: ${f.ratios.map((r) => r.toFixed(3)).join(' ')}`);
process.exit(ok ? 0 : 1);
