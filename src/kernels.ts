/** Whole-view reductions in native code, at memory bandwidth. */
import { native } from './native';
import { invalidType, outOfRange } from './errors';

// The length and type of a TypedArray from its internal slots, through
// %TypedArray%.prototype's own getters: a subclass (or a plain object with
// a TypedArray prototype) may override `length` and `byteLength`, or
// ArrayBuffer.isView may be replaced, but these read what the addon will use.
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
const intrinsic = (key: PropertyKey): ((this: unknown) => unknown) =>
  Object.getOwnPropertyDescriptor(TypedArrayPrototype, key)?.get as (this: unknown) => unknown;
const lengthOf = intrinsic('length');
const tagOf = intrinsic(Symbol.toStringTag);

/** The real element count of a TypedArray; a TypeError for anything else (DataView included). */
function typedLength(array: unknown): number {
  if (typeof array !== 'object' || array === null || Reflect.apply(tagOf, array, []) === undefined)
    throw invalidType('"array" argument', 'a TypedArray', array);
  return Reflect.apply(lengthOf, array, []) as number;
}

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
  typedLength(array);
  return native.sum(array);
}

/**
 * Writes `start`, `start + step`, `start + 2 * step`, ... into the array,
 * exactly as `for (let i = 0; i < a.length; i++) a[i] = start + i * step`
 * would (integers wrap to the element type, Uint8ClampedArray clamps, floats
 * round), at memory speed. Every value must be a safe integer. Returns the array.
 */
export function iota<T extends TypedArray>(array: T, start = 0, step = 1): T {
  const length = typedLength(array);
  if (typeof start !== 'number') throw invalidType('"start" argument', 'a number', start);
  if (typeof step !== 'number') throw invalidType('"step" argument', 'a number', step);
  if (!Number.isSafeInteger(step)) throw outOfRange('"step" argument', 'a safe integer', step);
  // Past 2^53 `start + i * step` is no longer exact in JavaScript: refuse rather than differ.
  const last = start + Math.max(0, length - 1) * step;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(last))
    throw outOfRange('"start" argument', `a safe integer with start + ${Math.max(0, length - 1)} × step safe too`, start);
  native.iota(array, start, step);
  return array;
}
