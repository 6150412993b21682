import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region, pageSize, snapshotBackend, writeCheckpoint, type Snapshot } from 'cowshm';
import { tempDir, rmTemp, packageRoot, rerunTests } from './helpers';

/** A worker thread that writes random words all over the region until told to stop. */
function hammer(region: Region): { started: () => Promise<void>; stop: () => Promise<number> } {
  const flag = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(
    `
    const { workerData } = require('node:worker_threads');
    const { Region } = require(workerData.root);
    const region = Region.fromHandle(workerData.handle);
    const words = new Uint32Array(region.map().buffer);
    const flag = workerData.flag;
    let x = 12345, writes = 0;
    Atomics.store(flag, 1, 1);
    while (Atomics.load(flag, 0) === 0) {
      for (let i = 0; i < 4096; i++) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        words[(x >>> 0) % words.length] = x;
      }
      writes += 4096;
    }
    region.close();
    require('node:worker_threads').parentPort.postMessage(writes);
    `,
    { eval: true, workerData: { root: packageRoot, handle: region.handle(), flag } },
  );
  const done = new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    started: async () => {
      while (Atomics.load(flag, 1) === 0) await new Promise((r) => setTimeout(r, 2));
    },
    stop: async () => {
      Atomics.store(flag, 0, 1);
      return done;
    },
  };
}

test('a worker hammering the region during writeTo: the checkpoint equals the snapshot', async () => {
  const dir = tempDir('ck-snap');
  const size = 64 << 20;
  const region = Region.create({ size });
  try {
    const view = new Uint32Array(region.map().buffer);
    for (let i = 0; i < view.length; i++) view[i] = i;
    const h = hammer(region);
    while (view[0] === 0 && view[1] === 1 && view[view.length - 1] === view.length - 1) await new Promise((r) => setTimeout(r, 5));
    const s = region.snapshot();
    const frozen = Buffer.from(s.buffer).subarray(0); // a view, read now and again at the end
    const copy = Buffer.from(frozen); // a plain copy just after the snapshot was taken
    const file = path.join(dir, 'snap.cow');
    const res = await s.writeTo(file);
    const writes = await h.stop();
    assert.ok(writes > 0);
    assert.ok(s.copiedPages > 0, 'the worker wrote during the snapshot');
    assert.ok(!copy.equals(Buffer.from(new Uint8Array(view.buffer))), 'the region moved on');
    const back = Region.restore(file, { verify: 'full' });
    try {
      assert.ok(Buffer.from(back.map().buffer).equals(copy), 'checkpoint differs from the snapshot');
      assert.ok(frozen.equals(copy), 'the snapshot itself moved');
      assert.equal(res.pages, size / pageSize);
    } finally {
      back.close();
    }
    s.release();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('delta between snapshots: the base snapshot\'s changedPages when it is live, a comparison when not', async () => {
  const dir = tempDir('ck-snapdelta');
  const pages = 32;
  const region = Region.create({ size: pages * pageSize });
  const page = (i: number) => i * pageSize;
  try {
    const bytes = new Uint8Array(region.map().buffer);
    bytes.fill(1);
    const s1 = region.snapshot();
    const base = path.join(dir, 'base.cow');
    await s1.writeTo(base);
    bytes[page(3)] = 3; // between s1 and s2
    bytes[page(4)] = 4;
    const s2 = region.snapshot();
    bytes[page(9)] = 9; // after s2: not part of s2
    const expected = Buffer.from(new Uint8Array(s2.buffer));
    assert.equal(expected[page(9)], 1);

    // Fast path: s1 is live and older, its changedPages() (3, 4 and 9) is the page list.
    const fast = path.join(dir, 'fast.cow');
    const r1 = await s2.writeTo(fast, { base });
    assert.equal(r1.kind, 'delta');
    // (The mprotect backend marks whole chunks: a superset, which is still right.)
    const listed = [...s1.changedPages()];
    for (const p of [3, 4, 9]) assert.ok(listed.includes(p), `page ${p} in ${listed}`);
    assert.equal(r1.pages, listed.length);
    let back = Region.restore(fast, { verify: 'full' });
    assert.ok(Buffer.from(back.map().buffer).equals(expected));
    back.close();

    // s2.changedPages() alone would have been wrong: it lists page 9 only.
    assert.ok(!s2.changedPages().includes(3) && s2.changedPages().includes(9));

    // s1 released: the delta compares with the base file instead; only 3 and 4 differ.
    s1.release();
    const slow = path.join(dir, 'slow.cow');
    const r2 = await s2.writeTo(slow, { base });
    assert.equal(r2.pages, 2);
    back = Region.restore(slow, { verify: 'full' });
    assert.ok(Buffer.from(back.map().buffer).equals(expected));
    back.close();

    // A base written by a newer snapshot: its changedPages() says nothing about
    // older ones, so this too compares.
    const s3 = region.snapshot();
    const newer = path.join(dir, 'newer.cow');
    bytes[page(20)] = 20;
    await s3.writeTo(newer);
    const r3 = await s2.writeTo(path.join(dir, 'older.cow'), { base: newer });
    assert.equal(r3.pages, 1); // page 9 differs between s2 and s3
    back = Region.restore(path.join(dir, 'older.cow'));
    assert.ok(Buffer.from(back.map().buffer).equals(expected));
    back.close();
    s2.release();
    s3.release();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('a delta from a view always compares with its base, even one a live snapshot wrote (docs/api.md)', async () => {
  const dir = tempDir('ck-viewdelta');
  const region = Region.create({ size: 8 * pageSize });
  try {
    const view = region.map();
    const bytes = new Uint8Array(view.buffer);
    bytes.fill(1);
    const s1 = region.snapshot();
    const base = path.join(dir, 'base.cow');
    await s1.writeTo(base);
    // The same byte written back: s1 copies the page and lists it, but nothing differs.
    bytes[2 * pageSize] = 1;
    assert.ok(s1.changedPages().includes(2));
    const res = await writeCheckpoint(view, path.join(dir, 'view.cow'), { base });
    assert.equal(res.kind, 'delta');
    assert.equal(res.pages, 0, 's1.changedPages() was taken as the page list instead of comparing');
    s1.release();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('releasing the snapshot during writeTo rejects clearly and leaves no file', async () => {
  const dir = tempDir('ck-snaprel');
  const region = Region.create({ size: 256 << 20 });
  try {
    new Uint8Array(region.map().buffer).fill(7);
    const s = region.snapshot();
    const file = path.join(dir, 'r.cow');
    const p = s.writeTo(file, { onProgress: () => s.release() });
    await assert.rejects(p, { code: 'ERR_COWSHM_CLOSED', message: /released before the checkpoint was complete/ });
    assert.deepEqual(fs.readdirSync(dir), []);
    await assert.rejects(s.writeTo(file), { code: 'ERR_COWSHM_CLOSED' });
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('a chain of deltas written while a worker writes: every link restores to its snapshot', async () => {
  const dir = tempDir('ck-snapchain');
  const size = 16 << 20;
  const region = Region.create({ size });
  try {
    const h = hammer(region);
    await h.started();
    const copies: Buffer[] = [];
    const files: string[] = [];
    let prev: Snapshot | null = null;
    for (let k = 0; k < 5; k++) {
      await new Promise((r) => setTimeout(r, 20));
      const s = region.snapshot();
      copies.push(Buffer.from(new Uint8Array(s.buffer))); // a copy: the snapshot is released below
      const file = path.join(dir, `c${k}.cow`);
      const res = await s.writeTo(file, k === 0 ? {} : { base: files[k - 1]! });
      assert.equal(res.kind, k === 0 ? 'full' : 'delta');
      if (prev) {
        // The fast path: the delta lists the previous snapshot's changed pages
        // as they were when writeTo() started (the list only grows after).
        assert.ok(res.pages > 0 && res.pages <= prev.changedPages().length, `${res.pages} pages`);
        prev.release();
      }
      files.push(file);
      prev = s;
    }
    prev?.release();
    await h.stop();
    for (let k = 0; k < files.length; k++) {
      const back = Region.restore(files[k]!, { verify: 'full' });
      try {
        assert.ok(Buffer.from(back.map().buffer).equals(copies[k]!), `link ${k} differs from its snapshot`);
      } finally {
        back.close();
      }
    }
  } finally {
    region.close();
    rmTemp(dir);
  }
});

const forced = process.env['COWSHM_SNAPSHOT_BACKEND'];
if (forced === undefined) {
  test('the same checkpoint tests pass under COWSHM_SNAPSHOT_BACKEND=mprotect', () => {
    const out = rerunTests([__filename], { COWSHM_SNAPSHOT_BACKEND: 'mprotect' });
    assert.match(out, /ok \d+ - snapshotBackend is mprotect in this run/);
  });
} else {
  test(`snapshotBackend is ${forced} in this run`, () => {
    assert.equal(snapshotBackend, forced);
  });
}
