import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';

test('bad snapshot options: TypeError or RangeError naming the option', () => {
  const r = Region.create({ size: 8 * pageSize + 100 });
  try {
    const cases: Array<[unknown, RegExp, ErrorConstructor]> = [
      [null, /"options" argument must be an object/, TypeError],
      [{ offset: '0' }, /"offset" option must be a number/, TypeError],
      [{ offset: 1 }, /"offset" option must be a multiple of the page size/, RangeError],
      [{ offset: 9 * pageSize }, /"offset" option must be less than the region's size/, RangeError],
      [{ length: 0 }, /"length" option must be a positive integer/, RangeError],
      [{ offset: pageSize, length: 8 * pageSize + 100 }, /"length" option must be at most/, RangeError],
    ];
    for (const [options, message, type] of cases) {
      assert.throws(() => r.snapshot(options as never), (err: Error) => {
        assert.ok(err instanceof type, String(err));
        assert.match(err.message, message);
        return true;
      });
    }
    assert.throws(() => r.prepareWrite(-1, 1), /"offset" argument must be an integer from 0 to/);
    assert.throws(() => r.prepareWrite(0, r.size + 1), /"length" argument must be an integer from 0 to/);
    assert.throws(() => r.prepareWrite('0' as never, 1), TypeError);
  } finally {
    r.close();
  }
});

// Node 22 and later allow ArrayBuffers of up to 2^53-1 bytes: no region can be mapped past that
// (the address space ends at 2^47), so exceeding maxViewLength is only possible on Node 20.
const noRegionExceedsIt = Region.maxViewLength > 2 ** 46 && `Node.js ${process.version} allows views of up to ${Region.maxViewLength} bytes, more than a process can map`;
test('a region larger than maxViewLength needs { offset, length }: the error names the limit', { skip: noRegionExceedsIt }, () => {
  const size = Region.maxViewLength + 2 * pageSize;
  const r = Region.create({ size, reserve: false });
  try {
    assert.throws(() => r.snapshot(), (err: RangeError) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, new RegExp(`has ${size} bytes from offset 0, and a snapshot is at most ${Region.maxViewLength} \\(Region\\.maxViewLength\\)`));
      assert.match(err.message, /snapshot a larger region as several snapshots, each with its own offset and length/);
      return true;
    });
    const s = r.snapshot({ offset: size - pageSize * 2, length: pageSize * 2 });
    assert.equal(s.byteLength, 2 * pageSize);
    s.release();
  } finally {
    r.close();
  }
});

test('use after release or close throws ERR_COWSHM_CLOSED; release is idempotent', () => {
  const r = Region.create({ size: pageSize });
  try {
    const s = r.snapshot();
    const buffer = s.buffer;
    s.release();
    s.release();
    s[Symbol.dispose]();
    assert.equal(s.released, true);
    assert.equal(buffer.byteLength, 0, 'the buffer is detached');
    for (const use of [() => s.buffer, () => s.copiedPages, () => s.changedPages(), () => (s as unknown as { _id: number })._id, () => s.address])
      assert.throws(use, { code: 'ERR_COWSHM_CLOSED' });
  } finally {
    r.close();
  }
  assert.throws(() => r.snapshot(), { code: 'ERR_COWSHM_CLOSED' });
  assert.throws(() => r.prepareWrite(0, 1), { code: 'ERR_COWSHM_CLOSED' });
});

test('a snapshot is disposable with `using`-style disposal', () => {
  const r = Region.create({ size: pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    {
      const s = r.snapshot();
      try {
        view[0] = 1;
        assert.equal(new Uint8Array(s.buffer)[0], 0);
      } finally {
        s[Symbol.dispose]();
      }
      assert.equal(s.released, true);
    }
    view[0] = 2;
    assert.equal(view[0], 2);
  } finally {
    r.close();
  }
});
