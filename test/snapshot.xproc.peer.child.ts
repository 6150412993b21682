// Child processes for the test/snapshot.xproc.*.test.ts files, one role each
// (the first argument). Every role prints `ready` once it runs.
//
// The stamp layout (Uint32 words): page 0 word 0 is the stop flag; page
// 1 + id holds writer id's counter (word 0); pages from STAMP_FIRST_PAGE on
// hold records of 2 + total words [id + 1, counter, seen counter of writer
// 0..total-1] at random places. A writer reads the others' counters, then
// writes a record, then its own counter: so a consistent cut never holds a
// record whose "seen" values are ahead of the counters it holds.
import * as fs from 'node:fs';
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';
import { Region, Mutex, atomics, pageSize, type Snapshot } from 'cowshm';

export const STAMP_FIRST_PAGE = 16;
/** A page no stamp writer writes (at most 14 writers): the joiner's. */
export const MARK_PAGE = 15;

/** Offsets in the coordination file's header (native/xproc.c, struct xhdr). */
export const HEADER = { seq: 16, state: 20, gen: 24 } as const;
export const STATE_ARMING = 1;

/** The violations of a consistent cut in a snapshot's words: records that saw a counter the snapshot's counters are behind. */
export function violations(words: Uint32Array, total: number): number {
  const perPage = pageSize / 4;
  const cells: number[] = [];
  for (let j = 0; j < total; j++) cells.push(words[(1 + j) * perPage] as number);
  let bad = 0;
  const record = 2 + total;
  for (let at = STAMP_FIRST_PAGE * perPage; at + record <= words.length; at += record) {
    if (words[at] === 0) continue;
    for (let j = 0; j < total; j++) if ((words[at + 2 + j] as number) > (cells[j] as number)) bad++;
  }
  return bad;
}

function xorshift(seed: number): (n: number) => number {
  let s = seed | 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

/** Writes causal stamps as writer `id` of `total` until the stop flag is set. */
function stamp(words: Uint32Array, id: number, total: number): number {
  const perPage = pageSize / 4;
  const record = 2 + total;
  const records = Math.floor((words.length - STAMP_FIRST_PAGE * perPage) / record);
  const random = xorshift((id + 1) * 2654435761);
  let counter = words[(1 + id) * perPage] as number;
  const seen: number[] = new Array(total).fill(0);
  while (Atomics.load(words, 0) === 0) {
    counter++;
    const at = STAMP_FIRST_PAGE * perPage + random(records) * record;
    for (let j = 0; j < total; j++) seen[j] = Atomics.load(words, (1 + j) * perPage);
    for (let j = 0; j < total; j++) Atomics.store(words, at + 2 + j, seen[j] as number);
    Atomics.store(words, at + 1, counter);
    Atomics.store(words, at, id + 1);
    Atomics.store(words, (1 + id) * perPage, counter);
  }
  return counter;
}

/**
 * stamps NAME FIRST THREADS TOTAL: takes part (crossProcess) and writes causal
 * stamps as writers FIRST.. — from the main thread when THREADS is 0, else
 * from THREADS worker threads, each through views of its own Region.
 */
function stamps(name: string, first: number, threads: number, total: number): void {
  const region = Region.open(name, { crossProcess: true });
  if (threads === 0) {
    const words = new Uint32Array(region.map().buffer);
    process.stdout.write(`ready ${process.pid}\n`);
    const n = stamp(words, first, total);
    region.close();
    process.stdout.write(`done ${n}\n`);
    return;
  }
  let started = 0;
  let finished = 0;
  for (let t = 0; t < threads; t++) {
    const w = new Worker(__filename, { workerData: { handle: region.handle(), id: first + t, total } });
    w.on('message', (m: string) => {
      if (m === 'started' && ++started === threads) process.stdout.write(`ready ${process.pid}\n`);
      if (m.startsWith('done') && ++finished === threads) {
        region.close();
        process.stdout.write(`done\n`);
      }
    });
    w.on('error', (err) => {
      process.stdout.write(`worker failed: ${err.stack}\n`);
      process.exit(3);
    });
  }
}

function stampThread(): void {
  const { handle, id, total } = workerData as { handle: Parameters<typeof Region.fromHandle>[0]; id: number; total: number };
  const region = Region.fromHandle(handle);
  const words = new Uint32Array(region.map().buffer);
  parentPort?.postMessage('started');
  const n = stamp(words, id, total);
  region.close();
  parentPort?.postMessage(`done ${n}`);
}

/**
 * barrier NAME CONTROL INDEX: takes part and writes random words all over
 * the region; stops at a barrier when asked. CONTROL is a second region
 * (Int32 words): [0] the phase (odd: pause), [1] how many writers are
 * paused, [2] a Mutex over [1], [3] stop. The barrier is made of cowshm's
 * own coordination primitives: the Mutex for the count, atomics.wait and
 * notify (futexes across processes) for sleeping and waking.
 */
function barrier(name: string, controlName: string, index: number): void {
  const region = Region.open(name, { crossProcess: true });
  const control = Region.open(controlName);
  const words = new Uint32Array(region.map().buffer);
  const ctl = new Int32Array(control.map().buffer);
  const mutex = new Mutex(ctl, 2);
  const random = xorshift((index + 7) * 40503);
  process.stdout.write(`ready ${process.pid}\n`);
  let n = 0;
  while (Atomics.load(ctl, 3) === 0) {
    const phase = Atomics.load(ctl, 0);
    if (phase % 2 === 1) {
      const g = mutex.acquireSync({ timeoutMs: 10_000 });
      ctl[1] = (ctl[1] as number) + 1;
      g.release();
      atomics.notify(ctl, 1);
      while (Atomics.load(ctl, 0) === phase && Atomics.load(ctl, 3) === 0) atomics.wait(ctl, 0, phase, 1000);
      continue;
    }
    // A few words on random pages, each time: first writes after a snapshot everywhere.
    for (let k = 0; k < 16; k++) words[random(words.length)] = (index + 1) * 0x1000000 + (++n & 0xffffff);
  }
  region.close();
  control.close();
  process.stdout.write(`done ${n}\n`);
}

const pause = new Int32Array(new SharedArrayBuffer(4));
const nap = (ms: number): void => void Atomics.wait(pause, 0, 0, ms);

/**
 * joiner NAME COORDFILE WHEN [CONT_PID]: opens the region for writing with
 * crossProcess — WHEN 'arming': as soon as a snapshot is being armed (the
 * coordination file's state), then sends SIGCONT to CONT_PID (the writer the
 * test stopped to hold arming open); WHEN 'now': at once — and writes
 * 0xC0FFEE into every word of MARK_PAGE. Reports what it saw.
 */
function joiner(name: string, file: string, when: string, cont?: number): void {
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(32);
  const read = (): { state: number; gen: number } => {
    fs.readSync(fd, head, 0, 32, 0);
    return { state: head.readUInt32LE(HEADER.state), gen: head.readUInt32LE(HEADER.gen) };
  };
  const startGen = read().gen;
  process.stdout.write(`ready ${process.pid}\n`);
  if (when === 'arming') {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const h = read();
      if (h.state === STATE_ARMING && h.gen !== startGen) break;
      if (Date.now() > deadline) throw new Error('no snapshot was armed');
      nap(1);
    }
  }
  const region = Region.open(name, { crossProcess: true });
  const after = read();
  if (cont !== undefined) process.kill(cont, 'SIGCONT');
  const words = new Uint32Array(region.map().buffer);
  const perPage = pageSize / 4;
  for (let i = 0; i < perPage; i++) words[MARK_PAGE * perPage + i] = 0xc0ffee;
  process.stdout.write(`wrote joined-state=${after.state} gen=${after.gen}\n`);
  fs.closeSync(fd);
  process.on('SIGTERM', () => {
    region.close();
    process.exit(0);
  });
  setInterval(() => {}, 1000);
}

/**
 * looper NAME TOTAL TIMEOUT: a reader that takes snapshots with scope
 * 'processes' at random moments, checks each (a consistent cut, frozen while
 * the writers go on), and reports one line per snapshot: `ok`, `broken`
 * (exact turned false: it said so), `err CODE message` (snapshot() threw),
 * or `bad ...` (a snapshot that says it is exact but is not).
 */
async function looper(name: string, total: number, timeoutMs: number): Promise<void> {
  const region = Region.open(name, { readOnly: true });
  const random = xorshift(process.pid);
  process.stdout.write(`ready ${process.pid}\n`);
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  for (;;) {
    let s: Snapshot;
    try {
      s = region.snapshot({ scope: 'processes', timeoutMs });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      process.stdout.write(`err ${e.code} ${e.message.replace(/\n/g, ' ')}\n`);
      await sleep(random(20));
      continue;
    }
    let frozen: Uint32Array;
    try {
      frozen = new Uint32Array(s.buffer);
    } catch (err) {
      process.stdout.write(`broken at once ${(err as NodeJS.ErrnoException).code}\n`);
      s.release();
      continue;
    }
    const first = Uint32Array.from(frozen);
    await sleep(random(40));
    const cut = violations(frozen, total);
    let changed = 0;
    for (let i = 0; i < frozen.length; i++) if (frozen[i] !== first[i]) changed++;
    const exact = s.exact;
    if (!exact) {
      let code = '';
      try {
        void s.buffer;
      } catch (err) {
        code = (err as NodeJS.ErrnoException).code ?? '';
      }
      process.stdout.write(`broken ${code}\n`);
    } else if (cut !== 0 || changed !== 0 || violations(first, total) !== 0) {
      process.stdout.write(`bad cut=${cut} changed=${changed}\n`);
    } else process.stdout.write('ok\n');
    s.release();
    await sleep(random(20));
  }
}

function main(): void {
  if (!isMainThread) return stampThread();
  const [role, ...args] = process.argv.slice(2) as [string, ...string[]];
  if (role === 'stamps') return stamps(args[0] as string, Number(args[1]), Number(args[2]), Number(args[3]));
  if (role === 'barrier') return barrier(args[0] as string, args[1] as string, Number(args[2]));
  if (role === 'joiner') return joiner(args[0] as string, args[1] as string, args[2] as string, args[3] === undefined ? undefined : Number(args[3]));
  if (role === 'looper') {
    void looper(args[0] as string, Number(args[1]), Number(args[2]));
    return;
  }
  throw new Error(`unknown role ${role}`);
}

if (require.main === module || !isMainThread) main();
