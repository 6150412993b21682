#!/usr/bin/env node
// Compares two builds of cowshm on the snapshot fast paths, in alternating
// rounds in one run: each round measures build A, then build B (or B then A,
// alternately), each in a fresh child process, and the result is the median
// of the per-round ratios B / A, so that neither build gets the quieter
// moment. Both backends are measured (userfaultfd when available, mprotect).
//
// Usage: node bench/compare-snapshot-builds.js OLD_PACKAGE_ROOT [NEW_PACKAGE_ROOT]
//          [--rounds 7] [--mib 256] [--gib 1] [--backends auto,mprotect]
// A package root is a checkout with dist/ and build/Release/cowshm.node
// built (e.g. `git worktree add /tmp/old main && cd /tmp/old && npm install`).
// NEW defaults to this checkout.
'use strict';
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { median } = require('./lib');

const argv = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i === -1 ? fallback : argv[i + 1];
};
const positional = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));

if (process.env.COWSHM_COMPARE_CHILD) {
  // One measurement of the package at COWSHM_COMPARE_CHILD; prints JSON.
  const { Region, snapshotBackend, pageSize } = require(process.env.COWSHM_COMPARE_CHILD);
  const mib = Number(arg('mib', '256'));
  const gib = Number(arg('gib', '1'));
  const cpu = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1e6;
  };
  const pages = (mib << 20) / pageSize;
  const order = new Uint32Array(pages);
  for (let i = 0; i < pages; i++) order[i] = i;
  let x = 12345;
  for (let i = pages - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  const write = (bytes, value) => {
    for (let i = 0; i < order.length; i++) bytes[order[i] * pageSize + (order[i] & 4095)] = value;
  };
  const out = { backend: snapshotBackend };
  {
    const r = Region.create({ size: gib * 2 ** 30 });
    const view = r.map({ populate: true });
    const takes = [];
    for (let i = 0; i < 6; i++) {
      const t0 = cpu();
      r.snapshot().release();
      takes.push(cpu() - t0);
    }
    out.take = median(takes.slice(1));
    view.close();
    r.close();
  }
  {
    const r = Region.create({ size: mib << 20 });
    const bytes = new Uint8Array(r.map({ populate: true }).buffer);
    bytes.fill(1);
    write(bytes, 2); // warm the JIT on the same loop
    const s = r.snapshot();
    let t0 = cpu();
    write(bytes, 3);
    out.first = (cpu() - t0) / pages;
    t0 = cpu();
    for (let k = 0; k < 32; k++) write(bytes, 4 + k);
    out.second = (cpu() - t0) / pages / 32;
    s.release();
    r.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

if (positional.length < 1) {
  console.error('usage: node bench/compare-snapshot-builds.js OLD_PACKAGE_ROOT [NEW_PACKAGE_ROOT] [--rounds N] [--mib M] [--gib G]');
  process.exit(2);
}
const A = path.resolve(positional[0]);
const B = path.resolve(positional[1] ?? path.join(__dirname, '..'));
const rounds = Number(arg('rounds', '7'));
const passOn = ['--mib', arg('mib', '256'), '--gib', arg('gib', '1')];

function measure(root, backend) {
  const env = { ...process.env, COWSHM_COMPARE_CHILD: root };
  delete env.COWSHM_NATIVE_PATH;
  if (backend) env.COWSHM_SNAPSHOT_BACKEND = backend;
  else delete env.COWSHM_SNAPSHOT_BACKEND;
  const r = spawnSync(process.execPath, ['--expose-gc', __filename, ...passOn], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${root}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

console.log(`A (baseline): ${A}\nB:            ${B}\n${rounds} rounds, alternating order; ratio = B / A, CPU time`);
for (const backend of arg('backends', 'auto,mprotect').split(',').map((b) => (b === 'auto' ? undefined : b))) {
  const ratios = { take: [], first: [], second: [] };
  const values = { A: { take: [], first: [], second: [] }, B: { take: [], first: [], second: [] } };
  let name = '';
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
    const got = {};
    for (const which of order) got[which] = measure(which === 'A' ? A : B, backend);
    name = got.B.backend;
    if (got.A.backend !== got.B.backend) throw new Error(`backends differ: ${got.A.backend} / ${got.B.backend}`);
    for (const k of Object.keys(ratios)) {
      ratios[k].push(got.B[k] / got.A[k]);
      values.A[k].push(got.A[k]);
      values.B[k].push(got.B[k]);
    }
  }
  console.log(`\n${name}:`);
  const fmt = (s) => (s < 1e-3 ? `${(s * 1e6).toFixed(2)} µs` : `${(s * 1e3).toFixed(2)} ms`);
  for (const [k, label] of [['take', 'taking a snapshot (resident)'], ['first', 'first write per page'], ['second', 'second write per page']]) {
    console.log(
      `  ${label.padEnd(30)} A ${fmt(median(values.A[k])).padStart(10)}  B ${fmt(median(values.B[k])).padStart(10)}  ` +
        `median B/A ${median(ratios[k]).toFixed(3)}  (rounds: ${ratios[k].map((r) => r.toFixed(2)).join(' ')})`,
    );
  }
}
