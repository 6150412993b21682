// Mutex: a lock in a word of a region, across processes and threads, told
// when its owner died.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, Mutex, OWNER_BASE, pageSize } from 'cowshm';
import * as path from 'node:path';
import type * as Locks from '../dist/locks';
import { child, worker, pkg } from './atomics-helpers';
import { withSegment as withSegmentTagged, holder as lockHolder } from './mutex-helpers';

const locks: typeof Locks = require(path.join(__dirname, '..', '..', 'dist', 'locks'));
const withSegment = (fn: Parameters<typeof withSegmentTagged>[1]) => withSegmentTagged('mutex', fn);
const holder = (name: string, index: number, options?: string) => lockHolder(name, 'Mutex', index, 'acquireSync', options);

test('tryAcquire, release, guards: the word says who holds it; releasing what is not held throws', withSegment((name, cells) => {
  const m = new Mutex(cells, 16);
  const g = m.tryAcquire();
  assert.ok(g);
  assert.equal(g.ownerDied, false);
  assert.equal(m.held, true);
  assert.notEqual(cells[16], 0, 'the word names the owner');
  assert.equal(m.tryAcquire(), null, 'held, even by this thread');
  g.release();
  assert.equal(cells[16], 0, 'unlocked is 0');
  assert.throws(() => g.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  assert.throws(() => m.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  const g2 = m.acquireSync();
  m.release();
  g2[Symbol.dispose](); // released already: nothing happens
  const g3 = m.tryAcquire();
  assert.ok(g3);
  g3[Symbol.dispose]();
  assert.equal(cells[16], 0);
  const other = new Mutex(cells, 16);
  assert.throws(() => other.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' }, 'another Mutex object holds nothing');
}));

test('acquireSync: EDEADLK when this thread holds it, ETIMEDOUT after timeoutMs; acquire(): timeout and AbortSignal', withSegment(async (name, cells) => {
  const m = new Mutex(cells, 0);
  const g = m.acquireSync();
  assert.throws(() => new Mutex(cells, 0).acquireSync(), { code: 'EDEADLK' });
  const p = child(`
    const { Region, Mutex } = require(${pkg});
    const m = new Mutex(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), 0);
    const t0 = Date.now();
    try { m.acquireSync({ timeoutMs: 60 }); console.log('acquired'); }
    catch (e) { console.log(e.code + ' ' + (Date.now() - t0 >= 59)); }`);
  assert.equal(await p.line(), 'ETIMEDOUT true');
  await assert.rejects(m.acquire({ timeoutMs: 30 }), { code: 'ETIMEDOUT' }, 'this thread holds it: acquire() waits, and times out');
  const ac = new AbortController();
  const waiting = m.acquire({ signal: ac.signal });
  setTimeout(() => ac.abort(new Error('stop')), 20);
  await assert.rejects(waiting, /stop/);
  await assert.rejects(m.acquire({ signal: AbortSignal.abort() }), { name: 'AbortError' });
  assert.throws(() => m.acquireSync({ timeoutMs: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  g.release();
}));

test('acquire(): the event loop runs while it waits; this thread\'s waiters get the lock when it is released', withSegment(async (name, cells) => {
  const m = new Mutex(cells, 4);
  const first = await m.acquire();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  const second = m.acquire();
  setTimeout(() => first.release(), 100);
  const g = await second;
  clearInterval(timer);
  assert.ok(ticks >= 2, `timers fired ${ticks} times while acquire() waited`);
  assert.equal(g.ownerDied, false);
  g.release();
}));

test('a Mutex needs a shared writable view: read, copy-on-write, snapshot and plain arrays are TypeErrors', withSegment((name, cells, r) => {
  assert.throws(() => new Mutex(new Int32Array(r.map({ access: 'read' }).buffer), 0), { name: 'TypeError', message: /'read'/ });
  assert.throws(() => new Mutex(new Int32Array(r.map({ access: 'cow' }).buffer), 0), { name: 'TypeError', message: /private/ });
  const s = r.snapshot();
  try {
    assert.throws(() => new Mutex(new Int32Array(s.buffer), 0), { name: 'TypeError', message: /private/ });
  } finally {
    s.release();
  }
  assert.throws(() => new Mutex(new Int32Array(8), 0), { name: 'TypeError' });
  assert.throws(() => new Mutex(new BigInt64Array(cells.buffer) as unknown as Int32Array, 0), { name: 'TypeError', message: /64-bit/ });
  assert.throws(() => new Mutex(cells, cells.length), { name: 'RangeError' });
  assert.throws(() => new Mutex(cells, -1), { name: 'RangeError' });
}));

test('8 processes contending for N rounds each: the shared counter ends at exactly N x 8', withSegment(async (name, cells) => {
  const rounds = 300;
  const procs = Array.from({ length: 8 }, (_, k) => child(`
    const { Region, Mutex } = require(${pkg});
    const a = new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer);
    const m = new Mutex(a, 0);
    (async () => {
      for (let i = 0; i < ${rounds}; i++) {
        const g = ${k % 2 === 0} ? m.acquireSync() : (i % 3 === 0 ? (m.tryAcquire() ?? await m.acquire()) : await m.acquire());
        const v = a[1];           // not atomic: only the lock keeps it exact
        for (let j = 0; j < 50; j++) a[2] = j;
        a[1] = v + 1;
        g.release();
      }
      console.log('done');
    })();`));
  for (const p of procs) assert.equal(await p.line(), 'done');
  assert.equal(cells[1], rounds * 8);
  assert.equal(cells[0], 0, 'unlocked at the end');
}));

test('the holder killed with SIGKILL: a waiter already asleep and a later tryAcquire are told ownerDied', withSegment(async (name, cells) => {
  const h = child(holder(name, 8));
  assert.equal(await h.line(), 'held false');
  const waiter = child(`
    const { Region, Mutex } = require(${pkg});
    const m = new Mutex(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), 8);
    console.log('waiting');
    m.acquire().then((g) => { console.log('got ' + g.ownerDied); g.release(); console.log('released'); });`);
  assert.equal(await waiter.line(), 'waiting');
  const m = new Mutex(cells, 8);
  assert.equal(m.tryAcquire(), null, 'held by a live process');
  await new Promise((resolve) => setTimeout(resolve, 60));
  h.kill('SIGKILL');
  await h.exited;
  assert.equal(await waiter.line(), 'got true', 'the sleeping waiter noticed the death');
  assert.equal(await waiter.line(), 'released');
  assert.equal(await waiter.exited, 0);

  const h2 = child(holder(name, 8));
  assert.equal(await h2.line(), 'held false', 'released cleanly by the waiter: nobody died since');
  h2.kill('SIGKILL');
  await h2.exited;
  const g = m.tryAcquire();
  assert.ok(g, 'tryAcquire takes a dead owner\'s lock');
  assert.equal(g.ownerDied, true);
  g.release();
  const again = m.tryAcquire();
  assert.equal(again?.ownerDied, false, 'once released, the next owner is told nothing');
  again?.release();
}));

test('a worker holding the lock, terminated while its process lives: the next acquirer is told', withSegment(async (name, cells, r) => {
  const w = worker(`
    const { Region, Mutex } = require(${pkg});
    const r = Region.fromHandle(workerData.handle);
    const m = new Mutex(new Int32Array(r.map().buffer), 12);
    const g = m.acquireSync();
    post('held');
    setInterval(() => {}, 1000);`, { handle: r.handle() });
  assert.equal(await w.line(), 'held');
  const m = new Mutex(cells, 12);
  assert.equal(m.tryAcquire(), null, 'held by the live worker of this very process');
  const waiting = m.acquire();
  await w.worker.terminate();
  const g = await waiting;
  assert.equal(g.ownerDied, true);
  g.release();
}));

test('an owner is a lock the kernel holds, not a pid: a token nobody holds is dead, a live one is not taken', withSegment(async (name, cells, r) => {
  const m = new Mutex(cells, 20);
  // A word naming a token that no process holds (a dead owner whose pid was
  // reused by a live process would look the same to a pid check: here no
  // lock backs it, so it is dead whatever runs under that pid).
  Atomics.store(cells, 20, process.pid);
  const g = m.tryAcquire();
  assert.equal(g?.ownerDied, true);
  g?.release();
  // Garbage: bit 31 alone.
  Atomics.store(cells, 20, 0x80000000 | 0);
  const g2 = m.acquireSync({ timeoutMs: 1000 });
  assert.equal(g2.ownerDied, true);
  g2.release();
  // A live holder in another process keeps its lock even if the word is
  // rewritten with its own token by someone else.
  const h = child(holder(name, 20));
  assert.equal(await h.line(), 'held false');
  const token = Atomics.load(cells, 20) & 0x7fffffff;
  assert.ok(token > 0);
  assert.equal(m.tryAcquire(), null);
  assert.throws(() => m.acquireSync({ timeoutMs: 120 }), { code: 'ETIMEDOUT' }, 'slices passed, the owner is checked and found alive');
  // The token is the OFD lock on its byte of the region's file.
  const fs = await import('node:fs');
  const fd = fs.openSync(`/dev/shm/${name}`, 'r+');
  try {
    assert.equal(locks.lockRange(fd, OWNER_BASE + token, 1, 'shared'), false, 'the holder\'s byte is locked');
    h.kill('SIGKILL');
    await h.exited;
    assert.equal(locks.lockRange(fd, OWNER_BASE + token, 1, 'shared'), true, 'the kernel dropped it with the holder');
    locks.unlockRange(fd, OWNER_BASE + token, 1);
  } finally {
    fs.closeSync(fd);
  }
  const g3 = m.acquireSync();
  assert.equal(g3.ownerDied, true);
  g3.release();
}));

test('a guard names one hold: a stale guard cannot release a later hold of the same Mutex', withSegment((name, cells) => {
  const m = new Mutex(cells, 24);
  const first = m.acquireSync();
  first.release();
  const second = m.tryAcquire();
  assert.ok(second);
  assert.throws(() => first.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  first[Symbol.dispose]();
  assert.equal(m.held, true, 'the later hold is still held');
  assert.notEqual(cells[24], 0);
  second.release();
  assert.equal(cells[24], 0);
}));

test('a closed region: acquiring and releasing throw ERR_COWSHM_CLOSED instead of touching unmapped memory', async () => {
  const r = Region.create({ size: pageSize });
  const m = new Mutex(new Int32Array(r.map().buffer), 0);
  // The fast paths hot (optimized, inlined here) before the region closes.
  for (let i = 0; i < 100_000; i++) {
    m.tryAcquire()!.release();
    m.acquireSync().release();
  }
  const g = m.acquireSync();
  r.close();
  assert.throws(() => g.release(), { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => m.tryAcquire(), { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => m.acquireSync(), { code: 'ERR_COWSHM_CLOSED' });
  await assert.rejects(m.acquire(), { code: 'ERR_COWSHM_CLOSED' });
});

const CONSISTENT = '{ requireConsistent: true }';
const NOT_RECOVERABLE = 0x7fffffff;

test('requireConsistent: the acquirer after a death is told ownerDied, marks the lock consistent, and it stays usable; dying before that tells the next one again', withSegment(async (name, cells) => {
  const at = 28;
  const h = child(holder(name, at, CONSISTENT));
  assert.equal(await h.line(), 'held false');
  h.kill('SIGKILL');
  await h.exited;
  const h2 = child(holder(name, at, CONSISTENT));
  assert.equal(await h2.line(), 'held true', 'the recovering holder is told');
  h2.kill('SIGKILL'); // dies before markConsistent(): still inconsistent
  await h2.exited;
  const m = new Mutex(cells, at, { requireConsistent: true });
  const g = m.acquireSync();
  assert.equal(g.ownerDied, true, 'told again: nobody said the data was repaired');
  g.markConsistent();
  g.markConsistent(); // once or twice, the same
  g.release();
  assert.equal(cells[at], 0, 'unlocked, not "not recoverable"');
  assert.throws(() => g.markConsistent(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' }, 'a released guard');
  const g2 = m.tryAcquire();
  assert.equal(g2?.ownerDied, false);
  g2?.markConsistent(); // nothing to mark: changes nothing
  g2?.release();
  assert.equal(cells[at], 0);
  assert.throws(() => new Mutex(cells, at, { requireConsistent: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => new Mutex(cells, at, 'x' as unknown as object), { code: 'ERR_INVALID_ARG_TYPE' });
}));

test('requireConsistent: released after ownerDied without markConsistent(), the lock is not recoverable for every acquirer, a sleeping one in another process too', withSegment(async (name, cells) => {
  const at = 32;
  const h = child(holder(name, at, CONSISTENT));
  assert.equal(await h.line(), 'held false');
  h.kill('SIGKILL');
  await h.exited;
  const m = new Mutex(cells, at, { requireConsistent: true });
  const g = m.tryAcquire();
  assert.equal(g?.ownerDied, true);
  const waiter = child(`
    const { Region, Mutex } = require(${pkg});
    const m = new Mutex(new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer), ${at});
    console.log('waiting');
    m.acquire().then(() => console.log('acquired'), (e) => console.log(e.code));`);
  assert.equal(await waiter.line(), 'waiting');
  await new Promise((resolve) => setTimeout(resolve, 30));
  g?.release(); // without markConsistent()
  assert.equal(m.held, false);
  assert.equal((cells[at] ?? 0) & NOT_RECOVERABLE, NOT_RECOVERABLE, 'the word says so, for C programs too');
  assert.equal(await waiter.line(), 'ENOTRECOVERABLE', 'the sleeping waiter was woken and told');
  assert.equal(await waiter.exited, 0);
  assert.throws(() => m.tryAcquire(), { code: 'ENOTRECOVERABLE' });
  assert.throws(() => m.acquireSync({ timeoutMs: 1000 }), { code: 'ENOTRECOVERABLE' });
  await assert.rejects(m.acquire(), { code: 'ENOTRECOVERABLE' });
  const plain = new Mutex(cells, at); // without the option: the state is the word's, not the object's
  assert.throws(() => plain.acquireSync(), { code: 'ENOTRECOVERABLE' });
  assert.throws(() => g?.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD' });
  g?.[Symbol.dispose](); // released already: nothing happens
  // The documented way back, once the application has repaired the data: store 0.
  Atomics.store(cells, at, 0);
  const g3 = m.tryAcquire();
  assert.equal(g3?.ownerDied, false);
  g3?.release();
  assert.equal(cells[at], 0);
}));

test('requireConsistent: a worker terminated holding the lock; the next holder disposes of its guard without markConsistent(): not recoverable; without the option it is released as before', withSegment(async (name, cells, r) => {
  for (const [at, options] of [[36, CONSISTENT], [40, '{}']] as const) {
    const w = worker(`
      const { Region, Mutex } = require(${pkg});
      const r = Region.fromHandle(workerData.handle);
      const m = new Mutex(new Int32Array(r.map().buffer), ${at}, ${options});
      const g = m.acquireSync();
      post('held');
      setInterval(() => {}, 1000);`, { handle: r.handle() });
    assert.equal(await w.line(), 'held');
    const m = new Mutex(cells, at, options === CONSISTENT ? { requireConsistent: true } : {});
    const waiting = m.acquire();
    await w.worker.terminate();
    {
      using g = await waiting;
      assert.equal(g.ownerDied, true);
    }
    if (options === CONSISTENT) {
      assert.equal(cells[at], NOT_RECOVERABLE);
      assert.throws(() => m.tryAcquire(), { code: 'ENOTRECOVERABLE' });
    } else {
      assert.equal(cells[at], 0);
      const g = m.tryAcquire();
      assert.equal(g?.ownerDied, false);
      g?.release();
    }
  }
}));

test('a word another program overwrote while this thread held the lock: release says so and puts back what it found', withSegment((name, cells) => {
  const m = new Mutex(cells, 44);
  const g = m.acquireSync();
  Atomics.store(cells, 44, 12345); // a token nobody holds
  assert.throws(() => g.release(), { code: 'ERR_COWSHM_LOCK_NOT_HELD', message: /overwrote/ });
  assert.equal(cells[44], 12345, 'left as the other program wrote it');
  assert.equal(m.held, false);
  const g2 = m.tryAcquire();
  assert.equal(g2?.ownerDied, true, 'a word naming nobody is recovered, and the acquirer told');
  g2?.release();
  assert.equal(cells[44], 0);
}));
