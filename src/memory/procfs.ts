/**
 * Reading /proc/PID files, with errors that say what went wrong: a process
 * that does not exist is ESRCH, one this user may not inspect is EACCES. And
 * the one walk of every process's maps and descriptors (`listProcesses`,
 * `descriptorsOf`) that finds who holds a segment or can write a region.
 */
import * as fs from 'node:fs';
import { explain, systemError, type SystemError } from '../errors';
import * as check from '../validate';

const ESRCH = 3;
const EACCES = 13;

/** Validates a PID argument; `undefined` means this process. */
export function pidArgument(pid: unknown, what = '"pid" argument'): number {
  if (pid === undefined) return process.pid;
  return check.integer(pid, what, 1, 2 ** 31 - 1);
}

export function procPath(pid: number, file: string): string {
  return `/proc/${pid === process.pid ? 'self' : pid}/${file}`;
}

function ownerOf(pid: number): string {
  try {
    return `uid ${fs.statSync(`/proc/${pid}`).uid}`;
  } catch {
    return 'another user';
  }
}

/** Turns the error of a /proc/PID access into ESRCH or EACCES with a readable message. */
export function procError(err: unknown, pid: number, file: string): unknown {
  const e = err as SystemError;
  const target = procPath(pid, file);
  if (e?.code === 'ENOENT' || e?.code === 'ESRCH') {
    if (!fs.existsSync(`/proc/${pid}`))
      return explain(systemError(ESRCH, 'open', target), `there is no process with PID ${pid}`);
    const gone = exitedProcess(pid);
    if (gone !== null) return explain(systemError(ESRCH, 'open', target), gone);
    // The kernel says ESRCH when the process lost its memory while this read it: it is exiting.
    if (e.code === 'ESRCH')
      return explain(systemError(ESRCH, 'open', target), `process ${pid} is exiting: it has no memory left to read`);
    return explain(systemError(2, 'open', target), `this kernel has no /proc/PID/${file}`);
  }
  if (e?.code === 'EACCES' || e?.code === 'EPERM') {
    // A zombie has no memory, so the kernel's access check finds nothing it may let others read.
    const gone = exitedProcess(pid);
    if (gone !== null) return explain(systemError(ESRCH, 'open', target), gone);
    const who = process.geteuid?.();
    return explain(
      systemError(EACCES, 'open', target),
      `process ${pid} belongs to ${ownerOf(pid)}; user ${who} may not read its ${file}: ` +
        'run as that user or as root',
    );
  }
  return err;
}

/**
 * Why process `pid` has no memory to show although /proc/PID is there, or
 * null while it runs: a zombie (exited, its parent has not reaped it yet)
 * reads as no mappings at all and refuses its pagemap with ESRCH.
 */
export function exitedProcess(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return `process ${pid} has exited`;
  }
  // "PID (comm) S ...": comm may itself contain ')' and spaces.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z') return `process ${pid} has exited: it is a zombie, not yet reaped by its parent; its memory is gone`;
  if (state === 'X') return `process ${pid} has exited; its memory is gone`;
  return null;
}

export function readProcText(pid: number, file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(procPath(pid, file), 'utf8');
  } catch (err) {
    throw procError(err, pid, file);
  }
  // Only a process without memory has empty maps: a kernel thread, or one that exited.
  if (text.length === 0 && /^(smaps|smaps_rollup|maps)$/.test(file)) {
    const gone = exitedProcess(pid);
    if (gone !== null) throw explain(systemError(ESRCH, 'read', procPath(pid, file)), gone);
  }
  return text;
}

export function openProc(pid: number, file: string): number {
  try {
    return fs.openSync(procPath(pid, file), 'r');
  } catch (err) {
    throw procError(err, pid, file);
  }
}

/** Reads exactly `length` bytes at `position` (fewer only at the end of the file). */
export function preadFully(fd: number, into: Uint8Array, position: bigint): number {
  let done = 0;
  while (done < into.byteLength) {
    const n = fs.readSync(fd, into, done, into.byteLength - done, position + BigInt(done));
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** st_dev as /proc/PID/maps and smaps print it: hex major:minor (SmapsEntry.device). */
export function mapsDevice(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}
/** A file's text, or null when it can't be read. */
export function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** A process as /proc shows it: its maps and descriptor numbers, each null when unreadable. */
export interface ProcessEntry {
  pid: number;
  dir: string;
  maps: string | null;
  fds: string[] | null;
  command?: string;
}

/**
 * Every process in /proc with readable maps or descriptors, and the pids of
 * those whose maps or descriptors could not be read (other users' processes
 * unless root, undumpable ones): they might hold anything.
 */
export function listProcesses(): { processes: ProcessEntry[]; uninspected: number[] } {
  const processes: ProcessEntry[] = [];
  const uninspected: number[] = [];
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
  return { processes, uninspected };
}

/** A descriptor of a process that names a file (not a pipe, socket or anonymous inode). */
export interface Descriptor {
  fd: number;
  /** Where /proc/PID/fd/N leads, as the kernel prints it: ' (deleted)' ends the path of a file whose name was removed. */
  target: string;
  /** The file's stat, through /proc/PID/fd/N: it works for removed files too. */
  st: fs.Stats;
}

/**
 * The descriptors of a process (from `listProcesses`) that name files, each
 * with the file's identity. Descriptors closed meanwhile, and those whose
 * file can't be stat'ed, are left out.
 */
export function descriptorsOf(p: ProcessEntry): Descriptor[] {
  const out: Descriptor[] = [];
  for (const fd of p.fds ?? []) {
    const link = `${p.dir}/fd/${fd}`;
    let target: string;
    let st: fs.Stats;
    try {
      target = fs.readlinkSync(link);
      if (!target.startsWith('/')) continue; // pipe:, socket:, anon_inode:...
      st = fs.statSync(link);
    } catch {
      continue;
    }
    out.push({ fd: Number(fd), target, st });
  }
  return out;
}
