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

/** A sparse region of `size` with pages 5 and the last written (7 and 9), and its full checkpoint. */
async function sparseWithBase(dir: string, size: number): Promise<{ region: Region; bytes: Uint8Array; full: string }> {
  const region = Region.create({ size, reserve: false });
  const bytes = new Uint8Array(region.map().buffer);
  bytes.fill(7, 5 * pageSize, 6 * pageSize);
  bytes.fill(9, size - pageSize, size);
  const full = path.join(dir, 'full.cow');
  const snap = region.snapshot();
  try {
    await snap.writeTo(full);
  } finally {
    snap.release();
  }
  return { region, bytes, full };
}

for (const kind of ['snapshot', 'view'] as const) {
  test(`a delta of a sparse region compares its holes without allocating them (${kind})`, async () => {
    const dir = tempDir('ck-sparse-delta');
    const size = 64 * MiB;
    const { region, bytes, full } = await sparseWithBase(dir, size);
    try {
      bytes.fill(4, 5 * pageSize, 6 * pageSize);
      bytes.fill(6, 200 * pageSize, 201 * pageSize);
      const before = regionAllocated(region);
      const delta = path.join(dir, 'delta.cow');
      let res;
      if (kind === 'snapshot') {
        // A snapshot that did not write `full` does not know what changed since: it compares every page.
        const snap = region.snapshot();
        bytes.fill(8, 300 * pageSize, 301 * pageSize); // written after the snapshot, into a hole: zeros in the delta's eyes
        try {
          res = await snap.writeTo(delta, { base: full });
        } finally {
          snap.release();
        }
      } else {
        res = await writeCheckpoint(region.map(), delta, { base: full });
      }
      assert.equal(res.kind, 'delta');
      assert.equal(res.pages, 2, 'the two changed pages, no hole');
      const after = regionAllocated(region);
      assert.ok(after - before <= 2 * MiB, `writing the delta allocated ${after - before} bytes of the region`);
      checkRestored(delta, new Map([[5, 4], [200, 6], [size / pageSize - 1, 9]]), size);
    } finally {
      region.close();
      rmTemp(dir);
    }
  });
}

test('a delta that zeroes a page of its base keeps that page (a hole punched into the region)', async () => {
  const dir = tempDir('ck-sparse-punch');
  const size = 16 * MiB;
  const { region, full } = await sparseWithBase(dir, size);
  try {
    // Punch page 5 out of the region's file: it reads as zeros, and is a hole now.
    execFileSync('fallocate', ['--punch-hole', '--keep-size', '--offset', String(5 * pageSize), '--length', String(pageSize), `/proc/${process.pid}/fd/${region.fd}`]);
    const delta = path.join(dir, 'delta.cow');
    const res = await writeCheckpoint(region.map(), delta, { base: full });
    assert.equal(res.pages, 1);
    checkRestored(delta, new Map([[size / pageSize - 1, 9]]), size);
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('restoring a chain over a sparse base leaves the base\'s holes as holes in the restored region', async () => {
  const dir = tempDir('ck-sparse-chain');
  const size = 64 * MiB;
  const { region, bytes, full } = await sparseWithBase(dir, size);
  try {
    bytes.fill(4, 100 * pageSize, 101 * pageSize);
    const delta = path.join(dir, 'delta.cow');
    await writeCheckpoint(region.map(), delta, { base: full });
    const back = Region.restore(delta, { verify: 'full' });
    try {
      assert.equal(back.kind, 'memfd');
      const held = regionAllocated(back);
      assert.ok(held <= 2 * MiB, `the restored 64 MiB region holds ${held} bytes`);
      const got = new Uint8Array(back.map({ access: 'read' }).buffer);
      assert.ok(Buffer.from(got).equals(Buffer.from(bytes)), 'the restored bytes are the region\'s');
    } finally {
      back.close();
    }
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('Region.restoreStream of a sparse region leaves its zero pages as holes, in chunks of any size', async () => {
  const dir = tempDir('ck-sparse-stream');
  const size = 16 * MiB;
  const { region, bytes } = await sparseWithBase(dir, size);
  try {
    bytes.fill(1, 3 * pageSize + 100, 3 * pageSize + 101); // one non-zero byte inside a page
    const snap = region.snapshot();
    let streamed: Buffer;
    try {
      const parts: Buffer[] = [];
      for await (const c of snap.createReadStream()) parts.push(c as Buffer);
      streamed = Buffer.concat(parts);
    } finally {
      snap.release();
    }
    // Whole pages per chunk, and chunks that cut pages anywhere (a page arriving in pieces).
    for (const chunk of [1 << 20, 3001]) {
      const pieces = async function* () {
        for (let at = 0; at < streamed.length; at += chunk) yield streamed.subarray(at, at + chunk);
      };
      const back = await Region.restoreStream(pieces());
      try {
        const held = regionAllocated(back);
        assert.ok(held <= 2 * MiB, `restored from ${chunk}-byte chunks, the 16 MiB region holds ${held} bytes`);
        const got = new Uint8Array(back.map({ access: 'read' }).buffer);
        assert.ok(Buffer.from(got).equals(Buffer.from(bytes)), `the restored bytes are the region's (${chunk}-byte chunks)`);
      } finally {
        back.close();
      }
    }
  } finally {
    region.close();
    rmTemp(dir);
  }
});
