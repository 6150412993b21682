// Bad inputs across the whole public API in one table: each must fail with
// a specific error class and code, lose nothing and leave nothing behind.
// unprivileged.test.ts runs this file again as uid 65534, where the rows
// marked `as: 'user'` apply (root passes every permission check).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  Region, View, Snapshot, sum, iota, pageSize, memory, listSegments, removeSegment, writeCheckpoint, checkpointInfo,
  type RegionHandle,
} from 'cowshm';
import { uniqueName, shmExists, tempDir, rmTemp, isRoot } from './helpers';

type ErrorClass = typeof Error | typeof TypeError | typeof RangeError;
interface Row {
  label: string;
  call: () => unknown;
  type: ErrorClass;
  code: string;
  /** Only as root, or only as another user (permission checks root passes). */
  as?: 'root' | 'user';
}

const TYPE = 'ERR_INVALID_ARG_TYPE';
const RANGE = 'ERR_OUT_OF_RANGE';
const CLOSED = 'ERR_COWSHM_CLOSED';
const VALUE = 'ERR_INVALID_ARG_VALUE';

/** Checks every row; collects all failures so one run shows them all. */
async function check(rows: Row[]): Promise<number> {
  const failures: string[] = [];
  let ran = 0;
  for (const row of rows) {
    if (row.as === 'root' && !isRoot) continue;
    if (row.as === 'user' && isRoot) continue;
    ran++;
    let outcome: unknown;
    let threw = false;
    try {
      outcome = row.call();
      if (outcome instanceof Promise) outcome = await outcome;
    } catch (err) {
      threw = true;
      outcome = err;
    }
    const err = outcome as Error & { code?: unknown };
    if (!threw) failures.push(`${row.label}: did not throw (returned ${String(outcome)})`);
    else if (!(err instanceof row.type) || (row.type === Error && (err instanceof TypeError || err instanceof RangeError)))
      failures.push(`${row.label}: ${err?.constructor?.name} ${String(err?.code)} (${String(err?.message)}), expected a ${row.type.name}`);
    else if (err.code !== row.code) failures.push(`${row.label}: code ${String(err.code)} (${err.message}), expected ${row.code}`);
    else if (typeof err.message !== 'string' || err.message.length < 10) failures.push(`${row.label}: no readable message`);
  }
  assert.deepEqual(failures, [], `${failures.length} of ${ran} rows failed:\n  ${failures.join('\n  ')}`);
  return ran;
}

// Fixtures: made once, removed however the tests end.
const dir = tempDir('misuse');
const fifo = path.join(dir, 'fifo');
spawnSync('mkfifo', [fifo]);
const file = path.join(dir, 'data');
fs.writeFileSync(file, Buffer.alloc(2 * pageSize, 1));
const emptyFile = path.join(dir, 'empty');
fs.writeFileSync(emptyFile, '');
const subdir = path.join(dir, 'dir');
fs.mkdirSync(subdir);
const link = path.join(dir, 'link');
fs.symlinkSync(file, link);
const locked = path.join(dir, 'locked');
fs.writeFileSync(locked, Buffer.alloc(pageSize));
fs.chmodSync(locked, 0o000);
const garbage = path.join(dir, 'garbage.cow');
fs.writeFileSync(garbage, Buffer.alloc(3 * pageSize, 0x5a));
const missing = path.join(dir, 'missing');
const readOnlyDir = path.join(dir, 'ro');
fs.mkdirSync(readOnlyDir, { mode: 0o555 });

const existing = Region.create({ name: uniqueName('mx-existing'), size: pageSize });
const shmFifo = uniqueName('mx-fifo');
spawnSync('mkfifo', [`/dev/shm/${shmFifo}`]);
const shmDir = uniqueName('mx-dir');
fs.mkdirSync(`/dev/shm/${shmDir}`);
const shmLink = uniqueName('mx-link');
fs.symlinkSync(existing.path, `/dev/shm/${shmLink}`);
const shmLocked = uniqueName('mx-locked');
Region.create({ name: shmLocked, size: pageSize, mode: 0o000 }).close();
const gone = uniqueName('mx-gone');

const live = Region.create({ size: 2 * pageSize });
const liveView = live.map();
const readOnly = Region.openFile(file, { readOnly: true });

const closedRegion = Region.create({ size: pageSize });
const closedHandle = closedRegion.handle();
closedRegion.close();
const closedViewRegion = Region.create({ size: pageSize });
const closedView = closedViewRegion.map({ access: 'cow' });
closedView.close();
const viewOfClosedRegion = Region.create({ size: pageSize });
const orphanedView = viewOfClosedRegion.map();
viewOfClosedRegion.close();
const released = live.snapshot();
released.release();

const handle = live.handle();
const forged = (patch: Partial<Record<keyof RegionHandle, unknown>>): RegionHandle => ({ ...handle, ...patch }) as RegionHandle;

test.after(() => {
  liveView.close();
  live.close();
  readOnly.close();
  closedViewRegion.close();
  existing.unlink();
  existing.close();
  for (const name of [shmFifo, shmLink, shmLocked]) fs.rmSync(`/dev/shm/${name}`, { force: true });
  fs.rmSync(`/dev/shm/${shmDir}`, { recursive: true, force: true });
  fs.chmodSync(readOnlyDir, 0o755);
  rmTemp(dir);
});

const rows: Row[] = [
  // Region.create: options, sizes, names, modes.
  { label: 'create()', call: () => Region.create(undefined as never), type: TypeError, code: TYPE },
  { label: 'create(null)', call: () => Region.create(null as never), type: TypeError, code: TYPE },
  { label: 'create(42)', call: () => Region.create(42 as never), type: TypeError, code: TYPE },
  { label: 'create({})', call: () => Region.create({} as never), type: TypeError, code: TYPE },
  { label: 'create size 0', call: () => Region.create({ size: 0 }), type: RangeError, code: RANGE },
  { label: 'create crossProcess on hugetlb pages', call: () => Region.create({ size: 2 << 20, pageSize: 2 << 20, crossProcess: true }), type: RangeError, code: RANGE },
  { label: 'create size -1', call: () => Region.create({ size: -1 }), type: RangeError, code: RANGE },
  { label: 'create size 1.5', call: () => Region.create({ size: 1.5 }), type: RangeError, code: RANGE },
  { label: 'create size NaN', call: () => Region.create({ size: NaN }), type: RangeError, code: RANGE },
  { label: 'create size Infinity', call: () => Region.create({ size: Infinity }), type: RangeError, code: RANGE },
  { label: 'create size 2**53', call: () => Region.create({ size: 2 ** 53 }), type: RangeError, code: RANGE },
  { label: "create size '4096'", call: () => Region.create({ size: '4096' as never }), type: TypeError, code: TYPE },
  { label: 'create size 4096n', call: () => Region.create({ size: 4096n as never }), type: TypeError, code: TYPE },
  { label: 'create size in memory no machine has', call: () => Region.create({ size: 2 ** 52 }), type: Error, code: 'ENOMEM' },
  { label: 'create name 5', call: () => Region.create({ size: 1, name: 5 as never }), type: TypeError, code: TYPE },
  { label: "create name ''", call: () => Region.create({ size: 1, name: '' }), type: RangeError, code: RANGE },
  { label: "create name 'a/b'", call: () => Region.create({ size: 1, name: 'a/b' }), type: RangeError, code: RANGE },
  { label: "create name '/x'", call: () => Region.create({ size: 1, name: '/x' }), type: RangeError, code: RANGE },
  { label: "create name '.'", call: () => Region.create({ size: 1, name: '.' }), type: RangeError, code: RANGE },
  { label: "create name '..'", call: () => Region.create({ size: 1, name: '..' }), type: RangeError, code: RANGE },
  { label: 'create name of 256 bytes', call: () => Region.create({ size: 1, name: 'x'.repeat(256) }), type: RangeError, code: RANGE },
  { label: 'create name of 128 two-byte characters', call: () => Region.create({ size: 1, name: 'é'.repeat(128) }), type: RangeError, code: RANGE },
  { label: 'create an existing name', call: () => Region.create({ size: 1, name: existing.name as string }), type: Error, code: 'EEXIST' },
  { label: 'create over a FIFO in /dev/shm', call: () => Region.create({ size: 1, name: shmFifo }), type: Error, code: 'EEXIST' },
  { label: 'create over a symlink in /dev/shm', call: () => Region.create({ size: 1, name: shmLink }), type: Error, code: 'EEXIST' },
  { label: 'create mode -1', call: () => Region.create({ size: 1, mode: -1 }), type: RangeError, code: RANGE },
  { label: 'create mode 0o1000', call: () => Region.create({ size: 1, mode: 0o1000 }), type: RangeError, code: RANGE },
  { label: 'create mode 0.5', call: () => Region.create({ size: 1, mode: 0.5 }), type: RangeError, code: RANGE },
  { label: "create mode '600'", call: () => Region.create({ size: 1, mode: '600' as never }), type: TypeError, code: TYPE },
  { label: 'create reserve 1', call: () => Region.create({ size: 1, reserve: 1 as never }), type: TypeError, code: TYPE },
  { label: "create hugePages 'yes'", call: () => Region.create({ size: 1, hugePages: 'yes' as never }), type: TypeError, code: TYPE },

  // Region.open: names, missing segments, things that are not segments, permissions.
  { label: 'open()', call: () => Region.open(undefined as never), type: TypeError, code: TYPE },
  { label: 'open(7)', call: () => Region.open(7 as never), type: TypeError, code: TYPE },
  { label: "open('')", call: () => Region.open(''), type: RangeError, code: RANGE },
  { label: "open('a/b')", call: () => Region.open('a/b'), type: RangeError, code: RANGE },
  { label: "open('..')", call: () => Region.open('..'), type: RangeError, code: RANGE },
  { label: 'open a missing segment', call: () => Region.open(gone), type: Error, code: 'ENOENT' },
  { label: 'open a missing segment read-only', call: () => Region.open(gone, { readOnly: true }), type: Error, code: 'ENOENT' },
  { label: 'open a FIFO in /dev/shm', call: () => Region.open(shmFifo), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'open a FIFO in /dev/shm read-only', call: () => Region.open(shmFifo, { readOnly: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'open a directory in /dev/shm', call: () => Region.open(shmDir), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'open a directory in /dev/shm read-only', call: () => Region.open(shmDir, { readOnly: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'open a symlink in /dev/shm', call: () => Region.open(shmLink), type: Error, code: 'ELOOP' },
  { label: 'open a mode-000 segment', call: () => Region.open(shmLocked), type: Error, code: 'EACCES', as: 'user' },
  { label: "open options 'r'", call: () => Region.open('x', 'r' as never), type: TypeError, code: TYPE },
  { label: "open readOnly 'yes'", call: () => Region.open('x', { readOnly: 'yes' as never }), type: TypeError, code: TYPE },
  { label: 'open allowForeignOwner 1', call: () => Region.open('x', { allowForeignOwner: 1 as never }), type: TypeError, code: TYPE },

  // Region.openFile: paths, sizes, files that are not regular, permissions.
  { label: 'openFile()', call: () => Region.openFile(undefined as never), type: TypeError, code: TYPE },
  { label: 'openFile(Buffer)', call: () => Region.openFile(Buffer.from(file) as never), type: TypeError, code: TYPE },
  { label: "openFile('')", call: () => Region.openFile(''), type: RangeError, code: RANGE },
  { label: 'openFile a missing file', call: () => Region.openFile(missing), type: Error, code: 'ENOENT' },
  { label: 'openFile in a missing directory', call: () => Region.openFile(path.join(missing, 'x'), { create: true, size: 1 }), type: Error, code: 'ENOENT' },
  { label: 'openFile a FIFO', call: () => Region.openFile(fifo), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'openFile a FIFO read-only', call: () => Region.openFile(fifo, { readOnly: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'openFile /dev/null', call: () => Region.openFile('/dev/null'), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'openFile /dev/zero read-only', call: () => Region.openFile('/dev/zero', { readOnly: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'openFile a directory', call: () => Region.openFile(subdir), type: Error, code: 'EISDIR' },
  { label: 'openFile a directory read-only', call: () => Region.openFile(subdir, { readOnly: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'openFile a symlink', call: () => Region.openFile(link), type: Error, code: 'ELOOP' },
  { label: 'openFile a mode-000 file', call: () => Region.openFile(locked), type: Error, code: 'EACCES', as: 'user' },
  { label: 'openFile create in a read-only directory', call: () => Region.openFile(path.join(readOnlyDir, 'x'), { create: true, size: 1 }), type: Error, code: 'EACCES', as: 'user' },
  { label: 'openFile an empty file', call: () => Region.openFile(emptyFile).map(), type: Error, code: 'ERR_COWSHM_EMPTY' },
  { label: 'openFile create without size', call: () => Region.openFile(path.join(dir, 'new-nosize'), { create: true }), type: RangeError, code: RANGE },
  { label: 'openFile grow read-only', call: () => Region.openFile(file, { readOnly: true, size: 100 * pageSize }), type: RangeError, code: RANGE },
  { label: 'openFile create + readOnly', call: () => Region.openFile(file, { create: true, readOnly: true }), type: RangeError, code: RANGE },
  { label: 'openFile size 0', call: () => Region.openFile(file, { size: 0 }), type: RangeError, code: RANGE },
  { label: "openFile size '1'", call: () => Region.openFile(file, { size: '1' as never }), type: TypeError, code: TYPE },
  { label: 'openFile mode 0o7777', call: () => Region.openFile(file, { mode: 0o7777 }), type: RangeError, code: RANGE },
  { label: "openFile create 'yes'", call: () => Region.openFile(file, { create: 'yes' as never }), type: TypeError, code: TYPE },
  { label: 'openFile reserve null', call: () => Region.openFile(file, { reserve: null as never }), type: TypeError, code: TYPE },
  { label: 'openFile options 5', call: () => Region.openFile(file, 5 as never), type: TypeError, code: TYPE },

  // region.map
  { label: 'map options string', call: () => live.map('all' as never), type: TypeError, code: TYPE },
  { label: 'map offset unaligned', call: () => live.map({ offset: 1 }), type: RangeError, code: RANGE },
  { label: 'map offset negative', call: () => live.map({ offset: -pageSize }), type: RangeError, code: RANGE },
  { label: 'map offset at the end', call: () => live.map({ offset: 2 * pageSize }), type: RangeError, code: RANGE },
  { label: "map offset '0'", call: () => live.map({ offset: '0' as never }), type: TypeError, code: TYPE },
  { label: 'map length 0', call: () => live.map({ length: 0 }), type: RangeError, code: RANGE },
  { label: 'map length past the end', call: () => live.map({ length: 2 * pageSize + 1 }), type: RangeError, code: RANGE },
  { label: 'map offset + length past the end', call: () => live.map({ offset: pageSize, length: 2 * pageSize }), type: RangeError, code: RANGE },
  { label: 'map length NaN', call: () => live.map({ length: NaN }), type: RangeError, code: RANGE },
  { label: "map access 'rw'", call: () => live.map({ access: 'rw' as never }), type: RangeError, code: RANGE },
  { label: 'map access 1', call: () => live.map({ access: 1 as never }), type: TypeError, code: TYPE },
  { label: "map access 'write' of a read-only region", call: () => readOnly.map({ access: 'write' }), type: Error, code: 'ERR_COWSHM_READ_ONLY' },
  { label: 'map populate 1', call: () => live.map({ populate: 1 as never }), type: TypeError, code: TYPE },

  // view.flush / view.revert
  { label: "view.flush('0')", call: () => liveView.flush('0' as never), type: TypeError, code: TYPE },
  { label: 'view.flush(1)', call: () => liveView.flush(1), type: RangeError, code: RANGE },
  { label: 'view.flush past the end', call: () => liveView.flush(3 * pageSize), type: RangeError, code: RANGE },
  { label: 'view.flush length past the end', call: () => liveView.flush(0, 2 * pageSize + 1), type: RangeError, code: RANGE },
  { label: 'view.revert of a shared view', call: () => liveView.revert(), type: Error, code: 'ERR_COWSHM_NOT_COW' },

  // Closed objects
  { label: 'closed region.map', call: () => closedView.buffer, type: TypeError, code: CLOSED },
  { label: 'closed region.fd', call: () => (closedRegion as Region).fd, type: TypeError, code: CLOSED },
  { label: 'closed region.map()', call: () => closedRegion.map(), type: TypeError, code: CLOSED },
  { label: 'closed region.handle()', call: () => closedRegion.handle(), type: TypeError, code: CLOSED },
  { label: 'closed region.snapshot()', call: () => closedRegion.snapshot(), type: TypeError, code: CLOSED },
  { label: 'closed region.flush()', call: () => closedRegion.flush(), type: TypeError, code: CLOSED },
  { label: 'closed region.prepareWrite()', call: () => closedRegion.prepareWrite(0, pageSize), type: TypeError, code: CLOSED },
  { label: 'closed view.address', call: () => closedView.address, type: TypeError, code: CLOSED },
  { label: 'closed view.flush()', call: () => closedView.flush(), type: TypeError, code: CLOSED },
  { label: 'closed view.revert()', call: () => closedView.revert(), type: TypeError, code: CLOSED },
  { label: 'view of a closed region: buffer', call: () => orphanedView.buffer, type: TypeError, code: CLOSED },
  { label: 'view of a closed region: flush()', call: () => orphanedView.flush(), type: TypeError, code: CLOSED },
  { label: 'released snapshot.buffer', call: () => released.buffer, type: TypeError, code: CLOSED },
  { label: 'released snapshot.copiedPages', call: () => released.copiedPages, type: TypeError, code: CLOSED },
  { label: 'released snapshot.changedPages()', call: () => released.changedPages(), type: TypeError, code: CLOSED },
  { label: 'released snapshot.writeTo()', call: () => released.writeTo(path.join(dir, 'released.cow')), type: TypeError, code: CLOSED },
  { label: 'writeCheckpoint of a closed view', call: () => writeCheckpoint(closedView, path.join(dir, 'closed.cow')), type: TypeError, code: CLOSED },

  // Snapshots and prepareWrite
  { label: 'snapshot options 1', call: () => live.snapshot(1 as never), type: TypeError, code: TYPE },
  { label: 'snapshot offset unaligned', call: () => live.snapshot({ offset: 100 }), type: RangeError, code: RANGE },
  { label: 'snapshot offset past the end', call: () => live.snapshot({ offset: 4 * pageSize }), type: RangeError, code: RANGE },
  { label: 'snapshot length 0', call: () => live.snapshot({ length: 0 }), type: RangeError, code: RANGE },
  { label: 'snapshot length past the end', call: () => live.snapshot({ length: 3 * pageSize }), type: RangeError, code: RANGE },
  { label: "snapshot length '1'", call: () => live.snapshot({ length: '1' as never }), type: TypeError, code: TYPE },
  { label: "prepareWrite('0', 1)", call: () => live.prepareWrite('0' as never, 1), type: TypeError, code: TYPE },
  { label: 'prepareWrite(-1, 1)', call: () => live.prepareWrite(-1, 1), type: RangeError, code: RANGE },
  { label: 'prepareWrite past the end', call: () => live.prepareWrite(0, 3 * pageSize), type: RangeError, code: RANGE },
  { label: 'snapshot.writeTo(5)', call: () => live.snapshot().writeTo(5 as never), type: TypeError, code: TYPE },

  // Region.fromHandle: forged and stale handles
  { label: 'fromHandle()', call: () => Region.fromHandle(undefined as never), type: TypeError, code: TYPE },
  { label: 'fromHandle([])', call: () => Region.fromHandle([] as never), type: TypeError, code: TYPE },
  { label: "fromHandle kind 'pipe'", call: () => Region.fromHandle(forged({ kind: 'pipe' })), type: RangeError, code: RANGE },
  { label: 'fromHandle pid -1', call: () => Region.fromHandle(forged({ pid: -1 })), type: RangeError, code: RANGE },
  { label: "fromHandle fd '3'", call: () => Region.fromHandle(forged({ fd: '3' })), type: TypeError, code: TYPE },
  { label: 'fromHandle dev 1.5', call: () => Region.fromHandle(forged({ dev: 1.5 })), type: RangeError, code: RANGE },
  { label: 'fromHandle ino null', call: () => Region.fromHandle(forged({ ino: null })), type: TypeError, code: TYPE },
  { label: 'fromHandle of a closed memfd region', call: () => Region.fromHandle(closedHandle), type: Error, code: 'ENOENT' },
  { label: 'fromHandle with a wrong inode', call: () => Region.fromHandle(forged({ ino: handle.ino + 1 })), type: Error, code: 'ENOENT' },
  { label: 'fromHandle of a process that does not exist', call: () => Region.fromHandle(forged({ pid: 2 ** 22 + 7 })), type: Error, code: 'ENOENT' },
  { label: 'fromHandle through a symlink in /dev/shm', call: () => Region.fromHandle({ ...existing.handle(), name: shmLink, pid: 2 ** 22 + 7 }), type: Error, code: 'ELOOP' },
  { label: 'fromHandle to a FIFO as a file', call: () => Region.fromHandle(forged({ kind: 'file', path: fifo, pid: 2 ** 22 + 7, ...devIno(fifo) })), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'fromHandle to a file as a memfd', call: () => fromHandleOfOpenFile(file, 'memfd'), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'fromHandle to /dev/zero as a memfd', call: () => fromHandleOfOpenFile('/dev/zero', 'memfd'), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'fromHandle to a file as a segment', call: () => fromHandleOfOpenFile(file, 'shm'), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: "fromHandle options 'ro'", call: () => Region.fromHandle(handle, 'ro' as never), type: TypeError, code: TYPE },

  // Region.restore and checkpoints
  { label: 'restore(5)', call: () => Region.restore(5 as never), type: TypeError, code: TYPE },
  { label: 'restore a missing file', call: () => Region.restore(missing), type: Error, code: 'ENOENT' },
  { label: 'restore a directory', call: () => Region.restore(subdir), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'restore a file of garbage', call: () => Region.restore(garbage), type: Error, code: 'ERR_COWSHM_CHECKPOINT_INVALID' },
  { label: 'restore an empty file', call: () => Region.restore(emptyFile), type: Error, code: 'ERR_COWSHM_CHECKPOINT_INVALID' },
  { label: "restore verify 'all'", call: () => Region.restore(garbage, { verify: 'all' as never }), type: RangeError, code: RANGE },
  { label: 'restore a mode-000 file', call: () => Region.restore(locked), type: Error, code: 'EACCES', as: 'user' },
  { label: 'checkpointInfo(null)', call: () => checkpointInfo(null as never), type: TypeError, code: TYPE },
  { label: 'checkpointInfo of a missing file', call: () => checkpointInfo(missing), type: Error, code: 'ENOENT' },
  { label: 'checkpointInfo of garbage', call: () => checkpointInfo(garbage), type: Error, code: 'ERR_COWSHM_CHECKPOINT_INVALID' },
  { label: 'writeCheckpoint to a missing directory', call: () => writeCheckpoint(liveView, path.join(missing, 'x.cow')), type: Error, code: 'ENOENT' },
  { label: 'writeCheckpoint into a read-only directory', call: () => writeCheckpoint(liveView, path.join(readOnlyDir, 'x.cow')), type: Error, code: 'EACCES', as: 'user' },
  { label: 'writeCheckpoint path 5', call: () => writeCheckpoint(liveView, 5 as never), type: TypeError, code: TYPE },

  // Kernels
  { label: 'sum([1, 2])', call: () => sum([1, 2] as never), type: TypeError, code: TYPE },
  { label: 'sum(DataView)', call: () => sum(new DataView(new ArrayBuffer(8)) as never), type: TypeError, code: TYPE },
  { label: 'sum(ArrayBuffer)', call: () => sum(new ArrayBuffer(8) as never), type: TypeError, code: TYPE },
  { label: 'sum(a fake TypedArray)', call: () => sum(Object.create(Uint8Array.prototype) as never), type: TypeError, code: TYPE },
  { label: 'iota(null)', call: () => iota(null as never), type: TypeError, code: TYPE },
  { label: "iota start '1'", call: () => iota(new Uint8Array(4), '1' as never), type: TypeError, code: TYPE },
  { label: 'iota start 0.5', call: () => iota(new Uint8Array(4), 0.5), type: RangeError, code: RANGE },
  { label: 'iota step NaN', call: () => iota(new Uint8Array(4), 0, NaN), type: RangeError, code: RANGE },
  { label: 'iota past 2**53', call: () => iota(new Float64Array(4), 2 ** 53 - 2), type: RangeError, code: RANGE },

  // memory: pids, mappings
  { label: 'memory.smaps(0)', call: () => memory.smaps(0), type: RangeError, code: RANGE },
  { label: "memory.smaps('1')", call: () => memory.smaps('1' as never), type: TypeError, code: TYPE },
  { label: 'memory.smaps of a missing pid', call: () => memory.smaps(2 ** 22 + 7), type: Error, code: 'ESRCH' },
  { label: 'memory.smaps of pid 1', call: () => memory.smaps(1), type: Error, code: 'EACCES', as: 'user' },
  { label: 'memory.rollup of a missing pid', call: () => memory.rollup(2 ** 22 + 7), type: Error, code: 'ESRCH' },
  { label: 'memory.usage of a closed view', call: () => memory.usage(closedView), type: TypeError, code: CLOSED },
  { label: 'memory.pages of a closed view', call: () => memory.pages(closedView), type: TypeError, code: CLOSED },
  { label: 'memory.pages(42)', call: () => memory.pages(42 as never), type: TypeError, code: TYPE },

  // Segments
  { label: "listSegments({ holders: 'no' })", call: () => listSegments({ holders: 'no' as never }), type: TypeError, code: TYPE },
  { label: 'removeSegment a missing one', call: () => removeSegment(gone), type: Error, code: 'ENOENT' },
  { label: "removeSegment('a/b')", call: () => removeSegment('a/b'), type: RangeError, code: RANGE },
  { label: 'removeSegment(1)', call: () => removeSegment(1 as never), type: TypeError, code: TYPE },
  { label: 'removeSegment expected 5', call: () => removeSegment(gone, 5 as never), type: TypeError, code: TYPE },
  { label: 'removeSegment expected.ino -1', call: () => removeSegment(gone, { dev: 0, ino: -1 }), type: RangeError, code: RANGE },
  { label: "removeSegment ifOrphan 'yes'", call: () => removeSegment(gone, undefined, { ifOrphan: 'yes' as never }), type: TypeError, code: TYPE },
  { label: 'removeSegment ifOrphan of a held one', call: () => removeSegment(existing.name as string, undefined, { ifOrphan: true }), type: Error, code: 'ERR_COWSHM_SEGMENT_HELD' },
  { label: 'removeSegment ifOrphan of a missing one', call: () => removeSegment(gone, undefined, { ifOrphan: true }), type: Error, code: 'ENOENT' },
  { label: 'removeSegment ifOrphan of a symlink', call: () => removeSegment(shmLink, undefined, { ifOrphan: true }), type: Error, code: 'ELOOP' },
  { label: 'removeSegment ifOrphan of a FIFO', call: () => removeSegment(shmFifo, undefined, { ifOrphan: true }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'removeSegment ifOrphan of a mode-000 one', call: () => removeSegment(shmLocked, undefined, { ifOrphan: true }), type: Error, code: 'EACCES', as: 'user' },

  // NUL bytes in paths and names: refused as Node's fs refuses them.
  { label: 'create name with NUL', call: () => Region.create({ size: 1, name: 'a\0b' }), type: TypeError, code: VALUE },
  { label: 'open name with NUL', call: () => Region.open('a\0b'), type: TypeError, code: VALUE },
  { label: 'fromHandle shm name with NUL', call: () => Region.fromHandle(forged({ kind: 'shm', name: 'a\0b' })), type: TypeError, code: VALUE },
  { label: 'openFile path with NUL', call: () => Region.openFile(`${file}\0x`), type: TypeError, code: VALUE },
  { label: 'openFile create path with NUL', call: () => Region.openFile(`${file}\0x`, { create: true, size: 1 }), type: TypeError, code: VALUE },
  { label: 'restore path with NUL', call: () => Region.restore(`${garbage}\0x`), type: TypeError, code: VALUE },
  { label: 'checkpointInfo path with NUL', call: () => checkpointInfo(`${garbage}\0x`), type: TypeError, code: VALUE },
  { label: 'writeCheckpoint path with NUL', call: () => writeCheckpoint(liveView, path.join(dir, 'a\0b.cow')), type: TypeError, code: VALUE },
  { label: 'fromHandle file path with NUL', call: () => Region.fromHandle(forged({ kind: 'file', path: `${file}\0x`, pid: 2 ** 22 + 7 })), type: TypeError, code: VALUE },
  { label: 'writeCheckpoint of a non-view', call: () => writeCheckpoint({} as never, path.join(dir, 'x.cow')), type: TypeError, code: TYPE },
  { label: 'writeCheckpoint(null)', call: () => writeCheckpoint(null as never, path.join(dir, 'x.cow')), type: TypeError, code: TYPE },

  // FIFOs and devices where a checkpoint is expected: refused at once, never waited on.
  { label: 'restore a FIFO', call: () => Region.restore(fifo), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'restore /dev/zero', call: () => Region.restore('/dev/zero'), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'checkpointInfo of a FIFO', call: () => checkpointInfo(fifo), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'writeCheckpoint over a FIFO', call: () => writeCheckpoint(liveView, fifo), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
  { label: 'writeCheckpoint with a FIFO as base', call: () => writeCheckpoint(liveView, path.join(dir, 'd.cow'), { base: fifo }), type: Error, code: 'ERR_COWSHM_NOT_A_FILE' },
];

/**
 * How many /dev/shm entries there are, less other test processes' segments:
 * node --test runs files in parallel, and other runs of the suite may share
 * the machine. A segment a bad input made under any other name still counts.
 */
function segmentsHere(): number {
  const ours = uniqueName('probe').replace(/-probe-\d+$/, '-');
  return fs.readdirSync('/dev/shm').filter((n) => !n.startsWith('cowshm-test-') || n.startsWith(ours)).length;
}

/** The device and inode of `p`, as a handle has them. */
function devIno(p: string): { dev: number; ino: number } {
  const st = fs.statSync(p);
  return { dev: st.dev, ino: st.ino };
}

/** A handle of `kind` whose descriptor (held open here) leads to `p`. */
function fromHandleOfOpenFile(p: string, kind: 'memfd' | 'shm'): Region {
  const fd = fs.openSync(p, 'r+');
  try {
    return Region.fromHandle(forged({ kind, name: kind === 'shm' ? uniqueName('mx-forged') : null, pid: process.pid, fd, ...devIno(p) }));
  } finally {
    fs.closeSync(fd);
  }
}

test('at least 100 bad inputs across the public API, each with its error class and code', async () => {
  const before = segmentsHere();
  const ran = await check(rows);
  console.log(`misuse matrix: ${ran} bad inputs checked as uid ${process.getuid?.()}`);
  assert.ok(ran >= 100, `only ${ran} rows ran`);
  assert.equal(segmentsHere(), before, 'no bad input left a segment behind');
  assert.equal(shmExists(existing.name as string), true, 'the segment a bad input named is still there');
  assert.deepEqual([...new Uint8Array(liveView.buffer, 0, 4)], [0, 0, 0, 0], 'the views bad inputs named are untouched');
  void [View, Snapshot];
});
