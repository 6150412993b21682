/**
 * Page maps: which pages of a mapping are shared, privately copied, not
 * resident or swapped, drawn as a grid of cells in the terminal and as SVG.
 * The figures are `memory.pageStates()`'s. A large mapping is scaled: each
 * cell stands for a power-of-two number of pages, said above the grid; in the
 * terminal a cell shows the state most of its pages are in (and `+` where some,
 * not most, of its pages are copies), in the SVG it is split in proportion to
 * its pages' states.
 */
import type { memory } from '..';
import { bytes, count } from './format';

export interface PageMap {
  /** What the map is of: "PID 123 7f.. rw-s /dev/shm/x". */
  title: string;
  states: memory.PageStates;
}

const STATES = [
  { key: 'shared', label: 'shared', char: '#', colour: '#2e7d32', ansi: '32' },
  { key: 'copied', label: 'copied (private)', char: '*', colour: '#c62828', ansi: '31' },
  { key: 'swapped', label: 'swapped', char: '~', colour: '#6a1b9a', ansi: '35' },
  { key: 'notResident', label: 'not resident', char: '.', colour: '#e0e0e0', ansi: '2' },
] as const;
// Index by PageState (0 not resident, 1 shared, 2 copied, 3 swapped).
const BY_STATE = [STATES[3], STATES[0], STATES[1], STATES[2]] as const;

/** Pages per cell: the smallest power of two that fits the pages in `cells` cells. */
export function pagesPerCell(pages: number, cells: number): number {
  let n = 1;
  while (n * cells < pages) n *= 2;
  return n;
}

/** How many pages of each state cell `c` holds: [notResident, shared, copied, swapped]. */
function cellCounts(states: Uint8Array, c: number, per: number): number[] {
  const counts = [0, 0, 0, 0];
  const end = Math.min(states.length, (c + 1) * per);
  for (let i = c * per; i < end; i++) (counts[states[i] as number] as number)++;
  return counts;
}

/** The state most of a cell's pages are in; a tie goes to copied, then swapped, then shared. */
function majority(counts: number[]): number {
  let best = 1;
  for (const s of [2, 3, 1, 0]) if ((counts[s] as number) > (counts[best] as number)) best = s;
  if ((counts[best] as number) === 0) return 0;
  for (const s of [2, 3, 1, 0]) if (counts[s] === counts[best]) return s;
  return best;
}

function scaleLine(s: memory.PageStates, per: number): string {
  return per === 1
    ? `one cell per page (${bytes(s.pageSize)})`
    : `one cell per ${count(per)} pages (${bytes(per * s.pageSize)}); a cell shows the state most of its pages are in, + some copied`;
}

function legend(s: memory.PageStates): string {
  return STATES.map((x) => `${x.char} ${x.label} ${count(s[x.key])} (${bytes(s[x.key] * s.pageSize)})`).join('   ');
}

/** The map as text: a header, the legend with exact counts, and rows of `width` cells. */
export function renderText(map: PageMap, options: { width?: number; rows?: number; colour?: boolean } = {}): string {
  const { width = 64, rows = 16, colour = false } = options;
  const s = map.states;
  const per = pagesPerCell(s.pages, width * rows);
  const cells = Math.ceil(s.pages / per);
  const lines = [`${map.title}: ${count(s.pages)} pages, ${scaleLine(s, per)}`, `  ${legend(s)}`];
  const offsetWidth = bytes(Math.max(0, (cells - 1) - ((cells - 1) % width)) * per * s.pageSize).length;
  for (let row = 0; row * width < cells; row++) {
    let text = '';
    for (let c = row * width; c < Math.min(cells, (row + 1) * width); c++) {
      const counts = cellCounts(s.states, c, per);
      const st = BY_STATE[majority(counts)] as (typeof STATES)[number];
      // A few copies among shared pages are what a reader looks for: don't let the majority hide them.
      const char = st.key !== 'copied' && (counts[2] as number) > 0 ? '+' : st.char;
      text += colour ? `\x1b[${char === '+' ? STATES[1].ansi : st.ansi}m${char}\x1b[0m` : char;
    }
    lines.push(`  ${bytes(row * width * per * s.pageSize).padStart(offsetWidth)} |${text}|`);
  }
  return lines.join('\n');
}

const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (n: number): string => String(Math.round(n * 1000) / 1000);

/**
 * The maps as one SVG document. Each map is a <g class="pagemap"> whose
 * data-* attributes carry the exact counts; each rect's class is its state
 * and its width is proportional to the pages it stands for.
 */
export function renderSvg(maps: PageMap[], options: { width?: number; rows?: number; cell?: number } = {}): string {
  const { width = 128, rows = 64, cell = 6 } = options;
  const parts: string[] = [];
  let y = 10;
  const gridWidth = width * cell;
  for (const map of maps) {
    const s = map.states;
    const per = pagesPerCell(s.pages, width * rows);
    const cells = Math.ceil(s.pages / per);
    const body: string[] = [];
    body.push(`<text x="0" y="${y + 12}" class="title">${esc(`${map.title}: ${count(s.pages)} pages`)}</text>`);
    body.push(`<text x="0" y="${y + 28}" class="scale">${esc(scaleLine(s, per).replace(/; a cell shows.*/, '; each cell is split by the states of its pages'))}</text>`);
    let lx = 0;
    for (const x of STATES) {
      body.push(`<rect x="${lx}" y="${y + 36}" width="10" height="10" class="${x.key}"/>`);
      const text = `${x.label} ${count(s[x.key])} (${bytes(s[x.key] * s.pageSize)})`;
      body.push(`<text x="${lx + 14}" y="${y + 45}" class="legend" data-state="${x.key}" data-pages="${s[x.key]}">${esc(text)}</text>`);
      lx += Math.round(14 + text.length * 6.6 + 16);
    }
    const top = y + 54;
    const grid: string[] = [];
    for (let row = 0; row * width < cells; row++) {
      const ry = top + row * cell;
      // Runs of whole cells in one state become one rect; mixed cells are split.
      let runStart = -1;
      let runState = -1;
      const flush = (end: number): void => {
        if (runStart < 0) return;
        const key = (BY_STATE[runState] as (typeof STATES)[number]).key;
        grid.push(`<rect x="${num((runStart - row * width) * cell)}" y="${ry}" width="${num((end - runStart) * cell)}" height="${cell}" class="${key}"/>`);
        runStart = -1;
      };
      for (let c = row * width; c < Math.min(cells, (row + 1) * width); c++) {
        const counts = cellCounts(s.states, c, per);
        const total = counts.reduce((a, b) => a + b, 0);
        const only = counts.findIndex((n) => n === total);
        if (only >= 0 && total === per) {
          if (runStart >= 0 && runState !== only) flush(c);
          if (runStart < 0) {
            runStart = c;
            runState = only;
          }
          continue;
        }
        flush(c);
        let x = (c - row * width) * cell;
        for (const st of [1, 2, 3, 0]) {
          const n = counts[st] as number;
          if (n === 0) continue;
          const w = (n / per) * cell;
          grid.push(`<rect x="${num(x)}" y="${ry}" width="${num(w)}" height="${cell}" class="${(BY_STATE[st] as (typeof STATES)[number]).key}"/>`);
          x += w;
        }
      }
      flush(Math.min(cells, (row + 1) * width));
    }
    const gridRows = Math.ceil(cells / width);
    parts.push(
      `<g class="pagemap" data-pages="${s.pages}" data-page-size="${s.pageSize}" data-pages-per-cell="${per}" data-cell="${cell}" ` +
        STATES.map((x) => `data-${x.key === 'notResident' ? 'not-resident' : x.key}="${s[x.key]}"`).join(' ') +
        `>\n${body.join('\n')}\n<g class="cells">\n${grid.join('\n')}\n</g>\n<rect x="0" y="${top}" width="${gridWidth}" height="${gridRows * cell}" class="frame"/>\n</g>`,
    );
    y = top + gridRows * cell + 24;
  }
  const style = STATES.map((x) => `.${x.key}{fill:${x.colour}}`).join('') +
    '.frame{fill:none;stroke:#9e9e9e;stroke-width:0.5}text{font-family:monospace;font-size:11px;fill:#212121}.title{font-weight:bold}';
  const svgWidth = Math.max(gridWidth, 700);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${svgWidth + 20}" height="${y}" viewBox="-10 0 ${svgWidth + 20} ${y}">\n` +
    `<style>${style}</style>\n<rect x="-10" y="0" width="${svgWidth + 20}" height="${y}" fill="#ffffff"/>\n${parts.join('\n')}\n</svg>\n`
  );
}

/** Whether to colour the terminal map: a terminal, and NO_COLOR unset. */
export function useColour(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && !process.env['NO_COLOR'];
}
