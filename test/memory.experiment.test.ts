// The original question's experiment at 64 MiB: fill shared memory, map it
// again copy-on-write, read it, then write some of its pages.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, memory, pageSize, sum } from 'cowshm';
import { isRoot, uniqueName } from './helpers';

const SIZE = 64 << 20;
const PAGES = SIZE / pageSize;
const N = SIZE / 4;
const EXPECTED = (BigInt(N) * BigInt(N - 1)) / 2n;
test('reading a cow view copies nothing; writing k pages copies exactly k pages', () => {
  const r = Region.create({ name: uniqueName('experiment'), size: SIZE });
  try {
    const regionView = r.map();
    const A = new Int32Array(regionView.buffer);
    for (let i = 0; i < N; i++) A[i] = i;
    const copyView = r.map({ access: 'cow' });
    const copy = new Int32Array(copyView.buffer);

    assert.equal(sum(A), EXPECTED);
    assert.equal(sum(copy), EXPECTED);

    let u = memory.usage(copyView);
    let s = memory.usage(regionView);
    assert.equal(u.rss, SIZE, 'every page of the copy is resident after reading it');
    assert.equal(u.privateDirty, 0);
    assert.equal(u.anonymous, 0);
    assert.equal(u.sharedDirty, SIZE);
    assert.equal(u.pss, SIZE / 2, 'each page is counted half to each mapping');
    assert.equal(s.rss, SIZE);
    assert.equal(s.pss, SIZE / 2);
    let p = memory.pages(copyView);
    assert.equal(p.pages, PAGES);
    assert.equal(p.present, PAGES);
    assert.equal(p.file, PAGES);
    assert.equal(p.anonymous, 0);
    assert.equal(p.exclusive, 0);
    if (isRoot) {
      assert.equal(memory.sharedFrames(copyView, regionView), PAGES);
      assert.equal(memory.sharedFrames(regionView, copyView), PAGES);
      assert.ok(p.mapCounts);
      assert.equal(p.mapCounts.every((c) => c === 2), true, 'every frame is mapped twice');
    } else {
      assert.equal(memory.sharedFrames(copyView, regionView), null);
      assert.equal(p.frames, null);
    }

    // Write k distinct pages of the copy (a few bytes each, some twice).
    const k = 1000;
    const stride = Math.floor(PAGES / k);
    const written: number[] = [];
    for (let j = 0; j < k; j++) {
      const page = j * stride;
      written.push(page);
      copy[(page * pageSize) / 4] = -1;
      copy[(page * pageSize) / 4 + 7] = -2;
    }
    u = memory.usage(copyView);
    s = memory.usage(regionView);
    assert.equal(u.privateDirty, k * pageSize);
    assert.equal(u.anonymous, k * pageSize);
    assert.equal(u.rss, SIZE);
    assert.equal(u.pss, k * pageSize + ((PAGES - k) * pageSize) / 2);
    assert.equal(s.pss, k * pageSize + ((PAGES - k) * pageSize) / 2, 'the region alone maps the k originals now');
    assert.equal(s.privateDirty, k * pageSize);
    assert.equal(s.anonymous, 0);
    p = memory.pages(copyView);
    assert.equal(p.anonymous, k);
    assert.equal(p.file, PAGES - k);
    assert.equal(p.exclusive, k);
    if (isRoot) {
      assert.equal(memory.sharedFrames(copyView, regionView), PAGES - k);
      assert.ok(p.frames && p.mapCounts);
      const region = memory.pages(regionView);
      assert.ok(region.frames);
      for (const page of written) {
        assert.notEqual(p.frames[page], region.frames[page], `page ${page} has its own frame`);
        assert.equal(p.mapCounts[page], 1);
      }
      assert.equal(p.mapCounts.filter((c) => c === 2).length, PAGES - k);
    }
    assert.equal(sum(A), EXPECTED, 'the region is untouched');
    assert.equal(A[0], 0);

    // revert() frees the copies. MADV_DONTNEED unmaps every page of the range,
    // shared ones included: the next read maps the region's pages again.
    copyView.revert();
    u = memory.usage(copyView);
    assert.equal(u.privateDirty, 0);
    assert.equal(u.anonymous, 0);
    assert.equal(u.rss, 0);
    if (isRoot) assert.equal(memory.sharedFrames(copyView, regionView), 0);
    assert.equal(sum(copy), EXPECTED);
    if (isRoot) assert.equal(memory.sharedFrames(copyView, regionView), PAGES);
  } finally {
    r.unlink();
    r.close();
  }
});

test('pages() looks at part of a mapping with offset and length', () => {
  const r = Region.create({ size: 32 * pageSize });
  try {
    const v = r.map({ access: 'cow' });
    const bytes = new Uint8Array(v.buffer);
    for (let page = 4; page < 12; page++) bytes[page * pageSize] = 1;
    const part = memory.pages(v, { offset: 8 * pageSize, length: 8 * pageSize });
    assert.equal(part.address, v.address + 8 * pageSize);
    assert.equal(part.pages, 8);
    assert.equal(part.present, 4);
    assert.equal(part.anonymous, 4);
    assert.equal(memory.pages(v, { offset: 4 * pageSize }).present, 8);
    assert.equal(memory.pages(v, { length: 1 }).pages, 1);
    if (isRoot) {
      assert.ok(part.frames && part.mapCounts);
      assert.deepEqual(part.frames.slice(4), [0, 0, 0, 0], 'absent pages have frame 0');
      assert.equal(part.frames.slice(0, 4).every((f) => f > 0), true);
      assert.deepEqual(part.mapCounts, [1, 1, 1, 1, 0, 0, 0, 0]);
    }
    assert.throws(() => memory.pages(v, { offset: 1 }), { name: 'RangeError', message: /"offset" option must be a multiple of the page size/ });
    assert.throws(() => memory.pages(v, { offset: 32 * pageSize }), { name: 'RangeError', message: /"offset" option/ });
    assert.throws(() => memory.pages(v, { length: 33 * pageSize }), { name: 'RangeError', message: /"length" option must be at most/ });
    assert.throws(() => memory.pages(v, { pid: 0 }), { name: 'RangeError', message: /"pid" option/ });
  } finally {
    r.close();
  }
});

test('sharedFrames() checks both arguments', () => {
  const r = Region.create({ size: pageSize });
  try {
    const v = r.map();
    assert.throws(() => memory.sharedFrames(v, {} as never), { name: 'TypeError', message: /The "b" argument's "address" must be a number/ });
    assert.throws(() => memory.sharedFrames(undefined as never, v), { name: 'TypeError', message: /The "a" argument must be a View/ });
  } finally {
    r.close();
  }
});
