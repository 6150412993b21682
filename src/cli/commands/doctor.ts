/** `cowshm doctor`: what this machine allows and what cowshm will use. */
import { parseArgs, UsageError, type Command } from '../command';
import { doctor, type DoctorReport } from '../../doctor';
import { bytes } from '../format';

const seccompNames = ['none', 'strict', 'filter'];

function text(r: DoctorReport): string {
  const s = r.snapshots;
  const shm = 'error' in r.devShm ? `unavailable (${r.devShm.error})` : `${bytes(r.devShm.size)}, ${bytes(r.devShm.free)} free`;
  const rows: Array<[string, string]> = [
    ['kernel', r.kernel],
    ['node', r.node],
    ['page size', `${r.pageSize} bytes`],
    ['snapshot backend', `${s.backend}${s.forced ? ` (forced by COWSHM_SNAPSHOT_BACKEND=${s.forced})` : ''}`],
    ['  why', s.reason],
    ['  userfaultfd', s.userfaultfd.available ? 'available' : 'unavailable'],
    ['  write-protect shmem', s.userfaultfd.writeProtectShmem ? `yes${s.userfaultfd.writeProtectUnpopulated ? ' (with WP_UNPOPULATED)' : ''}` : 'no'],
    ['  vm.unprivileged_userfaultfd', s.unprivilegedUserfaultfd === null ? 'unknown' : String(s.unprivilegedUserfaultfd)],
    ['  seccomp', s.seccomp === null ? 'unknown' : `${seccompNames[s.seccomp] ?? s.seccomp}${s.seccompFilters ? ` (${s.seccompFilters} filters)` : ''}`],
    ['waitAsync', `${r.waitAsync.path}${r.waitAsync.path === 'threads' ? ` (${r.waitAsync.reason})` : ''}`],
    ['/dev/shm', shm],
    ['vm.max_map_count', r.maxMapCount === null ? 'unknown' : `${r.maxMapCount} (${r.mappingsInUse} in use by this process)`],
    ['page frames readable', `${r.pageFrames.readable ? 'yes' : 'no'}: ${r.pageFrames.reason}`],
    ['transparent huge pages', Object.entries(r.hugePages.transparent).map(([k, v]) => `${k}=${v}`).join(', ') || 'not supported'],
    ['hugetlb pages', r.hugePages.hugetlbPageSize === null ? 'unknown' : `${r.hugePages.hugetlbTotal ?? 0} of ${bytes(r.hugePages.hugetlbPageSize)} (the default size)`],
    ...r.hugePages.pools.map((p): [string, string] => [
      `  pool of ${bytes(p.pageSize)} pages`,
      `${p.total} total, ${p.free} free, ${p.reserved} reserved, ${p.surplus} surplus (${p.control})`,
    ]),
    ['hugetlbfs mounts', r.hugePages.mounts.length === 0
      ? 'none (named regions on huge pages need one: mount -t hugetlbfs -o pagesize=2M none /dev/hugepages)'
      : r.hugePages.mounts.map((m) => `${m.path} (${bytes(m.pageSize)} pages)`).join(', ')],
    ['largest view', `${bytes(r.maxViewLength)} (${r.maxViewLength} bytes, Region.maxViewLength)`],
    ["snapshots of scope 'processes'", ''],
    ['  covered', r.crossProcess.covered],
    ['  not covered', r.crossProcess.notCovered],
    ['  coordination files', r.crossProcess.coordinationFiles.length === 0 ? 'none in /dev/shm' : `${r.crossProcess.coordinationFiles.length} in /dev/shm`],
    ...r.crossProcess.coordinationFiles.map((c): [string, string] => [
      `    ${c.name}`,
      `region ${c.region ?? '(not in /dev/shm: a memfd, a file, or gone)'}, ` +
        (c.participants === null
          ? 'unknown (may not open it)'
          : c.orphan
            ? 'orphan: nobody takes part (cowshm rm --orphans removes it)'
            : `${c.participants} participant${c.participants === 1 ? '' : 's'}${c.snapshot ? ', a snapshot live' : ''}`),
    ]),
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'show what this machine allows and what cowshm will use',
  usage: [
    'Usage: cowshm doctor [--json]',
    '',
    'Prints the kernel and Node.js versions, the snapshot backend and why it was',
    'chosen (userfaultfd, write-protection of shmem, seccomp), /dev/shm size and free',
    'space, vm.max_map_count, whether page frames are readable, transparent huge',
    'page settings, the hugetlb pools (per page size: total, free, reserved, surplus)',
    'and hugetlbfs mounts, the largest single view, and for snapshots with scope',
    "'processes' what they are frozen against (and what not: writers that are not",
    'cowshm processes taking part, such as Python, C or pwrite) and the coordination',
    'files in /dev/shm with their region and how many processes take part.',
    '',
    'Options:',
    '  --json  print the same facts as one JSON object',
  ].join('\n'),
  async run(args: string[]): Promise<number> {
    const { flags, positional } = parseArgs(args, { flags: ['json'] });
    if (positional.length > 0) throw new UsageError(`unexpected argument '${positional[0]}'`);
    const report = doctor();
    console.log(flags.has('json') ? JSON.stringify(report, null, 2) : text(report));
    return 0;
  },
};
