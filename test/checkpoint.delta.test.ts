import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, writeCheckpoint, checkpointInfo, pageSize } from 'cowshm';
import { tempDir, rmTemp } from './helpers';

test('a chain of deltas holds only changed pages and restores to the latest bytes', async () => {
  const dir = tempDir('ck-delta');
  const pages = 64;
  const region = Region.create({ size: pages * pageSize });
  try {
    const view = region.map();
    const bytes = new Uint8Array(view.buffer);
    for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
    const files = [path.join(dir, 'c0.cow')];
    await writeCheckpoint(view, files[0]!);
    const expected: Uint8Array[] = [bytes.slice()];
    const changes = [[3], [0, 1, 2, 63], [], [10, 20, 30, 40, 50]];
    for (let k = 0; k < changes.length; k++) {
      for (const p of changes[k]!) bytes[p * pageSize + k] = (bytes[p * pageSize + k]! + 1) & 0xff;
      // Writing the same byte back is no change at all.
      bytes[7 * pageSize] = bytes[7 * pageSize]!;
      const file = path.join(dir, `c${k + 1}.cow`);
      const res = await writeCheckpoint(view, file, { base: files[k]! });
      files.push(file);
      expected.push(bytes.slice());
      assert.equal(res.kind, 'delta');
      assert.equal(res.pages, changes[k]!.length);
      assert.equal(res.bytes, 4096 + changes[k]!.length * (pageSize + 4));
      const info = checkpointInfo(file, { verify: 'full' });
      assert.equal(info.base?.path, path.basename(files[k]!));
      assert.deepEqual(info.chain, files.slice(0, k + 2));
    }
    // Every link restores to the bytes at its time.
    for (let k = 0; k < files.length; k++) {
      const back = Region.restore(files[k]!, { verify: 'full' });
      try {
        assert.deepEqual(new Uint8Array(back.map().buffer), expected[k], `link ${k}`);
      } finally {
        back.close();
      }
    }
    // Deltas resolve their base relative to their own directory: the chain moves as a whole.
    const moved = path.join(dir, 'moved');
    fs.mkdirSync(moved);
    for (const f of files) fs.renameSync(f, path.join(moved, path.basename(f)));
    const back = Region.restore(path.join(moved, 'c4.cow'));
    assert.deepEqual(new Uint8Array(back.map().buffer), expected[4]);
    back.close();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('a delta whose base no longer matches is refused; so are bad bases', async () => {
  const dir = tempDir('ck-delta-bad');
  const region = Region.create({ size: 8 * pageSize });
  const other = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    const bytes = new Uint8Array(view.buffer);
    const base = path.join(dir, 'base.cow');
    const delta = path.join(dir, 'delta.cow');
    await writeCheckpoint(view, base);
    bytes[5] = 5;
    await writeCheckpoint(view, delta, { base });

    // The base replaced by another checkpoint of the same region: refused, naming both ids.
    bytes[6] = 6;
    await writeCheckpoint(view, base);
    assert.throws(() => Region.restore(delta), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_COWSHM_CHECKPOINT_INVALID');
      assert.match(err.message, /it is a delta of checkpoint [0-9a-f]{32} \(data checksum [0-9a-f]{16}\), but '.*base\.cow' is checkpoint [0-9a-f]{32}/);
      return true;
    });
    // The base gone.
    fs.rmSync(base);
    assert.throws(() => Region.restore(delta), /it is a delta and its base '.*base\.cow' does not exist/);

    // Writing a delta against a bad base: refused before anything is written.
    await assert.rejects(writeCheckpoint(view, path.join(dir, 'x.cow'), { base }), { code: 'ENOENT' });
    fs.writeFileSync(path.join(dir, 'junk.cow'), 'junk');
    await assert.rejects(writeCheckpoint(view, path.join(dir, 'x.cow'), { base: path.join(dir, 'junk.cow') }), /wrong magic/);
    const small = path.join(dir, 'small.cow');
    await writeCheckpoint(other.map(), small);
    await assert.rejects(
      writeCheckpoint(view, path.join(dir, 'x.cow'), { base: small }),
      /it checkpoints a region of 16384 bytes; this region has 32768/,
    );
    // A delta may not replace its own base (or anything its base rests on).
    await writeCheckpoint(view, base);
    await writeCheckpoint(view, delta, { base });
    const before = [fs.readFileSync(base), fs.readFileSync(delta)];
    await assert.rejects(writeCheckpoint(view, base, { base: delta }), /a file other than the delta's base chain/);
    await assert.rejects(writeCheckpoint(view, delta, { base: delta }), /a file other than the delta's base chain/);
    assert.equal(fs.existsSync(path.join(dir, 'x.cow')), false);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
    assert.deepEqual([fs.readFileSync(base), fs.readFileSync(delta)], before);
    Region.restore(delta, { verify: 'full' }).close();
  } finally {
    region.close();
    other.close();
    rmTemp(dir);
  }
});

test('a delta records its base path in the header block: at most the block minus its 128 fixed bytes', async () => {
  // The header block is 4 KiB, or one page where pages are larger (docs/api.md, file format).
  const max = Math.max(4096, pageSize) - 128;
  const dir = tempDir('ck-basepath');
  const region = Region.create({ size: 2 * pageSize });
  try {
    const view = region.map();
    /** A full checkpoint whose path relative to `dir` is exactly `bytes` long. */
    const baseOf = async (bytes: number): Promise<string> => {
      const parts: string[] = [];
      let left = bytes;
      while (left > 255) {
        parts.push('d'.repeat(Math.min(200, left - 201)));
        left -= (parts[parts.length - 1] as string).length + 1;
      }
      parts.push(`${'f'.repeat(left - 4)}.cow`);
      const rel = parts.join('/');
      assert.equal(Buffer.byteLength(rel), bytes);
      fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
      await writeCheckpoint(view, path.join(dir, rel));
      return rel;
    };
    new Uint8Array(view.buffer)[0] = 1;
    const longest = await baseOf(max);
    new Uint8Array(view.buffer)[pageSize] = 2;
    const res = await writeCheckpoint(view, path.join(dir, 'ok.cow'), { base: path.join(dir, longest) });
    assert.equal(res.pages, 1);
    assert.equal(checkpointInfo(path.join(dir, 'ok.cow'), { verify: 'full' }).base?.path, longest);
    const tooLong = await baseOf(max + 1);
    await assert.rejects(writeCheckpoint(view, path.join(dir, 'no.cow'), { base: path.join(dir, tooLong) }), {
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
      message: new RegExp(`^The "base" option must be a path of at most ${max} bytes relative to the target directory\\.`),
    });
    assert.ok(!fs.existsSync(path.join(dir, 'no.cow')));
  } finally {
    region.close();
    rmTemp(dir);
  }
});
