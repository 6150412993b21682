import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, checkpointInfo, pageSize } from 'cowshm';
import { tempDir, rmTemp } from './helpers';

// The writer copies 1 MiB chunks into the file while a second thread reads
// each finished chunk back and hashes it. Sizes on either side of the chunk
// boundaries must give a file that verifies and holds exactly the snapshot's
// bytes, whether the hash runs behind the copy or inline.
const MiB = 1024 * 1024;
const sizes = [1, pageSize, MiB - pageSize, MiB, MiB + 1, 2 * MiB + pageSize + 7, 5 * MiB];

test('full checkpoints at sizes around the 1 MiB chunk: verified, byte-exact, the region written meanwhile', async () => {
  const dir = tempDir('ck-chunks');
  try {
    for (const size of sizes) {
      const region = Region.create({ size });
      try {
        const bytes = new Uint8Array(region.map().buffer);
        for (let i = 0; i < size; i++) bytes[i] = (i * 2654435761 + size) >>> 24;
        const frozen = Uint8Array.from(bytes);
        const s = region.snapshot();
        const file = path.join(dir, `s${size}.cow`);
        const pending = s.writeTo(file);
        bytes.fill(0xa5); // after the snapshot: must not reach the file
        const res = await pending;
        s.release();
        const pages = Math.ceil(size / pageSize);
        assert.equal(res.pages, pages, `size ${size}`);
        assert.equal(checkpointInfo(file, { verify: 'full' }).checksum, res.checksum, `size ${size}`);
        const raw = fs.readFileSync(file);
        assert.equal(raw.length, 4096 + pages * pageSize, `size ${size}`);
        assert.deepEqual(raw.subarray(4096, 4096 + size), Buffer.from(frozen.buffer), `size ${size}`);
        // The same bytes give the same checksum, however the write was split.
        const again = Region.create({ size });
        try {
          new Uint8Array(again.map().buffer).set(frozen);
          const s2 = again.snapshot();
          const res2 = await s2.writeTo(path.join(dir, `t${size}.cow`));
          s2.release();
          assert.equal(res2.checksum, res.checksum, `size ${size}`);
        } finally {
          again.close();
        }
      } finally {
        region.close();
      }
    }
  } finally {
    rmTemp(dir);
  }
});
