/**
 * Checkpoint files are input from anybody who can write to the directory:
 * crafted headers must be refused before they cost memory, and an error
 * must not show the bytes of a file cowshm was pointed at.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Format from '../dist/checkpoint/format';
import { Region, writeCheckpoint, checkpointInfo, pageSize } from 'cowshm';
import { packageRoot, tempDir, rmTemp } from './helpers';

const format: typeof Format = require(path.join(packageRoot, 'dist', 'checkpoint', 'format'));

async function fullAndDelta(dir: string): Promise<{ base: string; delta: string }> {
  const region = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    const base = path.join(dir, 'base.cow');
    const delta = path.join(dir, 'delta.cow');
    await writeCheckpoint(view, base);
    new Uint8Array(view.buffer)[0] = 1;
    await writeCheckpoint(view, delta, { base });
    view.close();
    return { base, delta };
  } finally {
    region.close();
  }
}

test('a delta whose base path names another file does not show that file\'s bytes', async () => {
  const dir = tempDir('ck-hostile-foreign');
  try {
    const { base, delta } = await fullAndDelta(dir);
    const secret = 'SECRET-TOKEN-0123456789';
    fs.writeFileSync(base, secret);
    const hex = Buffer.from(secret).toString('hex');
    for (const run of [() => Region.restore(delta), () => checkpointInfo(delta), () => Region.restore(base)]) {
      assert.throws(run, (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_COWSHM_CHECKPOINT_INVALID');
        assert.match(err.message, /wrong magic/);
        for (let n = 4; n <= secret.length; n++) {
          assert.ok(!err.message.includes(secret.slice(0, n)), `the message shows the file's text: ${err.message}`);
          assert.ok(!err.message.includes(hex.slice(0, 2 * n)), `the message shows the file's bytes: ${err.message}`);
        }
        return true;
      });
    }
  } finally {
    rmTemp(dir);
  }
});

test('a delta chain declaring a region larger than the memory available is refused before anything is allocated', async () => {
  const dir = tempDir('ck-hostile-huge');
  try {
    // A full checkpoint of a 1 TiB region: a valid header over a sparse file.
    const regionSize = 2 ** 40;
    const hugeBase = path.join(dir, 'huge.cow');
    const id = format.newId();
    const fullHeader = {
      kind: 'full' as const, regionSize, pageSize, pageCount: regionSize / pageSize, dataOffset: format.HEADER_BLOCK,
      pageListOffset: 0, checksum: '0123456789abcdef', id, base: null, created: new Date(),
    };
    const fd = fs.openSync(hugeBase, 'w');
    try {
      fs.writeSync(fd, format.encodeHeader(fullHeader, null), 0, format.HEADER_BLOCK, 0);
      fs.ftruncateSync(fd, format.expectedFileSize(fullHeader));
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    fs.closeSync(fd);
    // A delta on it with no pages.
    const delta = path.join(dir, 'delta.cow');
    const deltaHeader = {
      kind: 'delta' as const, regionSize, pageSize, pageCount: 0, dataOffset: format.HEADER_BLOCK,
      pageListOffset: format.HEADER_BLOCK, checksum: 'ef46db3751d8e999', id: format.newId(),
      base: { id, checksum: fullHeader.checksum, regionSize, path: 'huge.cow' }, created: new Date(),
    };
    fs.writeFileSync(delta, format.encodeHeader(deltaHeader, new Uint32Array(0)));
    assert.equal(checkpointInfo(delta).chain.length, 2, 'the crafted chain is valid as far as headers go');
    const started = Date.now();
    assert.throws(() => Region.restore(delta), (err: Error & { code?: string; syscall?: string; path?: string }) => {
      assert.equal(err.code, 'ENOMEM');
      assert.equal(err.path, delta);
      assert.match(err.message, /materialises its 1\.00 TiB region in memory, more than is available/);
      return true;
    });
    assert.ok(Date.now() - started < 10_000, 'refused without reading the file');
  } finally {
    rmTemp(dir);
  }
});
