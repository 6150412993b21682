// RwLock: many readers or one writer in 16 words of a region, across
// processes and threads, told when a writer died, unblocked when a reader did.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, RwLock, RWLOCK_WORDS, Mutex, pageSize } from 'cowshm';
import { child, worker, pkg } from './atomics-helpers';
import { withSegment as withSegmentTagged, holder as lockHolder } from './mutex-helpers';

const withSegment = (fn: Parameters<typeof withSegmentTagged>[1]) => withSegmentTagged('rwlock', fn);

const TOKEN = 0x7fffffff;
const words = (cells: Int32Array, at: number) => Array.from(cells.subarray(at, at + RWLOCK_WORDS));

/** A child that takes the lock at `at` ('read' or 'write'), says so, and stays. */
const holder = (name: string, at: number, mode: 'read' | 'write') => lockHolder(name, 'RwLock', at, `${mode}Sync`);

test('readers share, a writer excludes; the words say who holds what; guards release once', withSegment((name, cells) => {
  assert.equal(RWLOCK_WORDS, 16);
  const l = new RwLock(cells, 32);
  const r1 = l.tryRead();
  const r2 = l.readSync();
  assert.ok(r1 && r2);
  assert.equal(r1.ownerDied, false);
  assert.equal(l.reading, 2);
  const w = words(cells, 32);
  assert.equal(w[0], 0, 'no writer');
  const slots = w.slice(1).filter((v) => v !== 0);
  assert.equal(slots.length, 2, 'one slot per read lock');
  assert.equal(slots[0], slots[1], 'both name this thread\'s token');
  assert.equal(l.tryWrite(), null, 'readers inside');
  assert.deepEqual(words(cells, 32).slice(0, 1), [0], 'a failed tryWrite leaves the writer word as it was');
  r1.release();
  assert.throws(() => r1.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  r1[Symbol.dispose](); // released: nothing happens
  assert.equal(l.reading, 1);
  assert.equal(l.tryWrite(), null);
  r2[Symbol.dispose]();
  assert.ok(words(cells, 32).every((v) => v === 0), 'all free');

  const g = l.writeSync();
  assert.equal(l.writing, true);
  assert.equal(cells[32]! & TOKEN, slots[0]! & TOKEN, 'the writer word names the same token');
  assert.equal(l.tryRead(), null, 'held for writing, by this very thread');
  assert.equal(l.tryWrite(), null);
  assert.equal(new RwLock(cells, 32).tryRead(), null, 'another RwLock object over the same words too');
  g.release();
  assert.equal(l.writing, false);
  assert.throws(() => g.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  assert.ok(words(cells, 32).every((v) => v === 0));

  // A stale guard (an earlier hold of the same slot) cannot release a later hold.
  const a = l.tryRead();
  a?.release();
  const b = l.tryRead();
  assert.ok(b);
  assert.throws(() => a?.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  a?.[Symbol.dispose]();
  assert.equal(l.reading, 1, 'the later hold is still held');
  b.release();
  const w1 = l.tryWrite();
  w1?.release();
  const w2 = l.tryWrite();
  assert.throws(() => w1?.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  assert.equal(l.writing, true);
  w2?.release();
}));

test('readSync/writeSync: EDEADLK for a write while this thread reads or writes and a read while it writes; ETIMEDOUT; read()/write() wait instead', withSegment(async (name, cells) => {
  const l = new RwLock(cells, 0);
  const r = l.readSync();
  assert.throws(() => l.writeSync(), { code: 'EDEADLK' });
  assert.throws(() => new RwLock(cells, 0).writeSync(), { code: 'EDEADLK' }, 'through another object of this thread');
  assert.equal(cells[0], 0, 'the refused writer gave its word back');
  const nested = l.readSync();
  nested.release();
  r.release();
  const w = l.writeSync();
  assert.throws(() => l.readSync(), { code: 'EDEADLK' });
  assert.throws(() => l.writeSync(), { code: 'EDEADLK' });
  const p = child(`
    const { Region, RwLock } = require(${pkg});
    const l = new RwLock(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), 0);
    const t0 = Date.now();
    for (const mode of ['readSync', 'writeSync']) {
      try { l[mode]({ timeoutMs: 60 }); console.log('acquired'); }
      catch (e) { console.log(mode + ' ' + e.code + ' ' + (Date.now() - t0 >= 59)); }
    }`);
  assert.equal(await p.line(), 'readSync ETIMEDOUT true');
  assert.equal(await p.line(), 'writeSync ETIMEDOUT true');
  assert.equal(await p.exited, 0);
  assert.equal(cells[0]! & TOKEN, cells[0]! & TOKEN);
  assert.ok(words(cells, 0).slice(1).every((v) => v === 0), 'the timed-out reader left no slot behind');
  await assert.rejects(l.read({ timeoutMs: 30 }), { code: 'ETIMEDOUT' }, 'read() waits for this thread\'s writer (another task may release it), and times out');
  const ac = new AbortController();
  const waiting = l.write({ signal: ac.signal });
  setTimeout(() => ac.abort(new Error('stop')), 20);
  await assert.rejects(waiting, /stop/);
  await assert.rejects(l.read({ signal: AbortSignal.abort() }), { name: 'AbortError' });
  assert.throws(() => l.readSync({ timeoutMs: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => l.writeSync({ timeoutMs: 'x' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  await assert.rejects(l.write({ signal: 'no' as unknown as AbortSignal }), { code: 'ERR_INVALID_ARG_TYPE' });
  w.release();
  assert.ok(words(cells, 0).every((v) => v === 0), 'an aborted writer left nothing behind');
}));

test('a writer waits for the readers, readers wait for the writer; the event loop runs meanwhile', withSegment(async (name, cells) => {
  const l = new RwLock(cells, 16);
  const r = await l.read();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  const writing = l.write();
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.notEqual(cells[16], 0, 'the writer has announced itself');
  const reader = child(`
    const { Region, RwLock } = require(${pkg});
    const l = new RwLock(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), 16);
    console.log('try ' + l.tryRead());
    const t0 = Date.now();
    const g = l.readSync();
    console.log('read after ' + (Date.now() - t0 >= 40));
    g.release();`);
  assert.equal(await reader.line(), 'try null', 'a new reader yields to the waiting writer');
  setTimeout(() => r.release(), 50);
  const w = await writing;
  assert.ok(ticks >= 2, `timers fired ${ticks} times while write() waited`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  w.release();
  clearInterval(timer);
  assert.equal(await reader.line(), 'read after true');
  assert.equal(await reader.exited, 0);
}));

test('more readers than its 15 slots: the 16th waits until one leaves', withSegment((name, cells) => {
  const l = new RwLock(cells, 48);
  const held = Array.from({ length: 15 }, () => l.readSync());
  assert.ok(words(cells, 48).slice(1).every((v) => v !== 0), 'every slot taken');
  assert.equal(l.tryRead(), null);
  assert.throws(() => l.readSync({ timeoutMs: 60 }), { code: 'ETIMEDOUT' });
  held.pop()?.release();
  const g = l.readSync({ timeoutMs: 1000 });
  assert.equal(l.reading, 15);
  g.release();
  for (const h of held) h.release();
  assert.ok(words(cells, 48).every((v) => v === 0));
}));

test('8 processes, readers and writers, sync and async: readers never see a write half done, the count is exact', withSegment(async (name, cells) => {
  const rounds = 300;
  // Writers bump two counters together; a reader under the read lock must
  // always see them equal.
  const procs = Array.from({ length: 8 }, (_, k) => child(`
    const { Region, RwLock } = require(${pkg});
    const a = new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer);
    const l = new RwLock(a, 0);
    (async () => {
      let torn = 0, reads = 0;
      for (let i = 0; i < ${rounds}; i++) {
        const sync = ${k % 2 === 0};
        if (i % 4 === 0) {
          const g = sync ? l.writeSync() : (l.tryWrite() ?? await l.write());
          const v = a[20];
          for (let j = 0; j < 50; j++) a[22] = j;
          a[20] = v + 1;
          a[21] = v + 1;
          g.release();
        } else {
          const g = sync ? l.readSync() : (i % 3 === 0 ? (l.tryRead() ?? await l.read()) : await l.read());
          const x = a[20];
          for (let j = 0; j < 50; j++) reads += a[23 + (j & 1)];
          if (a[21] !== x) torn++;
          g.release();
        }
      }
      console.log('done ' + torn);
    })();`));
  for (const p of procs) assert.equal(await p.line(), 'done 0');
  assert.equal(cells[20], (rounds / 4) * 8);
  assert.equal(cells[21], (rounds / 4) * 8);
  assert.ok(words(cells, 0).every((v) => v === 0), 'unlocked at the end');
}));

test('worker threads read while the main thread writes', withSegment(async (name, cells, r) => {
  const workers = Array.from({ length: 3 }, () => worker(`
    const { Region, RwLock } = require(${pkg});
    const r = Region.fromHandle(workerData.handle);
    const a = new Int32Array(r.map().buffer);
    const l = new RwLock(a, 16);
    let torn = 0;
    for (let i = 0; i < 2000; i++) {
      const g = l.readSync();
      if (a[40] !== a[41]) torn++;
      g.release();
    }
    post('done ' + torn);`, { handle: r.handle() }));
  const l = new RwLock(cells, 16);
  for (let i = 0; i < 500; i++) {
    const g = await l.write();
    cells[40] = i;
    await new Promise(setImmediate);
    cells[41] = i;
    g.release();
  }
  for (const w of workers) assert.equal(await w.line(), 'done 0');
}));

test('the writer killed with SIGKILL while holding: a sleeping reader and a later writer are each told once', withSegment(async (name, cells) => {
  const h = child(holder(name, 16, 'write'));
  assert.equal(await h.line(), 'held false');
  const reader = child(`
    const { Region, RwLock } = require(${pkg});
    const l = new RwLock(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), 16);
    console.log('waiting');
    l.read().then((g) => { console.log('got ' + g.ownerDied); g.release(); console.log('released'); });`);
  assert.equal(await reader.line(), 'waiting');
  const l = new RwLock(cells, 16);
  assert.equal(l.tryRead(), null, 'held by a live writer');
  assert.equal(l.tryWrite(), null);
  await new Promise((resolve) => setTimeout(resolve, 60));
  h.kill('SIGKILL');
  await h.exited;
  assert.equal(await reader.line(), 'got true', 'the sleeping reader noticed the death');
  assert.equal(await reader.line(), 'released');
  assert.equal(await reader.exited, 0);
  const g = l.tryWrite();
  assert.equal(g?.ownerDied, false, 'told once: the reader was');
  g?.release();

  const h2 = child(holder(name, 16, 'write'));
  assert.equal(await h2.line(), 'held false');
  h2.kill('SIGKILL');
  await h2.exited;
  const w = l.writeSync({ timeoutMs: 5000 });
  assert.equal(w.ownerDied, true, 'a writer takes over from a dead writer');
  w.release();
  const r = l.tryRead();
  assert.equal(r?.ownerDied, false);
  r?.release();
}));

test('a reader killed with SIGKILL, and a reading worker terminated, do not block a writer for good', withSegment(async (name, cells, r) => {
  const h = child(holder(name, 32, 'read'));
  assert.equal(await h.line(), 'held false');
  const l = new RwLock(cells, 32);
  const other = l.tryRead();
  assert.ok(other, 'readers share');
  other.release();
  assert.equal(l.tryWrite(), null, 'a live reader is inside');
  assert.throws(() => l.writeSync({ timeoutMs: 120 }), { code: 'ETIMEDOUT' }, 'slices pass, the reader is checked and found alive');
  assert.equal(cells[32], 0, 'the writer that gave up gave its word back');
  const writing = l.write({ timeoutMs: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 20));
  h.kill('SIGKILL');
  await h.exited;
  const g = await writing;
  assert.equal(g.ownerDied, false, 'a dead reader changed nothing: nobody is told');
  g.release();
  assert.ok(words(cells, 32).every((v) => v === 0), 'its slot was freed');

  const w = worker(`
    const { Region, RwLock } = require(${pkg});
    const r = Region.fromHandle(workerData.handle);
    const l = new RwLock(new Int32Array(r.map().buffer), 32);
    const g = l.readSync();
    post('held');
    setInterval(() => {}, 1000);`, { handle: r.handle() });
  assert.equal(await w.line(), 'held');
  assert.equal(l.tryWrite(), null, 'held by the live worker of this very process');
  const waiting = l.write();
  await w.worker.terminate();
  const g2 = await waiting;
  assert.equal(g2.ownerDied, false);
  g2.release();
  // tryWrite finds a dead reader at once.
  const h3 = child(holder(name, 32, 'read'));
  assert.equal(await h3.line(), 'held false');
  h3.kill('SIGKILL');
  await h3.exited;
  const g3 = l.tryWrite();
  assert.ok(g3, 'tryWrite tests the reader it would wait for');
  g3.release();
}));

test('garbage in the words names no live holder: recovered; a live holder is not taken', withSegment(async (name, cells) => {
  const l = new RwLock(cells, 64);
  cells[64] = 12345; // a writer token nobody holds
  cells[66] = 0x80000000 | 0; // bit 31 alone in a slot
  cells[70] = 777; // a reader token nobody holds
  const g = l.writeSync({ timeoutMs: 2000 });
  assert.equal(g.ownerDied, true);
  assert.ok(words(cells, 64).slice(1).every((v) => v === 0), 'the dead readers\' slots were freed');
  g.release();
  cells[64] = 0x80000000 | 0;
  const r = l.readSync({ timeoutMs: 2000 });
  assert.equal(r.ownerDied, true, 'bit 31 alone in the writer word: no writer, the reader is told');
  r.release();
  assert.ok(words(cells, 64).every((v) => v === 0));
}));

test('an RwLock needs 16 words of a shared writable view: TypeError / RangeError otherwise', withSegment((name, cells, r) => {
  assert.throws(() => new RwLock(new Int32Array(r.map({ access: 'read' }).buffer), 0), { name: 'TypeError', message: /'read'/ });
  assert.throws(() => new RwLock(new Int32Array(r.map({ access: 'cow' }).buffer), 0), { name: 'TypeError', message: /private/ });
  assert.throws(() => new RwLock(new Int32Array(16), 0), { name: 'TypeError' });
  assert.throws(() => new RwLock(cells, cells.length - 15), { name: 'RangeError', message: /16 words/ });
  assert.throws(() => new RwLock(cells, -1), { name: 'RangeError' });
  const last = new RwLock(cells, cells.length - 16);
  last.tryWrite()?.release();
  // It shares tokens with Mutex: a Mutex and an RwLock of one thread live together.
  const m = new Mutex(cells, 0);
  m.acquireSync().release();
}));

test('a closed region: its locks throw ERR_COWSHM_CLOSED instead of touching unmapped memory', async () => {
  const r = Region.create({ size: pageSize });
  const l = new RwLock(new Int32Array(r.map().buffer), 0);
  const g = l.readSync();
  r.close();
  assert.throws(() => g.release(), { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => l.writeSync(), { code: 'ERR_COWSHM_CLOSED' });
  await assert.rejects(l.read(), { code: 'ERR_COWSHM_CLOSED' });
});
