import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, pageSize, snapshotBackend } from 'cowshm';
import { rmTemp, tempDir } from './helpers';

test('a file-backed region: isolated too; userfaultfd covers shared memory only, so files on disk use mprotect', () => {
  const dir = tempDir('snap-file');
  try {
    const file = path.join(dir, 'data.bin');
    const r = Region.openFile(file, { create: true, size: 8 * pageSize });
    try {
      const view = new Uint8Array(r.map().buffer);
      view.fill(3);
      const s = r.snapshot();
      const tmpfs = fs.statfsSync(dir).type === 0x01021994;
      assert.equal(s.backend, tmpfs ? snapshotBackend : 'mprotect');
      view.fill(4, 0, 3 * pageSize);
      r.flush();
      assert.ok(new Uint8Array(s.buffer).every((x) => x === 3));
      assert.equal(fs.readFileSync(file)[0], 4);
      s.release();
      view[0] = 5;
      assert.equal(view[0], 5);
    } finally {
      r.close();
    }
  } finally {
    rmTemp(dir);
  }
});
