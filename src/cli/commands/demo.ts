/** `cowshm demo`: the original question's program, run and explained. */
import * as fs from 'node:fs';
import { maxElements, preflight, runDemo, type DemoPhase, type DemoResult, type MappingFigures, type Totals } from '../experiment';
import { hugetlbfsMounts, memory, pageSize } from '../..';
import { poolFigures } from '../../hugetlb';
import { UsageError, parseArgs, type Command } from '../command';
import { bytes, count, table } from '../format';
import { renderSvg, renderText, useColour, type PageMap } from '../pagemap';

const DEFAULT_ELEMENTS = 2 ** 30;
const HUGE_PAGE = 2 << 20;

const DESCRIPTIONS: Record<string, string> = {
  'fill': 'created the segment, mapped it shared ("region") and wrote A[i] = i',
  'map copy': 'mapped the segment again, copy-on-write (MAP_PRIVATE: "copy")',
  'sum region': 'summed the region',
  'sum copy': 'summed the copy: every page of it was read',
  'write copy': 'wrote copy[i] = 2i over the whole copy',
  'sum after write': 'summed both again',
};

/** The phases after which the demo draws page maps, and how their titles say when. */
const MAPPED_WHEN: Record<string, string> = {
  'map copy': 'just mapped',
  'sum copy': 'after reading the copy',
  'write copy': 'after writing the copy',
};

function parseCount(text: string, option: string): number {
  const power = /^2\^(\d+)$/.exec(text);
  const n = power ? 2 ** Number(power[1]) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${option} must be a positive integer or 2^K (received '${text}')`);
  return n;
}

function parseSize(text: string): number {
  const m = /^(\d+)\s*(k|kib|m|mib|g|gib)?$/i.exec(text);
  if (!m) throw new UsageError(`--size must be a number of bytes, optionally with KiB, MiB or GiB (received '${text}')`);
  const unit = (m[2] ?? '').toLowerCase()[0];
  const n = Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 2 ** 20 : unit === 'g' ? 2 ** 30 : 1);
  if (!Number.isSafeInteger(n) || n < 4 || n % 4 !== 0) throw new UsageError(`--size must be a positive multiple of 4 bytes (received '${text}')`);
  return n / 4;
}

function figuresTable(phase: DemoPhase, huge: boolean): string {
  const frames = phase.copy === null ? '-' : phase.sharedFrames === null ? 'n/a' : count(phase.sharedFrames);
  if (huge) {
    // hugetlb memory is in Shared_Hugetlb / Private_Hugetlb only; Rss and the rest stay 0.
    const row = (label: string, f: MappingFigures | null): string[] =>
      f === null ? [label, '-', '-', '-', '-'] : [label, bytes(f.sharedHugetlb), bytes(f.privateHugetlb), bytes(f.rss), frames];
    return table(
      ['', 'Shared_Hugetlb', 'Private_Hugetlb', 'Rss', 'Shared frames'],
      [row('region', phase.region), row('copy', phase.copy)],
      [''],
    ).replace(/^/gm, '  ');
  }
  const row = (label: string, f: MappingFigures | null, frames: string): string[] =>
    f === null
      ? [label, '-', '-', '-', '-', '-', '-']
      : [label, bytes(f.rss), bytes(f.pss), bytes(f.sharedDirty), bytes(f.privateDirty), bytes(f.anonymous), frames];
  return table(
    ['', 'Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty', 'Anonymous', 'Shared frames'],
    [row('region', phase.region, frames), row('copy', phase.copy, frames)],
    [''],
  ).replace(/^/gm, '  ');
}

function totalsLine(t: Totals): string {
  return `  process: VmRSS ${bytes(t.vmRss)} (RssShmem ${bytes(t.rssShmem)}, RssAnon ${bytes(t.rssAnon)}); machine: Shmem ${bytes(t.meminfoShmem)} (/proc/meminfo)`;
}

const signed = (n: number): string => (n < 0 ? `-${bytes(-n)}` : `+${bytes(n)}`);

/** What top/ps and /proc/meminfo said before and after: RSS counts each mapping, memory holds the pages once. */
export function totalsSummary(r: DemoResult): string {
  const read = r.phases.find((p) => p.name === 'sum copy');
  const wrote = r.phases.find((p) => p.name === 'write copy');
  const b = r.before;
  const lines = [`What top, ps and free saw (before the segment existed -> after the copy was read${wrote ? ' -> after it was written' : ''}):`];
  const row = (label: string, pick: (t: Totals) => number): string =>
    `  ${label.padEnd(24)} ${[b, read?.totals, wrote?.totals].filter((t): t is Totals => t !== undefined).map((t) => bytes(pick(t)).padStart(10)).join(' ->')}`;
  lines.push(row('VmRSS (this process)', (t) => t.vmRss), row('RssShmem (this process)', (t) => t.rssShmem),
    row('RssAnon (this process)', (t) => t.rssAnon), row('Shmem (/proc/meminfo)', (t) => t.meminfoShmem));
  if (read) {
    lines.push(
      `RSS grew by ${signed(read.totals.vmRss - b.vmRss)} but the machine's Shmem by ${signed(read.totals.meminfoShmem - b.meminfoShmem)}: ` +
        `RssShmem counts the segment's pages once per mapping that has them (twice here), Shmem counts each page of memory once.`,
    );
  }
  if (wrote) {
    lines.push(`Writing the copy added ${signed(wrote.totals.rssAnon - (read?.totals.rssAnon ?? b.rssAnon))} of RssAnon: the copied pages are this process's own memory now.`);
  }
  return lines.join('\n');
}

/** The plain-words reading of the figures after the copy was read (and written). */
export function verdict(r: DemoResult): string {
  const read = r.phases.find((p) => p.name === 'sum copy');
  const lines: string[] = [];
  if (r.pageSize !== pageSize) return hugeVerdict(r);
  const fill = r.phases.find((p) => p.name === 'fill');
  if (fill && fill.region.privateDirty > 0) {
    lines.push(
      `After the fill the region shows its ${bytes(fill.region.privateDirty)} as Private_Dirty: smaps calls a page private while one mapping ` +
        `maps it and every shm page is dirty; nothing private was made. Once the copy has read them, both mappings map the same pages, ` +
        `so both show them as Shared_Dirty.`,
    );
  }
  if (read?.copy) {
    const c = read.copy;
    if (c.privateDirty === 0 && c.anonymous === 0 && c.pss * 2 === c.rss) {
      if (read.sharedFrames === null) {
        lines.push(
          `Reading the copy made no copy, as far as this user can check: Pss is half of Rss and the copy's Private_Dirty and Anonymous are 0, ` +
            `which the kernel reports only when the copy's pages are the region's pages mapped a second time. ` +
            `Not checked: that the physical frames are the same (${r.framesUnavailable ?? 'frame numbers unavailable'}). ` +
            `Rss adds up to ${bytes(read.region.rss + c.rss)} over the two mappings, but the ${bytes(r.pages * pageSize)} are in memory once.`,
        );
      } else {
        const frames = read.sharedFrames === r.pages
          ? `both mappings use the same ${count(r.pages)} frame${r.pages === 1 ? '' : 's'}`
          : `only ${count(read.sharedFrames)} of ${count(r.pages)} frames are the same`;
        lines.push(
          `Reading the copy made no copy: ${frames}, Pss is half of Rss, and the copy's Private_Dirty and Anonymous are 0. ` +
            `Rss adds up to ${bytes(read.region.rss + c.rss)} over the two mappings, but the ${bytes(r.pages * pageSize)} are in memory once.`,
        );
      }
    } else {
      lines.push(`Reading the copy copied pages: its Private_Dirty is ${bytes(c.privateDirty)} and its Anonymous ${bytes(c.anonymous)}.`);
    }
  }
  const wrote = r.phases.find((p) => p.name === 'write copy');
  if (wrote?.copy && r.sumRegionAfterWrite !== null) {
    const frames = wrote.sharedFrames === null ? '' : wrote.sharedFrames === 0 ? ', no frame is shared any more' : `, ${count(wrote.sharedFrames)} frames are still shared`;
    lines.push(
      `Writing the copy copied the ${count(r.pagesWritten)} pages written: its Private_Dirty and Anonymous are now ` +
        `${bytes(wrote.copy.privateDirty)} and ${bytes(wrote.copy.anonymous)}${frames}; ` +
        `the region ${r.sumRegionAfterWrite === r.expectedSum ? 'still sums to ' + String(r.expectedSum) + ': it is untouched' : 'changed'}.`,
    );
  }
  if (!r.ok) lines.push(`Some checks FAILED: ${r.checks.filter((c) => !c.ok).map((c) => c.what).join('; ')}.`);
  return lines.join('\n');
}

/** verdict() for a region on huge pages: the figures are Shared_Hugetlb and Private_Hugetlb. */
function hugeVerdict(r: DemoResult): string {
  const lines: string[] = [];
  const huge = bytes(r.pageSize);
  const read = r.phases.find((p) => p.name === 'sum copy');
  if (read?.copy) {
    const c = read.copy;
    lines.push(
      c.privateHugetlb === 0
        ? `Reading the copy made no copy: its Private_Hugetlb is 0, and Shared_Hugetlb is the whole region in both mappings: ` +
            `the ${count(r.pages / (r.pageSize / pageSize))} pages of ${huge} are in memory once` +
            (read.sharedFrames === null ? '' : `, and the ${count(read.sharedFrames)} 4 KiB pagemap entries of the copy name the region's frames`) + '.'
        : `Reading the copy copied pages: its Private_Hugetlb is ${bytes(c.privateHugetlb)}.`,
    );
  }
  const wrote = r.phases.find((p) => p.name === 'write copy');
  if (wrote?.copy && r.sumRegionAfterWrite !== null) {
    lines.push(
      `Writing the copy copied the ${count(r.pagesWritten)} huge pages written (each first write copies ${huge}): its Private_Hugetlb is now ` +
        `${bytes(wrote.copy.privateHugetlb)}; the region ${r.sumRegionAfterWrite === r.expectedSum ? 'still sums to ' + String(r.expectedSum) + ': it is untouched' : 'changed'}.`,
    );
  }
  if (!r.ok) lines.push(`Some checks FAILED: ${r.checks.filter((c) => !c.ok).map((c) => c.what).join('; ')}.`);
  return lines.join('\n');
}

function toJson(r: DemoResult): object {
  return {
    name: r.name,
    path: r.path,
    pid: process.pid,
    elements: String(r.elements),
    bytes: r.bytes,
    pages: r.pages,
    pageSize: r.pageSize,
    expectedSum: String(r.expectedSum),
    sumRegion: String(r.sumRegion),
    sumCopy: String(r.sumCopy),
    sumCopyAfterWrite: r.sumCopyAfterWrite === null ? null : String(r.sumCopyAfterWrite),
    sumRegionAfterWrite: r.sumRegionAfterWrite === null ? null : String(r.sumRegionAfterWrite),
    pagesWritten: r.pagesWritten,
    before: r.before,
    phases: r.phases,
    seconds: r.phases.reduce((t, p) => t + p.seconds, 0),
    framesUnavailable: r.framesUnavailable,
    checks: r.checks,
    verdict: verdict(r),
    ok: r.ok,
  };
}

/** A one-line progress bar on stderr, redrawn at most ten times a second. */
function progressBar(): { update(phase: string, done: number, total: number): void; clear(): void } {
  let last = 0;
  let shown = false;
  return {
    update(phase, done, total) {
      const now = Date.now();
      if (done < total && now - last < 100) return;
      last = now;
      const width = 30;
      const filled = Math.round((done / total) * width);
      process.stderr.write(`\r${phase.padEnd(16)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.floor((done / total) * 100)}%`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

/** Resolves on Enter or when `signal` aborts. Stdin at its end (</dev/null, a closed pipe) holds until the signal. */
function waitForEnter(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    // Keeps the process alive once stdin has ended and nothing else is pending.
    const keepAlive = setInterval(() => {}, 2 ** 30);
    const done = (): void => {
      process.stdin.off('data', done);
      process.stdin.off('end', ended);
      signal.removeEventListener('abort', done);
      clearInterval(keepAlive);
      // A paused stdin pipe would still keep the process alive.
      process.stdin.destroy();
      resolve();
    };
    const ended = (): void => {
      console.error('Standard input is closed: holding until SIGINT (Ctrl-C) or SIGTERM.');
    };
    process.stdin.on('data', done);
    process.stdin.on('end', ended);
    signal.addEventListener('abort', done);
    process.stdin.resume();
  });
}

export const demo: Command = {
  name: 'demo',
  summary: 'run the copy-on-write experiment of the original question and explain its figures',
  usage: [
    'Usage: cowshm demo [--elements N | --size BYTES] [--huge] [--write] [--json] [--name NAME] [--hold] [--svg FILE]',
    '',
    'Puts N int32 values A[i] = i in a named shared memory segment, maps it a second',
    'time copy-on-write, sums both (the sums must be N(N-1)/2 exactly), and after each',
    'step shows the kernel\'s figures for both mappings: Rss, Pss, Shared_Dirty,',
    'Private_Dirty, Anonymous, and how many physical frames they share. It shows that',
    'reading a copy-on-write mapping copies nothing, even though Rss adds up to twice',
    'the data: Pss is half of Rss, and both mappings use the same frames.',
    '',
    'Options:',
    `  --elements N   number of int32 elements, or 2^K (default 2^30: 4 GiB; at most ${maxElements})`,
    '  --size BYTES   the segment\'s size instead (a multiple of 4; KiB, MiB, GiB allowed)',
    '  --huge         put the region on 2 MiB hugetlb pages (from the pool: /proc/sys/vm/nr_hugepages;',
    '                 named on a hugetlbfs mount if one is mounted, else an anonymous memfd); the',
    '                 figures are then smaps\' Shared_Hugetlb and Private_Hugetlb',
    '  --write        then write the whole copy (copy[i] = 2i): pages are copied now, and the',
    '                 region stays untouched',
    '  --json         print one JSON object instead of tables: elements and sums as decimal',
    '                 strings, phases [{ name, seconds, region, copy, sharedFrames }], checks, ok',
    '  --name NAME    the segment\'s name in /dev/shm (default cowshm-demo-PID)',
    '  --hold         keep the mappings until Enter is pressed (or, when standard input is',
    '                 closed, until SIGINT or SIGTERM), to look at them with',
    '                 `npx cowshm inspect PID` or pmap -X from another terminal',
    '  --svg FILE     write the page maps (the copy just mapped, after reading it, and after',
    '                 --write) as SVG',
    '',
    'After mapping the copy, reading it (and writing it) the demo draws the mappings page by',
    'page: shared (#), copied (*), swapped (~), not resident (.); and it shows VmRSS and',
    'RssShmem (what top and ps show) next to /proc/meminfo Shmem (what memory holds).',
    '',
    'The segment is removed when the demo ends, also on Ctrl-C and SIGTERM.',
    'Frame numbers (shared frames) can only be read as root. Exit status 0 when every',
    'check holds, 1 otherwise.',
  ].join('\n'),
  async run(args) {
    const { flags, values, positional } = parseArgs(args, { flags: ['write', 'json', 'hold', 'huge'], values: ['elements', 'size', 'name', 'svg'] });
    if (positional.length > 0) throw new UsageError(`unexpected argument '${positional[0]}'`);
    if (values.has('elements') && values.has('size')) throw new UsageError('give --elements or --size, not both');
    const elements = values.has('size')
      ? parseSize(values.get('size') as string)
      : values.has('elements') ? parseCount(values.get('elements') as string, '--elements') : DEFAULT_ELEMENTS;
    if (elements > maxElements) throw new UsageError(`at most ${maxElements} elements (${bytes(maxElements * 4)}) fit one view; received ${elements}`);
    const name = values.get('name') ?? `cowshm-demo-${process.pid}`;
    const write = flags.has('write');
    const json = flags.has('json');
    const regionPageSize = flags.has('huge') ? HUGE_PAGE : pageSize;
    const svg = values.get('svg');
    const maps: PageMap[] = [];

    const pre = preflight(elements, write, regionPageSize);
    if (!pre.ok && regionPageSize !== pageSize) {
      const hint = pre.suggestedElements > 0 ? `try --elements ${pre.suggestedElements} (${bytes(pre.suggestedElements * 4)})` : 'raise the pool';
      console.error(
        `cowshm demo: not enough room for ${count(elements)} elements on huge pages: ` +
          `${poolFigures(regionPageSize, Math.ceil((pre.memoryNeeded - pre.memoryAvailable) / regionPageSize))}; ${hint}`,
      );
      return 1;
    }
    if (!pre.ok) {
      const lacking = pre.shmNeeded > pre.shmAvailable
        ? `/dev/shm has ${bytes(pre.shmAvailable)} free; the segment needs ${bytes(pre.shmNeeded)}`
        : `${bytes(pre.memoryAvailable)} of memory is available (MemAvailable); the run needs about ${bytes(pre.memoryNeeded)}${write ? ' (the copy doubles it with --write)' : ''}`;
      const hint = pre.suggestedElements > 0
        ? `try --elements ${pre.suggestedElements} (${bytes(pre.suggestedElements * 4)})`
        : 'there is not enough room for even a small run';
      console.error(`cowshm demo: not enough room for ${count(elements)} elements: ${lacking}; ${hint}`);
      return 1;
    }

    const controller = new AbortController();
    let caught: NodeJS.Signals | null = null;
    const onSignal = (sig: NodeJS.Signals): void => {
      caught = sig;
      controller.abort(new Error(`stopped by ${sig}`));
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    const bar = process.stderr.isTTY ? progressBar() : null;
    const out = (s: string): void => {
      if (!json) console.log(s);
    };
    const huge = regionPageSize !== pageSize;
    const where = !huge ? `/dev/shm/${name}` : hugetlbfsMounts().find((m) => m.pageSize === regionPageSize);
    out(
      `cowshm demo: ${count(elements)} int32 elements (${bytes(elements * 4)}) in ` +
        (typeof where === 'string' ? where : where ? `${where.path}/${name} (${bytes(regionPageSize)} pages)` : `an anonymous memfd on ${bytes(regionPageSize)} pages`) +
        `, PID ${process.pid}`,
    );
    const gone = typeof where === 'string' ? `${where} is removed` : where ? `${where.path}/${name} is removed` : 'the memfd is closed';
    let result: DemoResult;
    try {
      result = await runDemo({
        elements,
        write,
        name,
        pageSize: regionPageSize,
        signal: controller.signal,
        onProgress: bar ? (phase, done, total) => bar.update(phase, done, total) : undefined,
        onPhase: (phase, views) => {
          bar?.clear();
          out(`\n${phase.name} (${phase.seconds.toFixed(3)} s): ${DESCRIPTIONS[phase.name] ?? ''}\n${figuresTable(phase, huge)}\n${totalsLine(phase.totals)}`);
          const when = MAPPED_WHEN[phase.name];
          if (when !== undefined && views.copy !== null) {
            // Just mapped, the region's map is the fill's: only the copy's is news.
            const now: PageMap[] = [
              ...(phase.name === 'map copy' ? [] : [{ title: `region (rw-s), ${when}`, states: memory.pageStates(views.region) }]),
              { title: `copy (rw-p), ${when}`, states: memory.pageStates(views.copy) },
            ];
            maps.push(...now);
            for (const m of now) out(`\n${renderText(m, { rows: 4, colour: useColour(process.stdout) }).replace(/^/gm, '  ')}`);
          }
        },
        hold: flags.has('hold')
          ? async () => {
              // On stderr so that --json output stays one object.
              console.error(
                `Holding the mappings: look at them with \`npx cowshm inspect ${process.pid} --filter ${name} --map\`; press Enter to finish.`,
              );
              await waitForEnter(controller.signal);
            }
          : undefined,
      } as Parameters<typeof runDemo>[0]);
    } catch (err) {
      bar?.clear();
      if (caught !== null) {
        console.error(`cowshm demo: ${caught}: stopped; ${gone}`);
        for (const s of signals) process.off(s, onSignal);
        // Die of the signal, as the shell expects of an interrupted program.
        process.kill(process.pid, caught);
        return 128;
      }
      throw err;
    } finally {
      for (const s of signals) process.off(s, onSignal);
    }
    if (caught !== null) {
      // The signal came while holding: the run was complete.
      console.error(`cowshm demo: ${caught}: stopped; ${gone}`);
      process.kill(process.pid, caught);
      return 128;
    }
    if (svg !== undefined) fs.writeFileSync(svg, renderSvg(maps));
    if (json) {
      console.log(JSON.stringify(toJson(result), null, 2));
    } else {
      out(`\nSums: expected ${result.expectedSum}, region ${result.sumRegion}, copy ${result.sumCopy}` +
        (result.sumCopyAfterWrite === null ? '' : `; after writing: copy ${result.sumCopyAfterWrite}, region ${result.sumRegionAfterWrite}`));
      out(`\n${totalsSummary(result)}`);
      out(`\n${verdict(result)}`);
      out('\nChecks:');
      for (const c of result.checks) out(`  ${c.ok ? (c.skipped ? 'skipped' : 'ok     ') : 'FAILED '}  ${c.what}${c.skipped ? ` (${c.skipped})` : ''}`);
      out(`\nTotal ${result.phases.reduce((t, p) => t + p.seconds, 0).toFixed(3)} s; ${gone}.`);
      if (svg !== undefined) out(`Page maps written to ${svg}.`);
    }
    return result.ok ? 0 : 1;
  },
};
