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

/**
 * The class of every error cowshm throws with a code of its own (anything
 * not here is an `Error`: system errors, `EMFILE` for too many views,
 * `ABORT_ERR`). The addon makes its errors through `cowshmError` too (handed
 * to it once at load), so a code has one class whichever side refused.
 * docs/api.md lists the same table, with when each code is thrown.
 */
export const errorClasses: Readonly<Record<string, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor>> = {
  ERR_INVALID_ARG_TYPE: TypeError,
  ERR_INVALID_ARG_VALUE: TypeError,
  ERR_OUT_OF_RANGE: RangeError,
  ERR_COWSHM_CLOSED: TypeError,
};

/**
 * An error with a cowshm (or Node) code for refusals that are not syscalls;
 * its class comes from `errorClasses`.
 */
export function cowshmError(code: string, message: string): Error & { code: string } {
  const Class = Object.hasOwn(errorClasses, code) ? (errorClasses[code] as ErrorConstructor) : Error;
  const err = new Class(message) as Error & { code: string };
  err.code = code;
  Error.captureStackTrace(err, cowshmError);
  return err;
}

/** `The "size" option must be a number. Received type string ('1')` */
export function invalidType(name: string, expected: string, actual: unknown): TypeError {
  return cowshmError('ERR_INVALID_ARG_TYPE', `The ${name} must be ${expected}. Received ${describe(actual)}`);
}

/** `The "size" option must be a positive integer. Received -1` */
export function outOfRange(name: string, expected: string, actual: unknown): RangeError {
  return cowshmError('ERR_OUT_OF_RANGE', `The ${name} must be ${expected}. Received ${describe(actual)}`);
}

/** `The "path" argument must be a string without null bytes. Received type string ('a\x00b')`, as Node's fs says it. */
export function invalidValue(name: string, expected: string, actual: unknown): TypeError {
  return cowshmError('ERR_INVALID_ARG_VALUE', `The ${name} must be ${expected}. Received ${describe(actual)}`);
}

/** Use of a Region, View or Snapshot after close(). */
export function closedError(what: string): TypeError {
  return cowshmError('ERR_COWSHM_CLOSED', `${what} is closed`);
}
