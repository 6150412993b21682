import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fc from 'fast-check';
import { Region, iota, sum } from 'cowshm';
import { uniqueName } from './helpers';

const types = [
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array,
] as const;

test('iota writes what a[i] = start + i writes, for every number array type', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...types),
      fc.integer({ min: 0, max: 300 }),
      fc.oneof(fc.integer({ min: -70000, max: 70000 }), fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), fc.constantFrom(2 ** 31 - 5, 2 ** 32 - 5, 16777210)),
      (T, n, start) => {
        const got = iota(new T(n), start);
        const want = new T(n);
        for (let i = 0; i < n; i++) want[i] = start + i;
        assert.deepEqual(Array.from(got), Array.from(want));
      },
    ),
  );
});

test('iota with a step writes what a[i] = start + i * step writes', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...types),
      fc.integer({ min: 0, max: 200 }),
      fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
      fc.integer({ min: -(2 ** 20), max: 2 ** 20 }),
      (T, n, start, step) => {
        const got = iota(new T(n), start, step);
        const want = new T(n);
        for (let i = 0; i < n; i++) want[i] = start + i * step;
        assert.deepEqual(Array.from(got), Array.from(want));
      },
    ),
  );
});

test('iota on bigint arrays writes BigInt(start + i), wrapping like BigInt64Array does', () => {
  for (const T of [BigInt64Array, BigUint64Array]) {
    for (const start of [0, -3, 2 ** 53 - 20]) {
      const got = iota(new T(10), start);
      const want = new T(10);
      for (let i = 0; i < 10; i++) want[i] = BigInt(start + i);
      assert.deepEqual(got, want);
    }
  }
});

test('iota fills a subarray of a shared view, and sum() agrees with N(N-1)/2', () => {
  const name = uniqueName('iota');
  const r = Region.create({ name, size: 1 << 20 });
  try {
    const a = new Int32Array(r.map().buffer);
    a.fill(-1);
    iota(a.subarray(8, 16), 100);
    assert.deepEqual(Array.from(a.subarray(6, 18)), [-1, -1, 100, 101, 102, 103, 104, 105, 106, 107, -1, -1]);
    iota(a);
    const n = BigInt(a.length);
    assert.equal(sum(new Int32Array(r.map().buffer)), (n * (n - 1n)) / 2n);
  } finally {
    r.unlink();
    r.close();
  }
});

test('iota rejects what is not a TypedArray, and starts that leave the safe integers', () => {
  assert.throws(() => iota([1, 2] as unknown as Int32Array), { name: 'TypeError', message: /"array" argument/ });
  assert.throws(() => iota(new DataView(new ArrayBuffer(4)) as unknown as Int32Array), { name: 'TypeError' });
  assert.throws(() => iota(new Int32Array(2), '1' as unknown as number), { name: 'TypeError', message: /"start" argument/ });
  assert.throws(() => iota(new Int32Array(2), 0.5), { name: 'RangeError', message: /"start" argument/ });
  assert.throws(() => iota(new Int32Array(2), Number.MAX_SAFE_INTEGER), { name: 'RangeError', message: /"start" argument/ });
  assert.doesNotThrow(() => iota(new Int32Array(1), Number.MAX_SAFE_INTEGER));
  assert.throws(() => iota(new Int32Array(2), 0, 0.5), { name: 'RangeError', message: /"step" argument/ });
  assert.throws(() => iota(new Int32Array(2), 0, null as unknown as number), { name: 'TypeError', message: /"step" argument/ });
  assert.throws(() => iota(new Int32Array(3), 0, 2 ** 53 - 1), { name: 'RangeError', message: /"start" argument/ });
});
