/**
 * Writing a sparse region (reserve: false): holes stay holes. A hole read
 * through a mapping of a tmpfs file allocates a page, so a writer that read
 * every page would fill /dev/shm with zeros (and fail once it is full).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Region, writeCheckpoint, checkpointInfo, pageSize } from 'cowshm';
import { isRoot, tempDir, rmTemp } from './helpers';

const MiB = 1024 * 1024;
const allocated = (file: string): number => fs.statSync(file).blocks * 512;

/** Bytes `region` holds in memory (its file's allocated blocks). */
const regionAllocated = (region: Region): number => allocated(`/proc/self/fd/${region.fd}`);

function checkRestored(file: string, expect: Map<number, number>, size: number): void {
  const back = Region.restore(file, { verify: 'full' });
  try {
    const bytes = new Uint8Array(back.map({ access: 'read' }).buffer, 0, size);
    for (let p = 0; p < size / pageSize; p++) {
      const want = expect.get(p) ?? 0;
      assert.equal(bytes[p * pageSize], want, `page ${p}`);
      assert.equal(bytes[p * pageSize + pageSize - 1], want, `page ${p} end`);
    }
  } finally {
    back.close();
  }
}

for (const kind of ['snapshot', 'view'] as const) {
  test(`writing a sparse region with one page written allocates no more of it (${kind})`, async () => {
    const dir = tempDir('ck-sparse');
    const size = 64 * MiB;
    const region = Region.create({ size, reserve: false });
    try {
      const view = region.map();
      const bytes = new Uint8Array(view.buffer);
      bytes.fill(7, 5 * pageSize, 6 * pageSize);
      bytes.fill(9, size - pageSize, size);
      const before = regionAllocated(region);
      assert.ok(before <= 4 * MiB, `a fresh sparse region holds ${before} bytes`);
      const file = path.join(dir, 'c.cow');
      if (kind === 'snapshot') {
        const snap = region.snapshot();
        // Written after the snapshot: into data (5) and into a hole (100), which the snapshot saw as zeros.
        bytes.fill(8, 5 * pageSize, 6 * pageSize);
        bytes.fill(8, 100 * pageSize, 101 * pageSize);
        try {
          await snap.writeTo(file);
        } finally {
          snap.release();
        }
        checkRestored(file, new Map([[5, 7], [size / pageSize - 1, 9]]), size);
      } else {
        await writeCheckpoint(view, file);
        checkRestored(file, new Map([[5, 7], [size / pageSize - 1, 9]]), size);
      }
      const after = regionAllocated(region);
      assert.ok(after - before <= 2 * MiB, `writing the checkpoint allocated ${after - before} bytes of the region`);
      // The checkpoint keeps the holes too, where its file system can (tmpfs, ext4, xfs, btrfs do).
      assert.ok(allocated(file) <= 8 * MiB, `the checkpoint occupies ${allocated(file)} bytes`);
      assert.equal(checkpointInfo(file, { verify: 'full' }).fileSize, 4096 + size);
      view.close();
    } finally {
      region.close();
      rmTemp(dir);
    }
  });
}

test('a sparse region on a full tmpfs still writes its checkpoint', { skip: isRoot ? false : 'needs root to mount a small tmpfs' }, async () => {
  const dir = tempDir('ck-sparse-full');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  try {
    const size = 16 * MiB;
    const region = Region.openFile(path.join(mnt, 'r'), { create: true, size, reserve: false });
    try {
      const view = region.map();
      new Uint8Array(view.buffer).fill(3, 0, pageSize);
      // Fill the file system to the last block.
      const fd = fs.openSync(path.join(mnt, 'fill'), 'w');
      try {
        for (;;) fs.writeSync(fd, Buffer.alloc(pageSize, 1));
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        fs.closeSync(fd);
      }
      const snap = region.snapshot();
      try {
        const res = await snap.writeTo(path.join(dir, 'c.cow'));
        assert.equal(res.pages, size / pageSize);
      } finally {
        snap.release();
      }
      checkRestored(path.join(dir, 'c.cow'), new Map([[0, 3]]), size);
      view.close();
    } finally {
      region.close();
    }
  } finally {
    execFileSync('umount', [mnt]);
    rmTemp(dir);
  }
});
