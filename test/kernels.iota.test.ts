import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fc from 'fast-check';
import { Region, iota, sum } from 'cowshm';
import * as path from 'node:path';
import { uniqueName, packageRoot } from './helpers';

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

// A subclass may lie about its size; the kernels read the array's internal slots.
class ShortFloat64 extends Float64Array {
  override get length(): number {
    return 1;
  }
  override get byteLength(): number {
    return 8;
  }
}

test('iota checks the real length, not a subclass overriding length and byteLength', () => {
  const a = new ShortFloat64(1000);
  assert.equal(a.length, 1);
  const near = 2 ** 53 - 10;
  assert.throws(() => iota(a, near), (err: RangeError & { code?: string }) => {
    assert.ok(err instanceof RangeError);
    assert.equal(err.code, 'ERR_OUT_OF_RANGE');
    assert.match(err.message, /^The "start" argument must be a safe integer with start \+ 999 × step safe too\. Received 9007199254740982$/);
    return true;
  });
  assert.equal(sum(a), 0, 'nothing was written');
  assert.equal(iota(a, 5)[999], 1004, 'a safe sequence over the real length');
  // With the TypeScript check bypassed the addon refuses it too.
  const { native } = require(path.join(packageRoot, 'dist', 'native')) as { native: { iota(a: unknown, s: number, t: number): void } };
  assert.throws(() => native.iota(a, near, 1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.iota(a, 0.5, 1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.iota(a, 0, 2 ** 60), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.equal(sum(a), 999 * 1000 / 2 + 5 * 1000, 'still the safe sequence');
});

test('iota and sum take only real TypedArrays, whatever their prototype or ArrayBuffer.isView say', () => {
  const fakes: unknown[] = [
    Object.create(Uint8Array.prototype),
    Object.setPrototypeOf(new DataView(new ArrayBuffer(8)), Uint8Array.prototype),
    { length: 4, byteLength: 4, buffer: new ArrayBuffer(4) },
  ];
  const isView = ArrayBuffer.isView;
  ArrayBuffer.isView = ((_: unknown) => true) as typeof ArrayBuffer.isView;
  try {
    for (const fake of fakes) {
      for (const call of [() => iota(fake as Uint8Array), () => sum(fake as Uint8Array)])
        assert.throws(call, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /^The "array" argument must be a TypedArray\. Received / });
    }
  } finally {
    ArrayBuffer.isView = isView;
  }
  assert.equal(sum(new ShortFloat64([1, 2, 3])), 6);
});
