// Type tests for the public declarations (dist/index.d.ts), resolved the way a
// user's project resolves them: by package name through the "exports" map.
// Checked by `tsc -p test/types` in pretest; never run. Each @ts-expect-error
// line is a misuse the declarations must reject: if one stops being an error,
// the check fails.
import cowshm, {
  Region, View, Snapshot, sum, pageSize, memory, snapshotBackend, snapshotBackendReason, doctor, listSegments, removeSegment,
} from 'cowshm';
import type {
  Access, Coordination, CoordinationFile, CreateOptions, SnapshotBackend, SnapshotOptions, DoctorReport, Segment, ListSegmentsOptions, MapOptions, OpenFileOptions, OpenOptions, RegionHandle, RegionKind, SystemError, TypedArray,
} from 'cowshm';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T>(_value: T): void {}
function assertType<_T extends true>(): void {}

// CommonJS `require` and ESM `import` see one module.
const viaRequire: typeof import('cowshm') = require('cowshm');
expectType<typeof Region>(viaRequire.Region);
expectType<typeof Region>(cowshm.Region);

expectType<number>(pageSize);
expectType<number>(Region.maxViewLength);

// Region.create
const created: Region = Region.create({ size: 1 << 20 });
Region.create({ size: 4096, name: 'x', mode: 0o640, reserve: false, hugePages: true });
// @ts-expect-error size is required
Region.create({ name: 'x' });
// @ts-expect-error size is a number
Region.create({ size: '4096' });
// @ts-expect-error options are required
Region.create();
// @ts-expect-error no such option
Region.create({ size: 4096, truncate: true });
// @ts-expect-error exactOptionalPropertyTypes: undefined is not a name
Region.create({ size: 4096, name: undefined });

// Region.open / openFile / fromHandle
const opened: Region = Region.open('x', { readOnly: true, allowForeignOwner: false });
Region.open('x');
// @ts-expect-error a name is a string
Region.open(42);
Region.openFile('/tmp/x', { size: 4096, create: true, readOnly: false, mode: 0o600, reserve: true });
// @ts-expect-error readOnly is a boolean
Region.openFile('/tmp/x', { readOnly: 'yes' });
const handle: RegionHandle = created.handle();
expectType<Region>(Region.fromHandle(handle));
// @ts-expect-error a handle is not a name
Region.fromHandle('x');
// @ts-expect-error the constructor is private: regions come from create/open
new Region();

// Region members
expectType<RegionKind>(created.kind);
assertType<Equal<RegionKind, 'shm' | 'memfd' | 'file'>>();
expectType<string | null>(created.name);
expectType<number>(created.size);
expectType<number>(created.fd);
expectType<string>(created.path);
expectType<boolean>(created.readOnly);
expectType<boolean>(created.closed);
// @ts-expect-error size is read-only
created.size = 10;
// @ts-expect-error kind is read-only
created.kind = 'file';
expectType<void>(created.unlink());
expectType<void>(created.flush());
expectType<void>(created.close());
expectType<void>(created[Symbol.dispose]());

// map and View
const view: View = opened.map({ offset: 0, length: 4096, access: 'cow', populate: false });
opened.map();
// @ts-expect-error access is 'read' | 'write' | 'cow'
opened.map({ access: 'rw' });
// @ts-expect-error offset is a number
opened.map({ offset: 0n });
assertType<Equal<Access, 'read' | 'write' | 'cow'>>();
expectType<ArrayBuffer>(view.buffer);
expectType<Region>(view.region);
expectType<Access>(view.access);
expectType<number>(view.byteOffset);
expectType<number>(view.byteLength);
expectType<number>(view.address);
expectType<boolean>(view.closed);
expectType<void>(view.revert(0, 4096));
expectType<void>(view.flush());
expectType<void>(view.close());
// @ts-expect-error the buffer is read-only
view.buffer = new ArrayBuffer(8);
{
  using scoped = opened.map();
  expectType<View>(scoped);
}

// sum: exact integers as bigint, floating point as number
expectType<bigint>(sum(new Int32Array(view.buffer)));
expectType<bigint>(sum(new BigUint64Array(view.buffer)));
expectType<number>(sum(new Float64Array(view.buffer)));
expectType<bigint | number>(sum(new Uint8Array(4) as TypedArray));
// @ts-expect-error not a TypedArray
sum([1, 2, 3]);
// @ts-expect-error an ArrayBuffer must be wrapped in a TypedArray first
sum(view.buffer);

// Snapshots
const snap: Snapshot = opened.snapshot({ offset: 0, length: 4096 });
opened.snapshot();
// @ts-expect-error offset is a number
opened.snapshot({ offset: '0' });
expectType<ArrayBuffer>(snap.buffer);
expectType<number>(snap.copiedPages);
expectType<Uint32Array>(snap.changedPages());
expectType<SnapshotBackend>(snap.backend);
expectType<number>(snap.chunkSize);
expectType<readonly number[] | null>(snap.unregisteredHolders);
expectType<readonly number[] | null>(snap.uninspectedProcesses);
// @ts-expect-error the list is read-only
snap.unregisteredHolders?.push(1);
expectType<boolean>(snap.released);
expectType<void>(snap.release());
expectType<void>(snap[Symbol.dispose]());
// @ts-expect-error copiedPages is read-only
snap.copiedPages = 0;
expectType<void>(opened.prepareWrite(0, 4096));
// @ts-expect-error prepareWrite needs offset and length
opened.prepareWrite(0);
expectType<SnapshotBackend>(snapshotBackend);
assertType<Equal<SnapshotBackend, 'userfaultfd' | 'mprotect'>>();
expectType<string>(snapshotBackendReason);
const so: SnapshotOptions = { length: 8192 };
void so;

// memory: anything with an address and a byteLength (views, snapshots)
const entry: memory.SmapsEntry = memory.usage(view);
expectType<number>(entry.rss);
expectType<number>(entry.pss);
expectType<number>(entry.privateDirty);
expectType<number>(entry.anonymous);
expectType<Record<string, number>>(entry.fields);
expectType<string>(entry.path);
expectType<memory.SmapsEntry[]>(memory.smaps());
expectType<memory.SmapsEntry[]>(memory.smaps(1));
expectType<memory.Figures>(memory.rollup());
memory.usage(snap);
const report: memory.PageReport = memory.pages(view, { offset: 0, length: 4096 });
expectType<number[] | null>(report.frames);
expectType<string | null>(report.framesUnavailable);
expectType<number | null>(memory.sharedFrames(view, snap));
const states: memory.PageStates = memory.pageStates(view, { offset: 0, length: 4096 });
expectType<Uint8Array>(states.states);
expectType<number>(states.copied + states.shared + states.swapped + states.notResident);
// @ts-expect-error an ArrayBuffer has no address
memory.usage(view.buffer);
// @ts-expect-error a pid is a number
memory.smaps('self');

// doctor, listSegments, removeSegment
const report2: DoctorReport = doctor();
expectType<SnapshotBackend>(report2.snapshots.backend);
expectType<number>(report2.maxViewLength);
// @ts-expect-error doctor takes no arguments
doctor({ json: true });
const segments: Segment[] = listSegments({ holders: false });
expectType<boolean>(segments[0]!.orphan);
const coordination: Coordination | null = segments[0]!.coordination;
expectType<number | null | undefined>(coordination?.participants);
expectType<CoordinationFile[]>(report2.crossProcess.coordinationFiles);
const lo: ListSegmentsOptions = {};
listSegments(lo);
expectType<boolean>(removeSegment('x'));
expectType<boolean>(removeSegment('x', { dev: 1, ino: 2 }));
// @ts-expect-error a name, not a Segment
removeSegment(segments[0]);

// Option and error types are exported for users' own code.
const co: CreateOptions = { size: 1 };
const mo: MapOptions = { access: 'read' };
const oo: OpenOptions = {};
const fo: OpenFileOptions = { create: true };
void [co, mo, oo, fo];
declare const err: SystemError;
expectType<string>(err.code);
expectType<number>(err.errno);
expectType<string>(err.syscall);
expectType<string | undefined>(err.path);

// Huge pages: a hugetlb page size per region, the pools and the mounts.
{
  const huge = Region.create({ size: 2 << 20, pageSize: 2 << 20 });
  expectType<number>(huge.pageSize);
  // @ts-expect-error pageSize is a number of bytes
  Region.create({ size: 2 << 20, pageSize: '2M' });
  const pools: import('cowshm').HugePool[] = cowshm.hugePools();
  expectType<number>(pools[0]?.free ?? 0);
  const mounts: import('cowshm').HugetlbfsMount[] = cowshm.hugetlbfsMounts();
  expectType<string | undefined>(mounts[0]?.path);
  expectType<number>(doctor().hugePages.pools.length);
  const restored = Region.restore('x.ckpt', { pageSize: 2 << 20 });
  expectType<number>(restored.pageSize);
  expectType<number>(memory.usage(huge.map()).privateHugetlb);
}
// atomics and Mutex
import { atomics, Mutex } from 'cowshm';
import type { WaitResult, WaitAsyncResult, MutexGuard, AcquireOptions } from 'cowshm';
const words = new Int32Array(created.map().buffer);
expectType<WaitResult>(atomics.wait(words, 0, 0, 10));
expectType<'ok' | 'not-equal' | 'timed-out'>(atomics.wait(words, 0, 0));
const pendingWait: WaitAsyncResult = atomics.waitAsync(words, 0, 0, undefined, { signal: AbortSignal.timeout(10) });
if (pendingWait.async) expectType<Promise<'ok' | 'timed-out'>>(pendingWait.value);
else expectType<'not-equal' | 'timed-out'>(pendingWait.value);
expectType<number>(atomics.notify(words, 0));
// @ts-expect-error only Int32Array: Linux has no 64-bit futex wait
atomics.wait(new BigInt64Array(4), 0, 0n);
// @ts-expect-error atomics is frozen
atomics.wait = atomics.wait;
const lock = new Mutex(words, 16);
expectType<MutexGuard | null>(lock.tryAcquire());
expectType<MutexGuard>(lock.acquireSync({ timeoutMs: 5 }));
expectType<Promise<MutexGuard>>(lock.acquire({ timeoutMs: 5, signal: AbortSignal.timeout(5) }));
const acquireOptions: AcquireOptions = { timeoutMs: 1 };
void acquireOptions;
// @ts-expect-error acquireSync takes no signal: nothing could fire it while the thread is blocked
lock.acquireSync({ signal: AbortSignal.timeout(5) });
// @ts-expect-error ownerDied is read-only
lock.tryAcquire()!.ownerDied = false;
lock.release();
// RwLock
import { RwLock, RWLOCK_WORDS } from 'cowshm';
import type { RwLockGuard } from 'cowshm';
const rw = new RwLock(words, 32);
expectType<number>(RWLOCK_WORDS);
expectType<RwLockGuard | null>(rw.tryRead());
expectType<RwLockGuard | null>(rw.tryWrite());
expectType<RwLockGuard>(rw.readSync({ timeoutMs: 5 }));
expectType<RwLockGuard>(rw.writeSync());
expectType<Promise<RwLockGuard>>(rw.read({ signal: AbortSignal.timeout(5) }));
expectType<Promise<RwLockGuard>>(rw.write({ timeoutMs: 5 }));
expectType<number>(rw.reading);
expectType<boolean>(rw.writing);
// @ts-expect-error writeSync takes no signal
rw.writeSync({ signal: AbortSignal.timeout(5) });
// @ts-expect-error ownerDied is read-only
rw.tryRead()!.ownerDied = false;
// Checkpoint streams
import type { ReadStreamOptions } from 'cowshm';
import type { Readable } from 'node:stream';
const streamOptions: ReadStreamOptions = { base: 'a.cow', signal: new AbortController().signal };
expectType<Readable>(snap.createReadStream(streamOptions));
snap.createReadStream();
// @ts-expect-error base is a path
snap.createReadStream({ base: 1 });
expectType<Promise<Region>>(Region.restoreStream(snap.createReadStream()));
// @ts-expect-error a stream, not a path
void Region.restoreStream('a.cow');
expectType<Promise<void>>(created.applyDelta(snap.createReadStream({ base: 'a.cow' })));
