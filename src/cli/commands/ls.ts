/** `cowshm ls`: the segments in /dev/shm and who holds them. */
import { listSegments, type Segment } from '../../segments';
import { parseArgs, UsageError, type Command } from '../command';
import { table } from '../format';
import { pageSize } from '../..';

function size(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** 'prices', or the region's identity when no segment listed has it (a memfd, a file region, or gone). */
function regionOf(s: Segment, segments: Segment[]): string {
  const c = s.coordination as NonNullable<Segment['coordination']>;
  const region = segments.find((x) => x.coordination === null && x.dev === c.dev && x.ino === c.ino);
  return region !== undefined ? region.name : `a region not in /dev/shm (dev ${c.dev.toString(16)}, inode ${c.ino})`;
}

/** What a coordination file of cross-process snapshots is for, and who takes part. */
function coordinationText(s: Segment, segments: Segment[]): string {
  const c = s.coordination as NonNullable<Segment['coordination']>;
  const of = `coordination file of ${regionOf(s, segments)}`;
  if (c.participants === null) return `${of}: unknown (may not open it)`;
  if (c.orphan) return `orphan (${of}, nobody takes part)`;
  const parts = `${c.participants} participant${c.participants === 1 ? '' : 's'}`;
  return `${of}: ${parts}${c.snapshot ? ', a snapshot live' : ''}${c.valid === false ? ', header not valid' : ''}`;
}

function heldBy(s: Segment, segments: Segment[]): string {
  if (s.coordination !== null) return coordinationText(s, segments);
  if (s.orphan) return 'orphan';
  if (s.holders.length === 0) return s.locked ? 'a cowshm process not visible here (its lock)' : 'unknown (may not open it)';
  return s.holders
    .map((h) => {
      const how = [h.mappings > 0 ? `${h.mappings} map${h.mappings === 1 ? '' : 's'}` : '', h.fds.length > 0 ? `fd ${h.fds.join(',')}` : '']
        .filter(Boolean)
        .join(', ');
      return `${h.pid} ${h.command} (${how})`;
    })
    .join('; ');
}

/**
 * The warning `ls` and `rm --orphans` print when some processes could not be
 * read, and only when it matters: a segment listed as orphan could be held by
 * one of them. Held segments are held whatever else holds them.
 */
export function uninspectedNote(segments: Segment[]): string | null {
  const pids = segments[0]?.uninspected ?? [];
  // A coordination file's liveness is its locks, which /proc does not change.
  if (pids.length === 0 || !segments.some((s) => s.orphan && s.coordination === null)) return null;
  const shown = pids.slice(0, 10).join(', ') + (pids.length > 10 ? ', ...' : '');
  const hint = process.geteuid?.() === 0 ? '' : " Run as root to read other users' processes.";
  return (
    `note: /proc of ${pids.length} process${pids.length === 1 ? '' : 'es'} could not be read (pid ${shown}); ` +
    `a segment another program holds only there would show as orphan.${hint}`
  );
}

export const ls: Command = {
  name: 'ls',
  summary: 'list shared memory segments (/dev/shm) and the processes that hold them',
  usage: [
    'Usage: cowshm ls [--json]',
    '',
    'Lists the POSIX shared memory segments in /dev/shm, and the named regions on',
    'huge pages in hugetlbfs mounts (shown with their page size): size, memory in use,',
    'owner, mode, and the processes that map them (/proc/PID/maps) or hold them',
    'open (/proc/PID/fd), matched by device and inode. A segment nobody holds is',
    "an orphan: its memory stays in use until it is removed (cowshm rm). Segments",
    'whose name was removed but that a process still holds are listed as (deleted).',
    '',
    'cowshm-xproc-<dev>-<ino> files are the coordination files of snapshots with',
    "scope 'processes': HELD BY names their region and how many processes take part",
    '(from the file\'s locks, which the kernel drops when a process dies); one nobody',
    'takes part in is an orphan, left by processes that were killed.',
    '',
    'Options:',
    '  --json  print the segments as JSON (the listSegments() result)',
  ].join('\n'),
  async run(args) {
    const { flags, positional } = parseArgs(args, { flags: ['json'] });
    if (positional.length > 0) throw new UsageError(`unexpected argument '${positional[0]}'`);
    const segments = listSegments();
    if (flags.has('json')) {
      console.log(JSON.stringify(segments, null, 2));
      return 0;
    }
    if (segments.length === 0) {
      console.log('No shared memory segments in /dev/shm.');
      return 0;
    }
    const rows = segments.map((s) => [
      `${s.name}${s.pageSize !== pageSize ? ` (${size(s.pageSize).replace('.00', '')} pages)` : ''}${s.deleted ? ' (deleted)' : ''}`,
      size(s.size),
      size(s.allocated),
      s.owner,
      `0${s.mode.toString(8)}`,
      heldBy(s, segments),
    ]);
    console.log(table(['NAME', 'SIZE', 'IN MEMORY', 'OWNER', 'MODE', 'HELD BY'], rows, ['NAME', 'OWNER', 'MODE']));
    const note = uninspectedNote(segments);
    if (note !== null) console.error(note);
    return 0;
  },
};
