import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Region, pageSize, type View } from 'cowshm';
import { collectGarbage, fdsFor, mapsLineAt, mapsLineContaining, mapsLinesFor, tempDir, rmTemp } from './helpers';

const isClosedError = (what: RegExp) => (err: Error & { code?: string }) => {
  assert.ok(err instanceof TypeError);
  assert.equal(err.code, 'ERR_COWSHM_CLOSED');
  assert.match(err.message, what);
  return true;
};

test('close() detaches the buffer: old TypedArrays read as length 0, view.buffer throws', () => {
  const r = Region.create({ size: 4 * pageSize });
  try {
    const v = r.map();
    const buffer = v.buffer;
    const bytes = new Uint8Array(buffer);
    const words = new Float64Array(buffer, 8, 4);
    const dv = new DataView(buffer);
    bytes[0] = 1;
    v.close();
    assert.equal(v.closed, true);
    assert.equal(buffer.byteLength, 0);
    assert.equal(bytes.length, 0);
    assert.equal(bytes[0], undefined); // out of bounds, not a read of unmapped memory
    assert.equal(words.length, 0);
    assert.throws(() => dv.getUint8(0), TypeError);
    bytes[0] = 5; // a no-op on a detached array, not a crash
    assert.throws(() => v.buffer, isClosedError(/^This view of memfd region \(fd \d+\) is closed$/));
    // The region and its other views are unaffected.
    const other = new Uint8Array(r.map().buffer);
    assert.equal(other[0], 1);
  } finally {
    r.close();
  }
});

test('a closed range is a PROT_NONE reservation until its buffer is collected', async () => {
  const r = Region.create({ size: 16 * pageSize });
  const length = 16 * pageSize;
  const reservedAt = (address: number): boolean => {
    const found = mapsLineContaining(address);
    return found !== undefined && / ---p 00000000 00:00 0 /.test(found.line) && found.end >= address + length;
  };
  try {
    let v: View | undefined = r.map();
    const address = v.address;
    let bytes: Uint8Array | undefined = new Uint8Array(v.buffer);
    assert.match(mapsLineAt(address) ?? '', /^[0-9a-f]+-[0-9a-f]+ rw-s /);
    v.close();
    // The whole range: no access, no file, so nothing else can be mapped there.
    assert.ok(reservedAt(address), mapsLineContaining(address)?.line);
    // Still there after turns of the event loop and GCs, while a TypedArray holds the buffer.
    await collectGarbage();
    assert.ok(reservedAt(address));
    assert.equal(bytes.length, 0);
    bytes = undefined;
    v = undefined;
    await collectGarbage();
    assert.equal(reservedAt(address), false, mapsLineContaining(address)?.line);
  } finally {
    r.close();
  }
});

test('a read(2) still running into a closed view gets EFAULT; nothing else is mapped there meanwhile', async () => {
  const dir = tempDir('pending-read');
  const r = Region.create({ size: 16 * pageSize });
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const fd = fs.openSync(fifo, 'r+'); // O_RDWR: opening does not wait for a writer
  try {
    let v: View | undefined = r.map();
    const address = v.address;
    // The read waits on the thread pool with the view's address in hand.
    const done = new Promise<NodeJS.ErrnoException | null>((resolve) => {
      fs.read(fd, new Uint8Array((v as View).buffer), 0, 64, null, (err) => resolve(err));
    });
    v.close();
    v = undefined;
    await collectGarbage();
    assert.match(mapsLineContaining(address)?.line ?? '', / ---p /);
    const later = Array.from({ length: 32 }, () => r.map());
    assert.ok(later.every((view) => view.address !== address), 'a new view landed on the closed range');
    fs.writeSync(fd, 'data for a view that is gone');
    const err = await done;
    assert.equal(err?.code, 'EFAULT');
    await collectGarbage();
    assert.doesNotMatch(mapsLineContaining(address)?.line ?? '', / ---p 00000000 00:00 0 /);
  } finally {
    fs.closeSync(fd);
    r.close();
    rmTemp(dir);
  }
});

test('region.close() detaches every view of that region, and only of that region', () => {
  const a = Region.create({ size: 2 * pageSize });
  const b = Region.create({ size: pageSize });
  try {
    const views = [a.map(), a.map({ access: 'read' }), a.map({ access: 'cow', offset: pageSize })];
    const arrays = views.map((v) => new Uint8Array(v.buffer));
    const keep = new Uint8Array(b.map().buffer);
    keep[0] = 9;
    a.close();
    assert.equal(a.closed, true);
    for (const [i, v] of views.entries()) {
      assert.equal(v.closed, true);
      assert.equal(arrays[i]?.length, 0);
      assert.throws(() => v.buffer, isClosedError(/is closed$/));
      v.close(); // closing a view of a closed region is fine
    }
    assert.equal(keep[0], 9);
    assert.equal(keep.length, pageSize);
  } finally {
    a.close();
    b.close();
  }
});

test('close() is idempotent on views and regions, in any order', () => {
  const r = Region.create({ size: pageSize });
  const v = r.map();
  v.close();
  v.close();
  r.close();
  r.close();
  v.close();
  const r2 = Region.create({ size: pageSize });
  const v2 = r2.map();
  r2.close();
  v2.close();
  r2.close();
  assert.equal(v2.closed, true);
});

test('Symbol.dispose: `using` closes views and regions at the end of the block', () => {
  let bytes: Uint8Array;
  let region: Region;
  let inner: Uint8Array;
  {
    using r = Region.create({ size: pageSize });
    region = r;
    {
      using v = r.map();
      inner = new Uint8Array(v.buffer);
      assert.equal(inner.length, pageSize);
    }
    assert.equal(inner.length, 0);
    bytes = new Uint8Array(r.map().buffer);
    assert.equal(bytes.length, pageSize);
  }
  assert.equal(region.closed, true);
  assert.equal(bytes.length, 0);
});

test('the limit of 16384 views counts open views only: closed ones free their place at once', () => {
  const r = Region.create({ size: pageSize });
  try {
    // Far more than the limit, closed as they go, with no chance for GC to run in between.
    for (let i = 0; i < 20000; i++) r.map().close();
    const open: View[] = [];
    try {
      for (;;) open.push(r.map());
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'EMFILE');
      assert.match((err as Error).message, /too many cowshm views are open in this process \(the limit is 16384\); close views you no longer need/);
    }
    assert.ok(open.length > 16000 && open.length <= 16384, String(open.length)); // other files' views may share the process
    open.pop()?.close();
    open.push(r.map()); // one closed, one more may open
    for (const v of open) v.close();
  } finally {
    r.close();
  }
});

// An ArrayBuffer used as an asm.js heap can no longer be detached. close()
// then swaps the mapping for private zero pages instead: the module keeps
// running on memory of its own, and the region's memory and descriptor go.
function asmHeap(buffer: ArrayBuffer): { get(i: number): number; set(i: number, v: number): void } {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const module = new Function(
    'stdlib',
    'foreign',
    'heap',
    '"use asm";\nvar h = new stdlib.Uint8Array(heap);\n' +
      'function get(i) { i = i | 0; return h[i] | 0; }\n' +
      'function set(i, v) { i = i | 0; v = v | 0; h[i] = v; }\nreturn { get: get, set: set };',
  ) as (stdlib: unknown, foreign: unknown, heap: ArrayBuffer) => ReturnType<typeof asmHeap>;
  return module(globalThis, null, buffer);
}

for (const how of ['view.close()', 'region.close()'] as const) {
  test(`${how} with a buffer that is an asm.js heap: closes fully, frees the descriptor, the heap reads zeros`, () => {
    const r = Region.create({ size: 1 << 16 });
    const { dev, ino } = r;
    const v = r.map();
    const plain = r.map();
    const plainBytes = new Uint8Array(plain.buffer);
    const heap = asmHeap(v.buffer);
    const address = v.address;
    heap.set(3, 9);
    assert.equal(plainBytes[3], 9);
    try {
      if (how === 'view.close()') v.close();
      r.close();
      assert.equal(v.closed, true);
      assert.equal(r.closed, true);
      assert.throws(() => v.buffer, isClosedError(/is closed$/));
      // The heap could not be detached: it keeps its length, on pages of its own.
      assert.equal(heap.get(3), 0);
      heap.set(4, 1);
      assert.equal(heap.get(4), 1);
      assert.match(mapsLineContaining(address)?.line ?? '', / rw-p 00000000 00:00 0 /);
      assert.equal(plainBytes.length, 0, 'the other view is detached as usual');
      assert.deepEqual(fdsFor(dev, ino), [], 'the descriptor is closed');
      assert.deepEqual(mapsLinesFor(dev, ino), [], 'nothing maps the region any more');
    } finally {
      try {
        r.close();
      } catch {
        // Reported by the assertions above.
      }
    }
  });
}
