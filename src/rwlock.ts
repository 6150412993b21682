/**
 * A reader-writer lock living in 16 words of a region: many readers at once,
 * or one writer, across every process and thread that maps the region,
 * robust against holders that die.
 *
 * The words (Int32s at `int32Array[index]` ... `[index + 15]`, in a shared
 * writable mapping; see docs/api.md):
 *
 *     [index]          the writer word, as a Mutex's word: 0, or the token T
 *                      of the writer (holding, or waiting for readers to
 *                      leave); bit 31 while others may sleep on it
 *     [index + 1..15]  15 reader slots: 0 free, or the token of a reader
 *                      holding a read lock through it; bit 31 while a writer
 *                      (or a reader looking for a slot) sleeps on it
 *
 * Tokens are the participants' of src/mutex.ts: an OFD lock on the region's
 * file that the kernel drops when the participant goes, so a dead reader's
 * slot and a dead writer's word are both told from live ones.
 *
 * To read: claim a free slot (compare-and-swap 0 -> T), then read the writer
 * word; if it is 0 the read lock is held. Otherwise a writer holds the lock
 * or waits for the readers: give the slot back and sleep on the writer word
 * (writers come first, so a stream of readers cannot starve them). To write:
 * take the writer word as a Mutex is taken, then wait for every slot to be 0.
 * A reader writes its slot before it reads the writer word and a writer
 * writes the writer word before it reads the slots (both sequentially
 * consistent), so of a reader and a writer arriving together at least one
 * sees the other. Uncontended: two compare-and-swaps and an exchange to read
 * and unlock, the same and 14 plain loads to write and unlock.
 *
 * Deaths: a slot whose token no live participant holds is cleared by the
 * writer waiting on it (a dead reader changed nothing, so nobody is told); a
 * dead writer's word is taken over by the next writer, or cleared by the
 * next reader, and that one acquirer is told `ownerDied: true`.
 */
import { native } from './native';
import { closedError, cowshmError } from './errors';
import { wordError } from './atomics';
import {
  type AcquireOptions,
  type LockGuard,
  type Participant,
  TOKEN as TOKEN_EXPORT,
  WAITERS as WAITERS_EXPORT,
  Deadline,
  asyncOptions,
  lockWords,
  notHeld,
  ownerGone,
  participantOf,
  sleepAsync,
  sleepSync,
  Slept,
  syncTimeout,
} from './mutex';

const TOKEN = TOKEN_EXPORT;
const WAITERS = WAITERS_EXPORT;
// Module-local, as in mutex.ts: an exported const is a property load of
// `exports` at every use in the CommonJS output.
const WORDS = 16;
/** How many words an RwLock takes: the writer word and 15 reader slots. */
export const RWLOCK_WORDS = WORDS;
const SLOTS = WORDS - 1;
const ALL = 0x7fffffff;
/** See #noReaders: x86-64's read-modify-write is a full barrier. */
const PLAIN_READS_AFTER_RMW = process.arch === 'x64';

/**
 * A sequentially consistent read of word `i`: a compare-and-swap that
 * changes nothing (it writes 0 over 0). Atomics.load costs twice as much on
 * the region's (non-shared) buffers in V8, and the fast paths read this way
 * right after a compare-and-swap of their own, so the line is in this core's
 * cache already.
 */
function scLoad(ta: Int32Array, i: number): number {
  return Atomics.compareExchange(ta, i, 0, 0);
}

/** What holding a read or write lock looks like; the same shape as a Mutex's guard. */
export type RwLockGuard = LockGuard;

// A guard names one hold by its slot (0: the write lock) and number; the
// RwLock knows which holds are current (see Mutex's guard).
class Guard implements RwLockGuard {
  readonly #lock: RwLock;
  readonly #slot: number;
  readonly #hold: number;
  readonly ownerDied: boolean;
  constructor(lock: RwLock, slot: number, hold: number, ownerDied: boolean) {
    this.#lock = lock;
    this.#slot = slot;
    this.#hold = hold;
    this.ownerDied = ownerDied;
  }
  release(): void {
    this.#lock._unlock(this.#slot, this.#hold);
  }
  [Symbol.dispose](): void {
    this.#lock._dispose(this.#slot, this.#hold);
  }
}

/** What a slow path asks its driver for: sleep on word `index` while it holds `value`. */
type Sleep = readonly [index: number, value: number];
/** A slow path: yields sleeps, is told whether the sleep timed out, returns a guard. */
type Steps = Generator<Sleep, Guard, boolean>;

function deadlock(what: string): Error {
  return cowshmError('EDEADLK', `this thread holds the lock already: ${what} would wait forever`);
}

export class RwLock {
  readonly #ta: Int32Array;
  /** The writer word's index; the slots follow it. */
  readonly #w: number;
  readonly #participant: Participant;
  readonly #token: number;
  /** The slot index (1..15, from #w) a read tries first. */
  #slot: number;
  /** The current hold's number per slot (index 0: the write lock), 0 when none. */
  readonly #holds: number[] = new Array<number>(WORDS).fill(0);
  #count = 0;

  /**
   * A reader-writer lock in the 16 words `int32Array[index]` ...
   * `[index + 15]` of a shared writable (`'write'`) view. Every process and
   * thread that makes an RwLock over the same words of the same region shares
   * the lock. A new region's words are 0: unlocked.
   */
  constructor(int32ArrayArg: Int32Array, index: number) {
    const { ta, i } = lockWords(int32ArrayArg, index, WORDS);
    this.#ta = ta;
    this.#w = i;
    this.#participant = participantOf(this, ta);
    this.#token = this.#participant.token;
    this.#slot = 1 + (this.#token % SLOTS);
  }

  /** How many read locks this RwLock object holds now. */
  get reading(): number {
    let n = 0;
    for (let s = 1; s < WORDS; s++) if (this.#holds[s] !== 0) n++;
    return n;
  }

  /** Whether this RwLock object holds the write lock now. */
  get writing(): boolean {
    return this.#holds[0] !== 0;
  }

  /** Takes a read lock if no writer holds or waits for the lock (or it died); null otherwise. Never sleeps. */
  tryRead(): RwLockGuard | null {
    const ta = this.#ta;
    const s = this.#slot;
    if (ta.length !== 0 && Atomics.compareExchange(ta, this.#w + s, 0, this.#token) === 0) {
      if (scLoad(ta, this.#w) === 0) return this.#took(s, false);
      this.#giveBack(s);
    }
    return this.#runTry(this.#readSteps(true));
  }

  /** Takes the write lock if nobody holds it (or its holders died); null otherwise. Never sleeps. */
  tryWrite(): RwLockGuard | null {
    const ta = this.#ta;
    const w = this.#w;
    if (ta.length !== 0 && Atomics.compareExchange(ta, w, 0, this.#token) === 0) {
      if (this.#noReaders()) return this.#took(0, false);
      this.#unwrite(); // readers inside: the slow path waits for them, or tells which are dead
    }
    return this.#runTry(this.#writeSteps(true));
  }

  /**
   * Takes a read lock, blocking the calling thread while a writer holds the
   * lock or waits for it. EDEADLK when this thread holds the write lock,
   * ETIMEDOUT after `timeoutMs`. A read lock held by this thread lets it
   * take more, even while a writer waits.
   */
  readSync(options?: Omit<AcquireOptions, 'signal'>): RwLockGuard {
    const timeout = options === undefined ? Number.POSITIVE_INFINITY : syncTimeout(options);
    const ta = this.#ta;
    const s = this.#slot;
    if (ta.length !== 0 && Atomics.compareExchange(ta, this.#w + s, 0, this.#token) === 0) {
      if (scLoad(ta, this.#w) === 0) return this.#took(s, false);
      this.#giveBack(s);
    }
    return this.#runSync(this.#readSteps(true), timeout);
  }

  /**
   * Takes the write lock, blocking the calling thread until no other holds
   * any. EDEADLK when this thread holds a read or the write lock, ETIMEDOUT
   * after `timeoutMs`.
   */
  writeSync(options?: Omit<AcquireOptions, 'signal'>): RwLockGuard {
    const timeout = options === undefined ? Number.POSITIVE_INFINITY : syncTimeout(options);
    const ta = this.#ta;
    const w = this.#w;
    if (ta.length !== 0 && Atomics.compareExchange(ta, w, 0, this.#token) === 0) {
      if (this.#noReaders()) return this.#took(0, false);
      this.#unwrite();
    }
    return this.#runSync(this.#writeSteps(true), timeout);
  }

  /** `readSync` without blocking the event loop; rejects with `signal.reason`, ETIMEDOUT or ERR_COWSHM_CLOSED. */
  async read(options?: AcquireOptions): Promise<RwLockGuard> {
    return this.#runAsync(() => this.#readSteps(false), options);
  }

  /** `writeSync` without blocking the event loop; rejects with `signal.reason`, ETIMEDOUT or ERR_COWSHM_CLOSED. */
  async write(options?: AcquireOptions): Promise<RwLockGuard> {
    return this.#runAsync(() => this.#writeSteps(false), options);
  }

  /** @internal Called by the guard of hold `hold` on slot `s` (0: the write lock). */
  _unlock(s: number, hold: number): void {
    if (this.#holds[s] !== hold) throw notHeld('This guard does not hold the lock (released already)');
    this.#holds[s] = 0;
    const ta = this.#ta;
    if (ta.length === 0) throw closedError('The view this lock is in');
    this.#clear(this.#w + s, s === 0 ? 'writer word' : 'reader slot');
  }

  /** @internal `[Symbol.dispose]` of a guard: releases it unless released already. */
  _dispose(s: number, hold: number): void {
    if (this.#holds[s] === hold) this._unlock(s, hold);
  }

  #took(s: number, ownerDied: boolean): Guard {
    const hold = ++this.#count;
    this.#holds[s] = hold;
    return new Guard(this, s, hold, ownerDied);
  }

  /**
   * Whether every slot is free, read after our write of the writer word. The
   * writer stores, then loads the slots; a reader stores its slot, then loads
   * the writer word: that needs store-to-load order. The first read is a
   * sequentially consistent read-modify-write; on x86-64 that is a locked
   * instruction, a full barrier, so the plain reads of the other slots that
   * follow cannot pass our write, and they cost a nanosecond each where 15
   * Atomics.load cost 240. Elsewhere (arm64: an acquire/release pair, which a
   * later plain load may overtake) every slot is read with Atomics.load.
   */
  #noReaders(): boolean {
    const ta = this.#ta;
    const w = this.#w;
    if (scLoad(ta, w + 1) !== 0) return false;
    if (PLAIN_READS_AFTER_RMW) {
      for (let s = 2; s < WORDS; s++) if (ta[w + s] !== 0) return false;
    } else {
      for (let s = 2; s < WORDS; s++) if (Atomics.load(ta, w + s) !== 0) return false;
    }
    return true;
  }

  /** Frees slot `s` (claimed with our token, maybe with bit 31 since) and wakes whoever sleeps on it. */
  #giveBack(s: number): void {
    this.#clear(this.#w + s, 'reader slot');
  }

  /** Clears the writer word (ours) and wakes every sleeper on it: readers and writers alike. */
  #unwrite(): void {
    this.#clear(this.#w, 'writer word');
  }

  /**
   * Swaps word `i` (our token, maybe with bit 31 since) for 0, and wakes every
   * sleeper on it if bit 31 was set. A word that no longer named us (another
   * program overwrote it) is put back as it was, unless it has changed since,
   * and reported.
   */
  #clear(i: number, what: string): void {
    const ta = this.#ta;
    const v = Atomics.exchange(ta, i, 0);
    if (v === this.#token) return;
    if ((v & TOKEN) !== this.#token) {
      Atomics.compareExchange(ta, i, 0, v);
      throw notHeld(`The lock's ${what} no longer names this thread (another process overwrote it)`);
    }
    this.#wake(i);
  }

  #wake(i: number): void {
    const r = native.futexWake(this.#ta, i, ALL);
    if (r < 0) throw wordError(r, this.#ta);
  }

  /** Sets bit 31 of word `i` that held `v` (not 0): the value to sleep on, or 0 if the word changed. */
  #flag(i: number, v: number): number {
    if ((v & WAITERS) !== 0) return v;
    return Atomics.compareExchange(this.#ta, i, v, v | WAITERS) === v ? v | WAITERS : 0;
  }

  /** The first free slot claimed with our token, starting at the preferred one; 0 when all are taken. */
  #claim(): number {
    const ta = this.#ta;
    for (let k = 0; k < SLOTS; k++) {
      const s = 1 + ((this.#slot - 1 + k) % SLOTS);
      if (Atomics.compareExchange(ta, this.#w + s, 0, this.#token) === 0) {
        this.#slot = s;
        return s;
      }
    }
    return 0;
  }

  /** Whether this thread holds a read lock through some slot (any RwLock object over these words). */
  #readingHere(except: number): boolean {
    const ta = this.#ta;
    for (let s = 1; s < WORDS; s++)
      if (s !== except && (Atomics.load(ta, this.#w + s) & TOKEN) === this.#token) return true;
    return false;
  }

  /**
   * The slow paths. `sync`: the caller blocks its thread, so a hold of this
   * thread in its way is a deadlock (EDEADLK); asynchronous callers wait for
   * it instead, as another task of this thread may release it.
   */
  *#readSteps(sync: boolean): Steps {
    const ta = this.#ta;
    const w = this.#w;
    let died = false;
    for (;;) {
      if (ta.length === 0) throw closedError('The view this lock is in');
      const s = this.#claim();
      if (s === 0) {
        // Every slot is taken: sleep on ours until it frees up (or its reader is found dead).
        const i = w + this.#slot;
        const v = Atomics.load(ta, i);
        if (v === 0) continue;
        const sleepOn = this.#flag(i, v);
        if (sleepOn === 0) continue;
        if (yield [i, sleepOn]) {
          if (ownerGone(this.#participant, sleepOn & TOKEN) && Atomics.compareExchange(ta, i, sleepOn, 0) === sleepOn) this.#wake(i);
        }
        continue;
      }
      const v = Atomics.load(ta, w);
      if (v === 0) return this.#took(s, died);
      const owner = v & TOKEN;
      if (owner === this.#token && sync) {
        this.#giveBack(s);
        throw deadlock('a read while writing');
      }
      // A writer holds the lock, or waits for readers; one that waits for
      // us (a read lock of this thread) must not be waited for in turn.
      if (this.#readingHere(s)) return this.#took(s, died);
      this.#giveBack(s);
      if (owner === 0) {
        // Bit 31 alone: garbage, no writer.
        if (Atomics.compareExchange(ta, w, v, 0) === v) {
          died = true;
          this.#wake(w);
        }
        continue;
      }
      const sleepOn = this.#flag(w, v);
      if (sleepOn === 0) continue;
      if (yield [w, sleepOn]) {
        if (ownerGone(this.#participant, owner) && Atomics.compareExchange(ta, w, sleepOn, 0) === sleepOn) {
          died = true; // the writer died, maybe mid-write: this reader is told
          this.#wake(w);
        }
      }
    }
  }

  *#writeSteps(sync: boolean): Steps {
    const ta = this.#ta;
    const w = this.#w;
    const t = this.#token;
    let died = false;
    // The writer word, as a Mutex's.
    for (let contended = false; ; contended = true) {
      if (ta.length === 0) throw closedError('The view this lock is in');
      const v = Atomics.load(ta, w);
      if (v === 0) {
        if (Atomics.compareExchange(ta, w, 0, contended ? t | WAITERS : t) === 0) break;
        continue;
      }
      const owner = v & TOKEN;
      if (owner === t && sync) throw deadlock('a write while writing');
      if (owner === 0) {
        if (Atomics.compareExchange(ta, w, v, t | WAITERS) === v) {
          died = true;
          break;
        }
        continue;
      }
      const sleepOn = this.#flag(w, v);
      if (sleepOn === 0) continue;
      if ((yield [w, sleepOn]) && ownerGone(this.#participant, owner) && Atomics.compareExchange(ta, w, sleepOn, t | WAITERS) === sleepOn) {
        died = true;
        break;
      }
    }
    // Ours; now wait for the readers to leave. Given back if this ends otherwise.
    let done = false;
    try {
      for (let s = 1; s < WORDS; s++) {
        const i = w + s;
        for (;;) {
          if (ta.length === 0) throw closedError('The view this lock is in');
          const v = Atomics.load(ta, i);
          if (v === 0) break;
          if ((v & TOKEN) === t && sync) throw deadlock('a write while reading');
          const sleepOn = this.#flag(i, v);
          if (sleepOn === 0) continue;
          if ((yield [i, sleepOn]) && ownerGone(this.#participant, sleepOn & TOKEN) && Atomics.compareExchange(ta, i, sleepOn, 0) === sleepOn)
            this.#wake(i); // a dead reader's slot: freed
        }
      }
      done = true;
      return this.#took(0, died);
    } finally {
      if (!done && ta.length !== 0) this.#unwrite();
    }
  }

  /**
   * Runs a slow path without sleeping: each sleep it asks for is answered
   * "timed out", so that it tests the holder it would wait for, and takes
   * over from a dead one; null when it asks twice for the same sleep (the
   * holder is alive), and when this thread holds the lock in the other mode.
   */
  #runTry(steps: Steps): Guard | null {
    let r: IteratorResult<Sleep, Guard> | undefined;
    try {
      r = steps.next(false);
      for (let n = 0, i = -1, v = 0; !r.done; n++) {
        const [si, sv] = r.value;
        if ((si === i && sv === v) || n > 4 * WORDS) return null;
        i = si;
        v = sv;
        r = steps.next(true);
      }
      return r.value;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'EDEADLK') return null;
      throw err;
    } finally {
      if (r !== undefined && !r.done) steps.return(undefined as unknown as Guard);
    }
  }

  /** Runs a slow path, sleeping where it asks (see mutex.ts's sleepSync). */
  #runSync(steps: Steps, timeout: number): Guard {
    const ta = this.#ta;
    const deadline = new Deadline(timeout);
    let r = steps.next(false);
    try {
      while (!r.done) r = steps.next(sleepSync(ta, r.value[0], r.value[1], deadline) === Slept.TimedOut);
      return r.value;
    } finally {
      if (!r.done) steps.return(undefined as unknown as Guard);
    }
  }

  async #runAsync(make: () => Steps, options: AcquireOptions | undefined): Promise<Guard> {
    const { timeout, signal } = asyncOptions(options);
    const ta = this.#ta;
    const steps = make();
    const deadline = new Deadline(timeout);
    let r = steps.next(false);
    try {
      while (!r.done) r = steps.next((await sleepAsync(ta, r.value[0], r.value[1], deadline, signal)) === Slept.TimedOut);
      return r.value;
    } finally {
      if (!r.done) steps.return(undefined as unknown as Guard);
    }
  }
}
