/**
 * The coordination files of cross-process snapshots (native/xproc.c),
 * /dev/shm/cowshm-xproc-<dev>-<ino>, seen from outside: which region each
 * belongs to, whether anyone still takes part, reclaiming those nobody
 * holds, and which processes can write a region without taking part.
 *
 * Liveness goes through the file's OFD locks only, never pids: a reader
 * holds byte `readerLock` for its snapshot's life, each participant its slot
 * byte, and whoever creates, joins or removes the file holds `initLock`
 * meanwhile. The kernel drops a lock when its holder dies, so a file on
 * which no lock is held was left by processes that died: the next open of
 * its region starts it over, and `reclaimCoordination` removes it under the
 * same rule (with `initLock` held, so no process can join in between).
 */
import * as fs from 'node:fs';
import { native } from './native';
import { cowshmError, explain, invalidValue, systemError } from './errors';
import { rangeHeld } from './locks';
import { descriptorsOf, listProcesses, mapsDevice, readOrNull } from './memory/procfs';

const layout = native.xprocLayout;
const SHM_DIR = '/dev/shm';
const NAME = /^cowshm-xproc-([0-9a-f]{1,16})-([0-9a-f]{1,16})$/;

/** The coordination file's name for the region (dev, ino). */
export function coordinationName(dev: number, ino: number): string {
  return `cowshm-xproc-${dev.toString(16)}-${ino.toString(16)}`;
}

/** The region identity a coordination file's name stands for, or null when the name is not one. */
export function coordinationOf(name: string): { dev: number; ino: number } | null {
  const m = NAME.exec(name);
  if (m === null) return null;
  const dev = Number.parseInt(m[1] as string, 16);
  const ino = Number.parseInt(m[2] as string, 16);
  return Number.isSafeInteger(dev) && Number.isSafeInteger(ino) ? { dev, ino } : null;
}

/** A coordination file, as `cowshm ls` shows it. */
export interface Coordination {
  /** The region's device and inode (from the file's name): a segment of `listSegments()` with these is its region. */
  dev: number;
  ino: number;
  /**
   * Whether the file starts with a coordination header (false: garbage, or a
   * header of another version; the next open of its region starts an
   * unheld one over). null when this user may not open it.
   */
  valid: boolean | null;
  /** The region's size in bytes as the header records it (null unless `valid`). */
  regionSize: number | null;
  /** Processes taking part (their slot lock is held). null when this user may not open it. */
  participants: number | null;
  /** A snapshot with scope 'processes' is being taken or is live (the reader lock is held). */
  snapshot: boolean | null;
  /**
   * No process holds any lock on it: left by processes that died (kill -9).
   * `cowshm rm --orphans` removes it; the next open of its region starts it over.
   */
  orphan: boolean;
}

function openNoFollow(file: string, access: number): number {
  return fs.openSync(file, access | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
}

/**
 * What the coordination file at `file` (named NAME) says about its region,
 * or null when NAME is not a coordination file's name or the file is not a
 * regular file. `st`: the file's stat, to make sure the file read is that one.
 */
export function inspectCoordination(file: string, name: string, st: fs.Stats): Coordination | null {
  const id = coordinationOf(name);
  if (id === null || !st.isFile()) return null;
  const unknown: Coordination = { ...id, valid: null, regionSize: null, participants: null, snapshot: null, orphan: false };
  let fd: number;
  try {
    fd = openNoFollow(file, fs.constants.O_RDONLY);
  } catch {
    return unknown; // not ours to open, or removed meanwhile
  }
  try {
    const now = fs.fstatSync(fd);
    if (now.dev !== st.dev || now.ino !== st.ino) return unknown;
    const head = Buffer.alloc(16);
    const valid = fs.readSync(fd, head, 0, 16, 0) === 16 && head.readUInt32LE(0) === layout.magic && head.readUInt32LE(4) === layout.version;
    let participants = 0;
    for (let i = 0; i < layout.maxParticipants; i++) if (rangeHeld(fd, layout.slotLock + i, 1)) participants++;
    return {
      ...id,
      valid,
      regionSize: valid ? Number(head.readBigUInt64LE(8)) : null,
      participants,
      snapshot: rangeHeld(fd, layout.readerLock, 1),
      orphan: !rangeHeld(fd, 0, 0),
    };
  } finally {
    fs.closeSync(fd);
  }
}

/** What `reclaimCoordination` throws for a file that some process holds. */
export interface CoordinationHeldError extends Error {
  code: 'ERR_COWSHM_SEGMENT_HELD';
  path: string;
  /** Processes taking part when it was checked. */
  participants: number;
  /** Whether a snapshot with scope 'processes' was live. */
  snapshot: boolean;
}

// How long a removal waits for a process that is creating, joining or
// leaving the file (it holds initLock for a few syscalls).
const INIT_WAIT_MS = 2000;

/**
 * Removes the coordination file NAME from /dev/shm if no process holds a lock
 * on it, by the rule a last user leaving follows (native/xproc.c,
 * `remove_if_unheld`, the one implementation of it): with `initLock` held, so
 * no process can open the file and join or read meanwhile, and only while
 * the name still leads to the file opened (and, with `expected`, to that
 * one: returns false, and removes nothing, when it leads to another file
 * now). A process that opened the file before and waits for `initLock` finds
 * the name gone and creates a new one. Throws ERR_COWSHM_SEGMENT_HELD when
 * some process takes part or reads.
 */
export function reclaimCoordination(name: string, expected?: { dev: number; ino: number }): boolean {
  if (coordinationOf(name) === null)
    throw invalidValue('"name" argument', 'the name of a coordination file (cowshm-xproc-<dev>-<ino>, hex)', name);
  const file = `${SHM_DIR}/${name}`;
  let fd: number;
  try {
    fd = openNoFollow(file, fs.constants.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM')
      throw explain(systemError(13, 'open', file), 'removing a coordination file needs write access to it (its locks are write locks): run as its owner or root');
    throw err;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile())
      throw Object.assign(cowshmError('ERR_COWSHM_NOT_A_FILE', `'${file}' is not a regular file, so not a coordination file`), { path: file });
    if (expected !== undefined && (st.dev !== expected.dev || st.ino !== expected.ino)) return false;
    const outcome = native.xprocReclaim(fd, file, INIT_WAIT_MS);
    if (outcome === 1) throw held(file, fd, null);
    if (outcome === 3) throw held(file, fd, `a process has been joining it for ${INIT_WAIT_MS / 1000} s (stopped while joining?)`);
    return outcome === 0;
  } finally {
    fs.closeSync(fd); // drops every lock: a process waiting to join finds the name gone
  }
}

function held(file: string, fd: number, why: string | null): CoordinationHeldError {
  let participants = 0;
  for (let i = 0; i < layout.maxParticipants; i++) if (rangeHeld(fd, layout.slotLock + i, 1)) participants++;
  const snapshot = rangeHeld(fd, layout.readerLock, 1);
  const who = [
    participants > 0 ? `${participants} participant${participants === 1 ? '' : 's'}` : '',
    snapshot ? 'a live snapshot' : '',
  ].filter(Boolean).join(' and ');
  const message =
    why !== null
      ? `${file} is in use: ${why}: not removed`
      : `${file} is in use by ${who || 'a process holding a lock on it'} of cross-process snapshots: not removed (the last one to leave removes it)`;
  return Object.assign(cowshmError('ERR_COWSHM_SEGMENT_HELD', message), { path: file, participants, snapshot }) as CoordinationHeldError;
}

/** Who can write a region without taking part in its cross-process snapshots. */
export interface UnregisteredWriters {
  /** Pids of processes that can write the region and do not take part, ascending. */
  pids: number[];
  /** Pids of processes whose /proc files could not be read: they might be such holders. */
  uninspected: number[];
}

const O_ACCMODE = 3;
const O_PATH = 0o10000000;

/** The flags of /proc/PID/fdinfo/N (octal), or null. */
function fdFlags(info: string): number | null {
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  return m === null ? null : Number.parseInt(m[1] as string, 8);
}

/** Whether an fdinfo's lock lines show a write lock on one of the participants' slot bytes. */
function holdsSlot(info: string): boolean {
  for (const m of info.matchAll(/^lock:\s.*\bWRITE\s+\S+\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$/gm)) {
    const start = Number(m[1]);
    const end = m[2] === 'EOF' ? Number.MAX_SAFE_INTEGER : Number(m[2]);
    if (end >= layout.slotLock && start < layout.slotLock + layout.maxParticipants) return true;
  }
  return false;
}

/**
 * The processes this one can see (in /proc) that can write the region
 * (dev, ino) but do not take part in its cross-process snapshots. A process
 * can write it when it has a shared mapping of it that is writable, or that
 * may be made writable (VmFlags `mw` in /proc/PID/smaps: opened read-write),
 * or a descriptor of it open for writing (`pwrite`). It takes part when one
 * of its descriptors of the coordination file holds a participant's slot
 * lock (the kernel lists a descriptor's locks in /proc/PID/fdinfo): no value
 * from the shared file is believed. Read-only holders cannot write, so they
 * are not listed; nor are private (copy-on-write) mappings, which never reach
 * the region.
 */
export function unregisteredWriters(dev: number, ino: number): UnregisteredWriters {
  const device = mapsDevice(dev);
  let coord: fs.Stats | null = null;
  try {
    coord = fs.statSync(`${SHM_DIR}/${coordinationName(dev, ino)}`);
  } catch {
    // No coordination file: no process takes part.
  }
  const pids: number[] = [];
  const { processes, uninspected } = listProcesses();
  for (const p of processes) {
    const { pid, dir, maps } = p;
    let writes = false;
    let takesPart = false;
    const mayWrite: string[] = []; // shared mappings without 'w' now: ask smaps whether they may get it
    for (const line of maps === null ? [] : maps.split('\n')) {
      const m = /^([0-9a-f]+-[0-9a-f]+) (\S{4}) \S+ (\S+) (\d+)/.exec(line);
      if (m === null || m[3] !== device || Number(m[4]) !== ino) continue;
      const perms = m[2] as string;
      if (perms[3] !== 's') continue;
      if (perms[1] === 'w') writes = true;
      else mayWrite.push(m[1] as string);
    }
    if (!writes && mayWrite.length > 0) {
      const smaps = readOrNull(`${dir}/smaps`) ?? '';
      for (const range of mayWrite) {
        const at = smaps.indexOf(`\n${range} `);
        const start = at < 0 && smaps.startsWith(`${range} `) ? 0 : at;
        if (start < 0) continue;
        const flags = /^VmFlags:(.*)$/m.exec(smaps.slice(start + 1));
        if (flags !== null && / mw\b/.test(flags[1] as string)) writes = true;
      }
    }
    for (const { fd, st } of descriptorsOf(p)) {
      const region = st.dev === dev && st.ino === ino;
      const coordination = coord !== null && st.dev === coord.dev && st.ino === coord.ino;
      if (!region && !coordination) continue;
      const info = readOrNull(`${dir}/fdinfo/${fd}`);
      if (info === null) continue;
      if (region) {
        const flags = fdFlags(info);
        if (flags !== null && (flags & O_PATH) === 0 && (flags & O_ACCMODE) !== 0) writes = true;
      } else if (holdsSlot(info)) takesPart = true;
    }
    if (writes && !takesPart) pids.push(pid);
  }
  return { pids: pids.sort((a, b) => a - b), uninspected: uninspected.sort((a, b) => a - b) };
}

/** A coordination file in /dev/shm, with its region's name when the region is a segment there. */
export interface CoordinationFile extends Coordination {
  /** The file's name in /dev/shm. */
  name: string;
  /** The region's segment name in /dev/shm, or null (a memfd, a file region, a region on hugetlbfs, or gone). */
  region: string | null;
}

/** The coordination files in /dev/shm, sorted by name. */
export function listCoordination(): CoordinationFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(SHM_DIR);
  } catch {
    return [];
  }
  const stats = new Map<string, fs.Stats>();
  for (const name of names) {
    try {
      stats.set(name, fs.lstatSync(`${SHM_DIR}/${name}`));
    } catch {
      // removed meanwhile
    }
  }
  const out: CoordinationFile[] = [];
  for (const [name, st] of stats) {
    const c = inspectCoordination(`${SHM_DIR}/${name}`, name, st);
    if (c === null) continue;
    let region: string | null = null;
    for (const [other, o] of stats) if (o.isFile() && o.dev === c.dev && o.ino === c.ino) region = other;
    out.push({ name, region, ...c });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : 1));
}
