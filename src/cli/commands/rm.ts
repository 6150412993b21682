/** `cowshm rm`: remove segments by name, or every orphan. */
import { describeHolders, listSegments, removeSegment, type Segment } from '../../segments';
import { coordinationOf, reclaimCoordination } from '../../coordination';
import { parseArgs, UsageError, type Command } from '../command';

export const rm: Command = {
  name: 'rm',
  summary: 'remove shared memory segments by name, or every orphan (--orphans)',
  usage: [
    'Usage: cowshm rm NAME... [--dry-run]',
    '       cowshm rm --orphans [NAME...] [--dry-run]',
    '',
    'NAME is a segment name as cowshm ls shows it, or its path /dev/shm/NAME.',
    'Removes segments from /dev/shm (shm_unlink). Processes that hold a removed',
    'segment keep its memory until they let go; nobody can open it by name again.',
    '',
    'Options:',
    '  --orphans  remove only segments nothing holds (see cowshm ls); with names,',
    '             only those of them, and a held one is an error',
    '  --dry-run  say what would be removed, remove nothing',
    '',
    'How --orphans tells that a segment is held: every cowshm process keeps a',
    'shared lock (flock) on each segment it has open, which the kernel drops when',
    'the process exits, and --orphans removes a segment only under an exclusive',
    'lock, which it holds until the name is gone. That sees cowshm holders of any',
    'user and in any pid namespace. Other programs are seen only through /proc',
    '(/proc/PID/fd and /proc/PID/maps): only processes of this pid namespace, and',
    "only those this user may inspect (its own, or everyone's as root). While any",
    'process cannot be inspected, a segment no cowshm process holds is not removed',
    '(it might be held there): run as root, or remove it by name.',
    '',
    'Coordination files of cross-process snapshots (cowshm-xproc-<dev>-<ino>) are',
    'removed only when no process holds a lock on them, by name too: every reader',
    'and participant holds one for as long as it takes part, and the kernel drops it',
    'when the process dies. The check and the removal happen under the lock that',
    'processes take to join, so none can join in between; the next open of a region',
    'also starts its orphaned coordination file over.',
    '',
    'Exit status: 0 when everything asked for was removed, 1 when some name could',
    'not be (each is reported), 2 for a usage error.',
  ].join('\n'),
  async run(args) {
    const parsed = parseArgs(args, { flags: ['orphans', 'dry-run'] });
    const flags = parsed.flags;
    // Names as /dev/shm shows them, or as paths into it.
    const positional = parsed.positional.map((p) => (p.startsWith('/dev/shm/') ? p.slice('/dev/shm/'.length) : p));
    const dryRun = flags.has('dry-run');
    const verb = dryRun ? 'would remove' : 'removed';
    let failed = 0;
    const fail = (message: string): void => {
      console.error(`cowshm rm: ${message}`);
      failed++;
    };

    if (!flags.has('orphans')) {
      if (positional.length === 0) throw new UsageError('name the segments to remove, or use --orphans');
      for (const name of positional) {
        try {
          // Removing a live one would split its participants from the next ones: never.
          if (coordinationOf(name) !== null) {
            if (!dryRun && !reclaimCoordination(name)) throw new Error(`${name} was replaced meanwhile: not removed`);
            if (dryRun) {
              const s = listSegments().find((x) => x.name === name);
              if (s === undefined) throw new Error(`ENOENT: no such file or directory, unlink '/dev/shm/${name}'`);
              if (!s.orphan) throw new Error(`/dev/shm/${name} is in use by processes taking part in cross-process snapshots: it would not be removed`);
            }
          } else if (!dryRun) removeSegment(name);
          else if (!listSegments({ holders: false }).some((s) => s.name === name))
            throw new Error(`ENOENT: no such file or directory, shm_unlink '${name}'`);
          console.log(`${verb} /dev/shm/${name}`);
        } catch (err) {
          fail((err as Error).message);
        }
      }
      return failed > 0 ? 1 : 0;
    }

    const segments = listSegments().filter((s) => !s.deleted);
    const wanted = positional.length > 0 ? new Set(positional) : null;
    const held = (s: Segment): string =>
      s.coordination !== null
        ? s.coordination.participants === 0 && s.coordination.snapshot === false
          ? 'a process holding a lock on it that neither reads nor takes part (one joining it, say)'
          : `${s.coordination.participants ?? 'some'} process(es) taking part in cross-process snapshots${s.coordination.snapshot ? ' and a live snapshot' : ''} (their locks)`
        : s.holders.length > 0
        ? describeHolders(s.holders)
        : s.locked === true
          ? "a cowshm process not visible in /proc here (it holds the segment's lock)"
          : 'a process that could not be inspected';
    if (wanted !== null) {
      for (const name of wanted) {
        const s = segments.find((x) => x.name === name);
        if (s === undefined) fail(`ENOENT: no such file or directory, shm_unlink '${name}'`);
        else if (s.locked === null && s.holders.length === 0)
          fail(`${name}: this user may not open it, so cannot tell whether it is held: not removed`);
        else if (!s.orphan) fail(`${name} is held by ${held(s)}: not removed`);
      }
    }
    let removed = 0;
    for (const s of segments) {
      if (!s.orphan || (wanted !== null && !wanted.has(s.name))) continue;
      try {
        if (s.coordination !== null) {
          if (!dryRun && !reclaimCoordination(s.name, s)) {
            fail(`${s.name} was replaced by another file meanwhile: not removed`);
            continue;
          }
        } else if (dryRun) {
          if (s.uninspected.length > 0) throw new Error(`${s.path} might be held by a process that could not be inspected: it would not be removed`);
        } else if (!removeSegment(s.name, s, { ifOrphan: true })) {
          // Checked again under the segment's exclusive lock, and only if the
          // name still leads to the segment that was found unheld.
          fail(`${s.name} was replaced by another segment meanwhile: not removed`);
          continue;
        }
        console.log(`${verb} /dev/shm/${s.name}`);
        removed++;
      } catch (err) {
        const code = (err as { code?: string }).code;
        // Opened by a holder since it was listed: held after all, as if it had been then.
        if (code === 'ERR_COWSHM_SEGMENT_HELD' && wanted === null) continue;
        if (code === 'ENOENT' && wanted === null) continue; // removed by someone else meanwhile
        fail((err as Error).message);
      }
    }
    if (removed === 0 && failed === 0 && wanted === null) console.log('No orphaned segments.');
    return failed > 0 ? 1 : 0;
  },
};
