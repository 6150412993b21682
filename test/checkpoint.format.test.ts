/**
 * The checkpoint format must not change by accident: test/fixtures/checkpoint
 * holds a full checkpoint and a chain of two deltas on it, written by an
 * earlier build (4 KiB pages), with the values checkpointInfo() gave then
 * (manifest.json). Today's code must read, verify and restore them byte for
 * byte, and write the same bytes with the same data checksum.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, writeCheckpoint, checkpointInfo, pageSize } from 'cowshm';
import { packageRoot, tempDir, rmTemp } from './helpers';

const fixtures = path.join(packageRoot, 'test', 'fixtures', 'checkpoint');
const files = ['full.cow', 'delta1.cow', 'delta2.cow'] as const;
type Entry = { kind: string; regionSize: number; pageCount: number; checksum: string; headerChecksum: string; id: string; fileSize: number };
const manifest = JSON.parse(fs.readFileSync(path.join(fixtures, 'manifest.json'), 'utf8')) as Record<string, Entry>;
const skip = pageSize !== 4096 ? `the fixtures were written with 4 KiB pages; this system's are ${pageSize} bytes` : false;

/** The region's bytes after each step, as the fixtures were made. */
function expectedBytes(): Uint8Array[] {
  const size = 6 * 4096 - 100;
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + 1) & 0xff;
  const out = [b.slice()];
  for (const p of [1, 4]) b.fill(0xa0 + p, p * 4096, p * 4096 + 300);
  out.push(b.slice());
  for (const p of [0, 4, 5]) b[p * 4096 + 17]! ^= 0x5a;
  out.push(b.slice());
  return out;
}

test('checkpoints written by an earlier build still verify and restore byte for byte', { skip }, () => {
  const expected = expectedBytes();
  files.forEach((file, k) => {
    const full = path.join(fixtures, file);
    const info = checkpointInfo(full, { verify: 'full' });
    const want = manifest[file]!;
    assert.equal(info.kind, want.kind, file);
    assert.equal(info.regionSize, want.regionSize, file);
    assert.equal(info.pageCount, want.pageCount, file);
    assert.equal(info.checksum, want.checksum, file);
    assert.equal(info.headerChecksum, want.headerChecksum, file);
    assert.equal(info.id, want.id, file);
    assert.equal(info.fileSize, want.fileSize, file);
    assert.equal(info.chain.length, k + 1, file);
    const region = Region.restore(full, { verify: 'full' });
    try {
      assert.equal(region.size, want.regionSize);
      const view = region.map({ access: 'read' });
      assert.deepEqual(new Uint8Array(view.buffer, 0, region.size), expected[k], file);
      view.close();
    } finally {
      region.close();
    }
  });
});

test('today\'s writer produces the same data checksums for the same bytes', { skip }, async () => {
  const expected = expectedBytes();
  const dir = tempDir('ck-format');
  const region = Region.create({ size: expected[0]!.length });
  try {
    const view = region.map();
    const bytes = new Uint8Array(view.buffer, 0, region.size);
    const names: string[] = [];
    for (let k = 0; k < files.length; k++) {
      bytes.set(expected[k]!);
      const file = path.join(dir, files[k]!);
      const res = await writeCheckpoint(view, file, k === 0 ? undefined : { base: names[k - 1]! });
      names.push(file);
      const want = manifest[files[k]!]!;
      assert.equal(res.kind, want.kind);
      assert.equal(res.pages, want.pageCount);
      assert.equal(res.bytes, want.fileSize);
      assert.equal(res.checksum, want.checksum, files[k]);
    }
    // A delta of today's may rest on a base written by the earlier build.
    const mixed = path.join(dir, 'mixed.cow');
    fs.copyFileSync(path.join(fixtures, 'full.cow'), path.join(dir, 'old-full.cow'));
    bytes.set(expected[1]!);
    const res = await writeCheckpoint(view, mixed, { base: path.join(dir, 'old-full.cow') });
    assert.equal(res.checksum, manifest['delta1.cow']!.checksum);
    const back = Region.restore(mixed, { verify: 'full' });
    assert.deepEqual(new Uint8Array(back.map({ access: 'read' }).buffer, 0, back.size), expected[1]);
    back.close();
    view.close();
  } finally {
    region.close();
    rmTemp(dir);
  }
});
