// Waiting, waking and locking across processes, against baselines measured in
// the same run (rounds alternate; ratio = median of per-round ratios):
//  - wake round trip, two processes ping-ponging a word: atomics.wait/notify
//    against the C futex pair (bench/c/futex.c pingpong);
//  - the same with waitAsync on both sides, against a Unix-socket round trip
//    between two Node processes (and, for information, C and a MessagePort
//    round trip between two threads, and the same on the waiter threads);
// The locks (Mutex, RwLock) are measured by bench/mutex.bench.js.
// Options: --rounds N (default 5), --trips N (default 5000);
// --quick: 3 rounds, 1000 trips (a short run, noisier).
// The waitAsync rows use the path doctor() reports (io_uring, or waiter
// threads where refused); COWSHM_NO_IO_URING=1 measures the waiter threads.
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { Region, atomics, doctor } = require('cowshm');
const { compileC, runC, median, pairedRatio, report, benchName, intOption, fmtSeconds } = require('./lib');

const quick = process.argv.includes('--quick');
const rounds = intOption('rounds', quick ? 3 : 5);
const trips = intOption('trips', quick ? 1000 : 5000);
const defaultTrips = trips;

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
  ready.catch(() => {}); // a peer's exit after its work rejects it: nobody waits for it then
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

async function main() {
  const c = compileC('futex');
  const path = doctor().waitAsync;
  const rows = { cSync: [], jsSync: [], jsAsync: [], jsAsyncThreads: [], sock: [], port: [] };
  for (let round = 0; round < rounds; round++) {
    rows.cSync.push(runC(c, ['pingpong', trips]).seconds);
    rows.jsSync.push(await pingPong('sync'));
    rows.jsAsync.push(await pingPong('async'));
    if (path.path === 'io_uring') rows.jsAsyncThreads.push(await threadsTrip());
    rows.sock.push(await socketTrip());
    rows.port.push(await portTrip());
  }
  const m = median;
  const ok = report(`wake round trips between two processes: ${rounds} rounds × ${trips} trips (baseline as named; waitAsync on ${path.path}${path.path === 'threads' ? `: ${path.reason}` : ''})`, [
    { name: 'atomics.wait/notify vs C futex pair', cowshm: m(rows.jsSync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsSync, rows.cSync), target: 1.5 },
    { name: 'waitAsync both sides vs Unix socket (Node)', cowshm: m(rows.jsAsync), baseline: m(rows.sock), ratio: pairedRatio(rows.jsAsync, rows.sock), target: 0.5 },
    { name: 'waitAsync both sides vs C futex pair', cowshm: m(rows.jsAsync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsAsync, rows.cSync) },
    { name: 'waitAsync both sides vs MessagePort (threads)', cowshm: m(rows.jsAsync), baseline: m(rows.port), ratio: pairedRatio(rows.jsAsync, rows.port) },
    ...(rows.jsAsyncThreads.length === 0 ? [] : [
      { name: 'waitAsync on io_uring vs on waiter threads', cowshm: m(rows.jsAsync), baseline: m(rows.jsAsyncThreads), ratio: pairedRatio(rows.jsAsync, rows.jsAsyncThreads) },
    ]),
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
