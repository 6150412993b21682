/**
 * A Region is a piece of shareable memory behind a file descriptor: a named
 * POSIX shared memory segment (/dev/shm/NAME), an anonymous memfd, or a file.
 * Map it as many times as needed; each View is an ArrayBuffer over the same
 * pages.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from './native';
import { closedError, cowshmError, explain, invalidType, outOfRange, systemError, type SystemError } from './errors';
import * as c from './constants';
import * as check from './validate';
import { View, type Access } from './view';
import { checkReservable, formatBytes } from './reserve';
import * as xproc from './xproc';
import * as hugetlb from './hugetlb';
import { Snapshot, takeSnapshot, prepareWrite, type SnapshotOptions } from './snapshot';
import { restoreCheckpoint, type RestoreOptions, type RestoredCheckpoint } from './checkpoint/restore';
import { applyDeltaStream, restoreFromStream, type CheckpointIdentity } from './checkpoint/stream';
import { holdSegment } from './segments';
import { openRegular, type FileStat } from './file';

/** What backs a region. */
export type RegionKind = 'shm' | 'memfd' | 'file';

export interface CreateOptions {
  /** Size in bytes: a positive integer. */
  size: number;
  /** POSIX shm name (`/dev/shm/NAME`); omit it for an anonymous memfd. */
  name?: string;
  /** Permission bits of a named segment, applied exactly (not masked by umask). Default 0o600. */
  mode?: number;
  /**
   * Allocate every page now (fallocate), so a full /dev/shm fails here with
   * ENOSPC instead of killing the process with SIGBUS on first touch, and a
   * region larger than the memory available fails with ENOMEM.
   * With `false` the region is sparse: pages are allocated when first written.
   * Default true.
   */
  reserve?: boolean;
  /**
   * Ask for transparent huge pages on every view (madvise MADV_HUGEPAGE):
   * advice the kernel may follow or not, on the system page size. Default
   * false. Not with a hugetlb `pageSize`, which gives huge pages for certain.
   */
  hugePages?: boolean;
  /**
   * Take part in snapshots with `scope: 'processes'` taken by any process:
   * a writable region registers in its coordination file and runs one native
   * thread that arms its views when such a snapshot is taken. Default false.
   */
  crossProcess?: boolean;
  /**
   * With `crossProcess`: how long a write of this process waits, on the
   * handshake push path (a reader of another user, or one the kernel does not
   * let this process write into), for the reader's answer, in milliseconds.
   * A reader that does not answer in time (stopped, or a debugger holds it)
   * gets its snapshot broken (`exact` false, `ERR_COWSHM_SNAPSHOT_BROKEN`)
   * and the write goes on: once per snapshot. `Infinity`: the write waits for
   * as long as the reader's process lives and holds the snapshot. Default 1000.
   */
  handshakeTimeoutMs?: number;
  /**
   * The page size in bytes. Default: the system page (`pageSize`, 4096 on
   * x86-64). A hugetlb page size (`2 << 20`, `1 << 30`; see `cowshm doctor`)
   * puts the region on huge pages from the pool the administrator reserved
   * (/proc/sys/vm/nr_hugepages): an anonymous region is a memfd on hugetlbfs,
   * a named one a file on a mounted hugetlbfs (found in /proc/mounts). The
   * size, and every view's and snapshot's offset and length, must then be
   * multiples of it. See docs/api.md, Huge pages.
   */
  pageSize?: number;
}

export interface OpenOptions {
  /** Open read-only: views may be `'read'` or `'cow'`. Default false. */
  readOnly?: boolean;
  /** Open a segment owned by another user. Default false: such a segment is refused. */
  allowForeignOwner?: boolean;
  /**
   * Take part in snapshots with `scope: 'processes'` taken by any process:
   * a writable region registers in its coordination file and runs one native
   * thread that arms its views when such a snapshot is taken. Default false.
   */
  crossProcess?: boolean;
  /**
   * With `crossProcess`: how long a write of this process waits, on the
   * handshake push path (a reader of another user, or one the kernel does not
   * let this process write into), for the reader's answer, in milliseconds.
   * A reader that does not answer in time (stopped, or a debugger holds it)
   * gets its snapshot broken (`exact` false, `ERR_COWSHM_SNAPSHOT_BROKEN`)
   * and the write goes on: once per snapshot. `Infinity`: the write waits for
   * as long as the reader's process lives and holds the snapshot. Default 1000.
   */
  handshakeTimeoutMs?: number;
}

export interface OpenFileOptions {
  /** Grow the file to this many bytes if it is shorter. Required when the file is created empty. */
  size?: number;
  /** Create the file if it does not exist. Default false. */
  create?: boolean;
  /** Open read-only. Default false. */
  readOnly?: boolean;
  /** Permission bits of a created file (masked by umask, as for any file). Default 0o600. */
  mode?: number;
  /** Allocate the bytes the file grows by (where the filesystem supports it). Default true. */
  reserve?: boolean;
}

export interface FromHandleOptions {
  /** Open read-only even when the handle's region is writable. Default: as the handle says. */
  readOnly?: boolean;
}

export interface MapOptions {
  /** Where the view starts, in bytes: a multiple of the page size. Default 0. */
  offset?: number;
  /** Length in bytes. Default: to the end of the region. At most `Region.maxViewLength`. */
  length?: number;
  /** Default `'write'`, or `'read'` for a read-only region. */
  access?: Access;
  /**
   * Map every page now instead of on first touch. Default false. A `'cow'`
   * view maps the region's own pages (MADV_POPULATE_READ, Linux 5.14) and
   * copies none: that comes with each page's first write.
   */
  populate?: boolean;
}

/**
 * What another thread or process needs to open the same region. Plain data:
 * send it with `postMessage`, `process.send` or as JSON.
 */
export interface RegionHandle {
  kind: RegionKind;
  name: string | null;
  /** A path that opens the region while its creator holds it open. */
  path: string;
  size: number;
  pid: number;
  fd: number;
  dev: number;
  ino: number;
  readOnly: boolean;
}

/** What a Region is built from. */
interface RegionInit {
  kind: RegionKind;
  name: string | null;
  fd: number;
  path: string;
  readOnly: boolean;
  hugePages: boolean;
  /** The page size: a hugetlb page size, or (the default) the system page. */
  pageSize?: number;
  /** A restored checkpoint: the region's size, and where its bytes start in the file. */
  size?: number;
  dataOffset?: number;
  /** native.fstat(fd) when the caller already has it: saves a syscall. */
  stat?: ReturnType<typeof native.fstat> | undefined;
  /** A named segment whose name may be gone (opened through its creator's descriptor). */
  unlinked?: boolean;
  /** `stat` was taken after cowshm's shared lock on the segment was granted. */
  locked?: boolean;
}

let nextOwner = 1;
// [size, uid, gid, mode, dev, ino, nlink, euid, locked]: the last two only from shmOpenStat.
const statScratch = new Float64Array(9);
/** What native.fstat returns, from the first seven slots of statScratch. */
function scratchStat(): ReturnType<typeof native.fstat> {
  const s = statScratch;
  return [s[0] as number, s[1] as number, s[2] as number, s[3] as number, s[4] as number, s[5] as number, s[6] as number];
}
/** native.fstat without building an array in the addon (the open path's largest cost after the syscalls). */
function fstat(fd: number): ReturnType<typeof native.fstat> {
  native.fstatInto(fd, statScratch);
  return scratchStat();
}

/** What the finalizer of a Region needs: its descriptor, and whether close() already gave it back. */
interface Descriptor {
  readonly fd: number;
  open: boolean;
}

// A Region collected without close() still gives its descriptor back.
// close() marks the entry instead of unregistering it: an unregister token
// costs a hashed lookup on every register and unregister, and the flag keeps
// the finalizer from closing a descriptor number that is someone else's now.
const descriptors = new FinalizationRegistry<Descriptor>((d) => {
  if (!d.open) return;
  d.open = false;
  try {
    native.close(d.fd);
  } catch {
    // Nothing to report to: the Region is gone.
  }
});

const isSystemError = (err: unknown, code: string): err is SystemError =>
  err instanceof Error && (err as SystemError).code === code;

const TMPFS_MAGIC = 0x01021994;
const HUGETLBFS_MAGIC = 0x958458f6;

/** The size of the tmpfs `file` is on, or null when it is on another filesystem. */
function tmpfsSize(file: string): number | null {
  try {
    const st = fs.statfsSync(file);
    return st.type === TMPFS_MAGIC ? st.blocks * st.bsize : null;
  } catch {
    return null;
  }
}

/** Explains ENOSPC: which filesystem, how large, how much is free. */
function explainNoSpace(err: SystemError, where: string, wanted: number): SystemError {
  try {
    const st = fs.statfsSync(where);
    const total = st.blocks * st.bsize;
    const free = st.bavail * st.bsize;
    return explain(
      err,
      `${where} has ${formatBytes(total)} with ${formatBytes(free)} free; the region needs ${formatBytes(wanted)}`,
    );
  } catch {
    return explain(err, `${where} is full; the region needs ${formatBytes(wanted)}`);
  }
}

/** What a hugetlb region's size must be. */
function hugeMultiple(pageSize: number): string {
  return `a multiple of the huge page size (${pageSize}, ${hugetlb.pageSizeText(pageSize)})`;
}

/** The "handshakeTimeoutMs" option: milliseconds from 0 to 600000, or Infinity. Default 1000. */
function handshakeTimeout(value: unknown): number {
  if (value === Number.POSITIVE_INFINITY) return value;
  return check.integer(value ?? 1000, '"handshakeTimeoutMs" option', 0, 600_000);
}

/** Region.open's checks of what it opened: a regular file, owned by this user unless allowed otherwise. */
function checkSegment(stat: ReturnType<typeof native.fstat>, euid: number, name: string, where: string, allowForeignOwner: boolean): void {
  const uid = stat[1];
  if ((stat[3] & c.S_IFMT) !== c.S_IFREG) {
    const err = cowshmError('ERR_COWSHM_NOT_A_FILE', `'${where}' is not a regular file, so not a shared memory segment`);
    throw Object.assign(err, { path: name });
  }
  if (uid !== euid && !allowForeignOwner) {
    throw cowshmError(
      'ERR_COWSHM_FOREIGN_OWNER',
      `Segment '${name}' is owned by uid ${uid}, not by this process (uid ${euid}); ` +
        'pass { allowForeignOwner: true } to open it anyway',
    );
  }
}

/** A named region on huge pages: NAME on the first hugetlbfs mount that has it, or null. */
function openHuge(name: string, readOnly: boolean): { fd: number; path: string; pageSize: number; stat: ReturnType<typeof native.fstat> } | null {
  for (const m of hugetlb.hugetlbfsMounts()) {
    const file = `${m.path}/${name}`;
    let fd: number;
    try {
      fd = native.open(file, (readOnly ? c.O_RDONLY : c.O_RDWR) | c.O_NOFOLLOW | c.O_NONBLOCK, 0);
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) continue;
      throw err;
    }
    try {
      return { fd, path: file, pageSize: m.pageSize, stat: native.fstat(fd, file) };
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }
  return null;
}

let makeRegion: (init: RegionInit) => Region;

/**
 * What a region restored from a checkpoint is built from, field by field: an
 * object spread (`{ ...restored, name: null }`) copies through a generic path,
 * and building and closing the Region measured 4.3 µs with it, 1.8 µs without
 * (of about 15 µs for Region.restore(full) + close; 2 vCPUs).
 */
function restoredInit(r: RestoredCheckpoint): RegionInit {
  return {
    kind: r.kind,
    name: null,
    fd: r.fd,
    path: r.path,
    readOnly: r.readOnly,
    hugePages: false,
    pageSize: r.pageSize,
    size: r.size,
    dataOffset: r.dataOffset,
    stat: r.stat,
  };
}

/**
 * Region.create on huge pages: a memfd on hugetlbfs, or NAME on a hugetlbfs
 * mount of that page size. With `reserve`, every page is taken from the pool
 * now (fallocate), after checking the pool has them: an empty or small pool
 * fails here, naming its figures, instead of with SIGBUS on first touch.
 */
function createHuge(size: number, name: string | undefined, mode: number, reserve: boolean, pageSize: number): Region {
  let file: string | undefined;
  if (name !== undefined) {
    file = `${hugetlb.mountFor(pageSize).path}/${name}`;
    // One namespace of names: Region.open looks in /dev/shm first.
    if (fs.existsSync(`/dev/shm/${name}`))
      throw explain(systemError(17, 'open', name), `/dev/shm/${name} exists, and Region.open('${name}') would find it first`);
  }
  if (reserve) hugetlb.checkPool(size, pageSize, name);
  const fd =
    file === undefined
      ? native.memfdCreate('cowshm', hugetlb.pageShift(pageSize))
      : native.open(file, c.O_CREAT | c.O_EXCL | c.O_RDWR | c.O_NOFOLLOW, mode);
  try {
    if (file !== undefined) native.fchmod(fd, mode, name);
    native.ftruncate(fd, size, name);
    if (reserve) {
      try {
        native.fallocate(fd, 0, size, name);
      } catch (err) {
        // Another process took the pages since checkPool.
        if (isSystemError(err, 'ENOSPC')) throw hugetlb.explainPool(err, size, pageSize);
        throw err;
      }
    }
    if (file === undefined) native.addSeals(fd, c.F_SEAL_SHRINK);
    return makeRegion({
      kind: file === undefined ? 'memfd' : 'shm',
      name: name ?? null,
      fd,
      path: file ?? `/proc/${process.pid}/fd/${fd}`,
      readOnly: false,
      hugePages: false,
      pageSize,
    });
  } catch (err) {
    // Closing the memfd (or removing the file) gives its pages back to the pool.
    native.close(fd);
    if (file !== undefined) fs.rmSync(file, { force: true });
    throw err;
  }
}

/**
 * What a handle's descriptor or name led to must be what its kind says: a
 * forged handle must not turn /dev/zero, a device, a FIFO or some other
 * file a process holds open into a region.
 */
function checkHandleTarget(kind: RegionKind, fd: number, stat: ReturnType<typeof native.fstat>, where: string): void {
  let why: string | null = null;
  if ((stat[3] & c.S_IFMT) !== c.S_IFREG) why = 'is not a regular file';
  else if (kind === 'shm' && stat[4] !== shmDevice() && fs.statfsSync(`/proc/self/fd/${fd}`).type !== HUGETLBFS_MAGIC)
    why = 'is not on /dev/shm (nor on a hugetlbfs), so not a shared memory segment';
  else if (kind === 'memfd' && !fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:')) why = 'is not a memfd';
  if (why === null) return;
  const err = cowshmError('ERR_COWSHM_NOT_A_FILE', `The handle's ${kind} region ('${where}') ${why}: the handle does not describe a region`);
  throw Object.assign(err, { path: where });
}

let shmDev: number | undefined;
function shmDevice(): number {
  shmDev ??= fs.statSync('/dev/shm').dev;
  return shmDev;
}

export class Region {
  /** The largest single view this Node.js allows (an ArrayBuffer's maximum length). */
  static readonly maxViewLength: number = c.MAX_VIEW_LENGTH;

  static {
    makeRegion = (init) => new Region(init);
  }

  readonly #fd: number;
  readonly #descriptor: Descriptor;
  readonly #owner = nextOwner++;
  readonly #hugePages: boolean;
  readonly #dataOffset: number;
  #size: number;
  /** Restored from a checkpoint stream: the checkpoint it holds, which a delta applied to it must name as its base. */
  #checkpoint: CheckpointIdentity | null = null;
  #closed = false;
  #unlinked = false;
  readonly #mode: number;
  #participant: number | undefined;
  #views = 0;

  /** `'shm'`, `'memfd'` or `'file'`. */
  readonly kind: RegionKind;
  /** The shm name, or null for a memfd or a file. */
  readonly name: string | null;
  /** A path another process can open: `/dev/shm/NAME`, `/proc/PID/fd/N`, or the file's path. */
  readonly path: string;
  /** Whether the region was opened read-only. */
  readonly readOnly: boolean;
  /** Device and inode: the region's identity, whoever opened it. */
  readonly dev: number;
  readonly ino: number;
  /**
   * The size of the region's pages in bytes: the system page, or the hugetlb
   * page size of a region on huge pages (a memfd or a file on hugetlbfs).
   */
  readonly pageSize: number;

  private constructor(init: RegionInit) {
    this.kind = init.kind;
    this.name = init.name;
    this.#fd = init.fd;
    this.path = init.path;
    this.readOnly = init.readOnly;
    this.#hugePages = init.hugePages;
    this.pageSize = init.pageSize ?? native.pageSize;
    // Indexed, not destructured: destructuring walks the array's iterator.
    // A named segment is held under cowshm's shared lock (what removing orphans tests).
    const st =
      init.kind === 'shm'
        ? holdSegment(init.fd, init.name as string, init.unlinked === true, init.locked === true ? init.stat : undefined)
        : init.stat ?? fstat(init.fd);
    this.#size = init.size ?? st[0];
    this.#dataOffset = init.dataOffset ?? 0;
    this.dev = st[4];
    this.ino = st[5];
    this.#mode = st[3] & 0o7777;
    this.#descriptor = { fd: init.fd, open: true };
    descriptors.register(this, this.#descriptor);
  }

  /** Joins cross-process snapshots when asked; a region that cannot is closed again, and the error thrown. */
  static #taking(region: Region, crossProcess: boolean, handshakeTimeoutMs: number): Region {
    if (!crossProcess || region.readOnly) return region;
    try {
      region.#participant = xproc.join(region.dev, region.ino, region.#size, region.#mode, handshakeTimeoutMs);
    } catch (err) {
      region.close();
      throw err;
    }
    return region;
  }

  /** @internal The region's permission bits (the coordination file of cross-process snapshots gets them). */
  get _mode(): number {
    this.#check();
    return this.#mode;
  }

  /**
   * Creates a region: a named POSIX shared memory segment when `name` is
   * given (never an existing one: that fails with EEXIST), otherwise an
   * anonymous memfd sealed against shrinking.
   */
  static create(options: CreateOptions): Region {
    if (options === undefined) throw invalidType('"options" argument', 'an object', options);
    const o = check.options<CreateOptions>(options);
    const size = check.integer(o.size, '"size" option', 1);
    const name = o.name === undefined ? undefined : check.shmName(o.name, '"name" option');
    const mode = check.mode(o.mode, '"mode" option', 0o600);
    const reserve = check.boolean(o.reserve, '"reserve" option', true);
    const hugePages = check.boolean(o.hugePages, '"hugePages" option', false);
    const crossProcess = check.boolean(o.crossProcess, '"crossProcess" option', false);
    const handshakeTimeoutMs = handshakeTimeout(o.handshakeTimeoutMs);
    const pageSize =
      o.pageSize === undefined ? native.pageSize : hugetlb.checkPageSize(check.integer(o.pageSize, '"pageSize" option', 1), '"pageSize" option');
    const huge = pageSize !== native.pageSize;
    if (huge) {
      if (hugePages)
        throw outOfRange(
          '"hugePages" option',
          'false with a hugetlb "pageSize" (hugePages is advice for transparent huge pages; pageSize gives hugetlb pages)',
          hugePages,
        );
      if (size % pageSize !== 0) throw outOfRange('"size" option', hugeMultiple(pageSize), size);
      if (crossProcess)
        throw outOfRange('"crossProcess" option', 'false with a hugetlb "pageSize" (cross-process snapshots of hugetlb regions are not supported)', crossProcess);
      return createHuge(size, name, mode, reserve, pageSize);
    }
    if (reserve) {
      // A named segment larger than all of /dev/shm fails at once in
      // fallocate with ENOSPC (which explains /dev/shm); anything else that
      // does not fit in memory is refused before it is created.
      let shmTotal = Number.POSITIVE_INFINITY;
      if (name !== undefined) {
        try {
          const st = fs.statfsSync('/dev/shm');
          shmTotal = st.blocks * st.bsize;
        } catch {
          // No /dev/shm: shm_open reports it.
        }
      }
      if (size <= shmTotal) checkReservable(size, name);
    }

    let region: Region;
    const fd =
      name === undefined
        ? native.memfdCreate('cowshm', 0)
        : native.shmOpen(name, c.O_CREAT | c.O_EXCL | c.O_RDWR, mode);
    try {
      // shm_open applies the umask; a mode the caller spelled out is meant exactly.
      if (name !== undefined) native.fchmod(fd, mode, name);
      native.ftruncate(fd, size, name);
      if (reserve) {
        try {
          native.fallocate(fd, 0, size, name);
        } catch (err) {
          if (!isSystemError(err, 'ENOSPC')) throw err;
          throw name === undefined
            ? explain(err, `not enough shared memory for ${formatBytes(size)}`)
            : explainNoSpace(err, '/dev/shm', size);
        }
      }
      if (name === undefined) native.addSeals(fd, c.F_SEAL_SHRINK);
      region = new Region({
        kind: name === undefined ? 'memfd' : 'shm',
        name: name ?? null,
        fd,
        path: name === undefined ? `/proc/${process.pid}/fd/${fd}` : `/dev/shm/${name}`,
        readOnly: false,
        hugePages,
      });
    } catch (err) {
      native.close(fd);
      if (name !== undefined) {
        try {
          native.shmUnlink(name);
        } catch {
          // Already gone: nothing is left behind either way.
        }
      }
      throw err;
    }
    try {
      return Region.#taking(region, crossProcess, handshakeTimeoutMs);
    } catch (err) {
      region.unlink();
      throw err;
    }
  }

  /**
   * Opens an existing named segment: /dev/shm/NAME, or a region on huge
   * pages of that name on a hugetlbfs mount (looked for in /proc/mounts when
   * /dev/shm has no such name). Its size comes from fstat.
   */
  static open(name: string, options?: OpenOptions): Region {
    check.shmName(name);
    const o = check.options<OpenOptions>(options);
    const readOnly = check.boolean(o.readOnly, '"readOnly" option', false);
    const allowForeignOwner = check.boolean(o.allowForeignOwner, '"allowForeignOwner" option', false);
    const crossProcess = check.boolean(o.crossProcess, '"crossProcess" option', false);
    const handshakeTimeoutMs = handshakeTimeout(o.handshakeTimeoutMs);
    let region: Region;
    // O_NONBLOCK: a FIFO planted under the name must not make a read-only open wait.
    // One native call opens, stats and reads the effective uid: each call
    // into the addon costs a few hundred nanoseconds on top of its syscall.
    let fd: number;
    try {
      fd = native.shmOpenStat(name, (readOnly ? c.O_RDONLY : c.O_RDWR) | c.O_NONBLOCK, statScratch);
    } catch (err) {
      // shm_open says EINVAL for a directory, a name it would not create.
      if (isSystemError(err, 'EINVAL') && fs.lstatSync(`/dev/shm/${name}`, { throwIfNoEntry: false })?.isDirectory())
        throw Object.assign(cowshmError('ERR_COWSHM_NOT_A_FILE', `'/dev/shm/${name}' is a directory, not a shared memory segment`), { path: name });
      if (!isSystemError(err, 'ENOENT')) throw err;
      const found = openHuge(name, readOnly);
      if (found === null) throw err;
      fd = found.fd;
      try {
        checkSegment(found.stat, process.geteuid?.() ?? found.stat[1], name, found.path, allowForeignOwner);
        return new Region({ kind: 'shm', name, fd, path: found.path, readOnly, hugePages: false, pageSize: found.pageSize });
      } catch (e) {
        native.close(fd);
        throw e;
      }
    }
    try {
      const stat = scratchStat();
      checkSegment(stat, statScratch[7] as number, name, `/dev/shm/${name}`, allowForeignOwner);
      region = new Region({ kind: 'shm', name, fd, path: `/dev/shm/${name}`, readOnly, hugePages: false, stat, locked: statScratch[8] === 1 });
    } catch (err) {
      native.close(fd);
      throw err;
    }
    return Region.#taking(region, crossProcess, handshakeTimeoutMs);
  }

  /** Opens (or with `create`, creates) a file and uses it as a persistent region. */
  static openFile(file: string, options?: OpenFileOptions): Region {
    check.path(file, '"path" argument');
    const o = check.options<OpenFileOptions>(options);
    const size = o.size === undefined ? undefined : check.integer(o.size, '"size" option', 1);
    const create = check.boolean(o.create, '"create" option', false);
    const readOnly = check.boolean(o.readOnly, '"readOnly" option', false);
    const mode = check.mode(o.mode, '"mode" option', 0o600);
    const reserve = check.boolean(o.reserve, '"reserve" option', true);
    if (create && readOnly) throw outOfRange('"create" option', 'false when "readOnly" is true', create);
    const resolved = path.resolve(file);
    const flags = readOnly ? c.O_RDONLY : c.O_RDWR;
    const why = 'only regular files can back a region';

    let opened: { fd: number; stat: FileStat };
    let created = false;
    if (create) {
      try {
        opened = openRegular(resolved, flags | c.O_CREAT | c.O_EXCL, mode, why);
        created = true;
      } catch (err) {
        if (!isSystemError(err, 'EEXIST')) throw err;
        opened = openRegular(resolved, flags, 0, why);
      }
    } else {
      opened = openRegular(resolved, flags, 0, why);
    }
    const { fd, stat } = opened;
    let grewFrom: number | undefined;
    try {
      const current = stat[0];
      const pageSize = hugetlb.hugetlbfsPageSize(resolved) ?? native.pageSize;
      const huge = pageSize !== native.pageSize;
      if (huge && size !== undefined && size % pageSize !== 0)
        throw outOfRange('"size" option', `${hugeMultiple(pageSize)}: '${resolved}' is on hugetlbfs`, size);
      if (size !== undefined && current < size) {
        if (readOnly)
          throw outOfRange('"size" option', `at most the file's size (${current}) for a read-only file`, size);
        // A file on tmpfs is memory: the same limit as for create() applies
        // (beyond the whole filesystem, fallocate fails at once with ENOSPC).
        const tmpfsTotal = reserve ? tmpfsSize(resolved) : null;
        if (tmpfsTotal !== null && size - current <= tmpfsTotal) checkReservable(size - current, resolved);
        if (huge && reserve) hugetlb.checkPool(size - current, pageSize, resolved);
        grewFrom = current;
        native.ftruncate(fd, size, resolved);
        stat[0] = size;
        if (reserve) {
          try {
            native.fallocate(fd, current, size - current, resolved);
          } catch (err) {
            if (huge && isSystemError(err, 'ENOSPC')) throw hugetlb.explainPool(err, size - current, pageSize);
            if (isSystemError(err, 'ENOSPC')) throw explainNoSpace(err, path.dirname(resolved), size);
            // Filesystems without fallocate keep the file sparse.
            if (!isSystemError(err, 'EOPNOTSUPP')) throw err;
          }
        }
      } else if (created && current === 0) {
        throw outOfRange('"size" option', 'a positive integer when the file is created', size);
      }
      return new Region({ kind: 'file', name: null, fd, path: resolved, readOnly, hugePages: false, stat, pageSize });
    } catch (err) {
      try {
        // A file that was there before leaves as it came: its old length.
        if (!created && grewFrom !== undefined) native.ftruncate(fd, grewFrom, resolved);
      } finally {
        native.close(fd);
        if (created) fs.rmSync(resolved, { force: true });
      }
      throw err;
    }
  }

  /**
   * Opens the region a `handle()` describes, in this thread or in another
   * process. With `{ readOnly: true }` it is opened read-only even when the
   * handle's region is writable.
   */
  static fromHandle(handle: RegionHandle, options?: FromHandleOptions): Region {
    if (handle === null || typeof handle !== 'object' || Array.isArray(handle))
      throw invalidType('"handle" argument', 'a RegionHandle (an object from region.handle())', handle);
    const o = check.options<FromHandleOptions>(options);
    const readOnlyOption = check.boolean(o.readOnly, '"readOnly" option', false);
    if (handle.kind === undefined) throw invalidType('handle\'s "kind"', "one of 'shm', 'memfd', 'file'", undefined);
    const kind = check.oneOf(handle.kind, 'handle\'s "kind"', ['shm', 'memfd', 'file'] as const, 'shm');
    const pid = check.integer(handle.pid, 'handle\'s "pid"', 1);
    const fdNum = check.integer(handle.fd, 'handle\'s "fd"', 0);
    const dev = check.integer(handle.dev, 'handle\'s "dev"', 0);
    const ino = check.integer(handle.ino, 'handle\'s "ino"', 0);
    const readOnly = check.boolean(handle.readOnly, 'handle\'s "readOnly"', false) || readOnlyOption;
    const name = kind === 'shm' ? check.shmName(handle.name, 'handle\'s "name"') : null;
    const filePath = kind === 'file' ? check.path(handle.path, 'handle\'s "path"') : null;

    // The creator's descriptor opens the region even after its name is gone;
    // the name (or file path) works after the creator closed it. Either must
    // lead to the same inode, or it is somebody else's region now.
    const procPath = `/proc/${pid === process.pid ? 'self' : pid}/fd/${fdNum}`;
    // A named region on huge pages is a file on hugetlbfs: its handle's path.
    const shmPath =
      name !== null && typeof handle.path === 'string' && handle.path === `${path.dirname(handle.path)}/${name}` &&
      hugetlb.hugetlbfsMounts().some((m) => m.path === path.dirname(handle.path))
        ? handle.path
        : `/dev/shm/${name}`;
    const paths = [procPath, ...(name !== null ? [shmPath] : []), ...(filePath ? [filePath] : [])];
    let lastError: unknown;
    for (const p of paths) {
      // /proc/PID/fd/N is a link that must be followed; a name or a file path must not.
      const flags = (readOnly ? c.O_RDONLY : c.O_RDWR) | c.O_NONBLOCK | (p === procPath ? 0 : c.O_NOFOLLOW);
      let fd: number;
      try {
        fd = native.open(p, flags, 0);
      } catch (err) {
        lastError = err;
        continue;
      }
      try {
        const stat = native.fstat(fd, p);
        if (stat[4] !== dev || stat[5] !== ino) {
          native.close(fd);
          continue;
        }
        checkHandleTarget(kind, fd, stat, p);
        return new Region({
          kind,
          name,
          fd,
          path: kind === 'shm' ? shmPath : kind === 'file' ? (filePath as string) : `/proc/${process.pid}/fd/${fd}`,
          readOnly,
          hugePages: false,
          stat,
          pageSize: hugetlb.hugetlbfsPageSize(`/proc/self/fd/${fd}`) ?? native.pageSize,
          unlinked: true,
        });
      } catch (err) {
        native.close(fd);
        throw err;
      }
    }
    if (isSystemError(lastError, 'ELOOP'))
      throw explain(lastError, `a symbolic link, not a ${kind === 'shm' ? 'segment' : 'file'}: handles are never followed through one`);
    if (lastError instanceof Error && !isSystemError(lastError, 'ENOENT')) throw lastError;
    const gone = cowshmError(
      'ENOENT',
      `The region this handle describes (${kind}${name ? ` '${name}'` : filePath ? ` '${filePath}'` : ''}, ` +
        `pid ${pid}, fd ${fdNum}) is gone: its creator closed it and no name leads to it any more`,
    );
    throw Object.assign(gone, { errno: -2, syscall: 'open', path: paths[paths.length - 1] });
  }

  /** The size in bytes (from fstat when the region was opened). */
  get size(): number {
    return this.#size;
  }

  /** The file descriptor. Owned by the region: do not close it yourself. */
  get fd(): number {
    this.#check();
    return this.#fd;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** @internal The token the addon files this region's mappings under. */
  get _owner(): number {
    return this.#owner;
  }

  /**
   * Maps the region (or part of it) and returns a View whose `buffer` is the
   * memory itself. `offset` must be a multiple of the page size.
   */
  map(options?: MapOptions): View {
    this.#check();
    const o = check.options<MapOptions>(options);
    const size = this.#size;
    if (size === 0)
      throw cowshmError('ERR_COWSHM_EMPTY', `${this.toString()} is empty (size 0): there is nothing to map`);
    const huge = this.pageSize !== native.pageSize;
    const [offset, length] = check.range(o, size, this, 'view', this.pageSize);
    const access = check.oneOf(o.access, '"access" option', ['read', 'write', 'cow'] as const, this.readOnly ? 'read' : 'write');
    if (access === 'write' && this.readOnly)
      throw cowshmError('ERR_COWSHM_READ_ONLY', `${this.toString()} was opened read-only: map it with access 'read' or 'cow'`);
    const populate = check.boolean(o.populate, '"populate" option', false);

    const label = `${this.toString()}, view ${++this.#views}`;
    const flags = (populate ? c.MAP_FLAG_POPULATE : 0) | (hugetlb.pageShift(this.pageSize) << c.MAP_FLAG_HUGE_SHIFT);
    let id: number;
    try {
      id = native.mapView(this.#fd, offset + this.#dataOffset, length, c.ACCESS[access], label, this.#owner, this.dev, this.ino, flags);
    } catch (err) {
      // A shared mapping of a sparse region (reserve: false) reserves its pages from the pool now.
      if (huge && isSystemError(err, 'ENOMEM')) throw hugetlb.explainPool(err, length, this.pageSize);
      throw err;
    }
    const view = new View(this, id, offset, length, access);
    if (this.#hugePages) {
      try {
        native.madvise(id, 0, length, c.MADV_HUGEPAGE);
      } catch (err) {
        // Kernels without transparent huge pages say EINVAL: the view still works.
        if (!isSystemError(err, 'EINVAL')) {
          view.close();
          throw err;
        }
      }
    }
    return view;
  }

  /**
   * Restores a full checkpoint from a stream (`snapshot.createReadStream()`,
   * through a socket, a compressor, ...) into a new memfd region, verifying
   * the header before allocating and the data checksum as it arrives. A
   * truncated or corrupt stream rejects with `ERR_COWSHM_CHECKPOINT_INVALID`
   * and leaves nothing behind. See docs/api.md, Checkpoint streams.
   */
  static async restoreStream(readable: AsyncIterable<Uint8Array> | NodeJS.ReadableStream): Promise<Region> {
    const restored = await restoreFromStream(readable);
    try {
      const region = new Region(restoredInit(restored));
      region.#checkpoint = { id: restored.id, checksum: restored.checksum, regionHash: restored.checksum };
      return region;
    } catch (err) {
      native.close(restored.fd);
      throw err;
    }
  }

  /**
   * Opens a checkpoint written by `Snapshot.writeTo()` (see docs/api.md,
   * Checkpoints). A full checkpoint maps the file itself: O(1), pages load on
   * first touch, and the region is read-only (views `'read'` or `'cow'`). A
   * delta chain is copied into a new memfd region.
   */
  static restore(file: string, options?: RestoreOptions): Region {
    const restored = restoreCheckpoint(file, options);
    try {
      return new Region(restoredInit(restored));
    } catch (err) {
      native.close(restored.fd);
      throw err;
    }
  }

  /**
   * A point-in-time copy of the region (or of `{ offset, length }` of it):
   * later writes through this process's views, from any thread, do not
   * change it. See `Snapshot`.
   */
  snapshot(options?: SnapshotOptions): Snapshot {
    this.#check();
    if (this.#dataOffset !== 0)
      throw cowshmError('ERR_COWSHM_READ_ONLY', `${this.toString()} is a restored checkpoint and never changes: map it instead`);
    return takeSnapshot(this, this.#fd, this.#owner, options);
  }

  /**
   * Copies `[offset, offset + length)` into every live snapshot and lifts
   * write protection there, so the kernel itself may write into views of that
   * range (read(2) into a view fails with EFAULT otherwise while snapshots are live).
   */
  prepareWrite(offset: number, length: number): void {
    this.#check();
    prepareWrite(this, offset, length);
  }

  /** Plain data another thread or process can pass to `Region.fromHandle()`. */
  handle(): RegionHandle {
    this.#check();
    if (this.#dataOffset !== 0)
      throw cowshmError('ERR_COWSHM_NO_HANDLE', `${this.toString()} is a restored checkpoint: restore it again elsewhere`);
    return {
      kind: this.kind,
      name: this.name,
      path: this.path,
      size: this.#size,
      pid: process.pid,
      fd: this.#fd,
      dev: this.dev,
      ino: this.ino,
      readOnly: this.readOnly,
    };
  }

  /**
   * Writes dirty pages of every open view back to the file and syncs it
   * (msync, then fsync). For shm and memfd regions it only checks the region is open.
   */
  flush(): void {
    this.#check();
    if (this.kind !== 'file') return;
    native.msyncOwner(this.#owner);
    native.fsync(this.#fd, this.path);
  }

  /**
   * Removes the region's name (the shm segment or the file); every mapping
   * and open descriptor stays valid. A name that now leads to another region
   * is left alone. Safe to call more than once, and after close().
   */
  unlink(): void {
    if (this.#unlinked || this.kind === 'memfd') return;
    try {
      const st = fs.lstatSync(this.path);
      if (st.dev === this.dev && st.ino === this.ino) {
        // A named region on huge pages is a file on hugetlbfs.
        if (this.kind === 'shm' && this.path === `/dev/shm/${this.name}`) native.shmUnlink(this.name as string);
        else fs.unlinkSync(this.path);
      }
    } catch (err) {
      // Gone already (someone else unlinked it): the outcome asked for.
      if (!isSystemError(err, 'ENOENT')) throw err;
    }
    this.#unlinked = true;
  }

  /**
   * Unmaps every view of this region (detaching their buffers, see
   * `View.close`) and closes the descriptor: the descriptor is closed even if
   * a view fails to close, and the first such failure is thrown after it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#descriptor.open = false;
    xproc.releaseOwner(this.#owner); // its snapshots with scope 'processes': no writer stays armed for them
    if (this.#participant !== undefined) xproc.leave(this.#participant);
    native.closeRegion(this.#owner, this.#fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  toString(): string {
    const pages = this.pageSize === native.pageSize ? '' : `, ${hugetlb.pageSizeText(this.pageSize)} pages`;
    if (this.kind === 'shm') return `region '${this.name}' (shm${pages})`;
    if (this.kind === 'file') return `region '${this.path}' (file${pages})`;
    return `memfd region (fd ${this.#fd}${pages})`;
  }

  /**
   * Applies a delta stream (`snapshot.createReadStream({ base })`) to a region
   * restored by `Region.restoreStream()` from that base (or from it and the
   * deltas before this one). The delta is staged until it has verified; a
   * delta of another base, or a region written since it was restored, is
   * refused with `ERR_COWSHM_CHECKPOINT_INVALID` and the region is unchanged.
   */
  applyDelta(readable: AsyncIterable<Uint8Array> | NodeJS.ReadableStream): Promise<void> {
    this.#check(); // a closed region throws at once, as every member does
    if (this.#checkpoint === null) return applyDeltaStream(-1, this.#size, null, readable).then(() => undefined);
    // A descriptor of its own: the region may be closed (and its descriptor's number reused) meanwhile.
    const fd = fs.openSync(`/proc/self/fd/${this.#fd}`, 'r+');
    return applyDeltaStream(fd, this.#size, this.#checkpoint, readable).then(
      (holds) => {
        fs.closeSync(fd);
        this.#checkpoint = holds;
      },
      (err: unknown) => {
        fs.closeSync(fd);
        throw err;
      },
    );
  }

  #check(): void {
    if (this.#closed) throw closedError(`${this.toString()[0]?.toUpperCase()}${this.toString().slice(1)}`);
  }
}
