// Locks in a region, against baselines measured in the same run (rounds
// alternate; ratio = median of per-round ratios):
//  - uncontended tryAcquire()+release and acquireSync()+release against
//    pthread_mutex_lock+unlock of a process-shared robust mutex in C
//    (bench/c/mutex.c); awaited acquire()+release for information; two
//    floors in JS: the bare Atomics pair, and the pair with a fresh object
//    per hold (what any lock that returns a guard adds);
//  - 8 processes contending on one Mutex (lock, read-modify-write a counter
//    with a short loop in between, unlock): throughput against the same with
//    pthread robust mutexes in C, and, to tell the protocol from the
//    language, against cowshm's own protocol run by C; the same with a bare
//    increment as the critical section (the lock alone, in effect);
//  - RwLock: 8 processes, 1 write in 8, against a process-shared
//    pthread_rwlock_t in C (information: glibc has no robust rwlock).
// Contending processes are timed from the first one's start to the last
// one's end, as each notes them in the region (CLOCK_MONOTONIC, as in C):
// neither the start signal nor a Node process's exit, which take
// milliseconds on a loaded machine, counts; a peer that is done sleeps until
// all are, so that no peer's exit runs while others are timed.
// Options: --rounds N (default 5), --ops N (default 1000000), --contend N
// (default 100000), --quick (3 rounds, 300000 ops, 20000 contended),
// --only uncontended,contend,rwlock (default: all three).
'use strict';
const { spawn } = require('node:child_process');
const { Region, atomics, Mutex, RwLock } = require('cowshm');
const { compileC, runC, median, pairedRatio, report, benchName, intOption, fmtSeconds } = require('./lib');

const quick = process.argv.includes('--quick');
const rounds = intOption('rounds', quick ? 3 : 5);
const ops = intOption('ops', quick ? 300_000 : 1_000_000);
const contendOps = intOption('contend', quick ? 20_000 : 100_000);
const PROCS = 8;
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg > 0 ? process.argv[onlyArg + 1].split(',') : ['uncontended', 'contend', 'rwlock'];

// Words of the contention region: the lock under test (an RwLock takes 16
// words, RWLOCK_WORDS), then the bench's own words, then the warm-up's lock
// and words, each clear of the others.
const LOCK = 0;
const COUNTER = 16; // and COUNTER + 1, written by the critical section
const READY = 20;
const GO = 21;
const DONE = 22;
const WARM = 32; // the warm-up's lock; its counter at WARM + 16
const SPANS = 4096; // byte offset: a Float64 pair (start, end) per peer, in seconds

// ---- contending peers (this file run again as a child) ---------------------

// `at` is COUNTER, or WARM + 16 for the warm-up (which runs while other
// peers warm up too).
function criticalSection(a, at) {
  const v = a[at];
  for (let j = 0; j < 50; j++) a[at + 1] = j;
  a[at] = v + 1;
}

function readSection(a, at) {
  let sink = 0;
  for (let j = 0; j < 50; j++) sink += a[at + (j & 3)];
  return sink;
}

function mutexLoop(m, a, n, at) {
  for (let i = 0; i < n; i++) {
    const g = m.acquireSync();
    criticalSection(a, at);
    g.release();
  }
  return 0;
}

// The lock and a bare increment: what the lock costs, with a critical section
// that costs the same in JS and C.
function bareLoop(m, a, n, at) {
  for (let i = 0; i < n; i++) {
    const g = m.acquireSync();
    a[at] += 1;
    g.release();
  }
  return 0;
}

// A bare compare-and-swap spinlock (never sleeps, knows no owner): the least
// a lock can add to the contended loop in JS, for the floor line.
class SpinLock {
  constructor(a, at) { this.a = a; this.at = at; }
  acquireSync() { while (Atomics.compareExchange(this.a, this.at, 0, 1) !== 0); return this; }
  release() { Atomics.store(this.a, this.at, 0); }
}

function rwLoop(l, a, n, at) {
  let sink = 0;
  for (let i = 0; i < n; i++) {
    if (i % 8 === 0) {
      const g = l.writeSync();
      criticalSection(a, at);
      g.release();
    } else {
      const g = l.readSync();
      sink += readSection(a, at);
      g.release();
    }
  }
  return sink;
}

const seconds = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, as C's now()

function peer(kind, name, n, index) {
  const r = Region.open(name);
  const a = new Int32Array(r.map().buffer);
  const [Lock, loop] = { mutex: [Mutex, mutexLoop], bare: [Mutex, bareLoop], spin: [SpinLock, mutexLoop], rwlock: [RwLock, rwLoop] }[kind];
  // Warm the JIT up on a lock of its own with the very loop that is timed
  // (compiled before the start, not on the cores the others contend for),
  // as a long-running process would be. Called many times, not once with a
  // long loop: that compiles only an on-stack-replacement entry (node
  // --trace-opt), and the timed call started in the interpreter. Measured
  // with 10 ops a peer, under load: the 8 peers' span went from 5-15 ms to
  // about 1 ms (C: 0.4 ms).
  const warm = new Lock(a, WARM);
  for (let k = 0; k < 20; k++) loop(warm, a, 10_000, WARM + 16);
  const lock = new Lock(a, LOCK);
  const spans = new Float64Array(a.buffer, SPANS, 2 * PROCS);
  startLine(a);
  spans[2 * index] = seconds();
  const sink = loop(lock, a, n, COUNTER);
  spans[2 * index + 1] = seconds();
  Atomics.add(a, DONE, 1);
  atomics.notify(a, DONE);
  // Stay (asleep) until every peer is done: a Node process's exit takes
  // milliseconds of CPU, which the peers still running would pay for (a C
  // peer's _exit costs nothing).
  for (let v; (v = Atomics.load(a, DONE)) !== PROCS; ) atomics.wait(a, DONE, v);
  r.close();
  if (sink === 42) console.log('');
}

function startLine(a) {
  Atomics.add(a, READY, 1);
  atomics.notify(a, READY);
  for (let v; (v = Atomics.load(a, GO)) === 0; ) atomics.wait(a, GO, v);
}

async function waitFor(a, index, value) {
  for (let v; (v = Atomics.load(a, index)) !== value; ) {
    const w = atomics.waitAsync(a, index, v, 60_000);
    if (w.async && (await w.value) === 'timed-out') throw new Error(`word ${index} stayed at ${v}, waiting for ${value}`);
  }
}

async function contend(kind) {
  const name = benchName('contend');
  const r = Region.create({ name, size: 8192 });
  const peers = [];
  try {
    const a = new Int32Array(r.map().buffer);
    for (let p = 0; p < PROCS; p++) {
      const child = spawn(process.execPath, [__filename, '--peer', kind, name, String(contendOps), String(p)], { stdio: ['ignore', 'inherit', 'inherit'] });
      peers.push(new Promise((resolve, reject) => child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`peer exited with ${code}`))))));
    }
    const failed = Promise.all(peers).then(() => { throw new Error('the peers ended before they were done'); });
    await Promise.race([waitFor(a, READY, PROCS), failed]);
    Atomics.store(a, GO, 1);
    atomics.notify(a, GO);
    await Promise.race([waitFor(a, DONE, PROCS), failed]);
    await Promise.all(peers);
    const spans = new Float64Array(a.buffer, SPANS, 2 * PROCS);
    let first = Infinity;
    let last = -Infinity;
    for (let p = 0; p < PROCS; p++) {
      first = Math.min(first, spans[2 * p]);
      last = Math.max(last, spans[2 * p + 1]);
    }
    const s = last - first;
    const expected = kind === 'rwlock' ? PROCS * Math.ceil(contendOps / 8) : PROCS * contendOps;
    if (a[COUNTER] !== expected) throw new Error(`counter ${a[COUNTER]}, expected ${expected}`);
    return s;
  } finally {
    r.close();
    r.unlink();
  }
}

// ---- uncontended -----------------------------------------------------------
// Each side is timed as its fastest chunk of 20000 ops (well under a
// scheduler time slice; bench/c/mutex.c does the same): on a shared machine a
// chunk that a neighbour preempted measures the neighbour, not the lock.
const CHUNK = 20_000;

function fastest(run) {
  const chunks = Math.max(1, Math.floor(ops / CHUNK));
  const chunk = Math.floor(ops / chunks);
  let best = Infinity;
  for (let c = 0; c < chunks; c++) {
    const t0 = process.hrtime.bigint();
    run(chunk);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9 / chunk);
  }
  return best;
}

// A bare compare-and-swap and exchange on a region's word, what Mutex's lock
// and unlock do: the floor for any lock and unlock in JS (each Atomics call is
// a call into a V8 builtin, not an inlined instruction).
const bareCas = (a) => fastest((n) => { for (let i = 0; i < n; i++) { Atomics.compareExchange(a, 60, 0, 1); Atomics.exchange(a, 60, 0); } });
// The floor for any lock that returns a fresh guard: the same pair, the
// exchange made by a method of an object allocated for each hold (two
// fields: the lock and the hold). V8 cannot remove that allocation: the
// object is the receiver of an inlined call that calls Atomics.
class FloorGuard {
  #a;
  #i;
  constructor(a, i) { this.#a = a; this.#i = i; }
  release() { Atomics.exchange(this.#a, this.#i, 0); }
}
const bareCasGuard = (a) => fastest((n) => { for (let i = 0; i < n; i++) { Atomics.compareExchange(a, 61, 0, 1); new FloorGuard(a, 61).release(); } });
const uncontendedTry = (mutex) => fastest((n) => { for (let i = 0; i < n; i++) mutex.tryAcquire().release(); });
const uncontendedSync = (mutex) => fastest((n) => { for (let i = 0; i < n; i++) mutex.acquireSync().release(); });
const uncontendedRead = (rw) => fastest((n) => { for (let i = 0; i < n; i++) rw.tryRead().release(); });
const uncontendedWrite = (rw) => fastest((n) => { for (let i = 0; i < n; i++) rw.tryWrite().release(); });
// The contention bench's critical section alone, in this process, no lock:
// what the work costs in JS against C, the ceiling for the contended ratio.
const workAlone = (a) => fastest((n) => { for (let i = 0; i < n; i++) criticalSection(a, WARM + 16); });

async function awaited(mutex, n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) (await mutex.acquire()).release();
  return Number(process.hrtime.bigint() - t0) / 1e9 / n;
}

async function main() {
  const c = compileC('mutex');
  const rows = { cMutex: [], jsCas: [], jsCasGuard: [], jsTry: [], jsSync: [], jsAwait: [], jsRead: [], jsWrite: [], cWork: [], jsWork: [], cContend: [], cProtocol: [], jsContend: [], jsSpin: [], cBare: [], jsBare: [], cRw: [], jsRw: [] };
  const lockRegion = Region.create({ size: 4096 });
  const cells = new Int32Array(lockRegion.map().buffer);
  const mutex = new Mutex(cells, 0);
  const rw = new RwLock(cells, 16);
  // Throughput rows give ops/s (so that bench/compare.js reads higher as better).
  const mps = (x) => `${(x / 1e6).toFixed(2)} M/s`;
  const tput = (xs) => (PROCS * contendOps) / median(xs);
  try {
    // Warm the JIT, as a long-running process would be.
    for (let k = 0; k < 3; k++) {
      uncontendedTry(mutex);
      uncontendedSync(mutex);
      uncontendedRead(rw);
      uncontendedWrite(rw);
      workAlone(cells);
      bareCas(cells);
      bareCasGuard(cells);
    }
    for (let round = 0; round < rounds; round++) {
      if (only.includes('uncontended')) {
        rows.cMutex.push(runC(c, ['uncontended', ops]).seconds);
        rows.jsCas.push(bareCas(cells));
        rows.jsCasGuard.push(bareCasGuard(cells));
        rows.jsTry.push(uncontendedTry(mutex));
        rows.jsSync.push(uncontendedSync(mutex));
        rows.jsRead.push(uncontendedRead(rw));
        rows.jsWrite.push(uncontendedWrite(rw));
        rows.jsAwait.push(await awaited(mutex, ops / 10));
      }
      if (only.includes('contend')) {
        rows.cWork.push(runC(c, ['work', ops]).seconds);
        rows.jsWork.push(workAlone(cells));
        rows.cContend.push(runC(c, ['contend', PROCS, contendOps, 'pthread']).seconds);
        rows.cProtocol.push(runC(c, ['contend', PROCS, contendOps, 'cowshm']).seconds);
        rows.jsContend.push(await contend('mutex'));
        rows.jsSpin.push(await contend('spin'));
        rows.cBare.push(runC(c, ['contend', PROCS, contendOps, 'pthread', 0]).seconds);
        rows.jsBare.push(await contend('bare'));
      }
      if (only.includes('rwlock')) {
        rows.cRw.push(runC(c, ['rwlock', PROCS, contendOps]).seconds);
        rows.jsRw.push(await contend('rwlock'));
      }
    }
  } finally {
    lockRegion.close();
  }
  const m = median;
  const table = (title, rows_) => (rows_.some((r) => Number.isNaN(r.cowshm)) ? true : report(title, rows_));
  const ok = table(`Mutex, uncontended: ${rounds} rounds × ${ops} ops (baseline: pthread_mutex_lock+unlock, robust, process-shared, C)`, [
    { name: 'tryAcquire()+release', cowshm: m(rows.jsTry), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsTry, rows.cMutex), target: 2 },
    { name: 'acquireSync()+release', cowshm: m(rows.jsSync), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsSync, rows.cMutex), target: 2 },
    { name: 'bare Atomics.compareExchange + exchange: the floor in JS (information)', cowshm: m(rows.jsCas), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsCas, rows.cMutex) },
    { name: 'the same pair, the exchange in a method of a fresh object per hold: the floor for a guard (information)', cowshm: m(rows.jsCasGuard), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsCasGuard, rows.cMutex) },
    { name: 'await acquire()+release (information)', cowshm: m(rows.jsAwait), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsAwait, rows.cMutex) },
    { name: 'RwLock tryRead()+release (information)', cowshm: m(rows.jsRead), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsRead, rows.cMutex) },
    { name: 'RwLock tryWrite()+release (information)', cowshm: m(rows.jsWrite), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsWrite, rows.cMutex) },
  ]) & table(`Mutex, ${PROCS} processes × ${contendOps} lock/increment/unlock: throughput (baselines in C)`, [
    { name: 'vs pthread robust mutex', cowshm: tput(rows.jsContend), baseline: tput(rows.cContend), ratio: pairedRatio(rows.cContend, rows.jsContend), target: 0.5, higherIsBetter: true, format: mps },
    { name: 'a bare CAS spinlock in JS instead, vs pthread: the floor (information)', cowshm: tput(rows.jsSpin), baseline: tput(rows.cContend), ratio: pairedRatio(rows.cContend, rows.jsSpin), higherIsBetter: true, format: mps },
    { name: 'vs cowshm protocol in C (information)', cowshm: tput(rows.jsContend), baseline: tput(rows.cProtocol), ratio: pairedRatio(rows.cProtocol, rows.jsContend), higherIsBetter: true, format: mps },
    { name: 'its critical section alone, 1 process, no lock: JS vs C (information)', cowshm: 1 / m(rows.jsWork), baseline: 1 / m(rows.cWork), ratio: pairedRatio(rows.cWork, rows.jsWork), higherIsBetter: true, format: mps },
    { name: 'lock and a bare increment, vs pthread (information)', cowshm: tput(rows.jsBare), baseline: tput(rows.cBare), ratio: pairedRatio(rows.cBare, rows.jsBare), higherIsBetter: true, format: mps },
    { name: 'C: cowshm protocol vs pthread (information)', cowshm: tput(rows.cProtocol), baseline: tput(rows.cContend), ratio: pairedRatio(rows.cContend, rows.cProtocol), higherIsBetter: true, format: mps },
  ]) & table(`RwLock, ${PROCS} processes × ${contendOps} ops, 1 write in 8: throughput (baseline: pthread_rwlock_t, process-shared, C)`, [
    { name: 'readSync/writeSync vs pthread rwlock (information)', cowshm: tput(rows.jsRw), baseline: tput(rows.cRw), ratio: pairedRatio(rows.cRw, rows.jsRw), higherIsBetter: true, format: mps },
  ]);
  const fmt = (xs) => xs.map((x) => fmtSeconds(x)).join(' ');
  for (const [k, xs] of Object.entries(rows)) if (xs.length > 0) console.log(`  ${k.padEnd(11)} ${fmt(xs)}`);
  return ok;
}

if (process.argv[2] === '--peer') {
  try {
    peer(process.argv[3], process.argv[4], Number(process.argv[5]), Number(process.argv[6]));
  } catch (err) {
    console.error(err);
    process.exit(1);
  }
} else {
  main().then(
    (ok) => { process.exitCode = ok ? 0 : 1; },
    (err) => { console.error(err); process.exitCode = 1; },
  );
}
