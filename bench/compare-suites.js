// What bench/compare.js measures, suite by suite. A suite is run against one
// build at a time, in a child process of its own ('process' suites), against
// both builds loaded side by side in one child ('inproc' suites), or is a
// bench script of bench/ whose report() rows are taken ('bench:NAME', in
// bench/compare.js). Every measure returns seconds (lower is better).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { median, benchName, cpuSeconds, shuffled, writePages } = require('./lib');

const MiB = 2 ** 20;
const GiB = 2 ** 30;

// --- TypeScript paths: small sizes, so that the JS costs show rather than the
// kernel's; CPU time of the measuring process (all its threads, so a
// checkpoint's thread-pool work counts). Each case: 5 runs of `iters` calls
// after a warm-up, the median run's time per call.
const CASES = {
  map: {
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
  },
  snapshot: {
    'snapshot() + release() (1 MiB)': (cowshm, ctx) => {
      ctx.region.snapshot().release();
    },
    'snapshot({ offset, length }) + release()': (cowshm, ctx) => {
      ctx.region.snapshot({ offset: 0, length: 16 * cowshm.pageSize }).release();
    },
  },
  restore: {
    'checkpointInfo (full)': (cowshm, ctx) => {
      cowshm.checkpointInfo(ctx.full);
    },
    'Region.restore (full) + close': (cowshm, ctx) => {
      cowshm.Region.restore(ctx.full).close();
    },
    'Region.restore (delta chain, 1 MiB) + close': (cowshm, ctx) => {
      cowshm.Region.restore(ctx.delta).close();
    },
  },
  write: {
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
  },
};
const ASYNC = new Set(['write']);

/** The set-up every case suite shares: a 1 MiB named segment, a 1 MiB region with a full and a delta checkpoint, a live snapshot written as a base. */
async function caseContext(cowshm) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowshm-compare-'));
  // Not under the cowshm- prefix, which sweeps by the test suite remove when no live process holds them.
  const name = `bench-compare-${process.pid}-${Date.now().toString(36)}`;
  const held = cowshm.Region.create({ name, size: MiB });
  const region = cowshm.Region.create({ size: MiB });
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
  return {
    name, region, view, viewObj, full, delta, liveBase, dir,
    close() {
      live.release();
      region.close();
      held.close();
      held.unlink();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs the named case suites (in the order of CASES) against `cowshm`; returns { 'suite: case': seconds per call }. */
async function runCases(cowshm, suites, { quick }) {
  const ctx = await caseContext(cowshm);
  const out = {};
  const runs = 5;
  try {
    for (const suite of Object.keys(CASES).filter((s) => suites.includes(s))) {
      const async = ASYNC.has(suite);
      const iters = async ? (quick ? 10 : 40) : quick ? 200 : 1000;
      const warmup = async ? 5 : 50;
      for (const [label, fn] of Object.entries(CASES[suite])) {
        for (let i = 0; i < warmup; i++) await fn(cowshm, ctx);
        const times = [];
        for (let r = 0; r < runs; r++) {
          if (!async) globalThis.gc?.();
          const t0 = cpuSeconds();
          if (async) for (let i = 0; i < iters; i++) await fn(cowshm, ctx);
          else for (let i = 0; i < iters; i++) fn(cowshm, ctx);
          times.push((cpuSeconds() - t0) / iters);
        }
        out[`${suite}: ${label}`] = median(times);
      }
    }
  } finally {
    ctx.close();
  }
  return out;
}

// --- The snapshot engine (suite `engine`): taking a snapshot of a resident
// region, and the first and second write to each page after it, in random
// page order; CPU time. Run once per backend (COWSHM_SNAPSHOT_BACKEND).
function runEngine(cowshm, { mib, gib }) {
  const { Region, pageSize, snapshotBackend } = cowshm;
  const pages = (mib * MiB) / pageSize;
  const order = shuffled(pages);
  const out = {};
  {
    const r = Region.create({ size: gib * GiB });
    const view = r.map({ populate: true });
    const takes = [];
    for (let i = 0; i < 6; i++) {
      const t0 = cpuSeconds();
      r.snapshot().release();
      takes.push(cpuSeconds() - t0);
    }
    out[`engine (${snapshotBackend}): taking a snapshot (${gib} GiB resident)`] = median(takes.slice(1));
    view.close();
    r.close();
  }
  {
    const r = Region.create({ size: mib * MiB });
    const bytes = new Uint8Array(r.map({ populate: true }).buffer);
    bytes.fill(1);
    writePages(bytes, order, pageSize, 2); // warm the JIT on the same loop
    const s = r.snapshot();
    let t0 = cpuSeconds();
    writePages(bytes, order, pageSize, 3);
    out[`engine (${snapshotBackend}): first write per page (${mib} MiB)`] = (cpuSeconds() - t0) / pages;
    t0 = cpuSeconds();
    for (let k = 0; k < 32; k++) writePages(bytes, order, pageSize, 4 + k);
    out[`engine (${snapshotBackend}): second write per page`] = (cpuSeconds() - t0) / pages / 32;
    s.release();
    r.close();
  }
  return out;
}

// --- Region and cow-view paths, both builds in one process (suites `region`
// and `cow`): rounds alternate between the builds within milliseconds of each
// other, so a busy machine slows both alike. Wall time (hrtime), a turn of the
// event loop and a collection before each timed run. Each op: setup(lib) ->
// state, run(lib, state), teardown(state).
const held = (size, reserve, tag) => ({
  setup: ({ Region }) => Region.create({ name: benchName(tag), size, ...(reserve ? {} : { reserve: false }) }),
  teardown: (r) => {
    r.close();
    r.unlink();
  },
});
const OPS = {
  region: [
    {
      name: 'create+map+close+unlink, 64 MiB reserved',
      iters: 5,
      run: ({ Region }) => {
        const r = Region.create({ name: benchName('compare-create'), size: 64 * MiB });
        r.map();
        r.close();
        r.unlink();
      },
    },
    ...[GiB, 32 * MiB].map((size) => ({
      name: `open+map+close, ${size / MiB} MiB`,
      ...held(size, true, 'compare-open'),
      run: ({ Region }, h) => {
        const r = Region.open(h.name);
        r.map();
        r.close();
      },
    })),
    {
      name: 'open+map+buffer+close, 1 GiB',
      iters: 20,
      ...held(GiB, false, 'compare-buffer'),
      run: ({ Region }, h) => {
        const r = Region.open(h.name);
        void r.map().buffer;
        r.close();
      },
    },
  ],
  cow: [
    ...[64 * MiB, GiB].map((size) => ({
      name: `cow view, ${size / MiB} MiB`,
      ...held(size, false, 'compare-cow'),
      run: (_, h) => {
        h.map({ access: 'cow' }).close();
      },
    })),
    {
      name: 'cow view + .buffer + close, 64 MiB',
      iters: 20,
      ...held(64 * MiB, false, 'compare-cowbuf'),
      run: (_, h) => {
        const v = h.map({ access: 'cow' });
        void v.buffer;
        v.close();
      },
    },
  ],
};

/**
 * Runs the named in-process suites with builds = [baseline, this tree]
 * loaded; returns { 'suite: op': { base: [seconds per round], this: [...] } }.
 */
async function runOps(builds, suites, { rounds, iters }) {
  const gc = globalThis.gc ?? (() => {});
  const out = {};
  for (const suite of Object.keys(OPS).filter((s) => suites.includes(s))) {
    for (const op of OPS[suite]) {
      const n = op.iters ?? iters;
      const states = builds.map((lib) => (op.setup ? op.setup(lib) : undefined));
      const times = builds.map(() => []);
      try {
        // One untimed round each, to warm up both.
        for (let b = 0; b < builds.length; b++) for (let i = 0; i < n; i++) op.run(builds[b], states[b]);
        for (let round = 0; round < rounds; round++) {
          for (const b of round % 2 === 0 ? [0, 1] : [1, 0]) {
            gc();
            await new Promise(setImmediate); // finalizers run here, as in any Node program
            const t0 = process.hrtime.bigint();
            for (let i = 0; i < n; i++) op.run(builds[b], states[b]);
            times[b].push(Number(process.hrtime.bigint() - t0) / 1e9 / n);
          }
        }
      } finally {
        if (op.teardown) states.forEach((s) => op.teardown(s));
      }
      out[`${suite}: ${op.name}`] = { base: times[0], this: times[1] };
    }
  }
  return out;
}

const SUITES = {
  map: { kind: 'process', about: 'Region.open/create + map + close, map(range) (CPU time, small sizes)' },
  snapshot: { kind: 'process', about: 'snapshot() + release(), whole and a range (CPU time, 1 MiB)' },
  restore: { kind: 'process', about: 'checkpointInfo, Region.restore of a full checkpoint and of a delta chain (CPU time, 1 MiB)' },
  write: { kind: 'process', about: 'snapshot.writeTo full and delta, writeCheckpoint compared with its base (CPU time, 1 MiB)' },
  engine: { kind: 'engine', about: 'taking a snapshot of a resident region, first and second write per page, per backend (CPU time)' },
  checkpoint: {
    kind: 'checkpoint',
    about: "snapshot.writeTo full and delta (1% of pages changed), Region.restore with verify: 'full', at --checkpoint-gib (0.25); best of 3 (bench/checkpoint.bench.js --one)",
  },
  region: { kind: 'inproc', about: 'create/open + map + close at 32 MiB-1 GiB, both builds in one process (wall time)' },
  cow: { kind: 'inproc', about: 'cow views at 64 MiB and 1 GiB, with and without .buffer, both builds in one process (wall time)' },
};
/** Names that stand for several suites. */
const ALIASES = { ts: ['map', 'snapshot', 'restore', 'write'] };

module.exports = { SUITES, ALIASES, runCases, runEngine, runOps };
