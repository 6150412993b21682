// Waiting, waking and locking across processes, against baselines measured in
// the same run (rounds alternate; ratio = median of per-round ratios):
//  - wake round trip, two processes ping-ponging a word: atomics.wait/notify
//    against the C futex pair (bench/c/futex.c pingpong);
//  - the same with waitAsync on both sides, against a Unix-socket round trip
//    between two Node processes (and, for information, C and a MessagePort
//    round trip between two threads, and the same on the waiter threads);
//  - the floors under that target: the C pair doing waitAsync's mechanism and
//    nothing else (bench/c/futex.c uring: an io_uring futex-wait request and
//    epoll on the ring's descriptor, both sides), and what Node's event loop
//    costs per wake-up: a turn that resumes an async function (await
//    setImmediate), and the one-thread cycle waitAsync, notify, await against
//    the same cycle in C (bench/c/futex.c uring-self). Two floors, each set
//    against the socket: "floor (C)", the mechanism's round trip plus one
//    turn per side; "floor (JS)", the blocking atomics.wait ping-pong (JS
//    loops, the addon's calls, two V8 processes taking turns on the caches)
//    plus what the mechanism costs over a plain futex pair in C, plus one
//    turn per side: what waitAsync would cost if it added nothing else.
// The locks (Mutex, RwLock) are measured by bench/mutex.bench.js.
// Every round runs in a child process of its own, and rounds alternate
// between unpinned and pinned to one CPU (taskset -c 0, inherited by every
// process of the round: both sides of each ping-pong then share that CPU, and
// a wake-up is a switch between them rather than a wake of another CPU, which
// on a virtual machine whose idle CPUs halt costs tens of microseconds and
// depends on where the scheduler put the pair). One table per mode.
// Each ping-pong first runs --warmup untimed trips, on both sides: a fresh
// peer process compiles its loop meanwhile, which is a start-up cost, not a
// round trip's: its optimising compiler runs in the first few thousand trips.
// Options: --rounds N (default 5, per mode), --trips N (default 5000),
// --warmup N (default 5000), --no-pin (unpinned rounds only);
// --quick: 3 rounds, 1000 trips, 2000 warm-up trips (a short run, noisier).
// The waitAsync rows use the path doctor() reports (io_uring, or waiter
// threads where refused); COWSHM_NO_IO_URING=1 measures the waiter threads.
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { Region, atomics, doctor } = require('cowshm');
const { compileC, runC, median, pairedRatio, report, benchName, intOption, fmtSeconds } = require('./lib');

const quick = process.argv.includes('--quick');
const rounds = intOption('rounds', quick ? 3 : 5);
const trips = intOption('trips', quick ? 1000 : 5000);
const warmup = intOption('warmup', quick ? 2000 : 5000);
const pin = !process.argv.includes('--no-pin');
const defaultTrips = trips;

// ---- peers (this file run again as a child) ------------------------------

async function peer(kind, name, n) {
  if (kind === 'threads') {
    // A waitAsync ping-pong of its own, run under COWSHM_NO_IO_URING=1 (its peer inherits it).
    console.log(JSON.stringify({ seconds: await pingPong('async', n) }));
    return;
  }
  n += warmup; // the ping-pong's side counts the warm-up trips too
  if (kind === 'socket') {
    const server = net.createServer((s) => s.on('data', (d) => s.write(d)));
    server.listen(name, () => console.log('ready'));
    return;
  }
  const r = Region.open(name);
  const a = new Int32Array(r.map().buffer);
  // ping-pong: answer odd values with the next even one
  console.log('ready');
  if (kind === 'sync') answerSync(a, n);
  else {
    for (let i = 0; i < n; i++) {
      const want = 2 * i + 1;
      for (let v; (v = Atomics.load(a, 0)) !== want; ) {
        const w = atomics.waitAsync(a, 0, v);
        if (w.async) await w.value;
      }
      Atomics.store(a, 0, want + 1);
      atomics.notify(a, 0);
    }
  }
  r.close();
}

// The blocking ping-pong's two sides are plain functions, as blocking code
// is, with no async function around their loops.
function answerSync(a, n) {
  for (let i = 0; i < n; i++) {
    const want = 2 * i + 1;
    for (let v; (v = Atomics.load(a, 0)) !== want; ) atomics.wait(a, 0, v);
    Atomics.store(a, 0, want + 1);
    atomics.notify(a, 0);
  }
}

/** The timed side of the blocking ping-pong: seconds per round trip after the warm-up. */
function askSync(a) {
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < warmup + trips; i++) {
    if (i === warmup) t0 = process.hrtime.bigint();
    Atomics.store(a, 0, 2 * i + 1);
    atomics.notify(a, 0);
    for (let v; (v = Atomics.load(a, 0)) !== 2 * i + 2; ) atomics.wait(a, 0, v);
  }
  return Number(process.hrtime.bigint() - t0) / 1e9 / trips;
}

function startPeer(kind, name, n) {
  const p = spawn(process.execPath, [__filename, '--peer', kind, name, String(n), '--warmup', String(warmup)], { stdio: ['ignore', 'pipe', 'inherit'] });
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
    if (kind === 'sync') {
      const s = askSync(a);
      await exited;
      return s;
    }
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < warmup + trips; i++) {
      if (i === warmup) t0 = process.hrtime.bigint();
      Atomics.store(a, 0, 2 * i + 1);
      atomics.notify(a, 0);
      for (let v; (v = Atomics.load(a, 0)) !== 2 * i + 2; ) {
        const w = atomics.waitAsync(a, 0, v);
        if (w.async) await w.value;
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
    const p = spawn(process.execPath, [__filename, '--peer', 'threads', '-', String(trips), '--warmup', String(warmup)], {
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
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < warmup + trips; i++) {
      if (i === warmup) t0 = process.hrtime.bigint();
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
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < warmup + trips; i++) {
    if (i === warmup) t0 = process.hrtime.bigint();
    await new Promise((resolve) => { resolveMsg = resolve; w.postMessage(i); });
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9 / trips;
  await w.terminate();
  return s;
}

/** One thread: waitAsync, notify, await, as often as --trips × 4 after a warm-up; seconds per cycle. */
async function selfCycle() {
  const name = benchName('self');
  const r = Region.create({ name, size: 4096 });
  try {
    const a = new Int32Array(r.map().buffer);
    const n = 4 * trips;
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < warmup + n; i++) {
      if (i === warmup) t0 = process.hrtime.bigint();
      const w = atomics.waitAsync(a, 0, 0);
      atomics.notify(a, 0);
      await w.value;
    }
    return Number(process.hrtime.bigint() - t0) / 1e9 / n;
  } finally {
    r.close();
    r.unlink();
  }
}

/** One turn of the event loop that resumes an async function: await setImmediate, in seconds. */
async function loopTurn() {
  const n = 4 * trips;
  const next = () => new Promise((resolve) => setImmediate(resolve));
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < warmup + n; i++) {
    if (i === warmup) t0 = process.hrtime.bigint();
    await next();
  }
  return Number(process.hrtime.bigint() - t0) / 1e9 / n;
}

/** One round of every measure, in this process (a child of main's, pinned or not): JSON on stdout. */
async function round(cBinary) {
  const path = doctor().waitAsync;
  const out = { cSync: runC(cBinary, ['pingpong', trips, warmup]).seconds };
  // waitAsync's mechanism in C, where this kernel gives it (the same probe as the addon's).
  if (path.path === 'io_uring') {
    out.cUring = runC(cBinary, ['uring', trips, warmup]).seconds;
    out.cSelf = runC(cBinary, ['uring-self', 4 * trips]).seconds;
    out.jsSelf = await selfCycle();
  }
  out.turn = await loopTurn();
  out.jsSync = await pingPong('sync');
  out.jsAsync = await pingPong('async');
  if (path.path === 'io_uring') out.jsAsyncThreads = await threadsTrip();
  out.sock = await socketTrip();
  out.port = await portTrip();
  console.log(JSON.stringify(out));
}

function runRound(cBinary, pinned) {
  const args = [__filename, '--round', cBinary, '--trips', String(trips), '--warmup', String(warmup)];
  const [cmd, argv] = pinned ? ['taskset', ['-c', '0', process.execPath, ...args]] : [process.execPath, args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`a round${pinned ? ' under taskset -c 0' : ''} failed (${r.error ?? `status ${r.status}`})`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function hasTaskset() {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** One mode's table; `tag` ends each row's name (bench/compare.js tells rows apart by name). */
function table(label, tag, rows, path) {
  const m = median;
  const ok = report(`wake round trips between two processes, ${label}: ${rows.cSync.length} rounds × ${trips} trips after ${warmup} (baseline as named; waitAsync on ${path.path}${path.path === 'threads' ? `: ${path.reason}` : ''})`, [
    { name: `atomics.wait/notify vs C futex pair${tag}`, cowshm: m(rows.jsSync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsSync, rows.cSync), target: 1.5 },
    { name: `waitAsync both sides vs Unix socket (Node)${tag}`, cowshm: m(rows.jsAsync), baseline: m(rows.sock), ratio: pairedRatio(rows.jsAsync, rows.sock), target: 0.5 },
    { name: `waitAsync both sides vs C futex pair${tag}`, cowshm: m(rows.jsAsync), baseline: m(rows.cSync), ratio: pairedRatio(rows.jsAsync, rows.cSync) },
    { name: `waitAsync both sides vs MessagePort (threads)${tag}`, cowshm: m(rows.jsAsync), baseline: m(rows.port), ratio: pairedRatio(rows.jsAsync, rows.port) },
    ...(rows.jsAsyncThreads.length === 0 ? [] : [
      { name: `waitAsync on io_uring vs on waiter threads${tag}`, cowshm: m(rows.jsAsync), baseline: m(rows.jsAsyncThreads), ratio: pairedRatio(rows.jsAsync, rows.jsAsyncThreads) },
    ]),
    ...(rows.cUring.length === 0 ? [] : floors(tag, rows)),
  ]);
  const us = (xs) => xs.map((x) => fmtSeconds(x)).join(' ');
  for (const [k, xs] of Object.entries(rows)) console.log(`  ${k.padEnd(14)} ${us(xs)}`);
  return ok;
}

/**
 * The floors under the waitAsync target (rows with the io_uring path only),
 * per round, against the same round's socket (see the top of this file). A
 * floor above the target's 0.5× says that no waitAsync between two Node
 * processes can meet it on this machine.
 */
function floors(tag, rows) {
  const m = median;
  const floorC = rows.cUring.map((c, i) => c + 2 * rows.turn[i]);
  const floorJs = rows.jsSync.map((js, i) => js + (rows.cUring[i] - rows.cSync[i]) + 2 * rows.turn[i]);
  return [
    { name: `waitAsync both sides vs C io_uring+epoll pair (its mechanism)${tag}`, cowshm: m(rows.jsAsync), baseline: m(rows.cUring), ratio: pairedRatio(rows.jsAsync, rows.cUring) },
    { name: `C io_uring+epoll pair vs Unix socket (Node)${tag}`, cowshm: m(rows.cUring), baseline: m(rows.sock), ratio: pairedRatio(rows.cUring, rows.sock) },
    { name: `floor (C): C io_uring pair + 2 event-loop turns vs Unix socket${tag}`, cowshm: m(floorC), baseline: m(rows.sock), ratio: pairedRatio(floorC, rows.sock) },
    { name: `floor (JS): wait/notify pair + mechanism + 2 turns vs Unix socket${tag}`, cowshm: m(floorJs), baseline: m(rows.sock), ratio: pairedRatio(floorJs, rows.sock) },
    { name: `waitAsync both sides vs floor (JS)${tag}`, cowshm: m(rows.jsAsync), baseline: m(floorJs), ratio: pairedRatio(rows.jsAsync, floorJs) },
    { name: `one thread: waitAsync, notify, await vs C (queue, wake, reap)${tag}`, cowshm: m(rows.jsSelf), baseline: m(rows.cSelf), ratio: pairedRatio(rows.jsSelf, rows.cSelf) },
    { name: `event-loop turn (await setImmediate) vs C self cycle${tag}`, cowshm: m(rows.turn), baseline: m(rows.cSelf), ratio: pairedRatio(rows.turn, rows.cSelf) },
  ];
}

async function main() {
  const c = compileC('futex');
  const path = doctor().waitAsync;
  const modes = [{ label: 'unpinned', tag: '', pinned: false }];
  if (pin && hasTaskset()) modes.push({ label: 'pinned to CPU 0 (taskset -c 0)', tag: ', pinned', pinned: true });
  else if (pin) console.log('taskset not found: unpinned rounds only');
  const empty = () => ({ cSync: [], jsSync: [], jsAsync: [], jsAsyncThreads: [], sock: [], port: [], cUring: [], cSelf: [], jsSelf: [], turn: [] });
  const rows = modes.map(empty);
  for (let r = 0; r < rounds; r++) {
    // Alternate the order of the modes too, so neither always runs first.
    const order = r % 2 === 0 ? modes.map((_, k) => k) : modes.map((_, k) => modes.length - 1 - k);
    for (const k of order) {
      const one = runRound(c, modes[k].pinned);
      for (const [key, v] of Object.entries(one)) rows[k][key].push(v);
    }
  }
  let ok = true;
  modes.forEach((mode, k) => { ok = table(mode.label, mode.tag, rows[k], path) && ok; });
  return ok;
}

if (process.argv[2] === '--peer') {
  peer(process.argv[3], process.argv[4], Number(process.argv[5])).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else if (process.argv[2] === '--round') {
  round(process.argv[3]).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().then(
    (ok) => { process.exitCode = ok ? 0 : 1; },
    (err) => { console.error(err); process.exitCode = 1; },
  );
}
