/**
 * `Atomics.wait`, `Atomics.waitAsync` and `Atomics.notify` for the words of a
 * region, across processes: the same arguments, coercions and results as the
 * standard functions, on an `Int32Array` over a shared view (`'read'` or
 * `'write'`) of a shm, memfd or file region.
 *
 * The standard functions cannot do this: they throw on the region's
 * ArrayBuffers (not SharedArrayBuffers), and V8's waiters live inside one
 * process. These sleep in the kernel (a futex on the region's page, which the
 * kernel keys by file and offset, so every process that maps the region waits
 * on the same word, and so does a C program doing FUTEX_WAIT on it).
 *
 * Extensions, beyond the standard: `waitAsync` takes `{ signal }` as a fifth
 * argument, and its promise rejects with ERR_COWSHM_CLOSED when the view is
 * closed. A pending `waitAsync` keeps the event loop alive, as a pending
 * socket read does.
 */
import { constants as osConstants } from 'node:os';
import { native } from './native';
import { closedError, explain, invalidType, outOfRange, systemError } from './errors';

const { EFAULT } = osConstants.errno;

// The addon's object holds its functions in dictionary mode (too many to
// stay fast), so every `native.f(...)` would look `f` up by hash: these are
// on the path of every wait and wake, taken once here.
const { futexWait, futexWaitAsync, futexWake, futexWord, futexCancel } = native;

/** What a wait ends with. */
export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

/** What `waitAsync` returns, as `Atomics.waitAsync` does. */
export type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };

export interface WaitAsyncOptions {
  /** Ends the wait: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
}

const RESULTS = [undefined, 'ok', 'not-equal', 'timed-out'] as const;

/** ToIntegerOrInfinity (ECMA-262 7.1.5). */
function toIntegerOrInfinity(value: unknown): number {
  const n = +(value as number); // ToNumber: throws a TypeError on a BigInt or a Symbol, as the standard does
  if (Number.isNaN(n) || n === 0) return 0;
  if (!Number.isFinite(n)) return n;
  return Math.trunc(n);
}

/** ValidateIntegerTypedArray(ta, waitable = true), restricted to what a futex can wait on. */
export function int32Array(ta: unknown, what = '"typedArray" argument'): Int32Array {
  if (ta instanceof BigInt64Array)
    throw invalidType(what, 'an Int32Array (Linux has no 64-bit futex wait, so a BigInt64Array cannot be waited on)', ta);
  if (!(ta instanceof Int32Array)) throw invalidType(what, 'an Int32Array over a view of a cowshm region', ta);
  return ta;
}

/** ValidateAtomicAccess: ToIndex(index), then below the array's length. */
export function atomicIndex(ta: Int32Array, index: unknown, what = '"index" argument'): number {
  const i = index === undefined ? 0 : toIntegerOrInfinity(index);
  if (i < 0 || i > Number.MAX_SAFE_INTEGER) throw outOfRange(what, 'a non-negative integer', index);
  if (i >= ta.length) {
    if (ta.length === 0 && ta.buffer.byteLength === 0) throw closedError('The view under this Int32Array');
    throw outOfRange(what, `less than the array's length (${ta.length})`, index);
  }
  return i;
}

/** The timeout in ms as Atomics.wait coerces it: undefined and NaN wait forever, negative is 0. */
function timeoutOf(timeout: unknown): number {
  const q = +(timeout as number);
  return Number.isNaN(q) ? Number.POSITIVE_INFINITY : Math.max(q, 0);
}

/** Turns a negative code of the addon into the error it stands for. */
export function wordError(code: number, ta: Int32Array): Error {
  if (code === -2)
    return invalidType(
      '"typedArray" argument',
      "an Int32Array over a shared view ('read' or 'write'): a copy-on-write view or a snapshot is private to this process, so no other process could wake it",
      ta,
    );
  if (code === -3) return outOfRange('"index" argument', `less than the array's length (${ta.length})`, undefined);
  return invalidType(
    '"typedArray" argument',
    "an Int32Array over the buffer of a cowshm view ('read' or 'write') of this thread",
    ta,
  );
}

/**
 * Sleeps until `ta[index]` is notified, if it holds `value`, or until
 * `timeout` ms pass (default: forever). Blocks the calling thread, as
 * `Atomics.wait` does: meant for worker threads and scripts.
 */
export function wait(ta: Int32Array, index: number, value: number, timeout?: number): WaitResult {
  const r = hasIndex(ta, index)
    ? futexWait(ta, index, +(value as number) | 0, timeout === undefined ? Number.POSITIVE_INFINITY : timeoutOf(timeout))
    : futexWait(int32Array(ta), atomicIndex(ta, index), +(value as number) | 0, timeoutOf(timeout));
  if (r > 0 && r < 4) return RESULTS[r] as WaitResult;
  if (r < 0) throw wordError(r, ta);
  throw explain(systemError(EFAULT, 'futex'), "the word's page is no longer in the region's file: it was truncated");
}

/**
 * What a loop of waits and wakes passes: an Int32Array and an index that is
 * already an integer in range, which ValidateIntegerTypedArray and
 * ValidateAtomicAccess leave as they are. The fast way past them: a wake-up
 * comes to a thread whose caches the other side has just used, so every
 * function and object touched on the way costs. Anything else takes the
 * full checks (int32Array, atomicIndex), in the standard's order.
 */
function hasIndex(ta: unknown, index: unknown): ta is Int32Array {
  return ta instanceof Int32Array && typeof index === 'number' && index >>> 0 === index && index < ta.length;
}

/**
 * Like `Atomics.waitAsync`: `{ async: false, value: 'not-equal' }` when
 * `ta[index]` does not hold `value`, `{ async: false, value: 'timed-out' }`
 * for a timeout of 0, otherwise `{ async: true, value }` where the promise
 * resolves with 'ok' or 'timed-out'. The waiting is done by a thread of
 * cowshm's own, never by libuv's pool, and the event loop stays free.
 */
export function waitAsync(
  ta: Int32Array,
  index: number,
  value: number,
  timeout?: number,
  options?: WaitAsyncOptions,
): WaitAsyncResult {
  const fast = hasIndex(ta, index);
  const array = fast ? ta : int32Array(ta);
  const i = fast ? index : atomicIndex(array, index);
  const v = +(value as number) | 0;
  const t = timeoutOf(timeout);
  let signal: AbortSignal | undefined;
  if (options !== undefined) {
    if (options === null || typeof options !== 'object') throw invalidType('"options" argument', 'an object', options);
    signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal))
      throw invalidType('"signal" option', 'an AbortSignal', signal);
  }
  if (signal?.aborted) {
    const code = futexWord(array, i);
    if (code < 0) throw wordError(code, array);
    return { async: true, value: Promise.reject(signal.reason) };
  }
  if (t === 0) {
    const code = futexWord(array, i);
    if (code < 0) throw wordError(code, array);
    return { async: false, value: Atomics.load(array, i) === v ? 'timed-out' : 'not-equal' };
  }
  // The addon holds the array until the wait settles, as Atomics.waitAsync
  // holds its buffer (a view nothing else references must not be collected,
  // and closed, under its wait). Without a signal it settles the promise with
  // its final value ('ok', 'timed-out', or ERR_COWSHM_CLOSED): no reaction of
  // ours is on the path of a wake-up.
  const r = futexWaitAsync(array, i, v, t, signal === undefined);
  if (typeof r === 'number') {
    if (r < 0) throw wordError(r, array);
    return { async: false, value: 'not-equal' };
  }
  if (r instanceof Promise) return { async: true, value: r as Promise<'ok' | 'timed-out'> };
  const [promise, id] = r;
  const s = signal as AbortSignal;
  const abort = (): void => futexCancel(id);
  s.addEventListener('abort', abort, { once: true });
  const settledValue = promise.then(
    (result) => {
      s.removeEventListener('abort', abort);
      if (result === 'aborted') throw s.reason;
      if (result === 'closed') throw closedError('The view this wait was on');
      return result as 'ok' | 'timed-out';
    },
    (err: unknown) => {
      s.removeEventListener('abort', abort);
      throw err;
    },
  );
  return { async: true, value: settledValue };
}

/**
 * How `waitAsync` waits in this thread: `'io_uring'` (each wait is a
 * futex-wait request on a ring of this thread's, whose completions the event
 * loop polls: no thread in between) or `'threads'` (each pending wait sleeps
 * on a waiter thread of cowshm's own; where io_uring or its futex op is
 * refused, or COWSHM_NO_IO_URING=1), and why.
 */
export function waitAsyncPath(): { path: 'io_uring' | 'threads'; reason: string } {
  const [path, reason] = native.futexPath();
  return { path: path as 'io_uring' | 'threads', reason };
}

/**
 * Wakes up to `count` (default: all) waiters on `ta[index]`, in this process
 * and in every other process that maps the region, and returns how many were
 * woken: this process's waiters first, oldest first, as Atomics.notify does;
 * then the kernel's, for other processes and C programs.
 */
export function notify(ta: Int32Array, index: number, count?: number): number {
  const i = hasIndex(ta, index) ? index : atomicIndex(int32Array(ta), index);
  const c = count === undefined ? Number.POSITIVE_INFINITY : Math.max(toIntegerOrInfinity(count), 0);
  const r = futexWake(ta, i, c);
  if (r < 0) throw wordError(r, ta);
  return r;
}
