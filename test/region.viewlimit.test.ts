// The largest single view depends on the running Node.js: 4 GiB on Node 20
// (a TypedArray can't be longer), far more on 22 and later. Nothing here
// hard-codes either figure; `npm run test:matrix` exercises both branches.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';

const GiB = 2 ** 30;

test('Region.maxViewLength is the longest a Uint8Array may be in this Node.js', () => {
  const max = Region.maxViewLength;
  assert.ok(Number.isSafeInteger(max) && max >= 2 ** 31, `maxViewLength ${max}`);
  // Longer than that is refused by V8 itself (without allocating anything).
  assert.throws(() => new Uint8Array(max + 1), RangeError);
});

test(`a region just over 4 GiB: one view where Node allows it, several views where it doesn't`, () => {
  // Sparse memfd: only the pages written below are ever allocated.
  const size = 4 * GiB + pageSize;
  const r = Region.create({ size, reserve: false });
  try {
    if (size <= Region.maxViewLength) {
      const whole = r.map();
      const bytes = new Uint8Array(whole.buffer);
      assert.equal(bytes.length, size);
      bytes[0] = 1;
      bytes[size - 1] = 42;
      const tail = r.map({ offset: 4 * GiB });
      assert.equal(new Uint8Array(tail.buffer)[pageSize - 1], 42, 'the last byte of the one view is the region\'s');
    } else {
      assert.throws(() => r.map(), (err: Error) => {
        assert.ok(err instanceof RangeError);
        assert.match(err.message, new RegExp(`at most ${Region.maxViewLength}`));
        assert.match(err.message, /several views/);
        assert.match(err.message, new RegExp(process.version.replace(/\./g, '\\.')));
        return true;
      });
      const head = r.map({ length: Region.maxViewLength });
      const tail = r.map({ offset: Region.maxViewLength });
      assert.equal(head.byteLength + tail.byteLength, size);
      new Uint8Array(tail.buffer)[tail.byteLength - 1] = 42;
      const last = r.map({ offset: size - pageSize });
      assert.equal(new Uint8Array(last.buffer)[pageSize - 1], 42);
    }
  } finally {
    r.close();
  }
});
