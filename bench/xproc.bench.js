// Cross-process snapshots (scope 'processes') against their anchors, measured
// in the same run, wall clock, rounds alternating with the baselines; each
// ratio is the median of the per-round ratios. The writers are child processes
// (bench/xproc-child.js) that opened the region with { crossProcess: true };
// this process is the reader.
//
//  1. snapshot({ scope: 'processes' }) of a 1 GiB resident region with 3
//     writers attached vs one writer's in-process snapshot() of the same
//     region. Target: at most 2× it plus 1 ms, i.e. (measured − 1 ms) / baseline ≤ 2.
//     Beside it, the mechanism alone in C (bench/c/xproc.c arm): 3 processes
//     woken by a futex word, each write-protecting its 1 GiB view, against
//     one doing it alone: on 2 cores three such walks cannot take less than
//     1.5× one, and under load the ratio is the machine's, not cowshm's.
//  2. The first write per 4 KiB page (one write per page, random order) in a
//     writer after a cross-process snapshot, direct path (process_vm_writev)
//     vs the same mechanism in C (bench/c/xproc.c pvw, the design probe):
//     target 1.3×; with { chunkSize: 64 KiB } vs the kernel's own
//     MAP_PRIVATE COW fault (bench/c/xproc.c cow): target 2×. The handshake
//     path (COWSHM_XPROC_HANDSHAKE=1 in the writers) vs C's handshake, when
//     the addon has that switch (else the rows say "not available").
//  3. Writers with no snapshot live vs a region that never had one: 8-byte
//     stores, at random places and one after the other, through a
//     crossProcess view whose snapshots were all released vs a plain one, in
//     pairs of runs in one process, 4 regions of each kind paired in
//     rotation (target 1.03×, as time per store; CPU
//     time of the writer process, all its threads, which counts the native
//     thread and not the neighbours; wall clock alongside; two plain views
//     compared the same way show what the measure calls equal); and the idle
//     cost of the native arming thread: the CPU a writer process takes while
//     its JS thread sleeps, against a process without crossProcess, as 1 +
//     the extra share of a core (what it could take from a busy writer).
//
// Every child ends when this process does (their stdin closes), and the
// regions are unlinked as soon as the writers have opened them.
// Usage: node bench/xproc.bench.js [--quick] [--rounds N] [--mib 256]
//        [--handshake auto|yes|no] [--only take,first,handshake,idle]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { compileC, runC, median, pairedRatio, report, fmtSeconds, benchName, option, intOption } = require('./lib');
const { Region, snapshotBackend, pageSize } = require('..');

const quick = process.argv.includes('--quick');
const rounds = intOption('rounds', quick ? 3 : 7);
const mib = intOption('mib', quick ? 128 : 256);
const GiB = 2 ** 30;
const KiB64 = 64 << 10;
const sections = option('only', 'take,first,handshake,idle').split(',');
const only = (name) => sections.includes(name);
const MS = 1e-3;

// ---- processes and segments: everything this bench made goes however it ends

const children = new Set();
const regions = new Set();
/** The coordination files of this bench's regions: removed by the last writer that leaves, or by cleanup(). */
const coordination = new Set();
/** Last resort, at exit: writers still running are killed, and what they could not remove goes. */
function cleanup() {
  for (const c of children) c.proc.kill('SIGKILL');
  children.clear();
  for (const r of regions) {
    try {
      if (!r.closed) r.unlink();
    } catch {}
  }
  for (const f of coordination) fs.rmSync(f, { force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.once(sig, async () => {
    await endChildren();
    cleanup();
    process.kill(process.pid, sig); // the default action now: ends as the signal meant
  });

/** Ends every writer as the bench's end would (stdin closes: it leaves, removing what it made); kills one that takes over 5 s. */
function endChildren() {
  return Promise.all(
    [...children].map((c) => {
      const t = setTimeout(() => c.proc.kill('SIGKILL'), 5000);
      return c.end().finally(() => clearTimeout(t));
    }),
  );
}

class Child {
  constructor(env = {}) {
    this.proc = spawn(process.execPath, [path.join(__dirname, 'xproc-child.js')], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, ...env },
    });
    children.add(this);
    this.waiting = [];
    let buf = '';
    this.proc.stdout.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) !== -1; ) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.waiting.shift()?.(JSON.parse(line));
      }
    });
    this.proc.on('exit', (code, sig) => {
      children.delete(this);
      for (const w of this.waiting.splice(0)) w({ ok: false, error: `the writer exited (${code ?? sig})` });
    });
    this.ready = this.#reply();
  }

  #reply() {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async call(cmd) {
    await this.ready;
    const reply = this.#reply();
    this.proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    const r = await reply;
    if (!r.ok) throw new Error(`writer ${this.proc.pid}, ${cmd.op}: ${r.error}`);
    return r;
  }

  async end() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.stdin.end();
    await exited;
  }
}

/** A named region filled with `value`, for writers to open; unlinked once they have. */
function filledRegion(tag, size, value) {
  const r = Region.create({ name: benchName(tag), size, mode: 0o600 });
  regions.add(r);
  coordination.add(`/dev/shm/cowshm-xproc-${r.dev.toString(16)}-${r.ino.toString(16)}`);
  const v = r.map();
  new Uint8Array(v.buffer).fill(value);
  v.close();
  return r;
}

function done(r) {
  regions.delete(r);
  r.close();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether no thread of process pid is running or waiting for a CPU (its /proc stat states). */
function quiet(pid) {
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'R' || state === 'D') return false;
    }
  } catch {
    return true; // gone
  }
  return true;
}

/**
 * Waits until the writers have done what a release asked of them (each
 * un-protects its views in its native thread): every thread of theirs asleep
 * at two looks 5 ms apart. A measure taken meanwhile would time their work too.
 */
async function settle(writers) {
  for (let i = 0, calm = 0; calm < 2 && i < 2000; i++) {
    await sleep(5);
    calm = writers.every((w) => quiet(w.proc.pid)) ? calm + 1 : 0;
  }
}
const wall = () => process.hrtime.bigint();
const since = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const perPage = (s) => `${fmtSeconds(s)}/page`;

/** This build knows the switch that forces the handshake push path (COWSHM_XPROC_HANDSHAKE), in its TypeScript or its addon. */
function handshakeAvailable() {
  const want = option('handshake', 'auto');
  if (want !== 'auto') return want === 'yes';
  const root = path.join(__dirname, '..');
  const candidates = [path.join(root, 'dist', 'xproc.js'), process.env.COWSHM_NATIVE_PATH, path.join(root, 'build', 'Release', 'cowshm.node')];
  return candidates.some((f) => f && fs.existsSync(f) && fs.readFileSync(f).includes('COWSHM_XPROC_HANDSHAKE'));
}

/** Where the snapshot reports each writer's push path (snapshot.writers), every writer must be on `want`. */
function checkPath(s, want) {
  const writers = s.writers;
  if (!Array.isArray(writers)) return;
  const other = writers.find((w) => w.push !== want);
  if (other) throw new Error(`writer ${other.pid} pushes by ${other.push}, this row measures ${want}`);
}

const bin = compileC('xproc');
console.log(`snapshot backend: ${snapshotBackend}; page size ${pageSize}; ${rounds} rounds; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
if (snapshotBackend !== 'userfaultfd') console.log('(the C baselines use userfaultfd; this run measures cowshm on the mprotect fallback)');

// ---- 1. taking a snapshot of 1 GiB with 3 writers ---------------------------

async function takeSnapshots() {
  const r = filledRegion('take', GiB, 1);
  const writers = [new Child(), new Child(), new Child()];
  try {
    for (const w of writers) await w.call({ op: 'open', name: r.name, crossProcess: true });
    r.unlink();
    const cross = [];
    const local = [];
    const cOne = [];
    const cAll = [];
    // The mechanism alone in C, same sizes: what this machine allows the ratio
    // to be. Its set-up (3 GiB of page tables) is slow: run before and after
    // the rounds, not in each.
    const cArm = () => {
      for (let i = 0; i < (quick ? 1 : 2); i++) {
        const c = runC(bin, ['arm', GiB >> 20, writers.length, 3]);
        cOne.push(c.one_s);
        cAll.push(c.all_s);
      }
    };
    cArm();
    for (let round = 0; round < rounds + 1; round++) {
      const xs = [];
      const ys = [];
      for (let k = 0; k < 3; k++) {
        await settle(writers);
        ys.push((await writers[0].call({ op: 'snapshot' })).s);
        await settle(writers);
        const t0 = wall();
        const s = r.snapshot({ scope: 'processes', timeoutMs: 10_000 });
        xs.push(since(t0));
        if (!s.exact) throw new Error('the snapshot broke');
        s.release();
      }
      if (round === 0) continue; // warm-up
      cross.push(median(xs));
      local.push(median(ys));
    }
    cArm();
    const ms = (s) => fmtSeconds(s);
    return [
      {
        name: 'snapshot({ scope: \'processes\' }), 3 writers, − 1 ms, vs one writer\'s snapshot()',
        cowshm: median(cross), baseline: median(local), ratio: pairedRatio(cross.map((x) => x - MS), local), target: 2, format: ms,
      },
      { name: '  the plain ratio (no 1 ms allowance)', cowshm: median(cross), baseline: median(local), ratio: pairedRatio(cross, local), format: ms },
      { name: '  the mechanism in C: 3 writers woken by a futex, each write-protecting 1 GiB, vs one', cowshm: median(cAll), baseline: median(cOne), ratio: pairedRatio(cAll, cOne), format: ms },
      { name: '  snapshot({ scope: \'processes\' }) vs that C mechanism with 3 writers', cowshm: median(cross), baseline: median(cAll), ratio: pairedRatio(cross, cAll), format: ms },
    ];
  } finally {
    for (const w of writers) await w.end();
    done(r);
  }
}

// ---- 2. first writes after a snapshot ---------------------------------------

/** Rounds of: a cross-process snapshot, one first write per page in the writer, checked; alternating with `baseline()`. */
async function firstWrites(env, chunkSize, baseline, pushPath) {
  const r = filledRegion('first', mib << 20, 1);
  const w = new Child(env);
  const js = [];
  const c = [];
  try {
    await w.call({ op: 'open', name: r.name, crossProcess: true });
    r.unlink();
    let value = 1;
    for (let round = 0; round < rounds + 1; round++) {
      if (round % 2 === 1 && round > 0) c.push(baseline());
      await settle([w]);
      const s = r.snapshot({ scope: 'processes', timeoutMs: 10_000, ...(chunkSize ? { chunkSize } : {}) });
      if (chunkSize && s.chunkSize !== chunkSize) throw new Error(`chunkSize ${s.chunkSize}, asked for ${chunkSize}`);
      checkPath(s, pushPath);
      const { sPerPage } = await w.call({ op: 'first', value: value + 1, seed: 12345 });
      const frozen = new Uint8Array(s.buffer);
      let changed = 0;
      for (let i = 0; i < frozen.length; i += pageSize) if (frozen[i] !== value) changed++;
      if (changed !== 0 || !s.exact) throw new Error(`the snapshot changed in ${changed} pages (exact: ${s.exact})`);
      s.release();
      value++;
      if (round > 0) js.push(sPerPage); // round 0 warms up
      if (round % 2 === 0 && round > 0) c.push(baseline());
    }
  } finally {
    await w.end();
    done(r);
  }
  return { js, c };
}

function cRun(...args) {
  const out = runC(bin, args);
  if (out.mismatched) throw new Error(`the C baseline's snapshot changed in ${out.mismatched} pages`);
  return out.s_per_page;
}

async function firstWriteRows(label, env, cMode) {
  const rows = [];
  const pushPath = cMode === 'pvw' ? 'direct' : 'handshake';
  const small = await firstWrites(env, 0, () => cRun(cMode, mib, 4096), pushPath);
  rows.push({ name: `${label}: first write per 4 KiB page vs C ${cMode}`, cowshm: median(small.js), baseline: median(small.c), ratio: pairedRatio(small.js, small.c), target: cMode === 'pvw' ? 1.3 : undefined, format: perPage });
  const floor = [];
  const big = await firstWrites(env, KiB64, () => {
    floor.push(cRun(cMode, mib, KiB64));
    return cRun('cow', mib);
  }, pushPath);
  rows.push({ name: `${label}, 64 KiB chunks: vs the kernel's COW fault`, cowshm: median(big.js), baseline: median(big.c), ratio: pairedRatio(big.js, big.c), target: cMode === 'pvw' ? 2 : undefined, format: perPage });
  rows.push({ name: `  the same vs C ${cMode} with 64 KiB chunks (its floor)`, cowshm: median(big.js), baseline: median(floor), ratio: pairedRatio(big.js, floor), format: perPage });
  return rows;
}

// ---- 3. no snapshot live ----------------------------------------------------

async function idleRows() {
  // Several regions of each kind: where a region's pages and page tables
  // happen to sit moves its store cost by several per cent (the plain-vs-plain
  // rows show how much), so each round pairs every crossProcess view with
  // another plain one, in rotation.
  const K = 4;
  const size = 16 << 20;
  const xs = Array.from({ length: K }, (_, i) => filledRegion(`idle-x${i}`, size, 1));
  const plains = Array.from({ length: 2 * K }, (_, i) => filledRegion(`idle-plain${i}`, size, 1));
  const w = new Child();
  const plain = new Child();
  try {
    // Views 0..K-1 take part; K..3K-1 are plain.
    for (const r of xs) await w.call({ op: 'open', name: r.name, crossProcess: true });
    for (const r of plains) await w.call({ op: 'open', name: r.name, crossProcess: false });
    await plain.call({ op: 'open', name: plains[0].name, crossProcess: false });
    for (const r of [...xs, ...plains]) r.unlink();
    // Snapshots come and go: what is measured is views that had them.
    for (let i = 0; i < 3; i++)
      for (const r of xs) {
        r0(r);
        await settle([w]);
      }
    const random = { cpu: [], wall: [], same: [] };
    const sequential = { cpu: [], wall: [], same: [] };
    const pass = { random: [1 << 21, random], sequential: [1 << 23, sequential] };
    const cpu = [];
    const ms = quick ? 500 : 1000;
    for (let round = 0; round < rounds; round++) {
      await settle([w, plain]);
      for (const [kind, [steps, pairs]] of Object.entries(pass)) {
        const sequential = kind === 'sequential';
        for (let k = 0; k < K; k++) {
          const p = K + ((k + round) % K);
          const got = await w.call({ op: 'rate', regions: [k, p], reps: quick ? 2 : 3, steps, sequential });
          pairs.cpu.push(...got.cpu);
          pairs.wall.push(...got.wall);
          // Two plain views, paired the same way: what this measure calls equal.
          pairs.same.push(...(await w.call({ op: 'rate', regions: [2 * K + k, p], reps: quick ? 2 : 3, steps, sequential })).cpu);
        }
      }
      const order = round % 2 ? [w, plain] : [plain, w];
      const got = new Map();
      for (const p of order) got.set(p, await p.call({ op: 'idle', ms }));
      cpu.push({ x: got.get(w), plain: got.get(plain) });
    }
    const perStore = (s) => `${(s * 1e9).toFixed(2)} ns/store`;
    const cpuShare = (s) => `${(s * 1e6).toFixed(0)} µs/s`;
    const storeRow = (name, xs, target) => ({
      name, cowshm: median(xs.map((p) => p[0])), baseline: median(xs.map((p) => p[1])), ratio: median(xs.map((p) => p[0] / p[1])), target, format: perStore,
    });
    return [
      storeRow('random stores, crossProcess view (snapshots released) vs plain, CPU time', random.cpu, 1.03),
      storeRow('  the same, wall clock', random.wall),
      storeRow('  two plain views, CPU time (what this measure calls equal)', random.same),
      storeRow('sequential stores, crossProcess view (snapshots released) vs plain, CPU time', sequential.cpu, 1.03),
      storeRow('  two plain views, CPU time (what this measure calls equal)', sequential.same),
      {
        name: 'idle writer: CPU per second, crossProcess vs not (1 + extra share of a core)',
        cowshm: median(cpu.map((c) => c.x.cpu / c.x.wall)), baseline: median(cpu.map((c) => c.plain.cpu / c.plain.wall)),
        ratio: median(cpu.map((c) => 1 + c.x.cpu / c.x.wall - c.plain.cpu / c.plain.wall)), target: 1.03, format: cpuShare,
      },
    ];
  } finally {
    await w.end();
    await plain.end();
    for (const r of [...xs, ...plains]) done(r);
  }
}

function r0(region) {
  region.snapshot({ scope: 'processes', timeoutMs: 10_000 }).release();
}

async function main() {
  const started = Date.now();
  const ok = [];
  if (only('take')) ok.push(report(`Taking a snapshot of 1 GiB resident, 3 writer processes attached (${snapshotBackend}); medians of ${rounds} rounds of 3, wall clock`, await takeSnapshots()));
  const firstTitle = (path) => `First writes in a writer after a cross-process snapshot, ${path} (${mib} MiB, one write per 4 KiB page, random order; ${snapshotBackend}); medians of ${rounds} rounds, 0 changed pages, wall clock`;
  if (only('first')) ok.push(report(firstTitle('direct path (process_vm_writev)'), await firstWriteRows('direct', {}, 'pvw')));
  if (!only('handshake')) {
    // not asked for
  } else if (handshakeAvailable()) ok.push(report(firstTitle('handshake path (COWSHM_XPROC_HANDSHAKE=1)'), await firstWriteRows('handshake', { COWSHM_XPROC_HANDSHAKE: '1' }, 'hand')));
  else {
    console.log(`\n${firstTitle('handshake path')}`);
    console.log('  handshake: first write per 4 KiB page          not available (this addon has no COWSHM_XPROC_HANDSHAKE switch; --handshake yes forces the rows)');
    console.log('  handshake, 64 KiB chunks: vs the kernel\'s COW fault  not available');
  }
  if (only('idle')) ok.push(report(`No snapshot live (${snapshotBackend}); medians of ${rounds} rounds`, await idleRows()));
  console.log(`\n${ok.every(Boolean) ? 'every target met' : 'some targets MISSED'} (${((Date.now() - started) / 1000).toFixed(0)} s; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')})`);
  if (!ok.every(Boolean)) process.exitCode = 1;
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  // Writers left by a failure leave as they would at the end.
  .finally(endChildren);
