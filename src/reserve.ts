/**
 * How much memory a reserved region may take. fallocate on shared memory
 * allocates every page before it returns; on a memfd (whose filesystem has no
 * size limit) or on a /dev/shm larger than what is free, asking for more than
 * the machine can give does not fail: the OOM killer ends processes,
 * possibly other ones, until the allocation fits. So a reservation larger
 * than the memory available is refused before anything is created.
 */
import * as fs from 'node:fs';
import { explain, systemError, type SystemError } from './errors';

const ENOMEM = 12;

// This process's cgroup v2 directory and its memory.max, read once: the
// limit is set when a container starts; only the usage moves.
let cgroup: { dir: string; max: number } | null | undefined;

function cgroupLimit(): { dir: string; max: number } | null {
  if (cgroup !== undefined) return cgroup;
  cgroup = null;
  try {
    const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
    if (line !== undefined) {
      const dir = `/sys/fs/cgroup${line.slice(3) === '/' ? '' : line.slice(3)}`;
      const max = fs.readFileSync(`${dir}/memory.max`, 'utf8').trim();
      if (max !== 'max') cgroup = { dir, max: Number(max) };
    }
  } catch {
    // cgroup v1, or no memory controller here: the system-wide figure stands.
  }
  return cgroup;
}

/** Bytes that can still be allocated: MemAvailable + SwapFree, within this process's cgroup (v2) limit. */
export function availableMemory(): number {
  let available = Number.POSITIVE_INFINITY;
  try {
    const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
    const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(meminfo)?.[1] ?? NaN) * 1024;
    const total = kib('MemAvailable') + (Number.isNaN(kib('SwapFree')) ? 0 : kib('SwapFree'));
    if (!Number.isNaN(total)) available = total;
  } catch {
    // No /proc/meminfo: nothing to compare with; fallocate decides.
  }
  const limit = cgroupLimit();
  if (limit !== null) {
    try {
      const current = Number(fs.readFileSync(`${limit.dir}/memory.current`, 'utf8').trim());
      available = Math.min(available, Math.max(0, limit.max - current));
    } catch {
      // The cgroup went away: nothing better to compare with.
    }
  }
  return available;
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

/**
 * Throws ENOMEM (syscall 'fallocate', path `target`) when reserving `size`
 * bytes of shared memory would exceed the memory available.
 */
export function checkReservable(size: number, target: string | undefined): void {
  const available = availableMemory();
  if (size <= available) return;
  const err: SystemError = systemError(ENOMEM, 'fallocate', target);
  throw explain(
    err,
    `reserving ${formatBytes(size)} needs more memory than is available (${formatBytes(available)}: ` +
      'MemAvailable + SwapFree, within the cgroup limit); allocating it would wake the OOM killer. ' +
      'Pass reserve: false for a sparse region whose pages are allocated as they are written',
  );
}
