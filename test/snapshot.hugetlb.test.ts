import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Region, memory, pageSize, snapshotBackend } from 'cowshm';
import { rmTemp, runNode, tempDir } from './helpers';
import { MiB2, freePages, hugeLock, hugePool } from './hugetlb-helpers';
import { snapshotProperty } from './snapshot-property';

const pool = hugePool(MiB2);
const PER_HUGE = MiB2 / pageSize;
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

test(`a snapshot of a region on 2 MiB pages (${snapshotBackend}): isolated, takes no pool page until written, copies whole huge pages counted in 4 KiB pages`, { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: 4 * MiB2, pageSize: MiB2 });
  try {
    const view = new Uint8Array(r.map().buffer);
    for (let p = 0; p < 4; p++) view.fill(p + 1, p * MiB2, (p + 1) * MiB2);
    const before = Buffer.from(view);
    const free = freePages();
    const s = r.snapshot();
    assert.equal(s.chunkSize, MiB2, 'a huge page is the least a snapshot of hugetlb memory can copy');
    assert.equal(freePages(), free, 'mapped with MAP_NORESERVE: no second pool');
    view[10] = 99;
    view[2 * MiB2 + 5] = 98;
    new Uint32Array(view.buffer)[(2 * MiB2) / 4 + 100] = 7;
    assert.equal(Buffer.compare(Buffer.from(s.buffer), before), 0, 'the snapshot keeps the instant it was taken');
    assert.equal(view[10], 99);
    assert.equal(s.copiedPages, 2 * PER_HUGE);
    assert.deepEqual([...s.changedPages()], [...range(0, PER_HUGE), ...range(2 * PER_HUGE, PER_HUGE)]);
    assert.equal(freePages(), free - 2, 'k huge pages written take k pages from the pool');
    const u = memory.usage(s);
    assert.equal(u.privateHugetlb, 2 * MiB2, "the snapshot's own memory: its two copies");
    // A second write to a copied huge page copies nothing more.
    view[11] = 1;
    assert.equal(s.copiedPages, 2 * PER_HUGE);
    s.release();
    assert.equal(freePages(), free, 'releasing gives the copies back');
    view[3 * MiB2] = 5; // no protection left
    assert.equal(view[3 * MiB2], 5);
  } finally {
    r.close();
  }
});

test('snapshot options on huge pages: offsets, lengths and chunk sizes in whole huge pages; a larger chunk copies more', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: 4 * MiB2, pageSize: MiB2 });
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(3);
    assert.throws(() => r.snapshot({ offset: pageSize }), { name: 'RangeError', message: /"offset" option must be a multiple of the huge page size \(2097152, 2 MiB\)/ });
    assert.throws(() => r.snapshot({ length: pageSize }), { name: 'RangeError', message: /"length" option must be a multiple of the huge page size/ });
    assert.throws(() => r.snapshot({ chunkSize: 64 << 10 }), {
      name: 'RangeError',
      message: /"chunkSize" option must be a power of two of at least 2097152 \(the region's page size\)\. Received 65536/,
    });
    const part = r.snapshot({ offset: 2 * MiB2, length: MiB2 });
    assert.equal(part.byteLength, MiB2);
    const wide = r.snapshot({ chunkSize: 4 * MiB2 });
    assert.equal(wide.chunkSize, 4 * MiB2);
    view[0] = 4;
    assert.equal(wide.copiedPages, 4 * PER_HUGE, 'its chunk: all four huge pages');
    assert.equal(part.copiedPages, 0, 'outside its range');
    view[2 * MiB2] = 4;
    assert.equal(part.copiedPages, PER_HUGE);
    assert.ok(new Uint8Array(wide.buffer).every((x) => x === 3));
    assert.ok(new Uint8Array(part.buffer).every((x) => x === 3));
    part.release();
    wide.release();
  } finally {
    r.close();
  }
});

test('a copy that finds the pool empty breaks the snapshot (ERR_COWSHM_SNAPSHOT_BROKEN), never the process; the write lands', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  // A child takes every free page for its region: the copy finds none.
  const child = runNode(`
    const { Region } = require('cowshm');
    const free = Number(require('fs').readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', 'utf8'));
    const r = Region.create({ size: free * ${MiB2}, pageSize: ${MiB2} });
    const view = new Uint8Array(r.map().buffer);
    view.fill(1);
    const s = r.snapshot();
    view[${MiB2} + 1] = 2;
    let code = 'none';
    try { s.buffer; } catch (e) { code = e.code; }
    console.log(JSON.stringify({ landed: view[${MiB2} + 1], exact: s.exact, code }));
    s.release();
    view[0] = 3;
    console.log(view[0]);
  `);
  assert.equal(child.signal, null, child.stderr);
  assert.equal(child.status, 0, child.stderr);
  const [line, after] = child.stdout.trim().split('\n');
  assert.deepEqual(JSON.parse(line as string), { landed: 2, exact: false, code: 'ERR_COWSHM_SNAPSHOT_BROKEN' });
  assert.equal(after, '3');
});

test('a snapshot of a region on huge pages writes a checkpoint that restores, on 4 KiB or on huge pages', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const dir = tempDir('snap-huge-ckpt');
  const r = Region.create({ size: 2 * MiB2, pageSize: MiB2 });
  try {
    const view = new Uint8Array(r.map().buffer);
    for (let i = 0; i < view.length; i += pageSize) view[i] = (i / pageSize) % 251;
    const expected = Buffer.from(view);
    const s = r.snapshot();
    view.fill(0);
    const file = path.join(dir, 'huge.ckpt');
    await s.writeTo(file);
    s.release();
    const plain = Region.restore(file);
    assert.equal(Buffer.compare(Buffer.from(plain.map({ access: 'read' }).buffer), expected), 0);
    plain.close();
    const huge = Region.restore(file, { pageSize: MiB2 });
    assert.equal(huge.pageSize, MiB2);
    assert.equal(Buffer.compare(Buffer.from(huge.map().buffer), expected), 0);
    huge.close();
  } finally {
    r.close();
    rmTemp(dir);
  }
});

test(`property on 2 MiB pages (${snapshotBackend}): every snapshot equals a copy taken at its instant, whatever workers write, whatever the chunk size`, { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  await snapshotProperty({
    create: () => Region.create({ size: 4 * MiB2, pageSize: MiB2 }),
    size: 4 * MiB2,
    unit: MiB2,
    snapshotOptions: [{}, { chunkSize: MiB2 }, { chunkSize: 4 * MiB2 }],
    numRuns: 15,
  });
});
