/**
 * cowshm: copy-on-write shared memory for Node.js on Linux.
 *
 * - `Region`: named POSIX shm, anonymous memfd or file-backed memory.
 * - `View`: a mapping of a region as an ArrayBuffer (read, write or copy-on-write).
 * - `atomics`, `Mutex`, `RwLock`: waiting, waking and locking on words of a region, across processes.
 */
export { Region } from './region';
export type { RegionKind, CreateOptions, OpenOptions, OpenFileOptions, FromHandleOptions, MapOptions, RegionHandle } from './region';
export { View, writeCheckpoint } from './view';
export type { Access } from './view';
export { Snapshot, snapshotBackend, snapshotBackendReason } from './snapshot';
export type { SnapshotOptions, SnapshotBackend, SnapshotWriter } from './snapshot';
export type { PushPath } from './xproc';
export { doctor } from './doctor';
export type { DoctorReport } from './doctor';
export { sum, iota } from './kernels';
export type { TypedArray } from './kernels';
export type { SystemError } from './errors';
export type { WriteOptions, CheckpointResult } from './checkpoint/write';
export { checkpointInfo } from './checkpoint/info';
export type { CheckpointInfo } from './checkpoint/info';
export type { RestoreOptions } from './checkpoint/restore';
export type { ReadStreamOptions } from './checkpoint/stream';
import { native } from './native';

/** The system page size in bytes: view offsets must be multiples of it. */
export const pageSize: number = native.pageSize;
export { hugePools, hugetlbfsMounts } from './hugetlb';
export type { HugePool, HugetlbfsMount } from './hugetlb';
export { listSegments, removeSegment } from './segments';
export type { Segment, SegmentHolder, ListSegmentsOptions } from './segments';
export type { Coordination, CoordinationFile } from './coordination';
export * as memory from './memory';
import { wait, waitAsync, notify } from './atomics';
/** Atomics.wait / waitAsync / notify for words of a region, across processes (see docs/api.md). */
export const atomics: {
  readonly wait: typeof wait;
  readonly waitAsync: typeof waitAsync;
  readonly notify: typeof notify;
} = Object.freeze({ wait, waitAsync, notify });
export type { WaitResult, WaitAsyncResult, WaitAsyncOptions } from './atomics';
export { Mutex, OWNER_BASE } from './mutex';
export type { MutexGuard, MutexOptions, LockGuard, AcquireOptions } from './mutex';
export { RwLock, RWLOCK_WORDS } from './rwlock';
export type { RwLockGuard } from './rwlock';
