import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, pageSize, sum } from 'cowshm';
import { mapsCount, mapsPermissions } from './snapshot-helpers';

const GiB = 1 << 30;

/** A small deterministic generator, so a failure can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

test('random writes across a 1 GiB region after a snapshot: no ENOMEM, no crash, snapshot exact, maps bounded', () => {
  const r = Region.create({ size: GiB, reserve: false });
  try {
    const pages = GiB / pageSize;
    const v = r.map();
    const view = new Uint8Array(v.buffer);
    const vmas = (): number => mapsPermissions(v.address, GiB).length;
    const random = rng(0xc0ffee);
    // Before: a value in some pages, the rest never touched (holes).
    const before = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const p = Math.floor(random() * pages);
      const v = 1 + Math.floor(random() * 250);
      view[p * pageSize + (p % pageSize)] = v;
      before.set(p, v);
    }
    assert.equal(vmas(), 1);
    const maxMaps = Number(fs.readFileSync('/proc/sys/vm/max_map_count', 'utf8'));
    const s = r.snapshot();
    const frozen = new Uint8Array(s.buffer);
    const written = new Set<number>();
    let peak = vmas();
    for (let i = 0; i < 12000; i++) {
      const p = Math.floor(random() * pages);
      view[p * pageSize + (p % pageSize)] = 255;
      view[p * pageSize + pageSize - 1] = 254;
      written.add(p);
      if (i % 2000 === 0) peak = Math.max(peak, vmas());
    }
    peak = Math.max(peak, vmas());
    // userfaultfd never splits a VMA; mprotect splits at most two per chunk, and its
    // chunk size keeps that far below vm.max_map_count.
    const bound = s.backend === 'userfaultfd' ? 1 : 2 * Math.ceil(GiB / s.chunkSize) + 1;
    assert.ok(peak <= bound, `the view became ${peak} VMAs (bound ${bound})`);
    assert.ok(mapsCount() < maxMaps / 2, `${mapsCount()} mappings of at most ${maxMaps}`);
    // Exact: every page written before or after has its old bytes, and the whole
    // snapshot sums to what was there before.
    for (const p of new Set([...before.keys(), ...written])) {
      assert.equal(frozen[p * pageSize + (p % pageSize)], before.get(p) ?? 0, `page ${p}`);
      assert.equal(frozen[p * pageSize + pageSize - 1], p % pageSize === pageSize - 1 ? (before.get(p) ?? 0) : 0);
    }
    let expected = 0n;
    for (const v of before.values()) expected += BigInt(v);
    assert.equal(sum(frozen), expected);
    const pagesPerChunk = s.chunkSize / pageSize;
    const chunks = new Set([...written].map((p) => Math.floor(p / pagesPerChunk)));
    assert.equal(s.copiedPages, chunks.size * pagesPerChunk);
    s.release();
    assert.deepEqual(mapsPermissions(v.address, GiB), ['rw-s'], 'one writable VMA again when the last snapshot goes');
  } finally {
    r.close();
  }
});
