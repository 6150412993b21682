/**
 * Errors, worded like Node's own: system errors carry `code`, `errno`
 * (negative, as in Node), `syscall` and `path`; misuse throws TypeError or
 * RangeError naming the argument, what was expected and what was received.
 */
import { getSystemErrorMap, inspect } from 'node:util';

/** An error from a failed system call, shaped like Node's fs errors. */
export interface SystemError extends Error {
  /** The errno name, e.g. `'ENOENT'`. */
  code: string;
  /** The negated errno value, as Node reports it (`-2` for ENOENT). */
  errno: number;
  /** The failed system call, e.g. `'shm_open'`. */
  syscall: string;
  /** The segment name or file path involved, when there is one. */
  path?: string;
}

let errorMap: Map<number, [string, string]> | undefined;

/** Builds a Node-style system error from a positive errno value. */
export function systemError(errno: number, syscall: string, target?: string): SystemError {
  errorMap ??= getSystemErrorMap();
  const [code, description] = errorMap.get(-errno) ?? [`Unknown system error ${errno}`, 'unknown error'];
  const where = target === undefined ? '' : ` '${target}'`;
  const err = new Error(`${code}: ${description}, ${syscall}${where}`) as SystemError;
  err.errno = -errno;
  err.code = code;
  err.syscall = syscall;
  if (target !== undefined) err.path = target;
  Error.captureStackTrace(err, systemError);
  return err;
}

/** Adds a sentence to a system error's message, keeping its properties. */
export function explain<E extends Error>(err: E, sentence: string): E {
  err.message = `${err.message} (${sentence})`;
  return err;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name ? `an instance of ${name}` : inspect(value, { depth: -1 });
  }
  let shown = inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  if (typeof value === 'number') return shown;
  return `type ${typeof value} (${shown})`;
}

/** `The "size" option must be a number. Received type string ('1')` */
export function invalidType(name: string, expected: string, actual: unknown): TypeError {
  const err = new TypeError(`The ${name} must be ${expected}. Received ${describe(actual)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE';
  return err;
}

/** `The "size" option must be a positive integer. Received -1` */
export function outOfRange(name: string, expected: string, actual: unknown): RangeError {
  const err = new RangeError(`The ${name} must be ${expected}. Received ${describe(actual)}`);
  (err as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE';
  return err;
}

/** `The "path" argument must be a string without null bytes. Received type string ('a\x00b')`, as Node's fs says it. */
export function invalidValue(name: string, expected: string, actual: unknown): TypeError {
  const err = new TypeError(`The ${name} must be ${expected}. Received ${describe(actual)}`);
  (err as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return err;
}

/** Use of a Region, View or Snapshot after close(). */
export function closedError(what: string): TypeError {
  const err = new TypeError(`${what} is closed`);
  (err as TypeError & { code: string }).code = 'ERR_COWSHM_CLOSED';
  return err;
}

/** An Error with a cowshm-specific code for refusals that are not syscalls. */
export function cowshmError(code: string, message: string): Error & { code: string } {
  const err = new Error(message) as Error & { code: string };
  err.code = code;
  return err;
}
