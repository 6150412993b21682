import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import { Region, sum } from 'cowshm';

const reference = (a: ArrayLike<number | bigint>): bigint => {
  let t = 0n;
  for (let i = 0; i < a.length; i++) t += BigInt(a[i] as number | bigint);
  return t;
};

test('integer arrays: the exact sum as a bigint, for every element type', () => {
  const types = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array] as const;
  for (const T of types) {
    fc.assert(
      fc.property(fc.array(fc.integer(), { maxLength: 300 }), fc.nat(7), (values, skip) => {
        const a = new T(values.length + skip).fill(0);
        a.set(values.map((v) => v % 256), 0);
        const view = a.subarray(skip); // unaligned starts too
        assert.equal(sum(view), reference(view));
      }),
      { numRuns: 50 },
    );
  }
  for (const T of [BigInt64Array, BigUint64Array] as const) {
    const a = new T(100);
    for (let i = 0; i < a.length; i++) a[i] = T === BigInt64Array ? BigInt(i - 50) * 2n ** 60n : 2n ** 63n + BigInt(i);
    assert.equal(sum(a), reference(a)); // far beyond 64 bits: no overflow
  }
});

test('float arrays: a number, summed in double precision', () => {
  assert.equal(sum(new Float64Array([0.5, 0.25])), 0.75);
  assert.equal(sum(new Float64Array([0.75, 1e300, -1e300])), 0); // in order, like a loop: (0.75 + 1e300) - 1e300
  const f32 = new Float32Array([16777216, 1, 1]);
  assert.equal(sum(f32), 16777218); // a float32 accumulator would give 16777216
  assert.equal(typeof sum(new Float32Array(0)), 'number');
});

test('empty and detached arrays sum to zero', () => {
  assert.equal(sum(new Uint8Array(0)), 0n);
  assert.equal(sum(new Float64Array(0)), 0);
  const r = Region.create({ size: 4096 });
  const v = r.map();
  const a = new Uint32Array(v.buffer);
  a.fill(3);
  assert.equal(sum(a), 3072n);
  v.close();
  assert.equal(sum(a), 0n);
  r.close();
});
