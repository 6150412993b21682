/**
 * Argument checks shared by every public entry point. Each builds its error
 * with errors.ts (invalidType, invalidValue, outOfRange), so every bad
 * argument reads the same way: `The "size" option must be a positive integer.
 * Received -1`.
 */
import { invalidType, invalidValue, outOfRange } from './errors';
import { MAX_VIEW_LENGTH } from './constants';
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

/**
 * A file path: a non-empty string without NUL bytes. The system would read a
 * path only up to its first NUL, so 'a\0b' would open 'a': refused as Node's
 * fs refuses it (TypeError, ERR_INVALID_ARG_VALUE).
 */
export function path(value: unknown, what: string): string {
  if (typeof value !== 'string') throw invalidType(what, 'a string', value);
  if (value.length === 0) throw outOfRange(what, 'a non-empty string', value);
  if (value.includes('\0')) throw invalidValue(what, 'a string without null bytes', value);
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
  // Refused as for a path (shm_open reads the name up to its first NUL).
  if (value.includes('\0')) throw invalidValue(what, 'a string without null bytes', value);
  const bytes = Buffer.byteLength(value);
  if (bytes === 0) throw outOfRange(what, 'a non-empty string', value);
  if (bytes > 255) throw outOfRange(what, 'at most 255 bytes long (NAME_MAX)', value);
  if (value.includes('/')) throw outOfRange(what, "a name without '/' (it names a file in /dev/shm)", value);
  if (value === '.' || value === '..') throw outOfRange(what, "a name other than '.' and '..'", value);
  return value;
}

/**
/**
 * The `{ offset, length }` options of a view or snapshot of a region of
 * `size` bytes, as [offset, length]: the offset page aligned and inside the
 * region, the length to the region's end by default, the whole inside the
 * region and no longer than one ArrayBuffer may be (`Region.maxViewLength`).
 * `subject` names the region (turned into a string only for a message);
 * `kind` is what is being made of it. On a region on huge pages (`pageSize`
 * larger than the system page) the length too must be a multiple of it.
 */
export function range(
  o: { offset?: unknown; length?: unknown }, size: number, subject: { toString(): string }, kind: 'view' | 'snapshot',
  pageSize = native.pageSize,
): [number, number] {
  const offset = o.offset === undefined ? 0 : integer(o.offset, '"offset" option', 0);
  if (offset % pageSize !== 0) throw pageAligned('"offset" option', offset, pageSize);
  if (offset >= size) throw outOfRange('"offset" option', `less than the region's size (${size})`, offset);
  const length = o.length === undefined ? size - offset : integer(o.length, '"length" option', 1);
  if (offset + length > size)
    throw outOfRange('"length" option', `at most ${size - offset} (the region's size minus the offset)`, length);
  if (length > MAX_VIEW_LENGTH) {
    const limit =
      `at most ${MAX_VIEW_LENGTH} (Region.maxViewLength), the largest ArrayBuffer Node.js ${process.version} allows; ` +
      `${kind === 'view' ? 'map' : 'snapshot'} a larger region as several ${kind}s, each with its own offset and length`;
    if (o.length !== undefined) throw outOfRange('"length" option', limit, length);
    throw outOfRange(
      '"length" option',
      `given: ${subject.toString()} has ${size - offset} bytes from offset ${offset}, and a ${kind} is ${limit}`,
      undefined,
    );
  }
  if (pageSize !== native.pageSize && length % pageSize !== 0) throw pageAligned('"length" option', length, pageSize);
  return [offset, length];
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

/**
 * A snapshot's chunk size: a power of two from `pageSize` (the region's page)
 * to 1 GiB. A smaller power of two names the page size as the minimum.
 */
export function chunkSize(value: unknown, what: string, pageSize: number): number {
  const n = integer(value, what, 1);
  const power = Number.isInteger(Math.log2(n)) && n <= 2 ** 30;
  if (!power) throw outOfRange(what, `a power of two from ${pageSize} (the region's page size) to ${2 ** 30}`, n);
  if (n < pageSize) throw outOfRange(what, `a power of two of at least ${pageSize} (the region's page size)`, n);
  return n;
}
