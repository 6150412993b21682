/**
 * A mutex living in one word of a region, for every process and thread that
 * maps the region, robust against a holder that dies.
 *
 * The word (an Int32 at `int32Array[index]`, in a shared writable mapping):
 *
 *     0                         unlocked
 *     bits 0-30 = T, T != 0     locked by the participant whose token is T
 *     0x7fffffff                not recoverable: a holder told ownerDied released
 *                               the lock without markConsistent() (only with
 *                               `requireConsistent`); every acquire throws
 *                               ENOTRECOVERABLE
 *     bit 31                    set while waiters may sleep on the word (FUTEX_WAIT)
 *
 * A participant is one open file description of the region's file per
 * thread: its token T (random, 1 to 2^31 - 2) is its exclusive OFD lock
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
 * With `requireConsistent` (what a robust pthread mutex does), a hold told
 * ownerDied must call markConsistent() before it releases; released without,
 * the word becomes 0x7fffffff for good and every waiter is woken to be told
 * ENOTRECOVERABLE (the data may be half-updated and nobody said otherwise).
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
/** The word of a mutex that is not recoverable (bit 31 aside): a token nobody may draw. */
const NOT_RECOVERABLE = 0x7fffffff;
/** Hold numbers run from 1 below this, then start again in a new epoch; a hold's code (2 × its number, + 1) stays a small integer. */
const HOLDS = 2 ** 29;
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
// mutex): measured with 8 processes on 2 cores (bench/mutex.bench.js),
// reading the word 30 or 100 times first (Atomics.load costs 7 ns) changed
// throughput by less than the run-to-run noise (6 alternating runs each), and
// an earlier measurement of 100 loads lowered it by a quarter. Measured again
// with a spin that stops once the word stays the same for 20 reads (40 at
// most), taking a free word without bit 31: no gain (8 alternating rounds);
// the holder takes its own lock again nanoseconds after releasing it, so a
// spinner rarely sees the word free. Since unlock swaps the word out in one
// exchange, a contended hand-over makes at most one native call on each side
// (FUTEX_WAKE, FUTEX_WAIT), and only a waiter that slept makes its own unlock
// wake the next (see #step).

export interface AcquireOptions {
  /** Give up after this many milliseconds (an error with code 'ETIMEDOUT'). Default: wait as long as it takes. */
  timeoutMs?: number;
  /** Stop waiting: the promise rejects with `signal.reason`. `acquire()` only. */
  signal?: AbortSignal;
}

export interface MutexOptions {
  /**
   * After a holder dies, the next holder (told `ownerDied`) must call
   * `guard.markConsistent()` before it releases the lock; released without,
   * the lock is not recoverable: every later acquire, in every process,
   * throws an error with code 'ENOTRECOVERABLE' (as a robust pthread mutex
   * does after EOWNERDEAD). Default false: the lock is simply released.
   */
  requireConsistent?: boolean;
}

/** What holding a lock looks like. Release it once: `release()`, or `using`. */
export interface LockGuard {
  /** The previous holder died holding the lock: what it guarded may be half-updated. */
  readonly ownerDied: boolean;
  /** Unlocks. Throws when this guard no longer holds the lock. */
  release(): void;
  /** Unlocks unless already released. */
  [Symbol.dispose](): void;
}

/** A Mutex's guard. */
export interface MutexGuard extends LockGuard {
  /**
   * Says that what the lock guards is consistent again after `ownerDied`, so
   * that releasing leaves the lock usable (it matters with `requireConsistent`;
   * otherwise, and when `ownerDied` is false, it changes nothing). Throws when
   * this guard no longer holds the lock.
   */
  markConsistent(): void;
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

/** @internal */
export function notRecoverable(): Error {
  return cowshmError(
    'ENOTRECOVERABLE',
    'the lock is not recoverable: a holder that was told its previous owner died released it without markConsistent()',
  );
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

// A guard names one hold of its Mutex by epoch and number, and holds nothing
// mutable: the Mutex knows which hold is current, so a stale guard (released,
// or of an earlier hold) can never release a later one. Numbers are small
// integers (no boxing, and a hold number is stored without a write barrier);
// after 2^29 - 1 holds they start again under a new epoch object, so no two
// holds of one Mutex are ever named alike. The guard is allocated on every
// hold and kept small (three fields; ownerDied is a bit of the hold's code):
// V8 cannot remove it even when tryAcquire() and release() are inlined into
// the caller, because the guard is the receiver of release(), which calls
// Atomics (an object that is the receiver of an inlined call that makes a
// call is always allocated, measured with --trace-gc on Node 20).
class Guard implements MutexGuard {
  readonly #mutex: Mutex;
  readonly #epoch: object;
  /** The hold's code: its number times 2, plus 1 when told ownerDied. */
  readonly #code: number;
  constructor(mutex: Mutex, epoch: object, code: number) {
    this.#mutex = mutex;
    this.#epoch = epoch;
    this.#code = code;
  }
  get ownerDied(): boolean {
    return (this.#code & 1) !== 0;
  }
  release(): void {
    this.#mutex._unlock(this.#epoch, this.#code);
  }
  markConsistent(): void {
    this.#mutex._markConsistent(this.#epoch, this.#code);
  }
  [Symbol.dispose](): void {
    this.#mutex._dispose(this.#epoch, this.#code);
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

/** @internal The `timeoutMs` of sync options (undefined: none), checked. */
export function syncTimeout(options: Omit<AcquireOptions, 'signal'> | undefined): number {
  return options === undefined ? Number.POSITIVE_INFINITY : timeoutOption(check.options<AcquireOptions>(options).timeoutMs);
}

/** @internal The options of an awaited acquire, checked: its timeout and signal (aborted already: throws its reason). */
export function asyncOptions(options: AcquireOptions | undefined): { timeout: number; signal: AbortSignal | undefined } {
  const o = check.options<AcquireOptions>(options);
  const timeout = timeoutOption(o.timeoutMs);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidType('"signal" option', 'an AbortSignal', signal);
  signal?.throwIfAborted();
  return { timeout, signal };
}

/**
 * A contended acquire's clock: started with the caller's `timeoutMs`, it
 * tells each sleep how long it may last (one slice, less near the deadline)
 * and throws ETIMEDOUT once the deadline has passed. Without a timeout it
 * never reads the clock. @internal
 */
export class Deadline {
  readonly #timeout: number;
  readonly #at: number;
  constructor(timeoutMs: number) {
    this.#timeout = timeoutMs;
    this.#at = timeoutMs === Number.POSITIVE_INFINITY ? timeoutMs : performance.now() + timeoutMs;
  }
  /** Milliseconds the next sleep may last. */
  slice(): number {
    if (this.#at === Number.POSITIVE_INFINITY) return SLICE;
    const left = this.#at - performance.now();
    if (left <= 0) throw cowshmError('ETIMEDOUT', `the lock was not acquired within ${this.#timeout} ms`);
    return left < SLICE ? left : SLICE;
  }
}

/** What a lock's sleep did: nothing (the word had changed already), woken, or its slice ran out. @internal */
export const enum Slept {
  No = 0,
  Woken = 1,
  TimedOut = 2,
}

/**
 * The one sleep of every lock's slow path: blocks on word `i` of `ta` while
 * it holds `v`, for one slice at most. TimedOut when the slice ran out
 * without a wake-up (time to test whether the holder is alive), Woken, or No
 * when the word no longer held `v` (then nothing slept). ETIMEDOUT past the
 * deadline. @internal
 */
export function sleepSync(ta: Int32Array, i: number, v: number, deadline: Deadline): Slept {
  const r = native.futexWait(ta, i, v, deadline.slice());
  if (r < 0) throw wordError(r, ta);
  return r === 3 ? Slept.TimedOut : r === 1 ? Slept.Woken : Slept.No;
}

/**
 * `sleepSync` without blocking the event loop. Rejects with `signal.reason`
 * when aborted, ERR_COWSHM_CLOSED when the view closes, ETIMEDOUT past the
 * deadline. @internal
 */
export async function sleepAsync(ta: Int32Array, i: number, v: number, deadline: Deadline, signal: AbortSignal | undefined): Promise<Slept> {
  const r = native.futexWaitAsync(ta, i, v, deadline.slice());
  if (typeof r === 'number') {
    if (r < 0) throw wordError(r, ta);
    return r === 3 ? Slept.TimedOut : r === 1 ? Slept.Woken : Slept.No;
  }
  if (r instanceof Promise) await r; // rejected: throws
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
  if (result === 'closed') throw closedError('The view this lock is in');
  return result === 'timed-out' ? Slept.TimedOut : Slept.Woken;
}

export class Mutex {
  readonly #ta: Int32Array;
  readonly #index: number;
  readonly #participant: Participant;
  readonly #token: number;
  readonly #requireConsistent: boolean;
  /**
   * The current hold: 0 when this Mutex holds nothing, its number h while it
   * holds the lock, ~h (negative) while it holds it told ownerDied with
   * `requireConsistent` and not yet marked consistent.
   */
  #hold = 0;
  /** The last hold's number. */
  #last = 0;
  /** Names the current run of hold numbers (see Guard). */
  #epoch: object = {};

  /**
   * A mutex in the word `int32Array[index]` of a shared writable (`'write'`)
   * view. Every process and thread that makes a Mutex over the same word of
   * the same region shares the lock. A new region's words are 0: unlocked.
   */
  constructor(int32ArrayArg: Int32Array, index: number, options?: MutexOptions) {
    const o = check.options<MutexOptions>(options);
    this.#requireConsistent = check.boolean(o.requireConsistent, '"requireConsistent" option', false);
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

  /**
   * Takes the lock if it is free (or its owner died) and returns a guard;
   * null when it is held. Never sleeps. ENOTRECOVERABLE when the lock is not
   * recoverable.
   */
  tryAcquire(): MutexGuard | null {
    // The fast paths are kept small, so that V8 inlines them into the caller;
    // anything else is out of line. A closed region's buffer is detached, and
    // Atomics throws a TypeError on it, which #closedOr turns into
    // ERR_COWSHM_CLOSED: no length check on the fast path (it cost ~0.5 ns of
    // ~19, bench/mutex.bench.js).
    let w: number;
    try {
      w = Atomics.compareExchange(this.#ta, this.#index, 0, this.#token);
    } catch (err) {
      throw this.#closedOr(err);
    }
    return w === 0 ? this.#took(false) : this.#tryAcquireSlow();
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
   * the word), ETIMEDOUT after `timeoutMs`, ENOTRECOVERABLE when the lock is
   * not recoverable.
   */
  acquireSync(options?: Omit<AcquireOptions, 'signal'>): MutexGuard {
    const timeout = options === undefined ? Number.POSITIVE_INFINITY : syncTimeout(options);
    let w: number;
    try {
      w = Atomics.compareExchange(this.#ta, this.#index, 0, this.#token);
    } catch (err) {
      throw this.#closedOr(err);
    }
    return w === 0 ? this.#took(false) : this.#acquireSlow(timeout);
  }

  #acquireSlow(timeout: number): MutexGuard {
    const ta = this.#ta;
    const i = this.#index;
    const deadline = new Deadline(timeout);
    let slept = false;
    for (;;) {
      this.#live();
      const step = this.#step(slept);
      if (typeof step !== 'number') return step;
      if (step === 0) continue;
      if ((step & TOKEN_BITS) === this.#token)
        throw cowshmError('EDEADLK', 'this thread holds the mutex already: acquireSync would wait forever');
      const s = sleepSync(ta, i, step, deadline);
      if (s === Slept.No) continue;
      slept = true;
      if (s === Slept.TimedOut) {
        const g = this.#recover(step);
        if (g !== null) return g;
      }
    }
  }

  /**
   * Takes the lock; the promise resolves with a guard once it is held. Waits
   * without blocking the event loop. Rejects with `signal.reason` when
   * aborted, ETIMEDOUT after `timeoutMs`, ERR_COWSHM_CLOSED when the view is
   * closed, ENOTRECOVERABLE when the lock is not recoverable.
   */
  async acquire(options?: AcquireOptions): Promise<MutexGuard> {
    const { timeout, signal } = asyncOptions(options);
    const ta = this.#ta;
    const i = this.#index;
    this.#live();
    if (Atomics.compareExchange(ta, i, 0, this.#token) === 0) return this.#took(false);
    const deadline = new Deadline(timeout);
    let slept = false;
    for (;;) {
      this.#live();
      const step = this.#step(slept);
      if (typeof step !== 'number') return step;
      if (step === 0) continue;
      const s = await sleepAsync(ta, i, step, deadline, signal);
      if (s === Slept.No) continue;
      slept = true;
      if (s === Slept.TimedOut) {
        const g = this.#recover(step);
        if (g !== null) return g;
      }
    }
  }

  /** Releases the lock this Mutex holds; throws when it holds none. */
  release(): void {
    const h = this.#hold;
    if (h === 0) throw notHeld('This Mutex does not hold the lock');
    this._unlock(this.#epoch, h > 0 ? h : ~h);
  }

  /** @internal Called by the guard of hold `hold` of epoch `epoch`. */
  _unlock(epoch: object, hold: number): void {
    if (this.#hold !== hold || this.#epoch !== epoch) {
      this.#unlockOther(epoch, hold);
      return;
    }
    this.#hold = 0;
    let w: number;
    try {
      w = Atomics.exchange(this.#ta, this.#index, 0);
    } catch (err) {
      throw this.#closedOr(err);
    }
    if (w !== this.#token) this.#unlocked(w, 0, 1);
  }

  /** @internal `[Symbol.dispose]` of a guard: releases it unless released already. */
  _dispose(epoch: object, hold: number): void {
    if (this.#epoch === epoch && (this.#hold === hold || this.#hold === ~hold)) this._unlock(epoch, hold);
  }

  /** @internal */
  _markConsistent(epoch: object, hold: number): void {
    if (this.#epoch !== epoch || (this.#hold !== hold && this.#hold !== ~hold))
      throw notHeld('This guard does not hold the lock (released already)');
    this.#hold = hold;
  }

  /** A release that is not of the current, consistent hold: of an inconsistent one, or a stale guard's. */
  #unlockOther(epoch: object, hold: number): void {
    if (this.#epoch !== epoch || this.#hold !== ~hold) throw notHeld('This guard does not hold the lock (released already)');
    // Told ownerDied and released without markConsistent(): not recoverable,
    // and every waiter is woken to be told so.
    this.#hold = 0;
    const ta = this.#ta;
    if (ta.length === 0) throw closedError('The view this mutex is in');
    const w = Atomics.exchange(ta, this.#index, NOT_RECOVERABLE);
    this.#unlocked(w, NOT_RECOVERABLE, TOKEN_BITS);
  }

  /**
   * After the word, which held `w` (not our bare token), was swapped for
   * `wrote`: wakes `wake` sleepers if bit 31 said there may be some. A word
   * that no longer named us (another program overwrote it while we held the
   * lock) is put back as it was, unless it has changed since, and reported.
   */
  #unlocked(w: number, wrote: number, wake: number): void {
    const ta = this.#ta;
    const i = this.#index;
    if ((w & TOKEN_BITS) !== this.#token) {
      Atomics.compareExchange(ta, i, wrote, w);
      throw notHeld('The mutex word no longer names this thread as its owner (another process overwrote it)');
    }
    if ((w & SLEEPERS) !== 0) {
      const r = native.futexWake(ta, i, wake);
      if (r < 0) throw wordError(r, ta);
    }
  }

  /** One attempt on the contended path: a guard, 0 to try again, or the word to sleep on (bit 31 set). */
  #step(slept: boolean): Guard | number {
    const ta = this.#ta;
    const i = this.#index;
    const w = Atomics.load(ta, i);
    if (w === 0) {
      // Taken after sleeping: others may be asleep too, and each unlock wakes
      // only one, so this one's unlock must wake the next. A waiter that never
      // slept (its FUTEX_WAIT found the word changed) is owed no wake-up and
      // leaves bit 31 clear: taking with it, it made its unlock wake nobody,
      // a system call for nothing (most contended hand-overs: in
      // bench/mutex.bench.js's 8 processes, ~90000 wakes of which ~260 woke
      // anyone). Sleepers still asleep are not forgotten: each unlock that
      // finds bit 31 wakes one, and a woken sleeper takes the lock with bit 31
      // (or sets it again before it sleeps again), so the next is woken in turn.
      return Atomics.compareExchange(ta, i, 0, slept ? this.#token | SLEEPERS : this.#token) === 0 ? this.#took(false) : 0;
    }
    const owner = w & TOKEN_BITS;
    if (owner === NOT_RECOVERABLE) throw notRecoverable();
    if (owner === 0) return this.#recover(w) ?? 0; // bit 31 alone: garbage, no owner
    if ((w & SLEEPERS) !== 0) return w;
    return Atomics.compareExchange(ta, i, w, w | SLEEPERS) === w ? w | SLEEPERS : 0;
  }

  /** Takes the lock from the owner named in `w` if that owner is gone. */
  #recover(w: number): Guard | null {
    const owner = w & TOKEN_BITS;
    if (owner === NOT_RECOVERABLE) throw notRecoverable();
    if (!ownerGone(this.#participant, owner)) return null;
    const mine = this.#token | (w & SLEEPERS);
    return Atomics.compareExchange(this.#ta, this.#index, w, mine) === w ? this.#took(true) : null;
  }

  #took(ownerDied: boolean): Guard {
    let h = this.#last + 1;
    if (h === HOLDS) {
      this.#epoch = {};
      h = 1;
    }
    this.#last = h;
    const code = ownerDied ? 2 * h + 1 : 2 * h;
    this.#hold = ownerDied && this.#requireConsistent ? ~code : code;
    return new Guard(this, this.#epoch, code);
  }

  /** What an Atomics call on the word threw: ERR_COWSHM_CLOSED when the view is closed (its buffer detached). */
  #closedOr(err: unknown): unknown {
    return this.#ta.length === 0 ? closedError('The view this mutex is in') : err;
  }

  #live(): void {
    if (this.#ta.length === 0) throw closedError('The view this mutex is in');
  }
}
