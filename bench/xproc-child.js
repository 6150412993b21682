// A writer process for bench/xproc.bench.js. It reads one JSON command per
// line on stdin and answers one JSON line on stdout; it ends when stdin does
// (so it never outlives the bench, however the bench ends).
//
//   { op: 'open', name, crossProcess }   opens the region, maps it for writing, faults every page in
//   { op: 'snapshot' }                    times an in-process snapshot() of the region (taken and released)
//   { op: 'first', value, seed }          times one write per 4 KiB page in random order (first writes)
//   { op: 'rate', regions: [i, j], reps, steps, sequential }
//                                         pairs of timed runs of `steps` stores through each region's
//                                         view (order alternating): { cpu: [[a, b]...], wall: [[a, b]...] }
//   { op: 'idle', ms }                    this process's CPU seconds while its JS thread sleeps ms
//   { op: 'close' }
'use strict';
const readline = require('node:readline');
const { Region, pageSize } = require('..');
const { cpuSeconds, shuffled } = require('./lib');

const regions = [];
const views = [];

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * One 8-byte store per step, at pseudo-random places of the view or one after
 * the other: [CPU seconds of the whole process (its native threads too), wall
 * seconds] per store.
 */
function storeCostOf(words, steps, sequential) {
  const mask = words.length - 1; // views here are powers of two
  let x = 0x9e3779b9;
  const c0 = cpuSeconds();
  const t0 = process.hrtime.bigint();
  if (sequential) for (let i = 0; i < steps; i++) words[i & mask] = i;
  else
    for (let i = 0; i < steps; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[x & mask] = i;
    }
  return [(cpuSeconds() - c0) / steps, seconds(t0) / steps];
}

const orders = new Map();
const commands = {
  open({ name, crossProcess }) {
    const r = Region.open(name, { crossProcess });
    regions.push(r);
    views.push(r.map({ populate: true }));
    return { index: regions.length - 1 };
  },
  snapshot({ index = 0 }) {
    const t0 = process.hrtime.bigint();
    const s = regions[index].snapshot();
    const s0 = seconds(t0);
    s.release();
    return { s: s0 };
  },
  first({ index = 0, value, seed }) {
    const bytes = new Uint8Array(views[index].buffer);
    const pages = bytes.length / pageSize;
    if (!orders.has(pages)) {
      const order = shuffled(pages, seed);
      orders.set(pages, order);
      // Warm the loop on a plain buffer, so the first timed run is not the JIT's.
      const warm = new Uint8Array(64 * pageSize);
      for (let k = 0; k < 20; k++) for (let i = 0; i < order.length; i++) warm[(order[i] & 63) * pageSize] = k;
    }
    const order = orders.get(pages);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < order.length; i++) bytes[order[i] * pageSize] = value;
    return { sPerPage: seconds(t0) / pages };
  },
  rate({ regions: [i, j], reps, steps, sequential }) {
    const a = new Float64Array(views[i].buffer);
    const b = new Float64Array(views[j].buffer);
    const storeCost = (words) => storeCostOf(words, steps, sequential);
    storeCost(a); // warm the JIT on the loop, and both views' TLBs
    storeCost(b);
    const cpu = [];
    const wall = [];
    for (let rep = 0; rep < reps; rep++) {
      // Alternate the order, so neither is always first.
      let x, y;
      if (rep % 2) {
        x = storeCost(a);
        y = storeCost(b);
      } else {
        y = storeCost(b);
        x = storeCost(a);
      }
      cpu.push([x[0], y[0]]);
      wall.push([x[1], y[1]]);
    }
    return { cpu, wall };
  },
  idle({ ms }) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    const c = process.cpuUsage(c0);
    return { cpu: (c.user + c.system) / 1e6, wall: seconds(t0) };
  },
  close() {
    for (const v of views.splice(0)) v.close();
    for (const r of regions.splice(0)) r.close();
    return {};
  },
};

// The bench gone (killed), answers have nowhere to go: leave all the same.
process.stdout.on('error', () => {});
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let reply;
  try {
    const cmd = JSON.parse(line);
    reply = { ok: true, ...commands[cmd.op](cmd) };
  } catch (err) {
    reply = { ok: false, error: `${err.code ?? err.name}: ${err.message}` };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
});
rl.on('close', () => {
  commands.close();
  process.exit(0);
});
process.stdout.write('{"ok":true,"ready":true}\n');
