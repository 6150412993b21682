import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Region } from 'cowshm';
import { rmTemp, tempDir } from './helpers';
import { MiB2, freePages, hugeLock, hugePool } from './hugetlb-helpers';

const pool = hugePool(MiB2);

test('Region.restore(file, { pageSize }) copies a checkpoint into a new region on huge pages', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const dir = tempDir('ckpt-huge');
  const r = Region.create({ size: 2 * MiB2 });
  try {
    const bytes = new Uint8Array(r.map().buffer);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = (i / 4096) & 0xff;
    const file = path.join(dir, 'full.ckpt');
    const s = r.snapshot();
    await s.writeTo(file);
    s.release();
    const free = freePages();
    const restored = Region.restore(file, { pageSize: MiB2 });
    try {
      assert.equal(restored.pageSize, MiB2);
      assert.equal(restored.kind, 'memfd');
      assert.equal(restored.readOnly, false, 'a copy, not the file: writable');
      assert.equal(restored.size, 2 * MiB2);
      assert.equal(freePages(), free - 2, 'its pages are taken from the pool at once');
      const back = new Uint8Array(restored.map().buffer);
      assert.equal(Buffer.compare(Buffer.from(back), Buffer.from(bytes)), 0);
    } finally {
      restored.close();
    }
    assert.equal(freePages(), free);
    // Without pageSize a full checkpoint is still the file itself, on the system page.
    const plain = Region.restore(file);
    assert.equal(plain.pageSize, r.pageSize);
    assert.equal(plain.readOnly, true);
    plain.close();
  } finally {
    r.close();
    rmTemp(dir);
  }
});

test('Region.restore(file, { pageSize }) refuses a region size that is not a multiple of the huge page, and a page size the kernel lacks', async () => {
  const dir = tempDir('ckpt-huge-size');
  const r = Region.create({ size: 3 * 4096 });
  try {
    new Uint8Array(r.map().buffer).fill(3);
    const file = path.join(dir, 'small.ckpt');
    const s = r.snapshot();
    await s.writeTo(file);
    s.release();
    assert.throws(() => Region.restore(file, { pageSize: MiB2 }), {
      name: 'RangeError',
      message: /"pageSize" option must be a page size the checkpoint's region size \(12288\) is a multiple of; 2097152 is not/,
    });
    assert.throws(() => Region.restore(file, { pageSize: 8192 }), { name: 'RangeError', message: /one of the page sizes this kernel offers/ });
  } finally {
    r.close();
    rmTemp(dir);
  }
});
