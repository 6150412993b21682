import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, sum, type View } from 'cowshm';
import { uniqueName, collectGarbage, mapsLineAt } from './helpers';

test('view.buffer is made once: every access returns the same ArrayBuffer over the region', () => {
  const name = uniqueName('buffer');
  const r = Region.create({ name, size: 3 * 4096 });
  try {
    const v = r.map();
    assert.equal(v.byteLength, 3 * 4096);
    const b = v.buffer;
    assert.equal(v.buffer, b);
    assert.equal(b.byteLength, 3 * 4096);
    new Int32Array(b)[5] = 42;
    assert.equal(new Int32Array(r.map().buffer)[5], 42);
    v.close();
    assert.equal(b.byteLength, 0);
  } finally {
    r.unlink();
    r.close();
  }
});

test('a view closed before its buffer was asked for is unmapped at once', () => {
  const name = uniqueName('nobuffer');
  const r = Region.create({ name, size: 2 * 4096 });
  try {
    const v = r.map({ length: 4096 });
    const address = v.address;
    assert.ok(mapsLineAt(address), 'the mapping is in /proc/self/maps while the view is open');
    v.close();
    assert.equal(mapsLineAt(address), undefined);
    assert.throws(() => v.buffer, { code: 'ERR_COWSHM_CLOSED' });
  } finally {
    r.unlink();
    r.close();
  }
});

test('region.close() unmaps views that never made a buffer, and their ids stay dead', () => {
  const name = uniqueName('closeregion');
  const r = Region.create({ name, size: 4096 });
  r.unlink();
  const v = r.map();
  const address = v.address;
  r.close();
  assert.equal(mapsLineAt(address), undefined);
  assert.equal(v.closed, true);
  assert.throws(() => v.buffer, { code: 'ERR_COWSHM_CLOSED' });
});

test('a view collected without close() and without a buffer gives its mapping back', async () => {
  const name = uniqueName('gcview');
  const r = Region.create({ name, size: 4096 });
  try {
    const address = ((): number => r.map().address)();
    assert.ok(mapsLineAt(address));
    await collectGarbage();
    assert.equal(mapsLineAt(address), undefined);
  } finally {
    r.unlink();
    r.close();
  }
});

test('a buffer outlives its collected View and keeps the mapping', async () => {
  const name = uniqueName('gcbuffer');
  const r = Region.create({ name, size: 4096 });
  try {
    let view: View | undefined = r.map();
    const a = new Int32Array(view.buffer);
    const address = view.address;
    view = undefined;
    await collectGarbage();
    assert.ok(mapsLineAt(address), 'the buffer still maps the region');
    a[0] = 7;
    assert.equal(sum(a), 7n);
  } finally {
    r.unlink();
    r.close();
  }
});
