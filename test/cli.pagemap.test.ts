// `cowshm inspect --map / --svg / --region`: page maps whose figures are the
// memory API's (memory.pages() counts the same pages), readable at 4 GiB.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Region, memory, pageSize, type View } from 'cowshm';
import { packageRoot, runCli, tempDir, rmTemp, uniqueName, shmExists } from './helpers';

interface SvgMap {
  pages: number;
  perCell: number;
  cell: number;
  counts: Record<'shared' | 'copied' | 'swapped' | 'notResident', number>;
  /** Pages each state's rects in the grid stand for (their widths, scaled back). */
  drawn: Record<string, number>;
  legend: Record<string, number>;
}

function parseSvg(svg: string): SvgMap[] {
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  const maps: SvgMap[] = [];
  for (const [, attrs, body] of svg.matchAll(/<g class="pagemap" ([^>]*)>([\s\S]*?)\n<\/g>\n<rect[^>]*class="frame"\/>\n<\/g>/g)) {
    const attr = (n: string): number => Number(new RegExp(`data-${n}="(\\d+)"`).exec(attrs as string)?.[1]);
    const perCell = attr('pages-per-cell');
    const cell = attr('cell');
    const cells = /<g class="cells">([\s\S]*)$/.exec(body as string)?.[1] ?? '';
    const drawn: Record<string, number> = {};
    for (const [, w, cls] of cells.matchAll(/<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="\d+" class="(\w+)"\/>/g))
      drawn[cls as string] = (drawn[cls as string] ?? 0) + (Number(w) * perCell) / cell;
    const legend: Record<string, number> = {};
    for (const [, state, n] of (body as string).matchAll(/class="legend" data-state="(\w+)" data-pages="(\d+)"/g)) legend[state as string] = Number(n);
    maps.push({
      pages: attr('pages'), perCell, cell, drawn, legend,
      counts: { shared: attr('shared'), copied: attr('copied'), swapped: attr('swapped'), notResident: attr('not-resident') },
    });
  }
  return maps;
}

/** What memory.pages() says, in the page map's four states. */
function expected(view: View): SvgMap['counts'] {
  const r = memory.pages(view);
  return { shared: r.present - r.anonymous, copied: r.anonymous, swapped: r.swapped, notResident: r.pages - r.present - r.swapped };
}

function checkMap(map: SvgMap | undefined, view: View): void {
  assert.ok(map);
  const want = expected(view);
  assert.equal(map.pages, Math.ceil(view.byteLength / pageSize));
  assert.deepEqual(map.counts, want);
  assert.deepEqual(map.legend, want);
  for (const [state, n] of Object.entries(want)) assert.ok(Math.abs((map.drawn[state] ?? 0) - n) < 0.01 * Math.max(1, map.perCell), `${state}: drew ${map.drawn[state]} pages, memory.pages() counts ${n}`);
}

test('inspect --map --svg: the SVG counts what memory.pages() counts, page for page', () => {
  const name = uniqueName('pagemap');
  const dir = tempDir('pagemap');
  const region = Region.create({ name, size: 96 * pageSize });
  try {
    const shared = region.map();
    new Uint8Array(shared.buffer).fill(1, 0, 64 * pageSize); // 64 of 96 pages resident
    const cow = region.map({ access: 'cow' });
    const c = new Uint8Array(cow.buffer);
    for (let p = 0; p < 48; p++) void c[p * pageSize]; // 48 read: shared
    for (let p = 8; p < 48; p += 4) c[p * pageSize] = 2; // 10 written: copied
    for (let p = 80; p < 84; p++) c[p * pageSize] = 3; // 4 written where the segment had no page: copied
    const file = path.join(dir, 'map.svg');
    const r = runCli(['inspect', String(process.pid), '--filter', name, '--map', '--svg', file]);
    assert.equal(r.status, 0, r.stderr);
    const maps = parseSvg(fs.readFileSync(file, 'utf8'));
    assert.equal(maps.length, 2);
    // smaps lists mappings by address; find each view's map by its counts' source.
    const byAddress = [shared, cow].sort((a, b) => a.address - b.address);
    checkMap(maps[0], byAddress[0] as View);
    checkMap(maps[1], byAddress[1] as View);
    const cowMap = maps[byAddress.indexOf(cow)] as SvgMap;
    assert.equal(cowMap.perCell, 1);
    assert.equal(cowMap.counts.copied, 14);
    // 34 pages read and not written; a read fault may map a few neighbours too (fault-around).
    assert.ok(cowMap.counts.shared >= 34);
    // The terminal picture: one character per page here, copied pages as '*'.
    assert.match(r.stdout, /one cell per page \(4 KiB\)|one cell per page/);
    const cowRow = new RegExp(`${cow.address.toString(16)} rw-p [^\\n]*\\n[^\\n]*copied \\(private\\) 14 [^\\n]*\\n +0 \\|([^|]+)\\|`).exec(r.stdout);
    assert.ok(cowRow, r.stdout);
    const states = memory.pageStates(cow).states;
    const expectedRow = Array.from({ length: 64 }, (_, p) => '.#*~'[states[p] as number]).join('');
    assert.equal(cowRow[1], expectedRow);
    assert.equal(expectedRow.slice(8, 48).replace(/#/g, ''), '*'.repeat(10));
    assert.match(r.stdout, new RegExp(`Page maps written to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.`));
  } finally {
    region.unlink();
    region.close();
    rmTemp(dir);
  }
  assert.equal(shmExists(name), false);
});

test('inspect --map of a 4 GiB mapping: 16 rows of 64 cells, the scale said, the counts exact', () => {
  const size = Math.min(4 * 2 ** 30, Region.maxViewLength - (Region.maxViewLength % pageSize));
  const dir = tempDir('pagemap4g');
  const region = Region.create({ size, reserve: false });
  try {
    const cow = region.map({ access: 'cow' });
    const c = new Uint8Array(cow.buffer);
    for (let p = 0; p < 4096; p += 3) c[p * pageSize] = 1;
    const file = path.join(dir, 'big.svg');
    const r = runCli(['inspect', String(process.pid), '--filter', cow.address.toString(16), '--map', '--svg', file]);
    assert.equal(r.status, 0, r.stderr);
    const pages = size / pageSize;
    const per = 2 ** Math.ceil(Math.log2(pages / 1024));
    assert.match(r.stdout, new RegExp(`one cell per ${per.toLocaleString('en-US')} pages \\(`));
    const rows = r.stdout.split('\n').filter((l) => /^ +[\d.]+( [KMG]iB)? \|[#*~.+]+\|$/.test(l));
    assert.equal(rows.length, 16);
    assert.ok(rows.every((l) => /\|[#*~.+]{64}\|$/.test(l)));
    // The written pages (a third of the first 4,096) are a minority of their cells: '+' keeps them visible.
    const marked = Math.ceil(4096 / per);
    assert.equal(/\|([^|]*)\|$/.exec(rows[0] as string)?.[1], '+'.repeat(marked) + '.'.repeat(64 - marked));
    const [map] = parseSvg(fs.readFileSync(file, 'utf8'));
    checkMap(map, cow);
    assert.equal(map?.perCell, 2 ** Math.ceil(Math.log2(pages / (128 * 64))));
    assert.ok(fs.statSync(file).size < 200_000, 'runs of cells in one state are drawn as one rect');
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('inspect --region NAME: every process that maps the segment, found by device and inode', async () => {
  const name = uniqueName('pagemap-region');
  const region = Region.create({ name, size: 32 * pageSize });
  const shared = region.map();
  new Uint8Array(shared.buffer).fill(1);
  const script = `
    const { Region, pageSize } = require(${JSON.stringify(packageRoot)});
    const r = Region.open(${JSON.stringify(name)});
    const v = r.map({ access: 'cow', offset: 8 * pageSize, length: 8 * pageSize });
    const a = new Uint8Array(v.buffer);
    void a[0]; a[pageSize] = 9; a[2 * pageSize] = 9;
    console.log(v.address);
    process.stdin.resume();
    process.stdin.on('end', () => r.close());`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const line = await new Promise<Buffer>((resolve, reject) => {
      child.stdout.once('data', resolve);
      child.once('exit', (code) => reject(new Error(`the mapping process exited early (${code})`)));
    });
    const childAddress = Number(line.toString().trim());
    const r = runCli(['inspect', '--region', name, '--map', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      region: string;
      processes: Array<{ pid: number; mappings: Array<{ mapping: { start: number; device: string; inode: number }; map: Record<string, number> }> }>;
    };
    assert.equal(out.region, name);
    const byPid = new Map(out.processes.map((p) => [p.pid, p.mappings]));
    assert.deepEqual([...byPid.keys()].sort(), [process.pid, child.pid].sort());
    for (const mappings of byPid.values()) for (const m of mappings) assert.equal(m.mapping.inode, region.ino);
    const mine = byPid.get(process.pid)?.find((m) => m.mapping.start === shared.address);
    assert.ok(mine);
    const want = expected(shared);
    assert.deepEqual({ shared: mine.map['shared'], copied: mine.map['copied'], swapped: mine.map['swapped'], notResident: mine.map['notResident'] }, want);
    const theirs = byPid.get(child.pid as number)?.[0];
    assert.equal(theirs?.mapping.start, childAddress);
    assert.equal(theirs?.map['pages'], 8);
    assert.equal(theirs?.map['copied'], 2);
    assert.ok((theirs?.map['shared'] ?? 0) >= 1, 'the page read is shared (and maybe neighbours mapped by fault-around)');

    const text = runCli(['inspect', '--region', name, '--map']);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^/dev/shm/${name}: mapped by 2 processes`));
    assert.match(text.stdout, new RegExp(`PID ${child.pid} ${childAddress.toString(16)} rw-p /dev/shm/${name}: 8 pages`));
    assert.match(text.stdout, /\|#\*\*[#.]{5}\|/, "the other process's copy, page by page: read, written, written");
  } finally {
    child.stdin.end();
    await new Promise((resolve) => child.once('exit', resolve));
    region.unlink();
    region.close();
  }
  assert.equal(shmExists(name), false);
});

test('inspect --region: a usage error without a PID, and ENOENT for a missing segment', () => {
  const withPid = runCli(['inspect', '1', '--region', 'x']);
  assert.equal(withPid.status, 2);
  assert.match(withPid.stderr, /--region takes no PID/);
  const missing = runCli(['inspect', '--region', uniqueName('nothing')]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /ENOENT/);
  const slash = runCli(['inspect', '--region', 'a/b']);
  assert.equal(slash.status, 2);
});
