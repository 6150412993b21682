/**
 * A mutex living in one word of a region, for every process and thread that
 * maps the region, robust against a holder that dies.
 *
 * The word (an Int32 at `int32Array[index]`, in a shared writable mapping):
 *
 *     0                         unlocked
 *     bits 0-30 = T, T != 0     locked by the participant whose token is T
 *     bit 31                    set while waiters may sleep on the word (FUTEX_WAIT)
 *
 * A participant is one open file description of the region's file per
 * thread: its token T (random, 1 to 2^31 - 1) is its exclusive OFD lock
 * (fcntl F_OFD_SETLK) on the byte at OWNER_BASE + T of the region's file, far
 * beyond its data (locks past the end of a file are allowed and change
 * nothing in it). The kernel drops that lock when the participant goes: on
 * exit, kill -9, worker.terminate() (the worker's descriptors are closed),
 * in any pid namespace. So a token whose byte nobody holds names no live
 * owner, and a pid that is reused never looks like one (tokens are not pids).
 *
 * To lock: compare-and-swap 0 -> T (JS Atomics, no native call). Contended:
 * set bit 31, sleep on the word (futex, in slices of SLICE_MS), and after a
 * slice in which nothing woke us, test the owner's byte: if its lock is free,
 * the owner is gone, and swapping its word for ours takes the lock with
 * `ownerDied: true` (what EOWNERDEAD is for robust pthread mutexes: the data
 * the lock guarded may be half-updated). To unlock: swap the word to 0, and
 * FUTEX_WAKE one waiter if bit 31 was set. A word holding garbage names no
 * live token either, so it is recovered the same way.
 *
 * A C or Python program takes part by doing the same: open the region's file,
 * lock its own byte at OWNER_BASE + T, and follow the protocol above.
 */
import { randomInt } from 'node:crypto';
import { native } from './native';
import { closedError, cowshmError, invalidType, outOfRange } from './errors';
import { lockRange, unlockRange } from './locks';
import { regionOfBuffer } from './view';
import { int32Array, atomicIndex, wordError } from './atomics';
import * as check from './validate';
import * as c from './constants';

// The constants are module-local and exported under other names: the
// CommonJS output reads an exported const as a property of `exports` at
// every use, which costs in the lock paths.
const BASE = 2 ** 52;
const SLEEPERS = 0x80000000 | 0;
const TOKEN_BITS = 0x7fffffff;
const SLICE = 50;
/** Where the owners' bytes start in the region's file: 2^52, beyond any region and exact in a double. */
export const OWNER_BASE = BASE;
/** Bit 31 of the word: waiters may be asleep. @internal */
export const WAITERS = SLEEPERS;
/** @internal */
export const TOKEN = TOKEN_BITS;
/** The tokens this module draws: 1 to 2^30 - 1. */
const SMI_TOKENS = 2 ** 30;
/** How long a waiter sleeps before it checks whether the owner is still alive. @internal */
export const SLICE_MS = SLICE;
// A contended acquire does not spin before it sleeps (nor does glibc's robust
// mutex): measured with 2 and 8 processes on 2 cores (bench/mutex.bench.js),
// reading the word 100 times first (1.6 µs: Atomics.load costs 16 ns on a
// region's buffer) lowered throughput by a quarter, and 20 times did no better.

export interface AcquireOptions {
  /** Give up after this many milliseconds (an error with code 'ETIMEDOUT'). Default: wait as long as it takes. */
  timeoutMs?: number;
  /** Stop waiting: the promise rejects with `signal.reason`. `acquire()` only. */
  signal?: AbortSignal;
}

/** What holding the lock looks like. Release it once: `release()`, or `using`. */
export interface MutexGuard {
  /** The previous holder died holding the lock: what it guarded may be half-updated. */
  readonly ownerDied: boolean;
  /** Unlocks. Throws when this guard no longer holds the lock. */
  release(): void;
  /** Unlocks unless already released. */
  [Symbol.dispose](): void;
}

/** This thread's identity for one region file: a descriptor and the token it holds a lock for. @internal */
export interface Participant {
  readonly key: string;
  readonly fd: number;
  readonly token: number;
  users: number;
}

const participants = new Map<string, Participant>();

// A participant's descriptor (and with it the token) goes when no Mutex of
// this thread uses the file any more. A Mutex collected while its lock is
// held then reads as a dead owner to the others, which is what it is.
const users = new FinalizationRegistry<Participant>((p) => {
  if (--p.users > 0) return;
  participants.delete(p.key);
  try {
    native.close(p.fd);
  } catch {
    // Nothing to report to.
  }
});

/**
 * This thread's participant for the region of `ta` (a checked 'write' view),
 * kept as long as `owner` (a Mutex or an RwLock) lives. @internal
 */
export function participantOf(owner: object, ta: Int32Array): Participant {
  const region = regionOfBuffer(ta.buffer);
  if (region === undefined || region.closed)
    throw closedError("The region of this buffer (keep the Region open while its locks are in use): it");
  const p = participantFor(region.fd, region.dev, region.ino);
  users.register(owner, p);
  return p;
}

/**
 * Whether no live participant holds `token` (0, garbage, names nobody).
 * Never true of our own token: our own description's test lock would be
 * granted, and replace the lock that makes us the owner. @internal
 */
export function ownerGone(p: Participant, token: number): boolean {
  if (token === 0) return true;
  if (token === p.token) return false;
  if (!lockRange(p.fd, BASE + token, 1, 'shared')) return false;
  unlockRange(p.fd, BASE + token, 1);
  return true;
}

/** A 'write' view's Int32Array checked as a lock's home: TypeError / RangeError otherwise. @internal */
export function lockWords(int32ArrayArg: Int32Array, index: number, words: number): { ta: Int32Array; i: number } {
  const ta = int32Array(int32ArrayArg, '"int32Array" argument');
  const i = atomicIndex(ta, index);
  if (i + words > ta.length)
    throw outOfRange('"index" argument', `at most ${ta.length - words} (the lock takes ${words} words)`, index);
  const access = native.futexWord(ta, i);
  if (access < 0) throw wordError(access, ta);
  if (access !== c.ACCESS.write)
    throw invalidType(
      '"int32Array" argument',
      "an Int32Array over a 'write' view: a lock writes its word, and this view is 'read'",
      ta,
    );
  return { ta, i };
}

function participantFor(fd: number, dev: number, ino: number): Participant {
  const key = `${dev}:${ino}`;
  let p = participants.get(key);
  if (p === undefined) {
    // An open file description of our own: the region's descriptor may be
    // closed while this thread still holds the lock, and each thread needs
    // its own (OFD locks of one description never conflict with each other).
    const own = native.open(`/proc/self/fd/${fd}`, c.O_RDWR, 0);
    try {
      let token = 0;
      for (let tries = 0; token === 0; tries++) {
        if (tries === 64) throw cowshmError('EAGAIN', 'could not find a free mutex owner token in 64 tries');
        // Below 2^30: a V8 small integer, which keeps the fast paths' compare
        // and swap free of number boxing (a larger token makes them ~40% slower).
        // Tokens of other programs may use all 31 bits.
        const t = randomInt(1, SMI_TOKENS) | 0; // `| 0`: stored as an integer, not as a double
        if (lockRange(own, BASE + t, 1, 'exclusive')) token = t;
      }
      p = { key, fd: own, token, users: 0 };
      participants.set(key, p);
    } catch (err) {
      native.close(own);
      throw err;
    }
  }
  p.users++;
  return p;
}

// A guard names one hold of its Mutex by number, and holds nothing mutable:
// the Mutex knows which hold is current, so a stale guard (released, or of
// an earlier hold) can never release a later one. Guards do not escape into
// the Mutex, so V8 can keep `lock.tryAcquire()...release()` free of
// allocation and of any call once it inlines both.
class Guard implements MutexGuard {
  readonly #mutex: Mutex;
  readonly #hold: number;
  readonly ownerDied: boolean;
  constructor(mutex: Mutex, hold: number, ownerDied: boolean) {
    this.#mutex = mutex;
    this.#hold = hold;
    this.ownerDied = ownerDied;
  }
  release(): void {
    this.#mutex._unlock(this.#hold);
  }
  [Symbol.dispose](): void {
    this.#mutex._dispose(this.#hold);
  }
}

/** @internal */
export function notHeld(message: string): Error {
  return cowshmError('ERR_COWSHM_LOCK_NOT_HELD', message);
}

/** @internal */
export function timeoutOption(value: unknown): number {
  if (value === undefined) return Number.POSITIVE_INFINITY;
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType('"timeoutMs" option', 'a number', value);
  if (value < 0) throw outOfRange('"timeoutMs" option', 'a non-negative number', value);
  return value;
}

function timedOut(ms: number): Error {
  return cowshmError('ETIMEDOUT', `the mutex was not acquired within ${ms} ms`);
}

export class Mutex {
  readonly #ta: Int32Array;
  readonly #index: number;
  readonly #participant: Participant;
  readonly #token: number;
  /** The current hold's number, 0 when this Mutex holds nothing. */
  #hold = 0;
  /** Holds so far: numbers every hold, so a guard names one and only one. */
  #holds = 0;

  /**
   * A mutex in the word `int32Array[index]` of a shared writable (`'write'`)
   * view. Every process and thread that makes a Mutex over the same word of
   * the same region shares the lock. A new region's words are 0: unlocked.
   */
  constructor(int32ArrayArg: Int32Array, index: number) {
    const { ta, i } = lockWords(int32ArrayArg, index, 1);
    this.#ta = ta;
    this.#index = i;
    this.#participant = participantOf(this, ta);
    this.#token = this.#participant.token;
  }

  /** Whether this Mutex object holds the lock now. */
  get held(): boolean {
    return this.#hold !== 0;
  }

  /** Takes the lock if it is free (or its owner died) and returns a guard; null when it is held. Never sleeps. */
  tryAcquire(): MutexGuard | null {
    // The fast paths are kept small, so that V8 inlines them into the caller;
    // anything else is out of line.
    const ta = this.#ta;
    if (ta.length !== 0 && Atomics.compareExchange(ta, this.#index, 0, this.#token) === 0) return this.#took(false);
    return this.#tryAcquireSlow();
  }

  #tryAcquireSlow(): MutexGuard | null {
    const ta = this.#ta;
    const i = this.#index;
    this.#live();
    const w = Atomics.load(ta, i);
    if (w === 0) return Atomics.compareExchange(ta, i, 0, this.#token) === 0 ? this.#took(false) : null;
    return this.#recover(w);
  }

  /**
   * Takes the lock, blocking the calling thread until it is free (for worker
   * threads and scripts; `acquire()` keeps the event loop running). Throws
   * EDEADLK when this thread holds the lock already (through any Mutex over
   * the word), ETIMEDOUT after `timeoutMs`.
   */
  acquireSync(options?: Omit<AcquireOptions, 'signal'>): MutexGuard {
    const timeout = options === undefined ? Number.POSITIVE_INFINITY : timeoutOption(check.options<AcquireOptions>(options).timeoutMs);
    const ta = this.#ta;
    if (ta.length !== 0 && Atomics.compareExchange(ta, this.#index, 0, this.#token) === 0) return this.#took(false);
    return this.#acquireSlow(timeout);
  }

  #acquireSlow(timeout: number): MutexGuard {
    const ta = this.#ta;
    const i = this.#index;
    this.#live();
    const deadline = performance.now() + timeout;
    for (;;) {
      this.#live();
      const step = this.#step();
      if (step instanceof Guard) return step;
      if (step === 0) continue;
      if ((step & TOKEN_BITS) === this.#token)
        throw cowshmError('EDEADLK', 'this thread holds the mutex already: acquireSync would wait forever');
      const left = deadline - performance.now();
      if (left <= 0) throw timedOut(timeout);
      const r = native.futexWait(ta, i, step, Math.min(SLICE, left));
      if (r < 0) throw wordError(r, ta);
      if (r === 3) {
        const g = this.#recover(step);
        if (g !== null) return g;
      }
    }
  }

  /**
   * Takes the lock; the promise resolves with a guard once it is held. Waits
   * without blocking the event loop (on a thread of cowshm's own). Rejects
   * with `signal.reason` when aborted, ETIMEDOUT after `timeoutMs`,
   * ERR_COWSHM_CLOSED when the view is closed.
   */
  async acquire(options?: AcquireOptions): Promise<MutexGuard> {
    const o = check.options<AcquireOptions>(options);
    const timeout = timeoutOption(o.timeoutMs);
    const signal = o.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidType('"signal" option', 'an AbortSignal', signal);
    signal?.throwIfAborted();
    const ta = this.#ta;
    const i = this.#index;
    this.#live();
    if (Atomics.compareExchange(ta, i, 0, this.#token) === 0) return this.#took(false);
    const deadline = performance.now() + timeout;
    for (;;) {
      this.#live();
      const step = this.#step();
      if (step instanceof Guard) return step;
      if (step === 0) continue;
      const left = deadline - performance.now();
      if (left <= 0) throw timedOut(timeout);
      const r = native.futexWaitAsync(ta, i, step, Math.min(SLICE, left));
      if (typeof r === 'number') {
        if (r < 0) throw wordError(r, ta);
        continue; // the word changed
      }
      if (r instanceof Promise) await r;
      const [promise, id] = r as [Promise<string>, number];
      const abort = (): void => native.futexCancel(id);
      signal?.addEventListener('abort', abort, { once: true });
      let result: string;
      try {
        result = await promise;
      } finally {
        signal?.removeEventListener('abort', abort);
      }
      if (result === 'aborted') throw signal?.reason;
      if (result === 'closed') throw closedError('The view this mutex is in');
      if (result === 'timed-out') {
        const g = this.#recover(step);
        if (g !== null) return g;
      }
    }
  }

  /** Releases the lock this Mutex holds; throws when it holds none. */
  release(): void {
    if (this.#hold === 0) throw notHeld('This Mutex does not hold the lock');
    this._unlock(this.#hold);
  }

  /** @internal Called by the guard of hold number `hold`. */
  _unlock(hold: number): void {
    if (this.#hold !== hold) throw notHeld('This guard does not hold the lock (released already)');
    this.#hold = 0;
    const ta = this.#ta;
    if (ta.length === 0 || Atomics.compareExchange(ta, this.#index, this.#token, 0) !== this.#token) this.#unlockSlow();
  }

  /** @internal `[Symbol.dispose]` of the guard of hold number `hold`: releases it unless released already. */
  _dispose(hold: number): void {
    if (this.#hold === hold) this._unlock(hold);
  }

  #unlockSlow(): void {
    const ta = this.#ta;
    const i = this.#index;
    if (ta.length === 0) throw closedError('The view this mutex is in');
    for (;;) {
      const w = Atomics.load(ta, i);
      if ((w & TOKEN_BITS) !== this.#token)
        throw notHeld('The mutex word no longer names this thread as its owner (another process overwrote it)');
      if (Atomics.compareExchange(ta, i, w, 0) === w) {
        if ((w & SLEEPERS) !== 0) native.futexWake(ta, i, 1);
        return;
      }
    }
  }

  /** One attempt on the contended path: a guard, 0 to try again, or the word to sleep on (bit 31 set). */
  #step(): Guard | number {
    const ta = this.#ta;
    const i = this.#index;
    const w = Atomics.load(ta, i);
    if (w === 0) {
      // Taken after contention: others may be asleep, so the unlock must wake one.
      return Atomics.compareExchange(ta, i, 0, this.#token | SLEEPERS) === 0 ? this.#took(false) : 0;
    }
    if ((w & TOKEN_BITS) === 0) return this.#recover(w) ?? 0; // bit 31 alone: garbage, no owner
    if ((w & SLEEPERS) !== 0) return w;
    return Atomics.compareExchange(ta, i, w, w | SLEEPERS) === w ? w | SLEEPERS : 0;
  }

  /** Takes the lock from the owner named in `w` if that owner is gone. */
  #recover(w: number): Guard | null {
    const owner = w & TOKEN_BITS;
    if (!ownerGone(this.#participant, owner)) return null;
    const mine = this.#token | (w & SLEEPERS);
    return Atomics.compareExchange(this.#ta, this.#index, w, mine) === w ? this.#took(true) : null;
  }

  #took(ownerDied: boolean): Guard {
    const hold = ++this.#holds;
    this.#hold = hold;
    return new Guard(this, hold, ownerDied);
  }

  #live(): void {
    if (this.#ta.length === 0) throw closedError('The view this mutex is in');
  }
}
