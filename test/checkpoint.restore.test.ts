import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, writeCheckpoint, pageSize } from 'cowshm';
import { tempDir, rmTemp } from './helpers';

async function checkpointOf(dir: string, name: string, size: number, fill: number): Promise<{ file: string; bytes: Uint8Array }> {
  const region = Region.create({ size });
  try {
    const bytes = new Uint8Array(region.map().buffer);
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + fill) & 0xff;
    const file = path.join(dir, name);
    await writeCheckpoint(region.map(), file);
    return { file, bytes: bytes.slice() };
  } finally {
    region.close();
  }
}

const sha = (file: string): string => require('node:crypto').createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('a full checkpoint restores as a read-only region over the file; cow writes never reach the file', async () => {
  const dir = tempDir('ck-restore');
  try {
    const { file, bytes } = await checkpointOf(dir, 'a.cow', 5 * pageSize, 1);
    const digest = sha(file);
    const back = Region.restore(file, { verify: 'full' });
    try {
      assert.equal(back.kind, 'file');
      assert.equal(back.readOnly, true);
      assert.equal(back.size, 5 * pageSize);
      assert.equal(back.map().access, 'read');
      assert.throws(() => back.map({ access: 'write' }), { code: 'ERR_COWSHM_READ_ONLY' });
      assert.throws(() => back.handle(), { code: 'ERR_COWSHM_NO_HANDLE' });
      const cow = new Uint8Array(back.map({ access: 'cow' }).buffer);
      assert.deepEqual(cow, bytes);
      cow.fill(0xee);
      assert.deepEqual(new Uint8Array(back.map({ access: 'read' }).buffer), bytes);
    } finally {
      back.close();
    }
    assert.equal(sha(file), digest);
  } finally {
    rmTemp(dir);
  }
});

test('bad files: a clear error for each, with the path', async () => {
  const dir = tempDir('ck-bad');
  try {
    const { file } = await checkpointOf(dir, 'good.cow', 4 * pageSize, 2);
    const good = fs.readFileSync(file);
    const variant = (name: string, mutate: (b: Buffer) => Buffer): string => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, mutate(Buffer.from(good)));
      return p;
    };
    const missing = path.join(dir, 'missing.cow');
    assert.throws(() => Region.restore(missing), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.path, missing);
      return true;
    });
    const invalidCases: Array<[string, RegExp, 'header' | 'full']> = [
      [variant('magic.cow', (b) => (b.write('NOTCOWSH', 0, 'latin1'), b)), /wrong magic \(it does not start with 'COWSHMCK'\)/, 'header'],
      [variant('empty.cow', () => Buffer.alloc(0)), /wrong magic .*an empty file/, 'header'],
      [variant('short.cow', (b) => b.subarray(0, 100)), /truncated inside its header/, 'header'],
      [variant('trunc.cow', (b) => b.subarray(0, b.length - 1)), /truncated: 20479 bytes, and its header describes 20480/, 'header'],
      [variant('long.cow', (b) => Buffer.concat([b, Buffer.alloc(1)])), /longer than the 20480 its header describes/, 'header'],
      [variant('version.cow', (b) => (b.writeUInt32LE(9, 8), b)), /version 9, and this cowshm reads version 1/, 'header'],
      [variant('hdrsum.cow', (b) => (b[60] = (b[60] as number) ^ 1, b)), /header checksum mismatch/, 'header'],
      [variant('fields.cow', (b) => (b.writeUInt32LE(3, 28), b)), /header fields are inconsistent/, 'header'],
      [variant('data.cow', (b) => (b[4096 + 5000] = (b[4096 + 5000] as number) ^ 1, b)), /data checksum mismatch/, 'full'],
    ];
    for (const [p, message, verify] of invalidCases) {
      assert.throws(() => Region.restore(p, { verify }), (err: Error & { code?: string; path?: string }) => {
        assert.equal(err.code, 'ERR_COWSHM_CHECKPOINT_INVALID', `${p}: ${err.message}`);
        assert.equal(err.path, p);
        assert.ok(err.message.startsWith(`'${p}' is not a valid cowshm checkpoint: `), err.message);
        assert.match(err.message, message);
        return true;
      });
    }
    // A data error is only found when asked for: the default check is O(1).
    Region.restore(path.join(dir, 'data.cow')).close();
    // A directory is not a checkpoint.
    assert.throws(() => Region.restore(dir), (err: NodeJS.ErrnoException) => /EISDIR|not a regular file/.test(err.message));
    // Arguments.
    assert.throws(() => Region.restore(1 as never), /"path" argument must be a string/);
    assert.throws(() => Region.restore(''), /"path" argument must be a non-empty string/);
    assert.throws(() => Region.restore(file, { verify: 'some' as never }), /"verify" option must be one of 'header', 'full'/);
  } finally {
    rmTemp(dir);
  }
});
