import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { Region, memory, pageSize } from 'cowshm';
import { mapsLineAt } from './helpers';

/** The smaps block of the mapping that starts at `address`. */
function smapsAt(address: number): { rss: number; vmFlags: string[] } {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const start = lines.findIndex((l) => l.startsWith(`${address.toString(16)}-`));
  assert.notEqual(start, -1, 'mapping not found in /proc/self/smaps');
  let rss = -1;
  let vmFlags: string[] = [];
  for (let i = start + 1; i < lines.length && !/^[0-9a-f]+-/.test(lines[i] as string); i++) {
    const line = lines[i] as string;
    if (line.startsWith('Rss:')) rss = Number(line.split(/\s+/)[1]) * 1024;
    if (line.startsWith('VmFlags:')) vmFlags = line.slice(8).trim().split(/\s+/);
  }
  return { rss, vmFlags };
}

test('map() with no options: the whole region, shared and writable', () => {
  const r = Region.create({ size: 12345 });
  try {
    const v = r.map();
    assert.equal(v.region, r);
    assert.equal(v.access, 'write');
    assert.equal(v.byteOffset, 0);
    assert.equal(v.byteLength, 12345);
    assert.equal(v.buffer.byteLength, 12345);
    assert.equal(v.closed, false);
    assert.ok(v.buffer instanceof ArrayBuffer);
    const line = mapsLineAt(v.address) ?? '';
    assert.match(line, / rw-s 00000000 /);
    assert.match(line, /\/memfd:cowshm \(deleted\)$/);
  } finally {
    r.close();
  }
});

test('offsets must be page aligned; the error names the page size', () => {
  const r = Region.create({ size: 4 * pageSize });
  try {
    assert.throws(() => r.map({ offset: 100 }), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.equal((err as RangeError & { code: string }).code, 'ERR_OUT_OF_RANGE');
      assert.equal(err.message, `The "offset" option must be a multiple of the page size (${pageSize}). Received 100`);
      return true;
    });
    const v = r.map({ offset: 2 * pageSize });
    assert.equal(v.byteOffset, 2 * pageSize);
    assert.equal(v.byteLength, 2 * pageSize);
    assert.match(mapsLineAt(v.address) ?? '', new RegExp(` rw-s ${(2 * pageSize).toString(16).padStart(8, '0')} `));
  } finally {
    r.close();
  }
});

test('offset and length must stay inside the region', () => {
  const r = Region.create({ size: 2 * pageSize + 10 });
  try {
    const cases: Array<[object, string]> = [
      [{ offset: 3 * pageSize }, `The "offset" option must be less than the region's size (${2 * pageSize + 10}). Received ${3 * pageSize}`],
      [{ offset: -pageSize }, `The "offset" option must be a non-negative integer. Received -${pageSize}`],
      [{ length: 0 }, 'The "length" option must be a positive integer. Received 0'],
      [{ length: 2 * pageSize + 11 }, `The "length" option must be at most ${2 * pageSize + 10} (the region's size minus the offset). Received ${2 * pageSize + 11}`],
      [{ offset: pageSize, length: pageSize + 11 }, `The "length" option must be at most ${pageSize + 10} (the region's size minus the offset). Received ${pageSize + 11}`],
      [{ length: 1.5 }, 'The "length" option must be a positive integer. Received 1.5'],
    ];
    for (const [options, message] of cases) {
      assert.throws(() => r.map(options), (err: Error) => {
        assert.ok(err instanceof RangeError, String(err));
        assert.equal(err.message, message);
        return true;
      });
    }
    // The last, partial page is mappable and the view ends exactly at the region's end.
    const tail = r.map({ offset: 2 * pageSize });
    assert.equal(tail.byteLength, 10);
  } finally {
    r.close();
  }
});

test('access modes: write is shared, read is read-only, cow is private', () => {
  const r = Region.create({ size: pageSize });
  try {
    const w = r.map({ access: 'write' });
    const ro = r.map({ access: 'read' });
    const cow = r.map({ access: 'cow' });
    assert.match(mapsLineAt(w.address) ?? '', / rw-s /);
    assert.match(mapsLineAt(ro.address) ?? '', / r--s /);
    assert.match(mapsLineAt(cow.address) ?? '', / rw-p /);
    const wb = new Uint8Array(w.buffer);
    const rb = new Uint8Array(ro.buffer);
    const cb = new Uint8Array(cow.buffer);
    wb[0] = 1;
    assert.equal(rb[0], 1);
    assert.equal(cb[0], 1); // an untouched cow page shows the region
    cb[0] = 2;
    assert.equal(wb[0], 1); // a written cow page is private
    wb[0] = 3;
    assert.equal(cb[0], 2);
    assert.throws(() => r.map({ access: 'rw' as never }), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.equal(err.message, `The "access" option must be one of 'read', 'write', 'cow'. Received type string ('rw')`);
      return true;
    });
  } finally {
    r.close();
  }
});

test('several views of one region see the same bytes, whatever their offsets', () => {
  const r = Region.create({ size: 4 * pageSize });
  try {
    const whole = new Uint32Array(r.map().buffer);
    const second = new Uint32Array(r.map({ offset: pageSize, length: 2 * pageSize }).buffer);
    const again = new Uint32Array(r.map({ offset: pageSize }).buffer);
    second[5] = 0xdeadbeef;
    assert.equal(whole[pageSize / 4 + 5], 0xdeadbeef);
    assert.equal(again[5], 0xdeadbeef);
    whole[3 * (pageSize / 4)] = 17;
    assert.equal(again[2 * (pageSize / 4)], 17);
  } finally {
    r.close();
  }
});

test('populate: every page is faulted in at map time', () => {
  const r = Region.create({ size: 64 * pageSize });
  try {
    const lazy = r.map();
    const eager = r.map({ populate: true });
    assert.equal(smapsAt(lazy.address).rss, 0);
    assert.equal(smapsAt(eager.address).rss, 64 * pageSize);
    assert.throws(() => r.map({ populate: 1 as never }), TypeError);
  } finally {
    r.close();
  }
});

test('populate on a cow view maps the region\'s own pages, copying none of them', () => {
  const r = Region.create({ size: 64 * pageSize });
  try {
    new Uint8Array(r.map().buffer).fill(7);
    const cowView = r.map({ access: 'cow', populate: true });
    const pages = memory.pages(cowView);
    assert.equal(pages.present, 64, 'every page is mapped at map time');
    assert.equal(pages.anonymous, 0, 'no page was copied: a copy comes with the first write');
    const cow = new Uint8Array(cowView.buffer);
    assert.equal(cow[5 * pageSize], 7);
    cow[5 * pageSize] = 1;
    assert.equal(memory.pages(cowView).anonymous, 1);
    assert.equal(new Uint8Array(r.map().buffer)[5 * pageSize], 7, 'the region is untouched');
  } finally {
    r.close();
  }
});

test('hugePages: views are advised MADV_HUGEPAGE', () => {
  const r = Region.create({ size: 4 << 20, hugePages: true });
  try {
    const v = r.map();
    assert.ok(smapsAt(v.address).vmFlags.includes('hg'), 'VmFlags should include hg');
    const plain = Region.create({ size: 4 << 20 });
    assert.ok(!smapsAt(plain.map().address).vmFlags.includes('hg'));
    plain.close();
  } finally {
    r.close();
  }
});

// Node 22 and later allow ArrayBuffers of up to 2^53-1 bytes: no region can be mapped past that
// (the address space ends at 2^47), so exceeding maxViewLength is only possible on Node 20.
const noRegionExceedsIt = Region.maxViewLength > 2 ** 46 && `Node.js ${process.version} allows views of up to ${Region.maxViewLength} bytes, more than a process can map`;
test('Region.maxViewLength: one view can not exceed it, and the error says what to do', { skip: noRegionExceedsIt }, () => {
  assert.equal(Region.maxViewLength, bufferConstants.MAX_LENGTH);
  // Sparse and anonymous: costs nothing but address space.
  const size = Region.maxViewLength + (1 << 30);
  const r = Region.create({ size, reserve: false });
  try {
    assert.throws(() => r.map({ length: Region.maxViewLength + pageSize }), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, new RegExp(`^The "length" option must be at most ${Region.maxViewLength} \\(Region\\.maxViewLength\\), the largest ArrayBuffer Node\\.js v[\\d.]+ allows; map a larger region as several views, each with its own offset and length\\. Received ${Region.maxViewLength + pageSize}$`));
      return true;
    });
    assert.throws(() => r.map(), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, new RegExp(`has ${size} bytes from offset 0, and a view is at most ${Region.maxViewLength} \\(Region\\.maxViewLength\\)`));
      assert.match(err.message, /map a larger region as several views/);
      return true;
    });
    // As several views, it all works.
    const first = r.map({ length: Region.maxViewLength });
    const second = r.map({ offset: Region.maxViewLength });
    assert.equal(first.byteLength, Region.maxViewLength);
    assert.equal(second.byteLength, 1 << 30);
    const a = new Uint8Array(first.buffer);
    const b = new Uint8Array(second.buffer);
    a[a.length - 1] = 1;
    b[b.length - 1] = 2;
    const check = r.map({ offset: Region.maxViewLength - pageSize, length: 2 * pageSize });
    const c = new Uint8Array(check.buffer);
    assert.equal(c[pageSize - 1], 1);
    b[0] = 3;
    assert.equal(c[pageSize], 3);
  } finally {
    r.close();
  }
});

test('large views of consecutive parts of a region stay separate mappings, each with its own figures', () => {
  // The kernel hands out addresses top down: mapped from the last part to the
  // first, each view would land just below the previous one, and two views of
  // consecutive file ranges side by side are merged into one mapping. Large
  // views are placed apart.
  const GiB = 2 ** 30;
  const r = Region.create({ size: 4 * GiB, reserve: false });
  try {
    const views = [3, 2, 1, 0].map((i) => r.map({ offset: i * GiB, length: GiB, access: 'read' }));
    for (const v of views) {
      const line = mapsLineAt(v.address);
      assert.ok(line, `a line of /proc/self/maps starts at ${v.address.toString(16)}`);
      const [start, end] = (line.split(' ', 1)[0] as string).split('-').map((x) => parseInt(x, 16));
      assert.equal(start, v.address);
      assert.equal(end, v.address + GiB, `the mapping at ${line} is exactly the view`);
    }
    for (const v of views) v.close();
  } finally {
    r.close();
  }
});
