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
    return explain(systemError(2, 'open', target), `this kernel has no /proc/PID/${file}`);
  }
  if (e?.code === 'EACCES' || e?.code === 'EPERM') {
    const who = process.geteuid?.();
    return explain(
      systemError(EACCES, 'open', target),
      `process ${pid} belongs to ${ownerOf(pid)}; user ${who} may not read its ${file}: ` +
        'run as that user or as root',
    );
  }
  return err;
}

export function readProcText(pid: number, file: string): string {
  try {
    return fs.readFileSync(procPath(pid, file), 'utf8');
  } catch (err) {
    throw procError(err, pid, file);
  }
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
