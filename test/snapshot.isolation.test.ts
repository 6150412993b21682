import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, Snapshot, pageSize, snapshotBackend } from 'cowshm';
import { collectGarbage, uniqueName } from './helpers';
import { mapsPermissions } from './snapshot-helpers';

const env = process.env['COWSHM_SNAPSHOT_BACKEND'];

test(`snapshotBackend is ${env ?? 'the automatic choice'} in this run`, () => {
  if (env === 'mprotect' || env === 'userfaultfd') assert.equal(snapshotBackend, env);
  else assert.ok(snapshotBackend === 'userfaultfd' || snapshotBackend === 'mprotect');
});

test('a snapshot keeps the bytes of the instant it was taken; later writes change only the region', () => {
  const r = Region.create({ name: uniqueName('snap-iso'), size: 64 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    for (let i = 0; i < view.length; i++) view[i] = i & 0xff;
    const before = Buffer.from(view);
    const s = r.snapshot();
    assert.ok(s instanceof Snapshot);
    assert.equal(s.byteLength, r.size);
    assert.equal(s.byteOffset, 0);
    assert.equal(s.backend, snapshotBackend);
    const frozen = new Uint8Array(s.buffer);
    assert.equal(s.copiedPages, 0);
    view[0] = 200;
    view[5 * pageSize + 17] = 201;
    view.fill(7, 10 * pageSize, 12 * pageSize);
    new Int32Array(view.buffer)[(30 * pageSize) / 4] = -1;
    assert.equal(view[0], 200);
    assert.equal(Buffer.compare(Buffer.from(frozen), before), 0);
    const pagesPerChunk = s.chunkSize / pageSize;
    const chunks = new Set([0, 5, 10, 11, 30].map((p) => Math.floor(p / pagesPerChunk)));
    assert.equal(s.copiedPages, chunks.size * pagesPerChunk);
    const expected = [...chunks].flatMap((c) => Array.from({ length: pagesPerChunk }, (_, i) => c * pagesPerChunk + i));
    assert.deepEqual([...s.changedPages()], expected);
    s.release();
  } finally {
    r.unlink();
    r.close();
  }
});

test('views made before and after the snapshot are both isolated; cow and read views are untouched', () => {
  const r = Region.create({ name: uniqueName('snap-views'), size: 16 * pageSize });
  try {
    const early = new Uint32Array(r.map().buffer);
    early.fill(1);
    const cow = new Uint32Array(r.map({ access: 'cow' }).buffer);
    const s = r.snapshot();
    const frozen = new Uint32Array(s.buffer);
    const late = new Uint32Array(r.map({ offset: 4 * pageSize, length: 8 * pageSize }).buffer);
    late.fill(2);
    early[0] = 3;
    cow[1] = 4; // private: neither the region nor the snapshot sees it
    assert.ok(frozen.every((x) => x === 1));
    assert.equal(early[(4 * pageSize) / 4], 2);
    assert.equal(early[1], 1);
    s.release();
  } finally {
    r.unlink();
    r.close();
  }
});

test('several live snapshots taken at different times each keep their own instant', () => {
  const r = Region.create({ size: 32 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    const snaps: Array<[Snapshot, Buffer]> = [];
    for (let t = 0; t < 6; t++) {
      for (let p = t; p < 32; p += 3) view.fill(t + 1, p * pageSize, p * pageSize + 100);
      snaps.push([r.snapshot(), Buffer.from(view)]);
      if (t === 3) {
        const [s] = snaps.splice(1, 1)[0] as [Snapshot, Buffer];
        s.release();
        assert.equal(s.released, true);
      }
    }
    view.fill(99);
    for (const [s, copy] of snaps) assert.equal(Buffer.compare(Buffer.from(s.buffer), copy), 0);
    for (const [s] of snaps) s.release();
  } finally {
    r.close();
  }
});

test('writes into the snapshot buffer stay private to the snapshot', () => {
  const r = Region.create({ size: 4 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(5);
    const s = r.snapshot();
    const other = r.snapshot();
    new Uint8Array(s.buffer).fill(6);
    assert.ok(view.every((x) => x === 5));
    assert.ok(new Uint8Array(other.buffer).every((x) => x === 5));
    s.release();
    other.release();
  } finally {
    r.close();
  }
});

test('a snapshot of part of the region: { offset, length }', () => {
  const r = Region.create({ size: 16 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    for (let p = 0; p < 16; p++) view.fill(p, p * pageSize, (p + 1) * pageSize);
    const s = r.snapshot({ offset: 4 * pageSize, length: 3 * pageSize + 10 });
    assert.equal(s.byteOffset, 4 * pageSize);
    assert.equal(s.byteLength, 3 * pageSize + 10);
    view.fill(255);
    const frozen = new Uint8Array(s.buffer);
    assert.equal(frozen[0], 4);
    assert.equal(frozen[3 * pageSize + 9], 7);
    s.release();
  } finally {
    r.close();
  }
});

test('releasing the last snapshot removes all write protection', () => {
  const r = Region.create({ size: 8 * pageSize });
  try {
    const v = r.map();
    const view = new Uint8Array(v.buffer);
    const a = r.snapshot();
    const b = r.snapshot();
    // The kernel's own writes show whether a page is protected: read(2) into it fails with EFAULT.
    const fd = fs.openSync('/dev/zero', 'r');
    try {
      assert.throws(() => fs.readSync(fd, view, 0, pageSize, null), { code: 'EFAULT' });
      a.release();
      assert.throws(() => fs.readSync(fd, view, 0, pageSize, null), { code: 'EFAULT' });
      b.release();
      assert.equal(fs.readSync(fd, view, 0, view.length, null), view.length);
    } finally {
      fs.closeSync(fd);
    }
    assert.deepEqual(mapsPermissions(v.address, v.byteLength), ['rw-s']);
    view.fill(3);
    assert.ok(view.every((x) => x === 3));
    a.release(); // idempotent
  } finally {
    r.close();
  }
});

test('closing the region releases its snapshots', () => {
  const r = Region.create({ size: 4 * pageSize });
  const s = r.snapshot();
  r.close();
  assert.equal(s.released, true);
  assert.throws(() => s.buffer, { code: 'ERR_COWSHM_CLOSED' });
  s.release();
});

test('a snapshot collected without release() is released: protection goes with it', async () => {
  const r = Region.create({ size: 4 * pageSize });
  const fd = fs.openSync('/dev/zero', 'r');
  try {
    const view = new Uint8Array(r.map().buffer);
    (() => {
      const s = r.snapshot();
      assert.throws(() => fs.readSync(fd, view, 0, pageSize, null), { code: 'EFAULT' });
      assert.equal(s.released, false);
    })();
    await collectGarbage();
    assert.equal(fs.readSync(fd, view, 0, view.length, null), view.length);
  } finally {
    fs.closeSync(fd);
    r.close();
  }
});
