/**
 * The one place that loads the native addon: COWSHM_NATIVE_PATH if set, then
 * a node-gyp build (made by `npm install` when no prebuilt binary fits, or on
 * request), then the prebuilt binary the package ships
 * (prebuilds/PLATFORM-ARCH/node.napi.LIBC.node, see scripts/prebuild.js).
 * It explains what to do when none loads.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { cowshmError, systemError } from './errors';

/** The addon's functions: positional arguments, already validated in TypeScript. */
export interface Native {
  readonly pageSize: number;
  /** Once, at load: the factories every native error is made by, and whether this is the main thread. */
  init(
    systemError: (errno: number, syscall: string, target?: string) => Error,
    cowshmError: (code: string, message: string) => Error,
    mainThread: boolean,
  ): void;
  shmOpen(name: string, oflag: number, mode: number): number;
  /**
   * shm_open (mode 0), fstat into out[0..6] as fstatInto, and geteuid() into out[7]: Region.open's syscalls in one call.
   * With out of 9, takes the shared flock of a cowshm holder first, without waiting: out[8] 1 when granted.
   */
  shmOpenStat(name: string, oflag: number, out: Float64Array): number;
  shmUnlink(name: string): void;
  memfdCreate(name: string, hugetlb: number): number;
  // `target` (optional, last): the segment name or path an error should name.
  addSeals(fd: number, seals: number, target?: string): void;
  open(path: string, flags: number, mode: number): number;
  close(fd: number): void;
  ftruncate(fd: number, size: number, target?: string): void;
  fallocate(fd: number, offset: number, length: number, target?: string): void;
  /** [size, uid, gid, mode, dev, ino, nlink] */
  fstat(fd: number, target?: string): [number, number, number, number, number, number, number];
  /** fstat into out[0..6], same order as fstat(): no array to build. */
  fstatInto(fd: number, out: Float64Array): void;
  fchmod(fd: number, mode: number, target?: string): void;
  fsync(fd: number, target?: string): void;
  /** fcntl(F_OFD_SETLK[W]): kind 0 unlock, 1 shared, 2 exclusive; length 0 = to the end. False when not waiting and held elsewhere. */
  ofdLock(fd: number, start: number, length: number, kind: 0 | 1 | 2, wait: 0 | 1): boolean;
  /** Whether another open file description holds a lock on a byte of the range (F_OFD_GETLK). */
  ofdHeld(fd: number, start: number, length: number): boolean;
  /** flock(2) with the same kinds: false when not waiting and held elsewhere. */
  flock(fd: number, kind: 0 | 1 | 2, wait: 0 | 1): boolean;
  /** Maps without making the ArrayBuffer yet; returns the mapping's id. */
  mapView(
    fd: number, offset: number, length: number, access: number, label: string,
    owner: number, dev: number, ino: number, populate: number,
  ): number;
  /** The mapping's ArrayBuffer, made on the first call. */
  viewBuffer(id: number): ArrayBuffer;
  /** A View collected without close(): unmaps unless its ArrayBuffer exists. */
  releaseView(id: number): void;
  unmap(id: number): void;
  /** Closes every mapping of the Region `owner` in this environment, then fd (left open if a mapping could not be closed). */
  closeRegion(owner: number, fd: number): void;
  madvise(id: number, offset: number, length: number, advice: number): void;
  msync(id: number, offset: number, length: number): void;
  msyncOwner(owner: number): void;
  address(id: number): number;
  sum(array: ArrayBufferView): bigint | number;
  iota(array: ArrayBufferView, start: number, step: number): void;
  xxh64(data: Uint8Array): string;
  hashFile(fd: number, offset: number, length: number): string;
  /** Creates and locks (OFD, exclusive) a checkpoint's temporary file; -1: lost a race with a cleaner, try another name. */
  tempCreate(path: string, mode: number): number;
  /** Closes a tempCreate() file (dropping its lock), unlinking it first when `remove` is 1. */
  tempRelease(fd: number, remove: 0 | 1): void;
  /** [promise of [checksum, kept pages], state: [0] = 1 cancels, [1] = pages examined] */
  writePages(
    fd: number, fileOffset: number, sourceId: number, pages: Uint32Array | null, pageCount: number, compareId: number,
    holesFd: number, copied: Uint32Array | null,
  ): [Promise<[string, Uint32Array | null]>, Int32Array];
  /** Scans (dst null: [checksum, pages differing from compareId or null]) or copies pages [first, first + count) of a list into dst. */
  streamPages(
    sourceId: number, pages: Uint32Array | null, first: number, count: number, compareId: number, holesFd: number,
    copied: Uint32Array | null, dst: Uint8Array | null,
  ): [Promise<[string, Uint32Array | null]>, Int32Array];
  /** A fresh incremental XXH64 state. */
  xxh64Init(): Uint8Array;
  /** Adds `data` to the state; returns the digest of everything so far. */
  xxh64Update(state: Uint8Array, data: Uint8Array | null): string;
  /** out[i] = 1 where whole page i of bytes is all zeros; returns how many are. */
  zeroPages(bytes: Uint8Array, pageSize: number, out: Uint8Array): number;
  /** lseek SEEK_HOLE (hole 1) or SEEK_DATA (hole 0) from offset; -1 for ENXIO (no data from offset on, or offset past the end). */
  seekData(fd: number, offset: number, hole: 0 | 1): number;
  /** Takes part in cross-process snapshots of (dev, ino): returns the participant's id. */
  xprocJoin(dev: number, ino: number, size: number, mode: number, handshakeWaitMs: number, forceHandshake: number): number;
  xprocLeave(id: number): void;
  /** Arms every participant for a snapshot in the mapping `mapping` (mapView); returns the reader's id. */
  xprocArm(dev: number, ino: number, size: number, mode: number, mapping: number, timeoutMs: number, chunk: number, forceHandshake: number): number;
  /** The participants armed for a reader's snapshot: [pid, path (1 direct, 2 handshake), ...]. */
  xprocWriters(id: number): number[];
  /** errno of a push that failed, or 0. */
  xprocBroken(id: number): number;
  xprocRelease(id: number): void;
  /** Whether no participant may still push into the snapshot's mapping (the reader's id is then freed). */
  xprocDrained(id: number): boolean;
  /** Removes a coordination file nobody holds: 0 removed, 1 held, 2 replaced meanwhile, 3 INIT_LOCK busy for waitMs. */
  xprocReclaim(fd: number, path: string, waitMs: number): 0 | 1 | 2 | 3;
  /** The coordination file's lock bytes and header identity (native/xproc.c). */
  xprocLayout: { readerLock: number; slotLock: number; maxParticipants: number; initLock: number; magic: number; version: number };
  /** [id, chunkSize, backend]; the ArrayBuffer comes from viewBuffer(id) when first asked for. hugeShift: log2 of a hugetlb page size, or 0. */
  snapshotCreate(
    fd: number, offset: number, length: number, label: string, owner: number, dev: number, ino: number, regionSize: number,
    chunk: number, hugeShift: number,
  ): [number, number, 'userfaultfd' | 'mprotect'];
  /** [copiedPages, errno of a failed copy or 0] */
  snapshotStats(id: number): [number, number];
  snapshotChanged(id: number): Uint32Array;
  prepareWrite(dev: number, ino: number, offset: number, length: number): void;
  snapshotInfo(): NativeSnapshotInfo;
  /** Re-installs cowshm's SIGSEGV/SIGBUS handlers where something replaced them; returns how many. */
  signalsEnsure(): number;
  /** Blocks: 1 'ok', 2 'not-equal', 3 'timed-out', or a negative FutexWord code. */
  futexWait(ta: Int32Array, index: number, value: number, timeoutMs: number): number;
  /**
   * With final: a promise of 'ok' | 'timed-out' (rejected with ERR_COWSHM_CLOSED when the view is closed).
   * Without: [promise of 'ok' | 'timed-out' | 'closed' | 'aborted' (after futexCancel(id)), id].
   * Either way a rejected promise when no waiter could be started or the word's page is gone (EFAULT,
   * syscall 'futex': the region was truncated), or a number as futexWait.
   */
  futexWaitAsync(
    ta: Int32Array, index: number, value: number, timeoutMs: number, final?: boolean,
  ): Promise<string> | [Promise<string>, number] | number;
  /** Ends a pending futexWaitAsync with 'aborted'. */
  futexCancel(id: number): void;
  /** How many waiters were woken, or a negative FutexWord code. */
  futexWake(ta: Int32Array, index: number, count: number): number;
  /** The mapping's access (0 read, 1 write), or a negative code: -1 not a cowshm view, -2 private, -3 index, -4 type. */
  futexWord(ta: Int32Array, index: number): number;
  /** Async waits of this thread not settled yet. */
  futexPending(): number;
  /** How this thread's async waits wait ('io_uring' or 'threads'), and why. */
  futexPath(): [string, string];
}

/** What the addon found out about write protection when it loaded. */
export interface NativeSnapshotInfo {
  backend: 'userfaultfd' | 'mprotect';
  reason: string;
  /** The value of COWSHM_SNAPSHOT_BACKEND, or ''. */
  forced: string;
  userfaultfd: boolean;
  userfaultfdReason: string;
  wpShmem: boolean;
  wpUnpopulated: boolean;
  /** Non-zero when the forced backend cannot be used. */
  error: number;
}

const root = path.join(__dirname, '..');

function candidates(): string[] {
  const list: string[] = [];
  const override = process.env['COWSHM_NATIVE_PATH'];
  if (override) list.push(path.resolve(override));
  // A build exists only where npm built one: because no prebuilt binary fit,
  // or because the user asked for it. Either way it is the one to use.
  list.push(path.join(root, 'build', 'Release', 'cowshm.node'));
  list.push(path.join(root, 'build', 'Debug', 'cowshm.node'));
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  for (const libc of ['glibc', 'musl']) list.push(path.join(prebuilds, `node.napi.${libc}.node`));
  return list;
}

function load(): Native {
  const tried: string[] = [];
  for (const file of candidates()) {
    if (!fs.existsSync(file)) {
      tried.push(`${file}: not found`);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const addon = require(file) as Native;
      addon.init(systemError, cowshmError, isMainThread);
      return addon;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message}`);
    }
  }
  const reasons = [
    process.platform !== 'linux'
      ? `cowshm runs on Linux only; this is ${process.platform}.`
      : 'The native addon was not built, or was built for another Node.js or architecture.',
  ];
  throw new Error(
    `cowshm: could not load the native addon.\n${reasons.join('\n')}\n` +
      `Tried:\n  ${tried.join('\n  ')}\n` +
      'Possible solutions:\n' +
      '  - Run `npm rebuild cowshm --build-from-source` (needs python3, make and a C compiler).\n' +
      '  - Make sure `npm install` did not run with --ignore-scripts.\n' +
      '  - Set COWSHM_NATIVE_PATH to a cowshm.node built for this system.\n' +
      '  - Electron and other runtimes without external ArrayBuffers are not supported.',
  );
}

/** The loaded addon. */
export const native: Native = load();
