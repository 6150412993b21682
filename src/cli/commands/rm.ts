/** `cowshm rm`: remove segments by name, or every orphan. */
import { listSegments, removeSegment } from '../../segments';
import { parseArgs, UsageError, type Command } from '../command';
import { uninspectedNote } from './ls';

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
    '  --orphans  remove only segments no process maps or holds open (see cowshm ls);',
    '             with names, only those of them, and a held one is an error',
    '  --dry-run  say what would be removed, remove nothing',
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
          if (!dryRun) removeSegment(name);
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
    if (wanted !== null) {
      for (const name of wanted) {
        const s = segments.find((x) => x.name === name);
        if (s === undefined) fail(`ENOENT: no such file or directory, shm_unlink '${name}'`);
        else if (!s.orphan)
          fail(`${name} is held by ${s.holders.map((h) => `pid ${h.pid} (${h.command})`).join(', ')}: not removed`);
      }
    }
    let removed = 0;
    for (const s of segments) {
      if (!s.orphan || (wanted !== null && !wanted.has(s.name))) continue;
      try {
        // Only if the name still leads to the segment that was found unheld.
        if (!dryRun && !removeSegment(s.name, s)) {
          fail(`${s.name} was replaced by another segment meanwhile: not removed`);
          continue;
        }
        console.log(`${verb} /dev/shm/${s.name}`);
        removed++;
      } catch (err) {
        fail((err as Error).message);
      }
    }
    if (removed === 0 && wanted === null) console.log('No orphaned segments.');
    const note = uninspectedNote(segments);
    if (note !== null && removed > 0) console.error(note);
    return failed > 0 ? 1 : 0;
  },
};
