// Waiting, waking and locking across processes, against baselines measured in
// the same run (rounds alternate; ratio = median of per-round ratios):
//  - wake round trip, two processes ping-ponging a word: atomics.wait/notify
//    against the C futex pair (bench/c/futex.c pingpong);
//  - the same with waitAsync on both sides, against a Unix-socket round trip
//    between two Node processes (and, for information, C and a MessagePort
//    round trip between two threads, and the same on the waiter threads);
//  - uncontended tryAcquire()+release and acquireSync()+release against
//    pthread_mutex_lock+unlock of a process-shared robust mutex in C;
//    awaited acquire()+release for information;
//  - 8 processes contending on one Mutex: throughput against the same with
//    pthread robust mutexes in C.
// Options: --rounds N (default 5), --trips N (default 5000), --ops N (default 1000000), --contend N (default 50000);
// --quick: 3 rounds, 1000 trips, 100000 ops, 5000 contended (a short run, noisier).
// The waitAsync rows use the path doctor() reports (io_uring, or waiter
// threads where refused); COWSHM_NO_IO_URING=1 measures the waiter threads.
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { Region, atomics, Mutex, doctor } = require('cowshm');
const { compileC, runC, median, pairedRatio, report, benchName, intOption, fmtSeconds } = require('./lib');

const quick = process.argv.includes('--quick');
const rounds = intOption('rounds', quick ? 3 : 5);
const trips = intOption('trips', quick ? 1000 : 5000);
const defaultTrips = trips;
const ops = intOption('ops', quick ? 100_000 : 1_000_000);
const contendOps = intOption('contend', quick ? 5000 : 50_000);
const PROCS = 8;

// ---- peers (this file run again as a child) ------------------------------

async function peer(kind, name, n) {
  if (kind === 'threads') {
    // A waitAsync ping-pong of its own, run under COWSHM_NO_IO_URING=1 (its peer inherits it).
    console.log(JSON.stringify({ seconds: await pingPong('async', n) }));
    return;
  }
  if (kind === 'socket') {
    const server = net.createServer((s) => s.on('data', (d) => s.write(d)));
    server.listen(name, () => console.log('ready'));
    return;
  }
  const r = Region.open(name);
  const a = new Int32Array(r.map().buffer);
  if (kind === 'contend') {
    const m = new Mutex(a, 0);
    // Warm the JIT on a word of its own, as a long-running process would be.
    const warm = new Mutex(a, 8);
    for (let i = 0; i < 100_000; i++) {
      const g = warm.acquireSync();
      for (let j = 0; j < 50; j++) a[5] = j;
      g.release();
    }
    Atomics.add(a, 2, 1);
    atomics.notify(a, 2);
    for (let v; (v = Atomics.load(a, 3)) === 0; ) atomics.wait(a, 3, v);
    for (let i = 0; i < n; i++) {
      const g = m.acquireSync();
      const v = a[1];
      for (let j = 0; j < 50; j++) a[4] = j;
      a[1] = v + 1;
      g.release();
    }
    r.close();
    return;
  }
  // ping-pong: answer odd values with the next even one
  console.log('ready');
  for (let i = 0; i < n; i++) {
    const want = 2 * i + 1;
    for (let v; (v = Atomics.load(a, 0)) !== want; ) {
      if (kind === 'sync') atomics.wait(a, 0, v);
      else {
        const w = atomics.waitAsync(a, 0, v);
        if (w.async) await w.value;
      }
    }
    Atomics.store(a, 0, want + 1);
    atomics.notify(a, 0);
  }
  r.close();
}

function startPeer(kind, name, n) {
  const p = spawn(process.execPath, [__filename, '--peer', kind, name, String(n)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise((resolve, reject) => {
    p.stdout.once('data', resolve);
    p.once('exit', (code) => reject(new Error(`peer ${kind} exited with ${code}`)));
  });
  ready.catch(() => {}); // contending peers never say ready: they count themselves in the region
  const exited = new Promise((resolve) => p.once('exit', resolve));
  return { p, ready, exited };
}

// ---- measures -------------------------------------------------------------

async function pingPong(kind, trips = defaultTrips) {
  const name = benchName('pp');
  const r = Region.create({ name, size: 4096 });
  try {
    const a = new Int32Array(r.map().buffer);
    const { ready, exited } = startPeer(kind, name, trips);
    await ready;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < trips; i++) {
      Atomics.store(a, 0, 2 * i + 1);
      atomics.notify(a, 0);
      for (let v; (v = Atomics.load(a, 0)) !== 2 * i + 2; ) {
        if (kind === 'sync') atomics.wait(a, 0, v);
        else {
          const w = atomics.waitAsync(a, 0, v);
          if (w.async) await w.value;
        }
      }
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9 / trips;
    await exited;
    return s;
  } finally {
    r.close();
    r.unlink();
  }
}

/** The waitAsync ping-pong on the waiter threads, in a child (the path is chosen per process). */
function threadsTrip() {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [__filename, '--peer', 'threads', '-', String(trips)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, COWSHM_NO_IO_URING: '1' },
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out).seconds) : reject(new Error(`threads ping-pong exited with ${code}`))));
  });
}

async function socketTrip() {
  const sock = path.join(os.tmpdir(), `${benchName('sock')}.sock`);
  const { p, ready } = startPeer('socket', sock, 0);
  try {
    await ready;
    const c = net.connect(sock);
    await new Promise((resolve) => c.once('connect', resolve));
    c.setNoDelay(true);
    const one = Buffer.from([1]);
    let resolveData;
    c.on('data', () => resolveData());
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < trips; i++) {
      await new Promise((resolve) => {
        resolveData = resolve;
        c.write(one);
      });
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9 / trips;
    c.destroy();
    return s;
  } finally {
    p.kill();
    fs.rmSync(sock, { force: true });
  }
}

async function portTrip() {
  const w = new Worker("require('node:worker_threads').parentPort.on('message', (m) => require('node:worker_threads').parentPort.postMessage(m));", { eval: true });
  let resolveMsg;
  w.on('message', () => resolveMsg());
  await new Promise((resolve) => { resolveMsg = resolve; w.postMessage(0); });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < trips; i++) await new Promise((resolve) => { resolveMsg = resolve; w.postMessage(i); });
  const s = Number(process.hrtime.bigint() - t0) / 1e9 / trips;
  await w.terminate();
  return s;
}

function uncontended(mutex, how) {
  const t0 = process.hrtime.bigint();
  if (how === 'try') for (let i = 0; i < ops; i++) mutex.tryAcquire().release();
  else for (let i = 0; i < ops; i++) mutex.acquireSync().release();
  return Number(process.hrtime.bigint() - t0) / 1e9 / ops;
}

async function awaited(mutex, n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) (await mutex.acquire()).release();
  return Number(process.hrtime.bigint() - t0) / 1e9 / n;
}

async function contend() {
  const name = benchName('contend');
  const r = Region.create({ name, size: 4096 });
  try {
    const a = new Int32Array(r.map().buffer);
    const peers = Array.from({ length: PROCS }, () => startPeer('contend', name, contendOps));
    for (let v; (v = Atomics.load(a, 2)) !== PROCS; ) {
      const w = atomics.waitAsync(a, 2, v, 30_000);
      if (w.async) await w.value;
    }
    const t0 = process.hrtime.bigint();
    Atomics.store(a, 3, 1);
    atomics.notify(a, 3);
    await Promise.all(peers.map((p) => p.exited));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (a[1] !== PROCS * contendOps) throw new Error(`counter ${a[1]}, expected ${PROCS * contendOps}`);
    return s;
  } finally {
    r.close();
    r.unlink();
  }
}

async function main() {
  const c = compileC('futex');
  const path = doctor().waitAsync;
  const rows = { cSync: [], jsSync: [], jsAsync: [], jsAsyncThreads: [], sock: [], port: [], cMutex: [], jsTry: [], jsSyncLock: [], jsAwait: [], cContend: [], jsContend: [] };
  const lockRegion = Region.create({ size: 4096 });
  const mutex = new Mutex(new Int32Array(lockRegion.map().buffer), 0);
  try {
    for (let round = 0; round < rounds; round++) {
      rows.cSync.push(runC(c, ['pingpong', trips]).seconds);
      rows.jsSync.push(await pingPong('sync'));
      rows.jsAsync.push(await pingPong('async'));
      if (path.path === 'io_uring') rows.jsAsyncThreads.push(await threadsTrip());
      rows.sock.push(await socketTrip());
      rows.port.push(await portTrip());
      rows.cMutex.push(runC(c, ['mutex', ops]).seconds);
      rows.jsTry.push(uncontended(mutex, 'try'));
      rows.jsSyncLock.push(uncontended(mutex, 'sync'));
      rows.jsAwait.push(await awaited(mutex, ops / 10));
      rows.cContend.push(runC(c, ['contend', PROCS, contendOps]).seconds);
      rows.jsContend.push(await contend());
    }
  } finally {
    lockRegion.close();
  }
  const m = median;
  const rate = (s) => `${((PROCS * contendOps) / s / 1e6).toFixed(2)} M/s`;
  const ok = report(`wake round trips between two processes: ${rounds} rounds × ${trips} trips (baseline as named; waitAsync on ${path.path}${path.path === 'threads' ? `: ${path.reason}` : ''})`, [
    { name: 'atomics.wait/notify vs C futex pair', cowshm: m(rows.jsSync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsSync, rows.cSync), target: 1.5 },
    { name: 'waitAsync both sides vs Unix socket (Node)', cowshm: m(rows.jsAsync), baseline: m(rows.sock), ratio: pairedRatio(rows.jsAsync, rows.sock), target: 0.5 },
    { name: 'waitAsync both sides vs C futex pair', cowshm: m(rows.jsAsync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsAsync, rows.cSync) },
    { name: 'waitAsync both sides vs MessagePort (threads)', cowshm: m(rows.jsAsync), baseline: m(rows.port), ratio: pairedRatio(rows.jsAsync, rows.port) },
    ...(rows.jsAsyncThreads.length === 0 ? [] : [
      { name: 'waitAsync on io_uring vs on waiter threads', cowshm: m(rows.jsAsync), baseline: m(rows.jsAsyncThreads), ratio: pairedRatio(rows.jsAsync, rows.jsAsyncThreads) },
    ]),
  ]) & report(`Mutex, uncontended: ${rounds} rounds × ${ops} ops (baseline: pthread_mutex_lock+unlock, robust, process-shared, C)`, [
    { name: 'tryAcquire()+release', cowshm: m(rows.jsTry), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsTry, rows.cMutex), target: 2 },
    { name: 'acquireSync()+release', cowshm: m(rows.jsSyncLock), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsSyncLock, rows.cMutex), target: 2 },
    { name: 'await acquire()+release (information)', cowshm: m(rows.jsAwait), baseline: m(rows.cMutex), ratio: pairedRatio(rows.jsAwait, rows.cMutex) },
  ]) & report(`Mutex, ${PROCS} processes × ${contendOps} lock/increment/unlock: throughput (baseline: pthread robust mutex, C)`, [
    { name: 'throughput', cowshm: m(rows.jsContend), baseline: m(rows.cContend), ratio: pairedRatio(rows.cContend, rows.jsContend), target: 0.5, higherIsBetter: true, format: rate },
  ]);
  const us = (xs) => xs.map((x) => fmtSeconds(x)).join(' ');
  for (const [k, xs] of Object.entries(rows)) console.log(`  ${k.padEnd(11)} ${us(xs)}`);
  return ok;
}

if (process.argv[2] === '--peer') {
  peer(process.argv[3], process.argv[4], Number(process.argv[5])).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().then(
    (ok) => { process.exitCode = ok ? 0 : 1; },
    (err) => { console.error(err); process.exitCode = 1; },
  );
}
