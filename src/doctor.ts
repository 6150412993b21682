/**
 * What this machine allows and what cowshm will use: the facts behind
 * `cowshm doctor`, as plain data.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Region } from './region';
import { native } from './native';
import { snapshotProbe } from './snapshot';
import { hugePools, hugetlbfsMounts, type HugePool, type HugetlbfsMount } from './hugetlb';
import { waitAsyncPath } from './atomics';
import { listCoordination, type CoordinationFile } from './coordination';

export interface DoctorReport {
  kernel: string;
  node: string;
  pageSize: number;
  snapshots: {
    backend: 'userfaultfd' | 'mprotect';
    reason: string;
    /** COWSHM_SNAPSHOT_BACKEND, if set. */
    forced: string | null;
    userfaultfd: { available: boolean; reason: string; writeProtectShmem: boolean; writeProtectUnpopulated: boolean };
    /** vm.unprivileged_userfaultfd (null where unreadable). */
    unprivilegedUserfaultfd: number | null;
    /** The Seccomp field of /proc/self/status: 0 none, 1 strict, 2 filter (null where absent). */
    seccomp: number | null;
    seccompFilters: number | null;
  };
  /** How `atomics.waitAsync` waits in this thread (see docs/api.md, atomics). */
  waitAsync: { path: 'io_uring' | 'threads'; reason: string };
  devShm: { path: string; size: number; free: number } | { path: string; error: string };
  maxMapCount: number | null;
  mappingsInUse: number;
  pageFrames: { readable: boolean; reason: string };
  hugePages: {
    transparent: Record<string, string>;
    hugetlbPageSize: number | null;
    hugetlbTotal: number | null;
    /** The hugetlb pools, one per page size (`Region.create({ pageSize })` takes pages from them). */
    pools: HugePool[];
    /** Mounted hugetlbfs: where named regions on huge pages live. */
    mounts: HugetlbfsMount[];
  };
  /** The largest single view (and snapshot) this Node.js allows. */
  maxViewLength: number;
  /** Snapshots with scope 'processes': what they are frozen against, and the coordination files in /dev/shm. */
  crossProcess: {
    covered: string;
    notCovered: string;
    /** One per region that has (or had: `orphan`) processes taking part. */
    coordinationFiles: CoordinationFile[];
  };
}

const COVERED =
  "writes through cowshm write views, from any thread, in every process that opened the region for writing with crossProcess: true (also those that open it while a snapshot is live)";
const NOT_COVERED =
  'writers that are not such processes: other languages (Python, C), pwrite(2) and fs.writeSync on a descriptor, cowshm regions opened without crossProcess; a snapshot lists the ones /proc shows in unregisteredHolders';

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function readNumber(file: string): number | null {
  const t = readText(file);
  if (t === null) return null;
  const n = Number(t.trim());
  return Number.isFinite(n) ? n : null;
}

function statusField(name: string): number | null {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(readText('/proc/self/status') ?? '');
  return m ? Number(m[1]) : null;
}

/** The [brackets] choice of a /sys/kernel/mm/transparent_hugepage file, or its whole text. */
function sysChoice(text: string): string {
  const m = /\[([^\]]+)\]/.exec(text);
  return m ? (m[1] as string) : text.trim();
}

/** Whether /proc/self/pagemap shows page frame numbers (root or CAP_SYS_ADMIN), tried on a page of our own. */
function pageFrames(): { readable: boolean; reason: string } {
  const r = Region.create({ size: native.pageSize });
  let fd: number | undefined;
  try {
    const v = r.map();
    new Uint8Array(v.buffer)[0] = 1;
    fd = fs.openSync('/proc/self/pagemap', 'r');
    const entry = Buffer.alloc(8);
    fs.readSync(fd, entry, 0, 8, (v.address / native.pageSize) * 8);
    const value = entry.readBigUInt64LE();
    const present = (value >> 63n) & 1n;
    const pfn = value & ((1n << 55n) - 1n);
    if (present === 0n) return { readable: false, reason: 'a page just written shows as not present' };
    return pfn !== 0n
      ? { readable: true, reason: '/proc/self/pagemap shows page frame numbers' }
      : { readable: false, reason: '/proc/self/pagemap hides page frame numbers (needs CAP_SYS_ADMIN)' };
  } catch (err) {
    return { readable: false, reason: `cannot read /proc/self/pagemap: ${(err as Error).message}` };
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    r.close();
  }
}

function hugePages(): DoctorReport['hugePages'] {
  const dir = '/sys/kernel/mm/transparent_hugepage';
  const transparent: Record<string, string> = {};
  for (const name of ['enabled', 'defrag', 'shmem_enabled', 'use_zero_page', 'hpage_pmd_size']) {
    const t = readText(`${dir}/${name}`);
    if (t !== null) transparent[name] = sysChoice(t);
  }
  const meminfo = readText('/proc/meminfo') ?? '';
  const size = /^Hugepagesize:\s+(\d+) kB/m.exec(meminfo);
  const total = /^HugePages_Total:\s+(\d+)/m.exec(meminfo);
  return {
    transparent,
    hugetlbPageSize: size ? Number(size[1]) * 1024 : null,
    hugetlbTotal: total ? Number(total[1]) : null,
    pools: hugePools(),
    mounts: hugetlbfsMounts(),
  };
}

/** Looks at this machine and process. */
export function doctor(): DoctorReport {
  let devShm: DoctorReport['devShm'];
  try {
    const st = fs.statfsSync('/dev/shm');
    devShm = { path: '/dev/shm', size: st.blocks * st.bsize, free: st.bavail * st.bsize };
  } catch (err) {
    devShm = { path: '/dev/shm', error: (err as Error).message };
  }
  const maps = readText('/proc/self/maps') ?? '';
  return {
    kernel: os.release(),
    node: process.version,
    pageSize: native.pageSize,
    snapshots: {
      backend: snapshotProbe.backend,
      reason: snapshotProbe.reason,
      forced: snapshotProbe.forced === '' ? null : snapshotProbe.forced,
      userfaultfd: {
        available: snapshotProbe.userfaultfd,
        reason: snapshotProbe.userfaultfdReason,
        writeProtectShmem: snapshotProbe.wpShmem,
        writeProtectUnpopulated: snapshotProbe.wpUnpopulated,
      },
      unprivilegedUserfaultfd: readNumber('/proc/sys/vm/unprivileged_userfaultfd'),
      seccomp: statusField('Seccomp'),
      seccompFilters: statusField('Seccomp_filters'),
    },
    waitAsync: waitAsyncPath(),
    devShm,
    maxMapCount: readNumber('/proc/sys/vm/max_map_count'),
    mappingsInUse: maps.split('\n').filter((l) => l.length > 0).length,
    pageFrames: pageFrames(),
    hugePages: hugePages(),
    maxViewLength: Region.maxViewLength,
    crossProcess: { covered: COVERED, notCovered: NOT_COVERED, coordinationFiles: listCoordination() },
  };
}
