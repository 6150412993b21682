/**
 * The POSIX shared memory segments of this machine (/dev/shm, and the named
 * regions on huge pages in hugetlbfs mounts), and which
 * processes hold them: by mapping (/proc/PID/maps) or by an open descriptor
 * (/proc/PID/fd). Holders are matched by device and inode, so a segment that
 * was removed and created again under the same name is told apart from the
 * old one, and segments whose name is gone but that are still held ("(deleted)"
 * in /proc) are found too.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from './native';
import { invalidType } from './errors';
import * as check from './validate';
import { hugetlbfsMounts } from './hugetlb';

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
  /** `/dev/shm/NAME`, or MOUNT/NAME for a region on huge pages. */
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
  /** No process holds it: none of those that could be inspected (see `uninspected`). */
  orphan: boolean;
  /**
   * Processes whose maps or descriptors could not be read (other users'
   * processes unless run as root, processes that made themselves
   * undumpable): they might hold the segment without it showing here.
   */
  uninspected: number[];
}

export interface ListSegmentsOptions {
  /**
   * Find the processes that hold each segment (reads /proc/PID/maps and
   * /proc/PID/fd of every process). Default true. With false, `holders` is empty and `orphan` false.
   */
  holders?: boolean;
}

/** st_dev as /proc/PID/maps prints it: hex major:minor. */
function mapsDevice(dev: number): string {
  const d = BigInt(dev);
  const major = (d >> 8n) & 0xfffn | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
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

interface Found {
  dir: Dir;
  name: string;
  deleted: boolean;
  st: fs.Stats;
  holders: Map<number, SegmentHolder>;
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/** A directory segments are in: /dev/shm, or a hugetlbfs mount. */
interface Dir {
  path: string;
  dev: number;
  /** st_dev as /proc/PID/maps prints it. */
  device: string;
  pageSize: number;
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
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && !(where !== SHM_DIR && code === 'EACCES')) throw err;
    }
  }
  const byDevice = new Map([...dirs.values()].map((d) => [d.device, d]));

  const uninspected: number[] = [];
  if (withHolders && dirs.size > 0) {
    const processes: Array<{ pid: number; dir: string; maps: string | null; fds: string[] | null; command?: string }> = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      const dir = `/proc/${pid}`;
      const maps = readOrNull(`${dir}/maps`);
      let fds: string[] | null = null;
      try {
        fds = fs.readdirSync(`${dir}/fd`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // exited meanwhile
      }
      // A process that exited after readdir has no maps either: count only those still there.
      if ((maps === null || fds === null) && fs.existsSync(dir)) uninspected.push(pid);
      if (maps !== null || fds !== null) processes.push({ pid, dir, maps, fds });
    }
    const holder = (f: Found, p: (typeof processes)[number]): SegmentHolder => {
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
      for (const fd of p.fds ?? []) {
        const link = `${p.dir}/fd/${fd}`;
        let target: string;
        try {
          target = fs.readlinkSync(link);
        } catch {
          continue;
        }
        if (!target.startsWith('/')) continue; // pipe:, socket:, anon_inode:...
        const st = statOrNull(link);
        const dir = st === null ? undefined : dirs.get(st.dev);
        if (st === null || dir === undefined) continue;
        let f = found.get(key(st.dev, st.ino));
        if (f === undefined) {
          const named = shmNameOf(target, dir);
          if (named === null || !named.deleted || !st.isFile()) continue;
          f = { dir, name: named.name, deleted: true, st, holders: new Map() };
          found.set(key(st.dev, st.ino), f);
        }
        holder(f, p).fds.push(Number(fd));
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
  }

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
      orphan: withHolders && list.length === 0,
      uninspected,
    };
  });
  return segments.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : Number(a.deleted) - Number(b.deleted)));
}

/** Where the segment NAME is: /dev/shm/NAME, else NAME on the first hugetlbfs mount that has it (else /dev/shm/NAME). */
function segmentPath(name: string): string {
  const shm = path.join(SHM_DIR, name);
  if (fs.existsSync(shm)) return shm;
  for (const m of hugetlbfsMounts()) if (fs.existsSync(path.join(m.path, name))) return path.join(m.path, name);
  return shm;
}

/**
 * Removes a segment's name (shm_unlink; for a region on huge pages, its file on hugetlbfs). Processes that hold it keep their
 * memory until they let go. With `expected`, the name is removed only if it
 * still leads to that segment (same device and inode): returns false, and
 * removes nothing, when it leads to another one now.
 */
export function removeSegment(name: string, expected?: { dev: number; ino: number }): boolean {
  check.shmName(name);
  if (expected !== undefined) {
    if (expected === null || typeof expected !== 'object')
      throw invalidType('"expected" argument', 'an object with "dev" and "ino"', expected);
    const dev = check.integer(expected.dev, '"expected.dev" property', 0);
    const ino = check.integer(expected.ino, '"expected.ino" property', 0);
    const st = statOrNull(segmentPath(name)); // when it is gone, unlinking says ENOENT
    if (st !== null && (st.dev !== dev || st.ino !== ino)) return false;
  }
  const file = segmentPath(name);
  if (file === path.join(SHM_DIR, name)) native.shmUnlink(name);
  else fs.unlinkSync(file);
  return true;
}
