/** `cowshm inspect PID`: a process's mappings, what is shared and what is private, for humans. */
import * as fs from 'node:fs';
import { memory, pageSize } from '../..';
import { listSegments } from '../../segments';
import { mapsDevice } from '../../memory/procfs';
import { UsageError, parseArgs, type Command } from '../command';
import { bytes, count, table } from '../format';
import { renderSvg, renderText, useColour, type PageMap } from '../pagemap';

// Mappings larger than this are not walked page by page (V8 and WebAssembly
// reserve terabytes of address space that is never touched).
const PAGES_LIMIT = 64 * 2 ** 30;

interface PageSummary extends Omit<memory.PageReport, 'address' | 'frames' | 'mapCounts'> {
  /** How many present pages are mapped once, twice...: {"1": 3, "2": 1021}. */
  mapCounts: Record<string, number> | null;
  /** Frames this mapping shares with other mappings of the same file in the process. */
  sharedWith: Array<{ start: number; perms: string; frames: number }> | null;
}

interface Inspected {
  mapping: memory.SmapsEntry;
  pages?: PageSummary | { skipped: string };
  map?: PageMap | { skipped: string };
}

const hex = (n: number): string => n.toString(16);

function summarize(pid: number, entries: memory.SmapsEntry[]): Map<memory.SmapsEntry, PageSummary | { skipped: string }> {
  const out = new Map<memory.SmapsEntry, PageSummary | { skipped: string }>();
  const frames = new Map<memory.SmapsEntry, Set<number>>();
  for (const e of entries) {
    const size = e.end - e.start;
    // hugetlb memory is not in Rss: a mapping of a region on huge pages is walked when it has any.
    if (e.rss === 0 && e.swap === 0 && e.sharedHugetlb === 0 && e.privateHugetlb === 0) {
      out.set(e, { pages: size / pageSize, present: 0, swapped: 0, exclusive: 0, file: 0, anonymous: 0, writeProtected: 0,
        framesUnavailable: null, mapCounts: {}, mapCountsUnavailable: null, sharedWith: [] });
      continue;
    }
    if (size > PAGES_LIMIT) {
      out.set(e, { skipped: `larger than ${bytes(PAGES_LIMIT)}: not walked page by page` });
      continue;
    }
    const r = memory.pages({ address: e.start, byteLength: size }, { pid });
    let histogram: Record<string, number> | null = null;
    if (r.mapCounts) {
      histogram = {};
      for (const c of r.mapCounts) if (c > 0) histogram[c] = (histogram[c] ?? 0) + 1;
    }
    if (r.frames) frames.set(e, new Set(r.frames.filter((f) => f !== 0)));
    out.set(e, {
      pages: r.pages, present: r.present, swapped: r.swapped, exclusive: r.exclusive, file: r.file,
      anonymous: r.anonymous, writeProtected: r.writeProtected, framesUnavailable: r.framesUnavailable,
      mapCounts: histogram, mapCountsUnavailable: r.mapCountsUnavailable, sharedWith: r.frames ? [] : null,
    });
  }
  // Same file (device and inode), different mapping: count the frames in common.
  for (const [a, fa] of frames) {
    const summary = out.get(a) as PageSummary;
    for (const [b, fb] of frames) {
      if (a === b || a.inode === 0 || a.inode !== b.inode || a.device !== b.device) continue;
      let n = 0;
      for (const f of fa) if (fb.has(f)) n++;
      if (n > 0) summary.sharedWith?.push({ start: b.start, perms: b.perms, frames: n });
    }
  }
  return out;
}

function commandLine(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function mappingName(e: memory.SmapsEntry): string {
  return `${e.path}${e.deleted ? ' (deleted)' : ''}`;
}

/** The three most common map counts, e.g. "1,014×2 10×1 +3 more". */
function histogram(counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const shown = entries.slice(0, 3).map(([c, n]) => `${count(n)}×${c}`);
  if (entries.length > 3) shown.push(`+${entries.length - 3} more`);
  return shown.join(' ') || '-';
}

function render(pid: number, list: Inspected[], filter: string | undefined): string {
  const lines: string[] = [`PID ${pid}: ${commandLine(pid)}`];
  if (list.length === 0) {
    lines.push(filter === undefined ? 'no mappings' : `no mapping matches '${filter}'`);
    return lines.join('\n');
  }
  // Columns for hugetlb memory, which the kernel counts apart from Rss, only where some mapping has it.
  const huge = list.some(({ mapping: e }) => e.sharedHugetlb + e.privateHugetlb > 0);
  const header = ['Address', 'Perm', 'Size', 'Rss', 'Pss', 'Shared', 'Private', 'Anonymous', 'Swap',
    ...(huge ? ['Shared_Hugetlb', 'Private_Hugetlb'] : []), 'Mapping'];
  const total = { size: 0, rss: 0, pss: 0, shared: 0, private: 0, anonymous: 0, swap: 0, sharedHugetlb: 0, privateHugetlb: 0 };
  const rows = list.map(({ mapping: e }) => {
    const shared = e.sharedClean + e.sharedDirty;
    const priv = e.privateClean + e.privateDirty;
    total.size += e.size;
    total.rss += e.rss;
    total.pss += e.pss;
    total.shared += shared;
    total.private += priv;
    total.anonymous += e.anonymous;
    total.swap += e.swap;
    total.sharedHugetlb += e.sharedHugetlb;
    total.privateHugetlb += e.privateHugetlb;
    return [hex(e.start), e.perms, bytes(e.size), bytes(e.rss), bytes(e.pss), bytes(shared), bytes(priv),
      bytes(e.anonymous), bytes(e.swap), ...(huge ? [bytes(e.sharedHugetlb), bytes(e.privateHugetlb)] : []), mappingName(e)];
  });
  rows.push(['total', '', bytes(total.size), bytes(total.rss), bytes(total.pss), bytes(total.shared),
    bytes(total.private), bytes(total.anonymous), bytes(total.swap),
    ...(huge ? [bytes(total.sharedHugetlb), bytes(total.privateHugetlb)] : []), `${list.length} mapping${list.length === 1 ? '' : 's'}`]);
  lines.push(table(header, rows, ['Address', 'Perm', 'Mapping']));
  lines.push('',
    'Rss counts every resident page; Pss divides each page by the number of mappings of it.',
    'Shared: pages other mappings use too. Private: pages only this mapping uses.',
    'Anonymous: in a file or shm mapping, the pages copy-on-write has copied.',
    ...(huge
      ? ['Shared_Hugetlb / Private_Hugetlb: huge pages of regions on hugetlb pages (not in Rss), mapped by',
        'other mappings too / only by this one; a cow view\'s or snapshot\'s copies are Private_Hugetlb.',
        'pagemap (Pages) still counts them in 4 KiB entries, 512 per 2 MiB page.']
      : []));

  const withPages = list.filter((i) => i.pages !== undefined);
  if (withPages.length > 0) {
    const reasons = new Set<string>();
    const pageRows = withPages.map(({ mapping: e, pages: p }) => {
      if (p === undefined || 'skipped' in p) return [hex(e.start), '', '', '', '', '', '', '', p ? p.skipped : ''];
      if (p.framesUnavailable) reasons.add(`frames: ${p.framesUnavailable}`);
      if (p.mapCountsUnavailable && !p.framesUnavailable) reasons.add(`map counts: ${p.mapCountsUnavailable}`);
      const counts = p.mapCounts ? histogram(p.mapCounts) : 'n/a';
      const shared = p.sharedWith
        ? p.sharedWith.map((s) => `${count(s.frames)} with ${hex(s.start)} (${s.perms})`).join(', ') || '-'
        : 'n/a';
      return [hex(e.start), count(p.pages), count(p.present), count(p.exclusive), count(p.file), count(p.anonymous),
        count(p.swapped), counts, shared];
    });
    lines.push('', `Pages (from /proc/${pid}/pagemap${reasons.size ? '' : ' and /proc/kpagecount'}):`);
    lines.push(table(['Address', 'Pages', 'Present', 'Exclusive', 'File/shared', 'Anonymous', 'Swapped', 'Mapped (pages×times)', 'Same frames as'],
      pageRows, ['Address', 'Mapped (pages×times)', 'Same frames as']));
    for (const r of reasons) lines.push(`n/a: ${r}`);
  }
  return lines.join('\n');
}

export const inspect: Command = {
  name: 'inspect',
  summary: 'show what a process maps: Rss, Pss, shared and private memory (like pmap -X)',
  usage: [
    'Usage: cowshm inspect PID [--filter TEXT] [--pages] [--map] [--svg FILE] [--json]',
    '       cowshm inspect --region NAME [--pages] [--map] [--svg FILE] [--json]',
    '',
    "Shows every mapping of process PID from /proc/PID/smaps: its size, what is",
    'resident (Rss), its proportional share (Pss), which pages it shares with other',
    'mappings and which are its own, and how much copy-on-write has copied (Anonymous).',
    '',
    'Options:',
    '  --filter TEXT  only mappings whose path contains TEXT (or whose address starts with it)',
    '  --pages        page by page from /proc/PID/pagemap: present, exclusive, file/shared',
    '                 and anonymous pages, how often each frame is mapped, and how many',
    '                 frames each mapping shares with other mappings of the same file',
    '                 (frame numbers need root)',
    '  --map          draw each mapping page by page: shared (#), copied by copy-on-write (*),',
    '                 swapped (~), not resident (.); a large mapping is scaled, one cell per',
    '                 power-of-two number of pages, and the scale is printed above it; a',
    '                 cell shows the state of most of its pages, + where some are copied',
    '  --svg FILE     write the same page maps to FILE as an SVG image',
    '  --region NAME  every mapping, in every process, of the segment /dev/shm/NAME (found by',
    '                 its device and inode, wherever it is mapped); no PID then',
    '  --json         print one JSON object: { pid, mappings: [{ mapping, pages?, map? }] }',
    '                 (with --region: { region, processes: [that object per process] })',
    '',
    'Reading another user\'s process needs root (or the right to ptrace it).',
  ].join('\n'),
  async run(args) {
    const { flags, values, positional } = parseArgs(args, { flags: ['pages', 'json', 'map'], values: ['filter', 'svg', 'region'] });
    const region = values.get('region');
    const svg = values.get('svg');
    const wantMaps = flags.has('map') || svg !== undefined;
    const json = flags.has('json');
    let targets: Array<{ pid: number; entries: memory.SmapsEntry[] }>;
    let filter = values.get('filter');
    if (region !== undefined) {
      if (positional.length > 0) throw new UsageError(`--region takes no PID (received ${positional.join(' ')})`);
      if (filter !== undefined) throw new UsageError('give --region or --filter, not both');
      targets = regionTargets(region);
      filter = `/dev/shm/${region}`;
    } else {
      if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'PID is missing' : `one PID only (received ${positional.join(' ')})`);
      const text = positional[0] as string;
      if (!/^[1-9]\d*$/.test(text)) throw new UsageError(`PID must be a positive integer (received '${text}')`);
      const pid = Number(text);
      targets = [{
        pid,
        entries: memory.smaps(pid).filter(
          (e) => filter === undefined || mappingName(e).includes(filter) || hex(e.start).startsWith(filter.replace(/^0x/, '')),
        ),
      }];
    }
    const reports = targets.map(({ pid, entries }) => {
      const summaries = flags.has('pages') ? summarize(pid, entries) : undefined;
      const maps = wantMaps ? pageMaps(pid, entries) : undefined;
      const list: Inspected[] = entries.map((mapping) => {
        const item: Inspected = { mapping };
        const pages = summaries?.get(mapping);
        if (pages !== undefined) item.pages = pages;
        const map = maps?.get(mapping);
        if (map !== undefined) item.map = map;
        return item;
      });
      return { pid, list };
    });
    if (svg !== undefined) {
      const maps = reports.flatMap((r) => r.list.flatMap((i) => (i.map && !('skipped' in i.map) ? [i.map] : [])));
      if (maps.length === 0) throw new Error(`no mapping to draw${filter === undefined ? '' : ` (none matches '${filter}')`}: ${svg} not written`);
      fs.writeFileSync(svg, renderSvg(maps));
    }
    if (json) {
      const toJson = (r: { pid: number; list: Inspected[] }): object => ({
        pid: r.pid,
        mappings: r.list.map(({ map, ...rest }) => (map === undefined ? rest : { ...rest, map: 'skipped' in map ? map : countsOf(map) })),
      });
      console.log(JSON.stringify(region === undefined ? toJson(reports[0] as (typeof reports)[number]) : { region, processes: reports.map(toJson) }, null, 2));
      return 0;
    }
    const out: string[] = [];
    if (region !== undefined) out.push(`/dev/shm/${region}: mapped by ${reports.length} process${reports.length === 1 ? '' : 'es'}`, '');
    for (const r of reports) {
      out.push(render(r.pid, r.list, filter));
      if (flags.has('map')) {
        for (const { mapping, map } of r.list) {
          if (map === undefined) continue;
          out.push('', 'skipped' in map ? `${hex(mapping.start)}: ${map.skipped}` : renderText(map, { colour: useColour(process.stdout) }));
        }
      }
      out.push('');
    }
    if (svg !== undefined) out.push(`Page maps written to ${svg}.`);
    console.log(out.join('\n').trimEnd());
    return 0;
  },
};

/** Every process that maps /dev/shm/NAME, with its mappings of it, matched by device and inode. */
function regionTargets(name: string): Array<{ pid: number; entries: memory.SmapsEntry[] }> {
  if (name === '' || name.includes('/') || name.includes('\0')) throw new UsageError(`--region takes a segment name as in /dev/shm/NAME (received '${name}')`);
  const st = fs.statSync(`/dev/shm/${name}`);
  const device = mapsDevice(st.dev);
  const segment = listSegments().find((s) => s.dev === st.dev && s.ino === st.ino);
  const out: Array<{ pid: number; entries: memory.SmapsEntry[] }> = [];
  for (const h of segment?.holders ?? []) {
    if (h.mappings === 0) continue;
    let entries: memory.SmapsEntry[];
    try {
      entries = memory.smaps(h.pid).filter((e) => e.device === device && e.inode === st.ino);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') continue; // exited meanwhile
      throw err;
    }
    if (entries.length > 0) out.push({ pid: h.pid, entries });
  }
  return out;
}

function pageMaps(pid: number, entries: memory.SmapsEntry[]): Map<memory.SmapsEntry, PageMap | { skipped: string }> {
  const out = new Map<memory.SmapsEntry, PageMap | { skipped: string }>();
  for (const e of entries) {
    const size = e.end - e.start;
    if (e.rss === 0 && e.swap === 0) {
      // V8 and WebAssembly reserve large ranges they never touch: nothing to draw.
      out.set(e, { skipped: `nothing resident or swapped (${bytes(size)}): not drawn` });
      continue;
    }
    if (size > PAGES_LIMIT) {
      out.set(e, { skipped: `larger than ${bytes(PAGES_LIMIT)}: not drawn` });
      continue;
    }
    const states = memory.pageStates({ address: e.start, byteLength: size }, { pid });
    out.set(e, { title: `PID ${pid} ${hex(e.start)} ${e.perms} ${mappingName(e) || '[anonymous]'}`, states });
  }
  return out;
}

function countsOf(map: PageMap): object {
  const { states, ...counts } = map.states;
  void states;
  return counts;
}
