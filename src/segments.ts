/**
 * The POSIX shared memory segments of this machine (/dev/shm), and which
 * processes hold them: by mapping (/proc/PID/maps) or by an open descriptor
 * (/proc/PID/fd). Holders are matched by device and inode, so a segment that
 * was removed and created again under the same name is told apart from the
 * old one, and segments whose name is gone but that are still held ("(deleted)"
 * in /proc) are found too.
 *
 * cowshm's own holders also say so through the kernel: every Region of a
 * named segment keeps a shared flock(2) on its descriptor (`holdSegment`), so
 * an exclusive non-blocking flock succeeds only when no cowshm process holds
 * the segment, whoever it runs as and in whatever pid namespace. Other
 * programs' holders are seen only through /proc.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from './native';
import { cowshmError, explain, invalidType, systemError } from './errors';
import { lockFile, unlockFile } from './locks';
import { descriptorsOf, listProcesses, mapsDevice, readOrNull, type ProcessEntry } from './memory/procfs';
import * as check from './validate';
import { hugetlbfsMounts } from './hugetlb';
import { coordinationOf, inspectCoordination, reclaimCoordination, type Coordination } from './coordination';

const SHM_DIR = '/dev/shm';

/** A process that holds a segment. */
export interface SegmentHolder {
  pid: number;
  /** The program's name: the base name of its argv[0] (/proc/PID/cmdline), else /proc/PID/comm. */
  command: string;
  /** How many of its mappings (lines of /proc/PID/maps) are of this segment. */
  mappings: number;
  /** Its descriptors open on this segment. */
  fds: number[];
}

/** One segment, as `cowshm ls` shows it. */
export interface Segment {
  /** The shm name (the file name in /dev/shm). */
  name: string;
  /** `/dev/shm/NAME`, or MOUNT/NAME for a named region on huge pages. */
  path: string;
  /** The page size: the system page in /dev/shm, the mount's huge page size on hugetlbfs. */
  pageSize: number;
  /** The name was removed, but processes still hold the memory. */
  deleted: boolean;
  /** Size in bytes. */
  size: number;
  /** Bytes of memory the segment occupies now (allocated pages). */
  allocated: number;
  uid: number;
  /** The owner's user name, or the uid as a string when it has none. */
  owner: string;
  gid: number;
  /** Permission bits, e.g. 0o600. */
  mode: number;
  dev: number;
  ino: number;
  /** Processes that map it or hold it open, by pid. */
  holders: SegmentHolder[];
  /**
   * A cowshm process holds it open: some Region of it keeps the shared flock
   * every cowshm holder takes. Seen even where /proc is not (another user's
   * process, another pid namespace). null when this user may not open the
   * segment to test, or when `holders: false`.
   */
  locked: boolean | null;
  /**
   * No process holds it: no cowshm lock on it (`locked` is false) and none of
   * the processes that could be inspected maps it or holds it open (see `uninspected`).
   */
  orphan: boolean;
  /**
   * Processes whose maps or descriptors could not be read (other users'
   * processes unless run as root, processes that made themselves
   * undumpable): they might hold the segment without it showing here.
   */
  uninspected: number[];
  /**
   * For a coordination file of cross-process snapshots
   * (`cowshm-xproc-<dev>-<ino>`): its region's identity and who takes part,
   * from the file's locks. Such a file is `locked` while any process holds a
   * lock on it and `orphan` when none does, whatever /proc shows. null for
   * every other segment.
   */
  coordination: Coordination | null;
}

export interface ListSegmentsOptions {
  /**
   * Find the processes that hold each segment (reads /proc/PID/maps and
   * /proc/PID/fd of every process). Default true. With false, `holders` is empty and `orphan` false.
   */
  holders?: boolean;
}

let users: Map<number, string> | undefined;
function userName(uid: number): string {
  if (users === undefined) {
    users = new Map();
    try {
      for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const [name, , id] = line.split(':');
        if (name && id !== undefined && /^\d+$/.test(id) && !users.has(Number(id))) users.set(Number(id), name);
      }
    } catch {
      // No /etc/passwd (a minimal container): uids are shown as numbers.
    }
  }
  return users.get(uid) ?? String(uid);
}

const key = (dev: number, ino: number): string => `${dev}:${ino}`;

/** A directory segments are in: /dev/shm, or a hugetlbfs mount (named regions on huge pages). */
interface Dir {
  path: string;
  dev: number;
  /** st_dev as /proc/PID/maps prints it. */
  device: string;
  pageSize: number;
}

interface Found {
  dir: Dir;
  name: string;
  deleted: boolean;
  st: fs.Stats;
  holders: Map<number, SegmentHolder>;
}


function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/** The name a path in /proc stands for in `dir`, and whether it was removed. */
function shmNameOf(link: string, dir: Dir): { name: string; deleted: boolean } | null {
  if (!link.startsWith(`${dir.path}/`)) return null;
  const deleted = link.endsWith(' (deleted)');
  const name = (deleted ? link.slice(0, -' (deleted)'.length) : link).slice(dir.path.length + 1);
  return name.length > 0 && !name.includes('/') ? { name, deleted } : null;
}

// Not /proc/PID/comm alone: that is the main thread's name, which programs
// may set (Node.js 24 names it "MainThread"), so every Node process would read alike.
function commandOf(dir: string): string {
  const argv0 = (readOrNull(`${dir}/cmdline`) ?? '').split('\0')[0] ?? '';
  if (argv0 !== '') return path.basename(argv0) || argv0;
  return (readOrNull(`${dir}/comm`) ?? '').trim();
}

/**
 * Reads /proc/PID/fd and /proc/PID/maps of every process and files the
 * holders of each segment under `found` (adding segments whose name is gone
 * but that are still held). Returns the pids that could not be inspected.
 * `skip` names one descriptor of this process not to count (a probe's own).
 */
function findHolders(found: Map<string, Found>, dirs: Map<number, Dir>, skip?: number): number[] {
  const byDevice = new Map([...dirs.values()].map((d) => [d.device, d]));
  const { processes, uninspected } = listProcesses();
  const holder = (f: Found, p: ProcessEntry): SegmentHolder => {
    let h = f.holders.get(p.pid);
    if (h === undefined) {
      p.command ??= commandOf(p.dir);
      h = { pid: p.pid, command: p.command, mappings: 0, fds: [] };
      f.holders.set(p.pid, h);
    }
    return h;
  };

  // Descriptors first, for every process: stat through /proc/PID/fd/N works
  // wherever the fd directory can be read, so segments whose name is gone
  // are found with their size before the maps are matched.
  for (const p of processes) {
    for (const { fd, target, st } of descriptorsOf(p)) {
      if (skip !== undefined && p.pid === process.pid && fd === skip) continue;
      const dir = dirs.get(st.dev);
      if (dir === undefined) continue;
      let f = found.get(key(st.dev, st.ino));
      if (f === undefined) {
        const named = shmNameOf(target, dir);
        if (named === null || !named.deleted || !st.isFile()) continue;
        f = { dir, name: named.name, deleted: true, st, holders: new Map() };
        found.set(key(st.dev, st.ino), f);
      }
      holder(f, p).fds.push(fd);
    }
  }

  for (const p of processes) {
    for (const line of p.maps === null ? [] : p.maps.split('\n')) {
      // start-end perms offset dev inode path
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ (\S+) (\d+)\s*(.*)$/.exec(line);
      const dir = m === null ? undefined : byDevice.get(m[3] as string);
      if (m === null || dir === undefined) continue;
      const ino = Number(m[4]);
      let f = found.get(key(dir.dev, ino));
      if (f === undefined) {
        // Mapped, name gone, no descriptor anywhere: map_files can stat it (as root).
        const named = shmNameOf(m[5] ?? '', dir);
        if (named === null || !named.deleted) continue;
        const st = statOrNull(`${p.dir}/map_files/${m[1]}-${m[2]}`);
        if (st === null || st.dev !== dir.dev || st.ino !== ino) continue;
        f = { dir, name: named.name, deleted: true, st, holders: new Map() };
        found.set(key(dir.dev, ino), f);
      }
      holder(f, p).mappings++;
    }
  }
  return uninspected;
}

/**
 * Opens a segment to test its lock: never following a symlink, never waiting
 * on a FIFO, read-only (write-only for a segment whose mode allows only that).
 * null when this user may not open it.
 */
function openForLock(file: string): number | null {
  const flags = fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;
  for (const access of [fs.constants.O_RDONLY, fs.constants.O_WRONLY]) {
    try {
      return fs.openSync(file, access | flags);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') throw err;
    }
  }
  return null;
}

/** Whether a cowshm process holds the segment `st` (still at `file`); null when it cannot be opened to test. */
function lockedByCowshm(file: string, st: fs.Stats): boolean | null {
  let fd: number | null;
  try {
    fd = openForLock(file);
  } catch {
    return null; // removed or replaced meanwhile
  }
  if (fd === null) return null;
  try {
    const now = fs.fstatSync(fd);
    if (now.dev !== st.dev || now.ino !== st.ino) return null;
    // Held for no longer than two syscalls: a Region opening meanwhile waits that long.
    if (!lockFile(fd, 'exclusive')) return true;
    unlockFile(fd);
    return false;
  } finally {
    fs.closeSync(fd);
  }
}

// How long a Region waits for the exclusive lock `removeSegment(name, ..., { ifOrphan })`
// holds while it checks a segment (one read of /proc: milliseconds).
const HOLD_WAIT_MS = 5000;
const pause = new Int32Array(new SharedArrayBuffer(4));
const holdStat = new Float64Array(7);

/**
 * @internal Takes the shared flock a cowshm holder keeps on a named segment
 * (released by the kernel when the descriptor closes, however the process
 * ends), waiting while a removal holds its exclusive lock, then stats the
 * descriptor. Unless `unlinked` is allowed, a segment whose name went away
 * meanwhile (a removal that found no holder before this one opened it) is
 * ENOENT, as an open a moment later would have been.
 */
export function holdSegment(
  fd: number,
  name: string,
  unlinked: boolean,
  /** An fstat taken after the lock was granted (Region.open takes both in one call). */
  lockedStat?: ReturnType<typeof native.fstat>,
): ReturnType<typeof native.fstat> {
  if (lockedStat !== undefined) return checkNamed(lockedStat, name, unlinked);
  if (!lockFile(fd, 'shared')) {
    const deadline = Date.now() + HOLD_WAIT_MS;
    while (!lockFile(fd, 'shared')) {
      if (Date.now() > deadline) {
        const err = explain(
          systemError(11, 'flock', `/dev/shm/${name}`),
          `another process has held an exclusive flock on the segment for ${HOLD_WAIT_MS / 1000} s; ` +
            'cowshm takes a shared one on every segment it opens, and removes an orphan only under an exclusive one',
        );
        throw err;
      }
      Atomics.wait(pause, 0, 0, 1);
    }
  }
  native.fstatInto(fd, holdStat);
  const h = holdStat;
  const st: ReturnType<typeof native.fstat> = [h[0] as number, h[1] as number, h[2] as number, h[3] as number, h[4] as number, h[5] as number, h[6] as number];
  return checkNamed(st, name, unlinked);
}

function checkNamed(st: ReturnType<typeof native.fstat>, name: string, unlinked: boolean): ReturnType<typeof native.fstat> {
  if (st[6] === 0 && !unlinked) {
    const err = explain(
      systemError(2, 'shm_open', name),
      'the segment was removed while this process opened it, by a removal of orphans that had found no holder',
    );
    throw err;
  }
  return st;
}

/**
 * Lists the segments in /dev/shm with their size, owner, mode and the
 * processes that hold them; then the segments whose name was removed but
 * that some process still maps or holds open. Sorted by name.
 */
export function listSegments(options?: ListSegmentsOptions): Segment[] {
  const o = check.options<ListSegmentsOptions>(options);
  const withHolders = check.boolean(o.holders, '"holders" option', true);

  const found = new Map<string, Found>();
  const dirs = new Map<number, Dir>();
  for (const { path: where, pageSize } of [{ path: SHM_DIR, pageSize: native.pageSize }, ...hugetlbfsMounts()]) {
    try {
      const dev = fs.statSync(where).dev;
      if (dirs.has(dev)) continue; // the same filesystem mounted twice
      const dir: Dir = { path: where, dev, device: mapsDevice(dev), pageSize };
      dirs.set(dev, dir);
      for (const entry of fs.readdirSync(where, { withFileTypes: true })) {
        if (!entry.isFile()) continue; // sem.* are files too; directories and links are not segments
        const st = statOrNull(path.join(where, entry.name));
        if (st === null) continue; // removed meanwhile
        found.set(key(st.dev, st.ino), { dir, name: entry.name, deleted: false, st, holders: new Map() });
      }
    } catch (err) {
      // A hugetlbfs mount this user may not read holds nothing it could open either.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && !(where !== SHM_DIR && code === 'EACCES')) throw err;
    }
  }

  const uninspected: number[] = [];
  if (withHolders && dirs.size > 0) uninspected.push(...findHolders(found, dirs));

  const segments: Segment[] = [...found.values()].map(({ dir, name, deleted, st, holders }) => {
    const list = [...holders.values()].sort((a, b) => a.pid - b.pid);
    for (const h of list) h.fds.sort((a, b) => a - b);
    return {
      name,
      path: `${dir.path}/${name}`,
      pageSize: dir.pageSize,
      deleted,
      size: st.size,
      allocated: st.blocks * 512,
      uid: st.uid,
      owner: userName(st.uid),
      gid: st.gid,
      mode: st.mode & 0o7777,
      dev: st.dev,
      ino: st.ino,
      holders: list,
      locked: null as boolean | null,
      orphan: false,
      uninspected,
      coordination: !deleted && dir.path === SHM_DIR ? inspectCoordination(path.join(dir.path, name), name, st) : null,
    };
  });
  for (const seg of segments) {
    const c = seg.coordination;
    if (c !== null) {
      // Its liveness is its locks: a reader's, a participant's, an opener's.
      seg.locked = c.participants === null ? null : !c.orphan;
      seg.orphan = withHolders && c.orphan;
      continue;
    }
    seg.locked = withHolders && !seg.deleted ? lockedByCowshm(seg.path, found.get(key(seg.dev, seg.ino))?.st as fs.Stats) : null;
    seg.orphan = withHolders && seg.holders.length === 0 && seg.locked === false;
  }
  return segments.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : Number(a.deleted) - Number(b.deleted)));
}

export interface RemoveSegmentOptions {
  /**
   * Remove it only if nothing holds it, and throw instead when something
   * might: `ERR_COWSHM_SEGMENT_HELD` when a cowshm process holds its lock or
   * a process visible in /proc maps it or holds it open,
   * `ERR_COWSHM_HOLDERS_UNKNOWN` when some process could not be inspected
   * (another user's, unless run as root) and so might hold it unseen. The
   * exclusive lock taken for the check keeps cowshm processes from opening
   * the segment until the name is gone. Other programs' holders are seen only
   * through /proc: in this pid namespace, and only if they can be inspected.
   * A coordination file of cross-process snapshots (`cowshm-xproc-<dev>-<ino>`)
   * is removed only when no process holds a lock on it (see `Segment.coordination`).
   * Default false.
   */
  ifOrphan?: boolean;
}

/** What `removeSegment(name, expected, { ifOrphan: true })` throws for a segment that is, or may be, held. */
export interface SegmentHeldError extends Error {
  code: 'ERR_COWSHM_SEGMENT_HELD' | 'ERR_COWSHM_HOLDERS_UNKNOWN';
  path: string;
  /** The processes seen holding it (empty when only its cowshm lock says so). */
  holders: SegmentHolder[];
  /** Whether a cowshm process holds its lock. */
  locked: boolean;
  /** The processes that could not be inspected. */
  uninspected: number[];
}

function heldError(
  code: SegmentHeldError['code'],
  name: string,
  message: string,
  facts: Pick<SegmentHeldError, 'holders' | 'locked' | 'uninspected'>,
): SegmentHeldError {
  return Object.assign(cowshmError(code, message), { path: segmentPath(name), ...facts }) as SegmentHeldError;
}

/** "pid 12 (node), pid 40 (python3)" */
export function describeHolders(holders: SegmentHolder[]): string {
  return holders.map((h) => `pid ${h.pid} (${h.command})`).join(', ');
}

/** Where the segment NAME is: /dev/shm/NAME, else NAME on the first hugetlbfs mount that has it (else /dev/shm/NAME). */
function segmentPath(name: string): string {
  const shm = path.join(SHM_DIR, name);
  if (fs.existsSync(shm)) return shm;
  for (const m of hugetlbfsMounts()) if (fs.existsSync(path.join(m.path, name))) return path.join(m.path, name);
  return shm;
}

/** Removes the name at `file`: shm_unlink in /dev/shm, unlink on hugetlbfs. */
function unlinkSegment(name: string, file: string): void {
  if (file === path.join(SHM_DIR, name)) native.shmUnlink(name);
  else fs.unlinkSync(file);
}

/**
 * Removes a segment's name (shm_unlink; for a named region on huge pages, its file on hugetlbfs). Processes that hold it keep their
 * memory until they let go. With `expected`, the name is removed only if it
 * still leads to that segment (same device and inode): returns false, and
 * removes nothing, when it leads to another one now. With `{ ifOrphan: true }`
 * it is removed only when nothing holds it (see `RemoveSegmentOptions`).
 */
export function removeSegment(name: string, expected?: { dev: number; ino: number }, options?: RemoveSegmentOptions): boolean {
  check.shmName(name);
  let want: { dev: number; ino: number } | undefined;
  if (expected !== undefined) {
    if (expected === null || typeof expected !== 'object')
      throw invalidType('"expected" argument', 'an object with "dev" and "ino"', expected);
    want = {
      dev: check.integer(expected.dev, '"expected.dev" property', 0),
      ino: check.integer(expected.ino, '"expected.ino" property', 0),
    };
  }
  const o = check.options<RemoveSegmentOptions>(options);
  const ifOrphan = check.boolean(o.ifOrphan, '"ifOrphan" option', false);
  const file = segmentPath(name);
  if (!ifOrphan) {
    const st = want === undefined ? null : statOrNull(file); // when it is gone, shm_unlink says ENOENT
    if (want !== undefined && st !== null && (st.dev !== want.dev || st.ino !== want.ino)) return false;
    unlinkSegment(name, file);
    return true;
  }

  // A coordination file's liveness is its locks: the same rule as native/xproc.c's.
  if (coordinationOf(name) !== null && file === path.join(SHM_DIR, name)) return reclaimCoordination(name, want);

  let fd: number | null;
  try {
    fd = openForLock(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw systemError(2, 'shm_unlink', name);
    if (code === 'ELOOP') throw explain(systemError(40, 'open', file), 'a symbolic link, not a segment: remove it by name');
    throw err;
  }
  if (fd === null)
    throw explain(systemError(13, 'open', file), 'this user may not open the segment, so cannot tell whether it is held');
  try {
    const st = fs.fstatSync(fd);
    if (want !== undefined && (st.dev !== want.dev || st.ino !== want.ino)) return false;
    if (!st.isFile())
      throw Object.assign(cowshmError('ERR_COWSHM_NOT_A_FILE', `'${file}' is not a regular file, so not a shared memory segment`), { path: file });
    // From here until the name is gone no cowshm process can take its shared
    // lock: one that opens the segment meanwhile waits, then finds it removed.
    if (!lockFile(fd, 'exclusive'))
      throw heldError('ERR_COWSHM_SEGMENT_HELD', name, `${file} is held by a cowshm process (it holds the segment's lock): not removed`, {
        holders: [], locked: true, uninspected: [],
      });
    // Holders that opened it before the lock was taken, and other programs' holders.
    const dir: Dir = { path: path.dirname(file), dev: st.dev, device: mapsDevice(st.dev), pageSize: native.pageSize };
    const found = new Map<string, Found>([[key(st.dev, st.ino), { dir, name, deleted: false, st, holders: new Map() }]]);
    const uninspected = findHolders(found, new Map([[st.dev, dir]]), fd);
    const holders = [...(found.get(key(st.dev, st.ino))?.holders.values() ?? [])].sort((a, b) => a.pid - b.pid);
    if (holders.length > 0)
      throw heldError('ERR_COWSHM_SEGMENT_HELD', name, `${file} is held by ${describeHolders(holders)}: not removed`, {
        holders, locked: false, uninspected,
      });
    if (uninspected.length > 0) {
      const shown = uninspected.slice(0, 10).join(', ') + (uninspected.length > 10 ? ', ...' : '');
      throw heldError(
        'ERR_COWSHM_HOLDERS_UNKNOWN',
        name,
        `${file} is not held by any cowshm process, but /proc of ${uninspected.length} ` +
          `process${uninspected.length === 1 ? '' : 'es'} could not be read (pid ${shown}) and might hold it: not removed ` +
          '(run as root to inspect them, or remove it by name)',
        { holders, locked: false, uninspected },
      );
    }
    const now = statOrNull(file);
    if (now === null) throw systemError(2, 'shm_unlink', name);
    if (now.dev !== st.dev || now.ino !== st.ino) return false;
    unlinkSegment(name, file);
    return true;
  } finally {
    fs.closeSync(fd); // drops the exclusive lock: waiting openers find the name gone
  }
}
