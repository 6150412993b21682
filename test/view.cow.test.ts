import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { uniqueName, mapsLineAt } from './helpers';

const PAGES = 8;

function withRegion(tag: string, fn: (r: Region) => void): void {
  const r = Region.create({ name: uniqueName(tag), size: PAGES * pageSize });
  try {
    fn(r);
  } finally {
    r.unlink();
    r.close();
  }
}

test('a cow view is a private mapping, readable and writable', () => {
  withRegion('cow-maps', (r) => {
    const cow = r.map({ access: 'cow' });
    assert.equal(cow.access, 'cow');
    assert.equal(cow.byteLength, PAGES * pageSize);
    const line = mapsLineAt(cow.address);
    assert.ok(line, 'the view is in /proc/self/maps');
    assert.match(line, /^[0-9a-f]+-[0-9a-f]+ rw-p /);
  });
});

test('writes to a cow view stay private: the region and other views are unchanged', () => {
  withRegion('cow-private', (r) => {
    const shared = new Uint8Array(r.map().buffer);
    shared.fill(1);
    const a = r.map({ access: 'cow' });
    const b = r.map({ access: 'cow' });
    const ua = new Uint8Array(a.buffer);
    const ub = new Uint8Array(b.buffer);
    ua[0] = 42;
    ua[3 * pageSize + 17] = 43;
    assert.equal(ua[0], 42);
    assert.equal(ua[3 * pageSize + 17], 43);
    assert.equal(shared[0], 1);
    assert.equal(shared[3 * pageSize + 17], 1);
    assert.equal(ub[0], 1);
    assert.equal(ub[3 * pageSize + 17], 1);
    // A view mapped after the write sees the region, not a's copy.
    assert.equal(new Uint8Array(r.map({ access: 'read' }).buffer)[0], 1);
  });
});

test('untouched pages of a cow view show later writes to the region (not a snapshot)', () => {
  withRegion('cow-live', (r) => {
    const shared = new Uint8Array(r.map().buffer);
    const cow = new Uint8Array(r.map({ access: 'cow' }).buffer);
    // Page 0 is read before the region changes, page 1 never: neither was written
    // through the cow view, so both follow the region (Linux maps the shared page
    // read-only until the first write to it through the private mapping).
    assert.equal(cow[0], 0);
    shared[0] = 5;
    shared[pageSize] = 6;
    assert.equal(cow[0], 5);
    assert.equal(cow[pageSize], 6);
    // A page written through the cow view is private from then on.
    cow[2 * pageSize] = 9;
    shared[2 * pageSize] = 7;
    shared[2 * pageSize + 1] = 8;
    assert.equal(cow[2 * pageSize], 9);
    assert.equal(cow[2 * pageSize + 1], 0);
  });
});

test('revert() without a range restores every page to the region\'s current bytes', () => {
  withRegion('cow-revert-all', (r) => {
    const shared = new Uint8Array(r.map().buffer);
    shared.fill(3);
    const view = r.map({ access: 'cow' });
    const cow = new Uint8Array(view.buffer);
    cow.fill(4);
    shared[pageSize] = 10; // changed after the cow page was copied
    assert.equal(cow[pageSize], 4);
    view.revert();
    for (let p = 0; p < PAGES; p++) assert.equal(cow[p * pageSize], p === 1 ? 10 : 3, `page ${p}`);
    assert.deepEqual(cow, shared);
  });
});

test('revert(offset, length) restores only that range', () => {
  withRegion('cow-revert-range', (r) => {
    const shared = new Uint8Array(r.map().buffer);
    shared.fill(3);
    const view = r.map({ access: 'cow' });
    const cow = new Uint8Array(view.buffer);
    cow.fill(4);
    view.revert(2 * pageSize, 3 * pageSize);
    for (let p = 0; p < PAGES; p++)
      assert.equal(cow[p * pageSize + 5], p >= 2 && p < 5 ? 3 : 4, `page ${p}`);
    // Offset only: from there to the end.
    view.revert(6 * pageSize);
    assert.equal(cow[6 * pageSize], 3);
    assert.equal(cow[7 * pageSize], 3);
    assert.equal(cow[5 * pageSize], 4);
    assert.equal(shared.every((x) => x === 3), true, 'the region never changed');
  });
});

test('revert() checks its range', () => {
  withRegion('cow-revert-args', (r) => {
    const view = r.map({ access: 'cow' });
    assert.throws(() => view.revert(1), { name: 'RangeError', message: /"offset" argument must be a multiple of the page size/ });
    assert.throws(() => view.revert(0, PAGES * pageSize + 1), { name: 'RangeError', message: /"length" argument/ });
    assert.throws(() => view.revert('0' as never), { name: 'TypeError', message: /"offset" argument must be a number/ });
  });
});

test('revert() on a view that is not copy-on-write throws', () => {
  withRegion('cow-revert-shared', (r) => {
    const shared = r.map();
    const data = new Uint8Array(shared.buffer);
    data[0] = 1;
    assert.throws(() => shared.revert(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_COWSHM_NOT_COW');
      assert.match(err.message, /copy-on-write view; this view has access 'write'/);
      return true;
    });
    assert.equal(data[0], 1, 'nothing was discarded');
    assert.throws(() => r.map({ access: 'read' }).revert(), { code: 'ERR_COWSHM_NOT_COW' });
  });
});

test('a cow view of a read-only region is writable, privately', () => {
  const name = uniqueName('cow-ro');
  const owner = Region.create({ name, size: PAGES * pageSize });
  try {
    new Uint8Array(owner.map().buffer).fill(2);
    const ro = Region.open(name, { readOnly: true });
    try {
      assert.throws(() => ro.map({ access: 'write' }), { code: 'ERR_COWSHM_READ_ONLY' });
      const view = ro.map({ access: 'cow' });
      const cow = new Uint8Array(view.buffer);
      assert.equal(cow[0], 2);
      cow[0] = 99;
      assert.equal(cow[0], 99);
      assert.equal(new Uint8Array(ro.map({ access: 'read' }).buffer)[0], 2);
      view.revert();
      assert.equal(cow[0], 2);
    } finally {
      ro.close();
    }
  } finally {
    owner.unlink();
    owner.close();
  }
});
