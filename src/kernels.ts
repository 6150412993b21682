/** Whole-view reductions in native code, at memory bandwidth. */
import { native } from './native';
import { invalidType } from './errors';
import * as check from './validate';

/** Any TypedArray. */
export type TypedArray =
  | Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array
  | Float32Array | Float64Array | BigInt64Array | BigUint64Array;

/**
 * The exact sum of an integer TypedArray as a bigint (no overflow, whatever
 * its length), or the sum of a float array as a number.
 */
export function sum(array: Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array): bigint;
export function sum(array: Float32Array | Float64Array): number;
export function sum(array: TypedArray): bigint | number;
export function sum(array: TypedArray): bigint | number {
  if (!ArrayBuffer.isView(array) || array instanceof DataView) throw invalidType('"array" argument', 'a TypedArray', array);
  return native.sum(array);
}

/**
 * Fills an Int32Array with `first`, `first + step`, ... (wrapping as int32
 * stores do): what a JS loop does, at memory bandwidth.
 */
export function iota(array: Int32Array, first = 0, step = 1): void {
  if (!(array instanceof Int32Array)) throw invalidType('"array" argument', 'an Int32Array', array);
  check.integer(first, '"first" argument', -(2 ** 31), 2 ** 31 - 1);
  check.integer(step, '"step" argument', -(2 ** 31), 2 ** 31 - 1);
  native.iota(array, first, step);
}
