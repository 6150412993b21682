// atomics.wait / waitAsync / notify on words of a region: the standard's
// coercions and results, this process's waiters, workers, closing, aborting.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, atomics, pageSize } from 'cowshm';
import { worker, pkg } from './atomics-helpers';
import { uniqueName } from './helpers';

function withCells(fn: (cells: Int32Array, r: Region) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const r = Region.create({ size: 4 * pageSize });
    try {
      await fn(new Int32Array(r.map().buffer), r);
    } finally {
      r.close();
    }
  };
}

/** What a call did: its result, or the class of the error it threw. */
function outcome(fn: () => unknown): string {
  try {
    return `returned ${String(fn())}`;
  } catch (err) {
    return `threw ${(err as Error).constructor.name}`;
  }
}

test('index, value and timeout are coerced exactly as Atomics.wait and Atomics.notify coerce them', withCells((cells) => {
  const standard = new Int32Array(new SharedArrayBuffer(cells.byteLength));
  cells[1] = standard[1] = 5;
  const indexes: unknown[] = [0, 1, '1', 1.9, -0, -0.5, '0x1', null, false, true, undefined, NaN, [1], -1, -Infinity,
    cells.length, cells.length - 1, 2 ** 53, Infinity, 1n, Symbol('x'), {}];
  const values: unknown[] = [5, '5', 5.7, 2 ** 32 + 5, -(2 ** 32) + 5, 0, undefined, NaN, 1n];
  const timeouts: unknown[] = [0, -1, -Infinity, '0', null, false, 1n];
  for (const index of indexes)
    for (const value of values)
      for (const timeout of timeouts) {
        const args = [index, value, timeout] as [number, number, number];
        const what = `wait(ta, ${String(index)}, ${String(value)}, ${String(timeout)})`;
        assert.equal(outcome(() => atomics.wait(cells, ...args)), outcome(() => Atomics.wait(standard, ...args)), what);
        const a = outcome(() => atomics.waitAsync(cells, ...args).value);
        const b = outcome(() => (Atomics as unknown as { waitAsync: (...a: unknown[]) => { value: unknown } }).waitAsync(standard, ...args).value);
        assert.equal(a, b, `waitAsync: ${what}`);
      }
  for (const index of indexes)
    for (const count of [undefined, 0, 1, -1, NaN, Infinity, '2', 1.5, null, 1n]) {
      const what = `notify(ta, ${String(index)}, ${String(count)})`;
      assert.equal(outcome(() => atomics.notify(cells, index as number, count as number)),
        outcome(() => Atomics.notify(standard, index as number, count as number)), what);
    }
}));

test('wait: not-equal at once, timed-out after the timeout', withCells((cells) => {
  cells[3] = 7;
  assert.equal(atomics.wait(cells, 3, 8), 'not-equal');
  const t0 = performance.now();
  assert.equal(atomics.wait(cells, 3, 7, 30), 'timed-out');
  assert.ok(performance.now() - t0 >= 29, 'slept for the timeout');
  assert.equal(atomics.wait(cells, 3, 7, -5), 'timed-out', 'a negative timeout is 0');
  assert.equal(atomics.wait(cells, 3, 7 + 2 ** 32, 0), 'timed-out', 'the value is ToInt32(value)');
}));

/** Resolves once `n` of the promises have settled, with their values. */
async function settled<T>(promises: Promise<T>[], n: number): Promise<T[]> {
  const done: T[] = [];
  await new Promise<void>((resolve) => {
    for (const p of promises) void p.then((v) => { done.push(v); if (done.length === n) resolve(); });
  });
  return done;
}

for (const asleep of [false, true])
  test(`waitAsync: results as Atomics.waitAsync; notify wakes this thread's waiters and counts each once (${asleep ? 'asleep in the kernel' : 'just filed'})`, withCells(async (cells) => {
    assert.deepEqual(atomics.waitAsync(cells, 0, 1), { async: false, value: 'not-equal' });
    assert.deepEqual(atomics.waitAsync(cells, 0, 0, 0), { async: false, value: 'timed-out' });
    const waits = [0, 1, 2].map(() => {
      const w = atomics.waitAsync(cells, 0, 0);
      assert.equal(w.async, true);
      return w.value as Promise<string>;
    });
    const other = atomics.waitAsync(cells, 1, 0, 60);
    if (asleep) await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(atomics.notify(cells, 0, 0), 0, 'count 0 wakes nobody');
    assert.equal(atomics.notify(cells, 0, -3), 0, 'a negative count is 0');
    assert.equal(atomics.notify(cells, 0, 2), 2, 'wakes exactly two');
    assert.deepEqual(await settled(waits, 2), ['ok', 'ok']);
    assert.equal(atomics.notify(cells, 0), 1, 'the third one');
    assert.deepEqual(await Promise.all(waits), ['ok', 'ok', 'ok']);
    assert.equal(atomics.notify(cells, 0), 0, 'nobody is left');
    assert.equal(await other.value, 'timed-out', 'a wait on another word was not woken');
  }));

test('a wait is woken through another view of the same region, at another address', withCells(async (cells, r) => {
  const second = new Int32Array(r.map({ offset: pageSize }).buffer);
  const w = atomics.waitAsync(cells, pageSize / 4 + 2, 0);
  assert.equal(atomics.notify(second, 2), 1);
  assert.equal(await w.value, 'ok');
  // A file region too.
}));

test('the event loop keeps running (timers fire) while a wait is awaited', withCells(async (cells) => {
  let ticks = 0;
  const timer = setInterval(() => {
    ticks++;
    if (ticks === 5) {
      Atomics.store(cells, 0, 1);
      atomics.notify(cells, 0);
    }
  }, 5);
  try {
    const w = atomics.waitAsync(cells, 0, 0);
    assert.equal(await w.value, 'ok');
    assert.ok(ticks >= 5, `the timer fired ${ticks} times during the wait`);
  } finally {
    clearInterval(timer);
  }
}));

test('closing the region settles a pending waitAsync with ERR_COWSHM_CLOSED; a closed view cannot be waited on', async () => {
  const r = Region.create({ size: pageSize });
  const view = r.map();
  const cells = new Int32Array(view.buffer);
  const w = atomics.waitAsync(cells, 0, 0);
  const v = r.map();
  const other = new Int32Array(v.buffer);
  const w2 = atomics.waitAsync(other, 1, 0);
  view.close(); // closing one view ends only the waits on it
  await assert.rejects(w.value as Promise<string>, { code: 'ERR_COWSHM_CLOSED' });
  r.close();
  await assert.rejects(w2.value as Promise<string>, { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => atomics.wait(cells, 0, 0), { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => atomics.notify(cells, 0), { code: 'ERR_COWSHM_CLOSED' });
});

test('an AbortSignal ends a pending waitAsync with its reason', withCells(async (cells) => {
  const ac = new AbortController();
  const w = atomics.waitAsync(cells, 0, 0, undefined, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('enough')), 10);
  await assert.rejects(w.value as Promise<string>, /enough/);
  assert.equal(atomics.notify(cells, 0), 0, 'the aborted wait is gone');
  const done = AbortSignal.abort();
  await assert.rejects(atomics.waitAsync(cells, 0, 0, undefined, { signal: done }).value as Promise<string>, { name: 'AbortError' });
  assert.throws(() => atomics.waitAsync(cells, 0, 0, undefined, { signal: {} as AbortSignal }), { code: 'ERR_INVALID_ARG_TYPE' });
}));

test('what cannot be waited on is a TypeError saying why', withCells((cells, r) => {
  assert.throws(() => atomics.wait(new BigInt64Array(cells.buffer) as unknown as Int32Array, 0, 0), {
    name: 'TypeError',
    message: /Linux has no 64-bit futex wait/,
  });
  assert.throws(() => atomics.notify(new BigInt64Array(4) as unknown as Int32Array, 0), { name: 'TypeError' });
  assert.throws(() => atomics.wait(new Uint32Array(cells.buffer) as unknown as Int32Array, 0, 0), { name: 'TypeError' });
  assert.throws(() => atomics.wait([0] as unknown as Int32Array, 0, 0), { name: 'TypeError' });
  assert.throws(() => atomics.wait(new Int32Array(4), 0, 0), { name: 'TypeError', message: /cowshm view/ });
  assert.throws(() => atomics.notify(new Int32Array(new SharedArrayBuffer(8)), 0), { name: 'TypeError' });
  const cow = new Int32Array(r.map({ access: 'cow' }).buffer);
  assert.throws(() => atomics.wait(cow, 0, 0), { name: 'TypeError', message: /private/ });
  assert.throws(() => atomics.waitAsync(cow, 0, 0), { name: 'TypeError', message: /private/ });
  assert.throws(() => atomics.notify(cow, 0), { name: 'TypeError', message: /private/ });
  const snap = r.snapshot();
  try {
    assert.throws(() => atomics.wait(new Int32Array(snap.buffer), 0, 0), { name: 'TypeError', message: /private/ });
  } finally {
    snap.release();
  }
  assert.throws(() => atomics.wait(cells, cells.length, 0), { name: 'RangeError' });
  // A 'read' view can wait (and be notified).
  const read = new Int32Array(r.map({ access: 'read' }).buffer);
  assert.equal(atomics.wait(read, 0, 0, 1), 'timed-out');
  assert.equal(atomics.notify(read, 0), 0);
}));

test('a file region\'s words can be waited on too', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowshm-atomics-'));
  try {
    const r = Region.openFile(path.join(dir, 'f'), { create: true, size: pageSize });
    const a = new Int32Array(r.map().buffer);
    const b = new Int32Array(r.map({ access: 'read' }).buffer);
    const w = atomics.waitAsync(b, 9, 0);
    assert.equal(atomics.notify(a, 9), 1);
    assert.equal(await w.value, 'ok');
    r.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const pingPong = (sync: boolean) => `
  const { Region, atomics } = require(${pkg});
  const r = Region.fromHandle(workerData.handle);
  const a = new Int32Array(r.map().buffer);
  const [mine, rounds] = [workerData.mine, workerData.rounds];
  (async () => {
    for (let i = 0; i < rounds; i++) {
      const want = 2 * i + mine;
      for (let v; (v = Atomics.load(a, 0)) !== want; ) {
        if (${sync}) atomics.wait(a, 0, v);
        else { const w = atomics.waitAsync(a, 0, v); if (w.async) await w.value; }
      }
      Atomics.store(a, 0, want + 1);
      atomics.notify(a, 0);
    }
    post('done ' + Atomics.load(a, 0));
    r.close();
  })();`;

test('ping-pong between two worker threads: one blocking in wait, one awaiting waitAsync', withCells(async (cells, r) => {
  const rounds = 2000;
  const a = worker(pingPong(true), { handle: r.handle(), mine: 0, rounds });
  const b = worker(pingPong(false), { handle: r.handle(), mine: 1, rounds });
  assert.match(await a.line(), /^done (\d+)$/);
  assert.match(await b.line(), /^done (\d+)$/);
  assert.equal(cells[0], 2 * rounds);
  await Promise.all([a.exited, b.exited]);
}));

test('a worker blocked in wait() ends when it is terminated', withCells(async (cells, r) => {
  const w = worker(`
    const { Region, atomics } = require(${pkg});
    const a = new Int32Array(Region.fromHandle(workerData.handle).map().buffer);
    post('waiting');
    atomics.wait(a, 0, 0);
    post('woken');`, { handle: r.handle() });
  assert.equal(await w.line(), 'waiting');
  await new Promise((resolve) => setTimeout(resolve, 30));
  await w.worker.terminate();
  assert.equal(await w.exited, 1);
  assert.equal(atomics.notify(cells, 0), 0, 'its wait is gone');
}));

test('a worker that ends with waits pending leaves nothing behind', withCells(async (cells, r) => {
  const w = worker(`
    const { Region, atomics } = require(${pkg});
    const a = new Int32Array(Region.fromHandle(workerData.handle).map().buffer);
    for (let i = 0; i < 4; i++) atomics.waitAsync(a, i, 0);
    post('waiting');`, { handle: r.handle() });
  assert.equal(await w.line(), 'waiting');
  await w.worker.terminate();
  for (let i = 0; i < 4; i++) assert.equal(atomics.notify(cells, i), 0);
}));

test('a pending waitAsync keeps its array alive: collecting everything else does not close the view under it', async () => {
  const gc = (globalThis as { gc?: () => void }).gc as () => void;
  const r = Region.create({ size: pageSize });
  try {
    const handle = r.handle();
    const w = atomics.waitAsync(new Int32Array(r.map().buffer), 3, 0);
    for (let i = 0; i < 5; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const other = Region.fromHandle(handle);
    try {
      assert.equal(atomics.notify(new Int32Array(other.map().buffer), 3), 1);
    } finally {
      other.close();
    }
    assert.equal(await w.value, 'ok');
  } finally {
    r.close();
  }
});

test('a blocking wait whose page is truncated away under it throws EFAULT (syscall futex)', async () => {
  const name = uniqueName('atomics-trunc');
  const r = Region.create({ name, size: 4 * pageSize });
  try {
    const w = worker(`
      const { Region, atomics } = require(${pkg});
      const a = new Int32Array(Region.fromHandle(workerData.handle).map().buffer);
      post('waiting');
      try {
        post('returned ' + atomics.wait(a, 1024, 0));
      } catch (err) {
        post('threw ' + err.code + ' ' + err.syscall);
      }`, { handle: r.handle() });
    assert.equal(await w.line(), 'waiting');
    await new Promise((resolve) => setTimeout(resolve, 30));
    // What another process could do: the worker's wait sees it when it next enters the kernel (its next slice).
    fs.ftruncateSync(r.fd, 0);
    assert.equal(await w.line(), 'threw EFAULT futex');
    assert.equal(await w.exited, 0);
  } finally {
    r.close();
    r.unlink();
  }
});
