// Paths and names with a NUL byte: the system reads them only up to the NUL,
// so 'a\0b' would open 'a'. Every entry point refuses them as Node's fs does.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, checkpointInfo, writeCheckpoint, removeSegment, pageSize } from 'cowshm';
import { packageRoot, rmTemp, shmExists, tempDir, uniqueName } from './helpers';

/** What Node's fs throws for the same path. */
function nodeRefusal(): { name: string; code: string } {
  try {
    fs.openSync('a\0b', 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { name: e.name, code: e.code as string };
  }
  throw new Error('fs.openSync accepted a path with a NUL byte');
}

const refused = (what: string) => (err: Error & { code?: string }) => {
  assert.deepEqual({ name: err.name, code: err.code }, nodeRefusal());
  assert.equal(err.name, 'TypeError');
  assert.equal(err.code, 'ERR_INVALID_ARG_VALUE');
  assert.match(err.message, new RegExp(`^The ${what} must be a string without null bytes\\. Received type string \\(`));
  return true;
};

test('Region.openFile refuses a path with a NUL byte instead of opening the part before it', () => {
  const dir = tempDir('nul-open');
  try {
    const a = path.join(dir, 'a');
    fs.writeFileSync(a, Buffer.alloc(pageSize, 7));
    assert.throws(() => Region.openFile(`${a}\0b`), refused('"path" argument'));
    assert.throws(() => Region.openFile(`${a}\0b`, { readOnly: true }), refused('"path" argument'));
    assert.throws(() => Region.openFile(`${dir}/new\0b`, { create: true, size: pageSize }), refused('"path" argument'));
    assert.deepEqual(fs.readdirSync(dir), ['a'], 'nothing created');
  } finally {
    rmTemp(dir);
  }
});

test('Region.create and Region.open refuse a name with a NUL byte; removeSegment too', () => {
  const name = uniqueName('nul');
  assert.throws(() => Region.create({ size: pageSize, name: `${name}\0x` }), refused('"name" option'));
  assert.ok(!shmExists(name));
  const r = Region.create({ size: pageSize, name });
  try {
    assert.throws(() => Region.open(`${name}\0x`), refused('"name" argument'));
    assert.throws(() => removeSegment(`${name}\0x`), refused('"name" argument'));
    assert.ok(shmExists(name));
  } finally {
    r.unlink();
    r.close();
  }
});

test('Region.fromHandle refuses a file handle whose path has a NUL byte', () => {
  const dir = tempDir('nul-handle');
  const r = Region.openFile(path.join(dir, 'f'), { create: true, size: pageSize });
  try {
    const h = r.handle();
    assert.throws(() => Region.fromHandle({ ...h, path: `${h.path}\0x` }), refused('handle\'s "path"'));
  } finally {
    r.close();
    rmTemp(dir);
  }
});

test('checkpoints: restore, checkpointInfo, writeTo and a delta\'s base refuse a path with a NUL byte', async () => {
  const dir = tempDir('nul-ck');
  const region = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    new Uint8Array(view.buffer).fill(5);
    const full = path.join(dir, 'c0.cow');
    await writeCheckpoint(view, full);
    assert.throws(() => Region.restore(`${full}\0junk`), refused('"path" argument'));
    assert.throws(() => checkpointInfo(`${full}\0junk`), refused('"path" argument'));
    const s = region.snapshot();
    try {
      await assert.rejects(s.writeTo(`${dir}/x.cow\0junk`), refused('"path" argument'));
      // The base opened as c0.cow, and the delta recorded 'c0.cow\0junk' as its base.
      await assert.rejects(s.writeTo(path.join(dir, 'd.cow'), { base: `${full}\0junk` }), refused('"base" option'));
      await assert.rejects(writeCheckpoint(view, path.join(dir, 'd.cow'), { base: `${full}\0junk` }), refused('"base" option'));
    } finally {
      s.release();
    }
    assert.deepEqual(fs.readdirSync(dir), ['c0.cow'], 'nothing written');
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('a delta whose header names its base with a NUL byte is not a valid checkpoint', async () => {
  const dir = tempDir('nul-base');
  const region = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    const bytes = new Uint8Array(view.buffer);
    const base = path.join(dir, 'c0.cow');
    await writeCheckpoint(view, base);
    bytes[0] = 1;
    const delta = path.join(dir, 'd.cow');
    await writeCheckpoint(view, delta, { base });
    // Rewrite the recorded base path 'c0.cow' as 'c0.cow\0x', with a header checksum to match.
    const { native } = require(path.join(packageRoot, 'dist', 'native')) as { native: { xxh64(b: Uint8Array): string } };
    const file = fs.readFileSync(delta);
    const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
    const dataOffset = Number(dv.getBigUint64(32, true));
    const pageCount = dv.getUint32(28, true);
    const listOffset = Number(dv.getBigUint64(40, true));
    assert.equal(file.subarray(128, 128 + dv.getUint32(112, true)).toString(), 'c0.cow');
    Buffer.from('c0.cow\0x').copy(file, 128);
    dv.setUint32(112, 8, true);
    const hashed = Buffer.concat([file.subarray(0, dataOffset), file.subarray(listOffset, listOffset + pageCount * 4)]);
    hashed.fill(0, 120, 128);
    dv.setBigUint64(120, BigInt(`0x${native.xxh64(hashed)}`), true);
    fs.writeFileSync(delta, file);
    for (const open of [() => Region.restore(delta), () => checkpointInfo(delta)]) {
      assert.throws(open, { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /its base path holds a NUL byte/ });
    }
  } finally {
    region.close();
    rmTemp(dir);
  }
});
