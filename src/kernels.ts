/** Whole-view reductions in native code, at memory bandwidth. */
import { native } from './native';
import { invalidType, outOfRange } from './errors';

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
 * Writes `start`, `start + 1`, ... into the array, exactly as
 * `for (let i = 0; i < a.length; i++) a[i] = start + i` would (integers wrap
 * to the element type, Uint8ClampedArray clamps, floats round), at memory
 * speed. Returns the array.
 */
export function iota<T extends TypedArray>(array: T, start = 0): T {
  if (!ArrayBuffer.isView(array) || array instanceof DataView) throw invalidType('"array" argument', 'a TypedArray', array);
  if (typeof start !== 'number') throw invalidType('"start" argument', 'a number', start);
  // Past 2^53 `start + i` is no longer exact in JavaScript: refuse rather than differ.
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(start + Math.max(0, array.length - 1)))
    throw outOfRange('"start" argument', `a safe integer with start + ${array.length} - 1 safe too`, start);
  native.iota(array, start);
  return array;
}
