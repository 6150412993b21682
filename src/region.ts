/**
 * A Region is a piece of shareable memory behind a file descriptor: a named
 * POSIX shared memory segment (/dev/shm/NAME), an anonymous memfd, or a file.
 * Map it as many times as needed; each View is an ArrayBuffer over the same
 * pages.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as bufferConstants } from 'node:buffer';
import { native } from './native';
import { closedError, cowshmError, explain, invalidType, outOfRange, type SystemError } from './errors';
import * as c from './constants';
import * as check from './validate';
import { View, type Access } from './view';

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
   * ENOSPC instead of killing the process with SIGBUS on first touch.
   * With `false` the region is sparse: pages are allocated when first written.
   * Default true.
   */
  reserve?: boolean;
  /** Ask for transparent huge pages on every view (madvise MADV_HUGEPAGE). Default false. */
  hugePages?: boolean;
}

export interface OpenOptions {
  /** Open read-only: views may be `'read'` or `'cow'`. Default false. */
  readOnly?: boolean;
  /** Open a segment owned by another user. Default false: such a segment is refused. */
  allowForeignOwner?: boolean;
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

export interface MapOptions {
  /** Where the view starts, in bytes: a multiple of the page size. Default 0. */
  offset?: number;
  /** Length in bytes. Default: to the end of the region. At most `Region.maxViewLength`. */
  length?: number;
  /** Default `'write'`, or `'read'` for a read-only region. */
  access?: Access;
  /** Fault every page in now (MAP_POPULATE) instead of on first touch. Default false. */
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

interface RegionInit {
  kind: RegionKind;
  name: string | null;
  fd: number;
  path: string;
  readOnly: boolean;
  hugePages: boolean;
  /** native.fstat(fd) when the caller already has it: saves a syscall. */
  stat?: ReturnType<typeof native.fstat>;
}

let nextOwner = 1;
const statScratch = new Float64Array(7);
/** native.fstat without building an array in the addon (the open path's largest cost after the syscalls). */
function fstat(fd: number): ReturnType<typeof native.fstat> {
  native.fstatInto(fd, statScratch);
  const s = statScratch;
  return [s[0] as number, s[1] as number, s[2] as number, s[3] as number, s[4] as number, s[5] as number, s[6] as number];
}

// A Region collected without close() still gives its descriptor back.
const descriptors = new FinalizationRegistry<number>((fd) => {
  try {
    native.close(fd);
  } catch {
    // Nothing to report to: the Region is gone.
  }
});

const isSystemError = (err: unknown, code: string): err is SystemError =>
  err instanceof Error && (err as SystemError).code === code;

function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
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

export class Region {
  /** The largest single view this Node.js allows (an ArrayBuffer's maximum length). */
  static readonly maxViewLength: number = bufferConstants.MAX_LENGTH;

  readonly #fd: number;
  readonly #owner = nextOwner++;
  readonly #hugePages: boolean;
  #size: number;
  #closed = false;
  #unlinked = false;
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

  private constructor(init: RegionInit) {
    this.kind = init.kind;
    this.name = init.name;
    this.#fd = init.fd;
    this.path = init.path;
    this.readOnly = init.readOnly;
    this.#hugePages = init.hugePages;
    const [size, , , , dev, ino] = init.stat ?? fstat(init.fd);
    this.#size = size;
    this.dev = dev;
    this.ino = ino;
    descriptors.register(this, init.fd, this);
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

    const fd =
      name === undefined
        ? native.memfdCreate('cowshm', 0)
        : native.shmOpen(name, c.O_CREAT | c.O_EXCL | c.O_RDWR, mode);
    try {
      // shm_open applies the umask; a mode the caller spelled out is meant exactly.
      if (name !== undefined) native.fchmod(fd, mode);
      native.ftruncate(fd, size);
      if (reserve) {
        try {
          native.fallocate(fd, 0, size);
        } catch (err) {
          if (!isSystemError(err, 'ENOSPC')) throw err;
          throw name === undefined
            ? explain(err, `not enough shared memory for ${formatBytes(size)}`)
            : explainNoSpace(err, '/dev/shm', size);
        }
      }
      if (name === undefined) native.addSeals(fd, c.F_SEAL_SHRINK);
      return new Region({
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
  }

  /** Opens an existing named segment. Its size comes from fstat. */
  static open(name: string, options?: OpenOptions): Region {
    check.shmName(name);
    const o = check.options<OpenOptions>(options);
    const readOnly = check.boolean(o.readOnly, '"readOnly" option', false);
    const allowForeignOwner = check.boolean(o.allowForeignOwner, '"allowForeignOwner" option', false);
    const fd = native.shmOpen(name, readOnly ? c.O_RDONLY : c.O_RDWR, 0);
    try {
      const stat = fstat(fd);
      const uid = stat[1];
      const euid = process.geteuid?.() ?? uid;
      if (uid !== euid && !allowForeignOwner) {
        throw cowshmError(
          'ERR_COWSHM_FOREIGN_OWNER',
          `Segment '${name}' is owned by uid ${uid}, not by this process (uid ${euid}); ` +
            'pass { allowForeignOwner: true } to open it anyway',
        );
      }
      return new Region({ kind: 'shm', name, fd, path: `/dev/shm/${name}`, readOnly, hugePages: false, stat });
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** Opens (or with `create`, creates) a file and uses it as a persistent region. */
  static openFile(file: string, options?: OpenFileOptions): Region {
    check.string(file, '"path" argument');
    if (file.length === 0) throw outOfRange('"path" argument', 'a non-empty string', file);
    const o = check.options<OpenFileOptions>(options);
    const size = o.size === undefined ? undefined : check.integer(o.size, '"size" option', 1);
    const create = check.boolean(o.create, '"create" option', false);
    const readOnly = check.boolean(o.readOnly, '"readOnly" option', false);
    const mode = check.mode(o.mode, '"mode" option', 0o600);
    const reserve = check.boolean(o.reserve, '"reserve" option', true);
    if (create && readOnly) throw outOfRange('"create" option', 'false when "readOnly" is true', create);
    const resolved = path.resolve(file);
    const flags = (readOnly ? c.O_RDONLY : c.O_RDWR) | c.O_NOFOLLOW;

    let fd: number;
    let created = false;
    if (create) {
      try {
        fd = native.open(resolved, flags | c.O_CREAT | c.O_EXCL, mode);
        created = true;
      } catch (err) {
        if (!isSystemError(err, 'EEXIST')) throw err;
        fd = native.open(resolved, flags, 0);
      }
    } else {
      fd = native.open(resolved, flags, 0);
    }
    try {
      const [current, , , fileMode] = native.fstat(fd);
      if ((fileMode & c.S_IFMT) !== c.S_IFREG)
        throw cowshmError('ERR_COWSHM_NOT_A_FILE', `'${resolved}' is not a regular file`);
      if (size !== undefined && current < size) {
        if (readOnly)
          throw outOfRange('"size" option', `at most the file's size (${current}) for a read-only file`, size);
        native.ftruncate(fd, size);
        if (reserve) {
          try {
            native.fallocate(fd, current, size - current);
          } catch (err) {
            if (isSystemError(err, 'ENOSPC')) throw explainNoSpace(err, path.dirname(resolved), size);
            // Filesystems without fallocate keep the file sparse.
            if (!isSystemError(err, 'EOPNOTSUPP')) throw err;
          }
        }
      } else if (created && current === 0) {
        throw outOfRange('"size" option', 'a positive integer when the file is created', size);
      }
      return new Region({ kind: 'file', name: null, fd, path: resolved, readOnly, hugePages: false });
    } catch (err) {
      native.close(fd);
      if (created) fs.rmSync(resolved, { force: true });
      throw err;
    }
  }

  /** Opens the region a `handle()` describes, in this thread or in another process. */
  static fromHandle(handle: RegionHandle): Region {
    if (handle === null || typeof handle !== 'object') throw invalidType('"handle" argument', 'a RegionHandle', handle);
    const kind = check.oneOf(handle.kind, 'handle\'s "kind"', ['shm', 'memfd', 'file'] as const, 'shm');
    const pid = check.integer(handle.pid, 'handle\'s "pid"', 1);
    const fdNum = check.integer(handle.fd, 'handle\'s "fd"', 0);
    const dev = check.integer(handle.dev, 'handle\'s "dev"', 0);
    const ino = check.integer(handle.ino, 'handle\'s "ino"', 0);
    const readOnly = check.boolean(handle.readOnly, 'handle\'s "readOnly"', false);
    const name = kind === 'shm' ? check.shmName(handle.name, 'handle\'s "name"') : null;
    const filePath = kind === 'file' ? check.string(handle.path, 'handle\'s "path"') : null;

    // The creator's descriptor opens the region even after its name is gone;
    // the name (or file path) works after the creator closed it. Either must
    // lead to the same inode, or it is somebody else's region now.
    const procPath = `/proc/${pid === process.pid ? 'self' : pid}/fd/${fdNum}`;
    const paths = [procPath, ...(name !== null ? [`/dev/shm/${name}`] : []), ...(filePath ? [filePath] : [])];
    let lastError: unknown;
    for (const p of paths) {
      let fd: number;
      try {
        fd = native.open(p, readOnly ? c.O_RDONLY : c.O_RDWR, 0);
      } catch (err) {
        lastError = err;
        continue;
      }
      const [, , , , d, i] = native.fstat(fd);
      if (d !== dev || i !== ino) {
        native.close(fd);
        continue;
      }
      try {
        return new Region({
          kind,
          name,
          fd,
          path: kind === 'shm' ? `/dev/shm/${name}` : kind === 'file' ? (filePath as string) : `/proc/${process.pid}/fd/${fd}`,
          readOnly,
          hugePages: false,
        });
      } catch (err) {
        native.close(fd);
        throw err;
      }
    }
    if (lastError instanceof Error && !isSystemError(lastError, 'ENOENT')) throw lastError;
    throw cowshmError(
      'ENOENT',
      `The region this handle describes (${kind}${name ? ` '${name}'` : ''}, pid ${pid}, fd ${fdNum}) ` +
        'is gone: its creator closed it and no name leads to it any more',
    );
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
    const offset = o.offset === undefined ? 0 : check.integer(o.offset, '"offset" option', 0);
    if (offset % native.pageSize !== 0) throw check.pageAligned('"offset" option', offset);
    if (offset >= size) throw outOfRange('"offset" option', `less than the region's size (${size})`, offset);
    const length = o.length === undefined ? size - offset : check.integer(o.length, '"length" option', 1);
    if (offset + length > size)
      throw outOfRange('"length" option', `at most ${size - offset} (the region's size minus the offset)`, length);
    if (length > Region.maxViewLength) {
      throw outOfRange(
        '"length" option',
        `at most ${Region.maxViewLength}, the largest ArrayBuffer Node.js ${process.version} allows; ` +
          'map a larger region as several views, each with its own offset and length',
        length,
      );
    }
    const access = check.oneOf(o.access, '"access" option', ['read', 'write', 'cow'] as const, this.readOnly ? 'read' : 'write');
    if (access === 'write' && this.readOnly)
      throw cowshmError('ERR_COWSHM_READ_ONLY', `${this.toString()} was opened read-only: map it with access 'read' or 'cow'`);
    const populate = check.boolean(o.populate, '"populate" option', false);

    const label = `${this.toString()}, view ${++this.#views}`;
    const id = native.mapView(this.#fd, offset, length, c.ACCESS[access], label, this.#owner, this.dev, this.ino, populate ? 1 : 0);
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

  /** Plain data another thread or process can pass to `Region.fromHandle()`. */
  handle(): RegionHandle {
    this.#check();
    return {
      kind: this.kind,
      name: this.name,
      path: this.kind === 'file' ? this.path : this.kind === 'shm' ? `/dev/shm/${this.name}` : `/proc/${process.pid}/fd/${this.#fd}`,
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
    native.fsync(this.#fd);
  }

  /**
   * Removes the region's name (the shm segment or the file); every mapping
   * and open descriptor stays valid. A name that now leads to another region
   * is left alone. Safe to call more than once, and after close().
   */
  unlink(): void {
    if (this.#unlinked || this.kind === 'memfd') return;
    this.#unlinked = true;
    let st: fs.Stats;
    try {
      st = fs.statSync(this.path, { bigint: false });
    } catch (err) {
      if (isSystemError(err, 'ENOENT')) return;
      throw err;
    }
    if (st.dev !== this.dev || st.ino !== this.ino) return;
    if (this.kind === 'shm') native.shmUnlink(this.name as string);
    else fs.unlinkSync(this.path);
  }

  /** Unmaps every view of this region (detaching their buffers) and closes the descriptor. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    descriptors.unregister(this);
    native.unmapOwner(this.#owner);
    native.close(this.#fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  toString(): string {
    if (this.kind === 'shm') return `region '${this.name}' (shm)`;
    if (this.kind === 'file') return `region '${this.path}' (file)`;
    return `memfd region (fd ${this.#fd})`;
  }

  #check(): void {
    if (this.#closed) throw closedError(`${this.toString()[0]?.toUpperCase()}${this.toString().slice(1)}`);
  }
}
