import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { smapsField } from './snapshot-helpers';

test('after writing k distinct pages, the snapshot mapping holds exactly k pages (or k chunks) of private memory', () => {
  const r = Region.create({ size: 16 << 20 });
  try {
    const pages = r.size / pageSize;
    const view = new Uint8Array(r.map().buffer);
    view.fill(1);
    const s = r.snapshot();
    new Uint8Array(s.buffer).reduce((a, b) => a + b, 0); // reading copies nothing
    assert.equal(smapsField(s.address, 'Anonymous'), 0);
    const touched = new Set<number>();
    for (let i = 0; i < 300; i++) {
      const p = (i * 7919 + 13) % pages;
      view[p * pageSize + (i % pageSize)] = 2;
      if (i % 3 === 0) view[p * pageSize] = 3; // a second write to the same page copies nothing more
      touched.add(p);
    }
    const pagesPerChunk = s.chunkSize / pageSize;
    const chunks = new Set([...touched].map((p) => Math.floor(p / pagesPerChunk)));
    if (s.backend === 'userfaultfd') assert.equal(s.chunkSize, pageSize);
    const expected = chunks.size * s.chunkSize;
    assert.equal(smapsField(s.address, 'Anonymous'), expected);
    assert.equal(s.copiedPages * pageSize, expected);
    // The region's own pages are not duplicated: its views stay shared.
    assert.equal(s.byteLength, r.size);
    s.release();
  } finally {
    r.close();
  }
});
