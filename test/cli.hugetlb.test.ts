import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region } from 'cowshm';
import { runCli } from './helpers';
import { MiB2, freePages, hugeLock, hugePool } from './hugetlb-helpers';

const pool = hugePool(MiB2);
const N = 2 ** 23; // 32 MiB: 16 huge pages, 32 with --write

interface Figures { rss: number; sharedHugetlb: number; privateHugetlb: number }
interface Phase { name: string; region: Figures; copy: Figures | null; sharedFrames: number | null }

test('demo --huge --write --json: Shared_Hugetlb while the copy is only read, Private_Hugetlb for the huge pages written', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  const r = runCli(['demo', '--huge', '--write', '--json', '--elements', String(N)]);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { pageSize: number; pagesWritten: number; ok: boolean; phases: Phase[]; checks: Array<{ what: string; ok: boolean }>; verdict: string };
  assert.equal(j.pageSize, MiB2);
  assert.equal(j.ok, true, JSON.stringify(j.checks));
  const byName = (n: string): Phase => j.phases.find((p) => p.name === n) as Phase;
  const size = N * 4;
  assert.deepEqual(byName('map copy').copy, { ...byName('map copy').copy, rss: 0, sharedHugetlb: 0, privateHugetlb: 0 });
  const read = byName('sum copy');
  assert.equal(read.copy?.sharedHugetlb, size);
  assert.equal(read.copy?.privateHugetlb, 0);
  assert.equal(read.region.sharedHugetlb, size);
  assert.equal(read.sharedFrames, size / 4096, 'pagemap: every 4 KiB entry of the copy names the region\'s frame');
  const wrote = byName('write copy');
  assert.equal(j.pagesWritten, size / MiB2);
  assert.equal(wrote.copy?.privateHugetlb, size);
  assert.equal(wrote.region.privateHugetlb, size);
  assert.equal(wrote.sharedFrames, 0);
  assert.match(j.verdict, /^Reading the copy made no copy: its Private_Hugetlb is 0/);
  assert.equal(freePages(), free, 'every page went back to the pool');
});

test('demo --huge names the pool and the --elements that fit when the pool is too small', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  const r = runCli(['demo', '--huge', '--elements', String(((free + 1) * MiB2) / 4)]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`^cowshm demo: not enough room for [\\d,]+ elements on huge pages: the pool of 2 MiB hugetlb pages has \\d+ pages, ${free} free .*; this needs 1 more; raise it as root: echo \\d+ > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`));
  assert.match(r.stderr, /try --elements \d+/);
});

test('inspect shows Shared_Hugetlb / Private_Hugetlb for mappings of a region on huge pages, and walks their pages', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: 2 * MiB2, pageSize: MiB2 });
  try {
    const v = r.map();
    new Uint8Array(v.buffer).fill(1);
    const cow = new Uint8Array(r.map({ access: 'cow' }).buffer);
    cow[0] = 2; // one huge page copied,
    assert.equal(cow[MiB2], 1); // the other mapped by both
    const filter = `${v.address.toString(16)}`;
    const text = runCli(['inspect', String(process.pid), '--pages']);
    assert.equal(text.status, 0, text.stderr);
    const header = text.stdout.split('\n').find((l) => l.startsWith('Address'));
    assert.match(header ?? '', /Swap +Shared_Hugetlb +Private_Hugetlb +Mapping/);
    const line = text.stdout.split('\n').find((l) => l.startsWith(filter));
    assert.match(line ?? '', /^\S+ +rw-s +4 MiB +0 +0 +0 +0 +0 +0 +2 MiB +2 MiB +\/memfd:cowshm/, text.stdout);
    const json = runCli(['inspect', String(process.pid), '--pages', '--json']);
    const list = JSON.parse(json.stdout) as { mappings: Array<{ mapping: { start: number; sharedHugetlb: number; privateHugetlb: number }; pages?: { present: number; anonymous: number } }> };
    const entry = list.mappings.find((m) => m.mapping.start === v.address);
    assert.equal(entry?.pages?.present, (2 * MiB2) / 4096, 'pagemap: every 4 KiB entry of a hugetlb mapping is present');
  } finally {
    r.close();
  }
});
