// ESM entry: the same module as require('cowshm'), with named exports.
import { createRequire } from 'node:module';

const cowshm = createRequire(import.meta.url)('../dist/index.js');

export const { Region, View, sum, pageSize, Snapshot, snapshotBackend, snapshotBackendReason, doctor, memory } = cowshm;
export default cowshm;
export const { listSegments, removeSegment } = cowshm;
export const { writeCheckpoint, checkpointInfo } = cowshm;
export const { iota } = cowshm;
export const { hugePools, hugetlbfsMounts } = cowshm;
export const { atomics, Mutex, OWNER_BASE, RwLock, RWLOCK_WORDS } = cowshm;
