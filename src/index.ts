/**
 * cowshm: copy-on-write shared memory for Node.js on Linux.
 *
 * - `Region`: named POSIX shm, anonymous memfd or file-backed memory.
 * - `View`: a mapping of a region as an ArrayBuffer (read, write or copy-on-write).
 */
export { Region } from './region';
export type { RegionKind, CreateOptions, OpenOptions, OpenFileOptions, MapOptions, RegionHandle } from './region';
export { View } from './view';
export type { Access } from './view';
export { sum, iota } from './kernels';
export type { TypedArray } from './kernels';
export type { SystemError } from './errors';
import { native } from './native';

/** The system page size in bytes: view offsets must be multiples of it. */
export const pageSize: number = native.pageSize;
export * as memory from './memory';
