/**
 * The /proc/PID/smaps format (Documentation/filesystems/proc.rst): per
 * mapping a header line like /proc/PID/maps, then `Key: N kB` lines, then
 * VmFlags. Everything the kernel prints is kept; the common figures also get
 * camelCase names.
 */
import type { Figures, SmapsEntry } from './types';

// start-end perms offset dev inode [path]; the path is padded to a column and may contain spaces.
const HEADER = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)(?: +(.*))?$/;
const FIELD = /^([A-Za-z_][A-Za-z0-9_]*):\s+(\d+) kB$/;
const DELETED = ' (deleted)';

/** @internal Each named figure and the smaps field it is read from (test/memory.pmap compares them all with pmap). */
export const NAMES: ReadonlyArray<readonly [keyof Omit<Figures, 'fields'>, string]> = [
  ['size', 'Size'],
  ['rss', 'Rss'],
  ['pss', 'Pss'],
  ['pssDirty', 'Pss_Dirty'],
  ['sharedClean', 'Shared_Clean'],
  ['sharedDirty', 'Shared_Dirty'],
  ['privateClean', 'Private_Clean'],
  ['privateDirty', 'Private_Dirty'],
  ['anonymous', 'Anonymous'],
  ['swap', 'Swap'],
  ['sharedHugetlb', 'Shared_Hugetlb'],
  ['privateHugetlb', 'Private_Hugetlb'],
];

/** Fills the named figures from `fields`; a field this kernel does not print counts as 0. */
export function figures(fields: Record<string, number>): Figures {
  const out = { fields } as Figures;
  for (const [name, key] of NAMES) out[name] = fields[key] ?? 0;
  return out;
}

function hex(s: string): number {
  return Number(BigInt(`0x${s}`));
}

function parseError(line: string, n: number): Error {
  return new Error(`unexpected line ${n} in smaps: ${JSON.stringify(line)}`);
}

/** Parses the text of /proc/PID/smaps. */
export function parseSmaps(text: string): SmapsEntry[] {
  const entries: SmapsEntry[] = [];
  let fields: Record<string, number> = {};
  let current: Omit<SmapsEntry, keyof Figures> | null = null;
  const finish = (): void => {
    if (current) entries.push({ ...current, ...figures(fields) });
  };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line === '') continue;
    const field = FIELD.exec(line);
    if (field) {
      if (!current) throw parseError(line, i + 1);
      fields[field[1] as string] = Number(field[2]) * 1024;
      continue;
    }
    if (line.startsWith('VmFlags:')) {
      if (!current) throw parseError(line, i + 1);
      current.vmFlags = line.slice('VmFlags:'.length).trim().split(/\s+/).filter(Boolean);
      continue;
    }
    const header = HEADER.exec(line);
    if (header) {
      finish();
      fields = {};
      let path = header[7] ?? '';
      const deleted = path.endsWith(DELETED);
      if (deleted) path = path.slice(0, -DELETED.length);
      current = {
        start: hex(header[1] as string),
        end: hex(header[2] as string),
        perms: header[3] as string,
        offset: hex(header[4] as string),
        device: header[5] as string,
        inode: Number(header[6]),
        path,
        deleted,
        vmFlags: [],
        other: {},
        header: line,
      };
      continue;
    }
    const colon = line.indexOf(':');
    if (!current || colon <= 0) throw parseError(line, i + 1);
    current.other[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  finish();
  return entries;
}

/** Parses /proc/PID/smaps_rollup: one header, then the summed figures. */
export function parseRollup(text: string): Figures {
  const fields: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const field = FIELD.exec(line);
    if (field) fields[field[1] as string] = Number(field[2]) * 1024;
  }
  return figures(fields);
}

/** The total size of the ranges in /proc/PID/maps. */
export function mapsTotal(text: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const dash = line.indexOf('-');
    const space = line.indexOf(' ');
    if (dash <= 0 || space < dash) continue;
    total += hex(line.slice(dash + 1, space)) - hex(line.slice(0, dash));
  }
  return total;
}
