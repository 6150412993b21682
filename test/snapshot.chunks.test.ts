import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, memory, pageSize, snapshotBackend } from 'cowshm';
import { spawnSync } from 'node:child_process';
import { packageRoot } from './helpers';
import { snapshotProperty } from './snapshot-property';

const KiB = 1024;
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

test('chunkSize: a power of two from the page size up; anything else is a RangeError naming the minimum', () => {
  const r = Region.create({ size: 16 * pageSize });
  try {
    for (const bad of [3 * pageSize, pageSize + 1, 2 ** 31]) assert.throws(() => r.snapshot({ chunkSize: bad }), { name: 'RangeError', message: /"chunkSize" option must be a power of two/ });
    assert.throws(() => r.snapshot({ chunkSize: pageSize / 2 }), {
      name: 'RangeError',
      message: new RegExp(`"chunkSize" option must be a power of two of at least ${pageSize} \\(the region's page size\\)`),
    });
    assert.throws(() => r.snapshot({ chunkSize: '64k' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  } finally {
    r.close();
  }
});

test(`a 64 KiB chunk (${snapshotBackend}): the first write copies the 16 pages around it; copiedPages and changedPages count them; memory stays exact`, () => {
  const r = Region.create({ size: 64 * pageSize });
  try {
    const whole = r.map();
    const view = new Uint8Array(whole.buffer);
    view.fill(1);
    const s = r.snapshot({ chunkSize: 64 * KiB });
    assert.equal(s.chunkSize, 64 * KiB);
    const per = (64 * KiB) / pageSize;
    view[5 * pageSize] = 2;
    assert.equal(s.copiedPages, per);
    assert.deepEqual([...s.changedPages()], range(0, per));
    view[7 * pageSize] = 2; // same chunk: nothing more
    assert.equal(s.copiedPages, per);
    if (snapshotBackend === 'userfaultfd') {
      // The whole chunk was made writable at once: none of its pages is still write-protected.
      assert.equal(memory.pages(whole, { length: 64 * KiB }).writeProtected, 0);
      assert.equal(memory.pages(whole, { offset: 64 * KiB, length: 64 * KiB }).writeProtected, per);
    }
    view[40 * pageSize] = 2;
    assert.equal(s.copiedPages, 2 * per);
    assert.deepEqual([...s.changedPages()], [...range(0, per), ...range(2 * per, per)]);
    assert.ok(new Uint8Array(s.buffer).every((x) => x === 1));
    // Exactly the copied chunks are the snapshot's private memory.
    assert.equal(memory.usage(s).privateDirty, s.copiedPages * pageSize);
    s.release();
  } finally {
    r.close();
  }
});

test(`live snapshots with different chunk sizes (${snapshotBackend}): each copies its own chunk; a page is writable again only once every live snapshot has copied it`, () => {
  const r = Region.create({ size: 64 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(1);
    const a = r.snapshot(); // the backend's own protection chunk
    const b = r.snapshot({ chunkSize: 64 * KiB });
    const c = r.snapshot({ chunkSize: Math.max(16 * KiB, a.chunkSize) });
    const unit = a.chunkSize / pageSize; // pages un-protected at a time: what all three have copied
    const pagesOf = (s: typeof a, page: number): number[] => {
      const n = s.chunkSize / pageSize;
      return range(Math.floor(page / n) * n, n);
    };
    view[5 * pageSize] = 2;
    assert.deepEqual([...a.changedPages()], pagesOf(a, 5));
    assert.deepEqual([...b.changedPages()], pagesOf(b, 5));
    assert.deepEqual([...c.changedPages()], pagesOf(c, 5));
    // A page next to it, outside a's chunk, faults again: a copies it, b and c have it already.
    const next = 5 + unit;
    view[next * pageSize] = 2;
    if (next < 16) {
      assert.deepEqual([...a.changedPages()], [...pagesOf(a, 5), ...pagesOf(a, next)]);
      assert.deepEqual([...b.changedPages()], pagesOf(b, 5));
    }
    b.release();
    view[40 * pageSize] = 3;
    assert.ok(a.changedPages().includes(40) && c.changedPages().includes(40));
    for (const s of [a, c]) assert.ok(new Uint8Array(s.buffer).every((x) => x === 1));
    a.release();
    c.release();
  } finally {
    r.close();
  }
});

test('with the mprotect backend a chunk below its minimum for the region is a RangeError naming that minimum', () => {
  const forced = spawnSync(process.execPath, ['-e', `
    const { Region } = require('cowshm');
    const r = Region.create({ size: 1 << 20 });
    r.map();
    try { r.snapshot({ chunkSize: 4096 }); console.log('no error'); } catch (e) { console.log(e.name + ' ' + e.message); }
    console.log(r.snapshot({ chunkSize: 1 << 17 }).chunkSize, r.snapshot().chunkSize);
  `], { cwd: packageRoot, encoding: 'utf8', env: { ...process.env, COWSHM_SNAPSHOT_BACKEND: 'mprotect', COWSHM_MPROTECT_CHUNK: '65536' } });
  assert.equal(forced.stderr, '');
  const [error, sizes] = forced.stdout.trim().split('\n');
  assert.match(error ?? '', /^RangeError The "chunkSize" option must be a power of two of at least 65536 \(the mprotect backend's protection chunk for this region\)\. Received 4096/);
  assert.equal(sizes, `${1 << 17} 65536`);
});

test(`property with 16 and 64 KiB chunks (${snapshotBackend}): every snapshot equals a copy taken at its instant, whatever workers write`, async () => {
  await snapshotProperty({
    create: () => Region.create({ size: 48 * pageSize }),
    size: 48 * pageSize,
    unit: pageSize,
    snapshotOptions: [{}, { chunkSize: 16 * KiB }, { chunkSize: 64 * KiB }],
    numRuns: 25,
  });
});
