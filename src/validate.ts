/** Argument checks shared by every public entry point. */
import { invalidType, outOfRange } from './errors';
import { native } from './native';

/** Whether `value` is a plain object of options (or undefined). */
export function options<T extends object>(value: unknown, name = '"options" argument'): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw invalidType(name, 'an object', value);
  return value as Partial<T>;
}

/** A whole number in [min, max]; `what` reads like `"size" option`. */
export function integer(value: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw invalidType(what, 'a number', value);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const bounds =
      max === Number.MAX_SAFE_INTEGER
        ? min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`
        : `an integer from ${min} to ${max}`;
    throw outOfRange(what, bounds, value);
  }
  return value;
}

export function boolean(value: unknown, what: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidType(what, 'a boolean', value);
  return value;
}

export function string(value: unknown, what: string): string {
  if (typeof value !== 'string') throw invalidType(what, 'a string', value);
  return value;
}

export function oneOf<T extends string>(value: unknown, what: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw invalidType(what, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  if (!(allowed as readonly string[]).includes(value))
    throw outOfRange(what, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  return value as T;
}

/** File mode bits: 0 to 0o777. */
export function mode(value: unknown, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  return integer(value, what, 0, 0o777);
}

/** POSIX shm names as /dev/shm shows them: no '/', not '.' or '..', 1-255 bytes, no NUL. */
export function shmName(value: unknown, what = '"name" argument'): string {
  if (typeof value !== 'string') throw invalidType(what, 'a string', value);
  const bytes = Buffer.byteLength(value);
  if (bytes === 0) throw outOfRange(what, 'a non-empty string', value);
  if (bytes > 255) throw outOfRange(what, 'at most 255 bytes long (NAME_MAX)', value);
  if (value.includes('/')) throw outOfRange(what, "a name without '/' (it names a file in /dev/shm)", value);
  if (value.includes('\0')) throw outOfRange(what, 'a string without NUL characters', value);
  if (value === '.' || value === '..') throw outOfRange(what, "a name other than '.' and '..'", value);
  return value;
}

/**
 * The RangeError for an offset (or length) that is not a multiple of the page
 * size: the system's, or `pageSize` of a region on huge pages.
 */
export function pageAligned(what: string, value: number, pageSize = native.pageSize): RangeError {
  if (pageSize !== native.pageSize) {
    const size = pageSize % 2 ** 30 === 0 ? `${pageSize / 2 ** 30} GiB` : `${pageSize / 2 ** 20} MiB`;
    return outOfRange(what, `a multiple of the huge page size (${pageSize}, ${size})`, value);
  }
  return outOfRange(what, `a multiple of the page size (${native.pageSize})`, value);
}
