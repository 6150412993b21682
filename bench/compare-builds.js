#!/usr/bin/env node
// One build of cowshm against another (e.g. before and after a change to
// src/), on the TypeScript side of the region, view, snapshot and checkpoint
// paths: sizes are small so the JS costs show, not the kernel's.
//
// Usage: node --expose-gc bench/compare-builds.js BASELINE_ROOT [--rounds N]
//   BASELINE_ROOT: a package root with dist/ built (e.g. `git worktree add
//   /tmp/base main && cd /tmp/base && npm install`).
// Each round runs both builds, in separate processes, in alternating order;
// a row's ratio is the median over rounds of (this build / baseline) per round.
// Times are CPU time of the measuring process (all its threads, so a
// checkpoint's thread-pool work counts): the machine is shared, and wall time
// would also measure the neighbours.
// Both builds load the addon each finds (set COWSHM_NATIVE_PATH to make them
// share one when only TypeScript differs).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const CASES = {
  'Region.open + map + close (1 MiB shm)': (cowshm, ctx) => {
    const r = cowshm.Region.open(ctx.name);
    r.map();
    r.close();
  },
  'Region.create + map + close (64 KiB memfd)': (cowshm) => {
    const r = cowshm.Region.create({ size: 65536, reserve: false });
    r.map({ offset: 0, length: 65536 });
    r.close();
  },
  'map({ offset, length }) + close': (cowshm, ctx) => {
    ctx.region.map({ offset: 4 * cowshm.pageSize, length: 8 * cowshm.pageSize }).close();
  },
  'snapshot() + release() (1 MiB)': (cowshm, ctx) => {
    ctx.region.snapshot().release();
  },
  'snapshot({ offset, length }) + release()': (cowshm, ctx) => {
    ctx.region.snapshot({ offset: 0, length: 16 * cowshm.pageSize }).release();
  },
  'checkpointInfo (full)': (cowshm, ctx) => {
    cowshm.checkpointInfo(ctx.full);
  },
  'Region.restore (full) + close': (cowshm, ctx) => {
    cowshm.Region.restore(ctx.full).close();
  },
  'Region.restore (delta chain, 1 MiB) + close': (cowshm, ctx) => {
    cowshm.Region.restore(ctx.delta).close();
  },
};
const ASYNC_CASES = {
  'snapshot.writeTo (1 MiB full)': async (cowshm, ctx) => {
    const s = ctx.region.snapshot();
    await s.writeTo(path.join(ctx.dir, 'w.cow'));
    s.release();
  },
  'snapshot.writeTo (delta, live base)': async (cowshm, ctx) => {
    ctx.view[0]++;
    const s = ctx.region.snapshot();
    await s.writeTo(path.join(ctx.dir, 'd2.cow'), { base: ctx.liveBase });
    s.release();
  },
  'writeCheckpoint(view, { base }) (delta, compared)': async (cowshm, ctx) => {
    await cowshm.writeCheckpoint(ctx.viewObj, path.join(ctx.dir, 'd3.cow'), { base: ctx.full });
  },
};

const cpu = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1e3; // ns
};

async function child(root) {
  const cowshm = require(path.join(path.resolve(root), 'dist', 'index.js'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowshm-compare-'));
  // Not under the cowshm- prefix that tests clean up after themselves.
  const name = `bench-compare-${process.pid}-${Date.now().toString(36)}`;
  const held = cowshm.Region.create({ name, size: 1 << 20 });
  const region = cowshm.Region.create({ size: 1 << 20 });
  const viewObj = region.map();
  const view = new Uint8Array(viewObj.buffer);
  view.fill(3);
  const full = path.join(dir, 'full.cow');
  await cowshm.writeCheckpoint(viewObj, full);
  view[cowshm.pageSize * 5] = 9;
  const delta = path.join(dir, 'delta.cow');
  await cowshm.writeCheckpoint(viewObj, delta, { base: full });
  const live = region.snapshot();
  const liveBase = path.join(dir, 'live.cow');
  await live.writeTo(liveBase);
  const ctx = { name, region, view, viewObj, full, delta, liveBase, dir };
  const out = {};
  try {
    const runs = 5;
    for (const [label, fn] of Object.entries(CASES)) {
      const iters = 1000;
      for (let i = 0; i < 50; i++) fn(cowshm, ctx);
      const times = [];
      for (let r = 0; r < runs; r++) {
        globalThis.gc?.();
        const t0 = cpu();
        for (let i = 0; i < iters; i++) fn(cowshm, ctx);
        times.push((cpu() - t0) / iters);
      }
      out[label] = times.sort((a, b) => a - b)[runs >> 1];
    }
    for (const [label, fn] of Object.entries(ASYNC_CASES)) {
      const iters = 40;
      for (let i = 0; i < 5; i++) await fn(cowshm, ctx);
      const times = [];
      for (let r = 0; r < runs; r++) {
        const t0 = cpu();
        for (let i = 0; i < iters; i++) await fn(cowshm, ctx);
        times.push((cpu() - t0) / iters);
      }
      out[label] = times.sort((a, b) => a - b)[runs >> 1];
    }
  } finally {
    live.release();
    region.close();
    held.close();
    held.unlink();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out));
}

function parent(baseline, roundsAsked) {
  let rounds = roundsAsked;
  const builds = [
    ['this build', path.join(__dirname, '..')],
    ['baseline', path.resolve(baseline)],
  ];
  for (const [, root] of builds) {
    if (!fs.existsSync(path.join(root, 'dist', 'index.js'))) throw new Error(`${root}: no dist/index.js (build it first)`);
  }
  const results = { 'this build': [], baseline: [] };
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    const got = {};
    for (const [label, root] of order) {
      const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--child', root], { encoding: 'utf8' });
      if (r.status !== 0) {
        process.stderr.write(`round ${round + 1}: ${label} failed, round left out:\n${r.stderr}\n`);
        break;
      }
      got[label] = JSON.parse(r.stdout);
    }
    if (got.baseline && got['this build']) {
      results.baseline.push(got.baseline);
      results['this build'].push(got['this build']);
    }
    process.stderr.write(`round ${round + 1}/${rounds}\n`);
  }
  if (results.baseline.length === 0) throw new Error('no round completed');
  rounds = results.baseline.length;
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const fmt = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} µs`);
  console.log(`node ${process.version}, ${rounds} rounds, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`${'operation'.padEnd(52)} ${'baseline'.padStart(10)} ${'this'.padStart(10)} ${'ratio'.padStart(7)}  per round`);
  for (const label of Object.keys({ ...CASES, ...ASYNC_CASES })) {
    const ratios = results['this build'].map((r, i) => r[label] / results.baseline[i][label]);
    const a = median(results.baseline.map((r) => r[label]));
    const b = median(results['this build'].map((r) => r[label]));
    console.log(
      `${label.padEnd(52)} ${fmt(a).padStart(10)} ${fmt(b).padStart(10)} ${median(ratios).toFixed(3).padStart(7)}  ` +
        ratios.map((x) => x.toFixed(2)).join(' '),
    );
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  child(argv[1]).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  const i = argv.indexOf('--rounds');
  const rounds = i === -1 ? 7 : Number(argv[i + 1]);
  if (argv[0] === undefined || argv[0].startsWith('--') || !Number.isInteger(rounds) || rounds < 1) {
    console.error('usage: node --expose-gc bench/compare-builds.js BASELINE_ROOT [--rounds N]');
    process.exit(2);
  }
  parent(argv[0], rounds);
}
