/**
 * Reading /proc/PID files, with errors that say what went wrong: a process
 * that does not exist is ESRCH, one this user may not inspect is EACCES.
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
