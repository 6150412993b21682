import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Region } from 'cowshm';
import { uniqueName, tempDir, rmTemp, isRoot } from './helpers';

const openFds = (): string[] => fs.readdirSync('/proc/self/fd').sort();

test('failed create, open, openFile and fromHandle calls leave no descriptor open', () => {
  const dir = tempDir('fdleak');
  // The directory goes even when the setup below fails.
  try {
    failedCallsLeaveNoDescriptor(dir);
  } finally {
    rmTemp(dir);
  }
});

function failedCallsLeaveNoDescriptor(dir: string): void {
  const name = uniqueName('fdleak');
  const existing = Region.create({ name, size: 4096 });
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const shmFifo = uniqueName('fdleak-fifo');
  execFileSync('mkfifo', [`/dev/shm/${shmFifo}`]);
  const foreign = uniqueName('fdleak-foreign');
  const other = Region.create({ name: foreign, size: 4096 });
  if (isRoot) fs.chownSync(other.path, 65534, 65534);
  try {
    const before = openFds();
    const failures: Array<() => unknown> = [
      () => Region.create({ name, size: 4096 }), // EEXIST
      () => Region.create({ name: uniqueName('fdleak-big'), size: 2 ** 50 }), // larger than /dev/shm: ENOSPC after shm_open
      () => Region.open(uniqueName('fdleak-missing')),
      () => Region.open(shmFifo, { readOnly: true }), // not a regular file, after shm_open
      () => Region.openFile(fifo, { readOnly: true }), // not a regular file, after open
      () => Region.openFile(path.join(dir, 'new.bin'), { create: true }), // no size, after open
      () => Region.fromHandle({ ...existing.handle(), ino: existing.ino + 1 }), // opens, finds another inode
      () => Region.fromHandle({ ...existing.handle(), kind: 'memfd' as const, fd: 987654 }),
      ...(isRoot ? [() => Region.open(foreign)] : []), // foreign owner, after shm_open
    ];
    for (const [i, call] of failures.entries()) assert.throws(call, Error, `call ${i} should fail`);
    assert.deepEqual(openFds(), before);
  } finally {
    existing.unlink();
    existing.close();
    other.unlink();
    other.close();
    fs.unlinkSync(`/dev/shm/${shmFifo}`);
  }
}
