import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Region, hugePools, hugetlbfsMounts, memory, pageSize } from 'cowshm';
import { packageRoot, runNode, tempDir, rmTemp, uniqueName } from './helpers';
import { GiB1, MiB2, freePages, hugeLock, hugePool } from './hugetlb-helpers';

const pool = hugePool(MiB2);
const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

test('pageSize: the system page by default; a size the kernel does not offer, or a size that is not a multiple, is a RangeError naming it', () => {
  const r = Region.create({ size: pageSize });
  assert.equal(r.pageSize, pageSize);
  assert.doesNotMatch(String(r), /pages/);
  r.close();
  assert.throws(() => Region.create({ size: MiB2, pageSize: 12345 }), (e: Error & { code?: string }) => {
    assert.ok(e instanceof RangeError);
    assert.equal(e.code, 'ERR_OUT_OF_RANGE');
    assert.match(e.message, /"pageSize" option must be one of the page sizes this kernel offers: 4096 \(4 KiB\), 2097152 \(2 MiB\)/);
    return true;
  });
  assert.throws(() => Region.create({ size: MiB2, pageSize: '2M' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => Region.create({ size: MiB2 + pageSize, pageSize: MiB2 }), {
    name: 'RangeError',
    message: /"size" option must be a multiple of the huge page size \(2097152, 2 MiB\)\. Received 2101248/,
  });
  assert.throws(() => Region.create({ size: MiB2, pageSize: MiB2, hugePages: true }), {
    name: 'RangeError',
    message: /hugePages is advice for transparent huge pages; pageSize gives hugetlb pages/,
  });
});

test('an anonymous region on 2 MiB pages: pageSize, views and cow views, offsets and lengths in huge pages', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  const r = Region.create({ size: 4 * MiB2, pageSize: MiB2 });
  try {
    assert.equal(r.pageSize, MiB2);
    assert.equal(r.kind, 'memfd');
    assert.match(String(r), /^memfd region \(fd \d+, 2 MiB pages\)$/);
    assert.equal(freePages(), free - 4, 'reserve: every page is taken from the pool at create time');
    assert.throws(() => r.map({ offset: pageSize }), { name: 'RangeError', message: /"offset" option must be a multiple of the huge page size \(2097152, 2 MiB\)/ });
    assert.throws(() => r.map({ length: pageSize }), { name: 'RangeError', message: /"length" option must be a multiple of the huge page size/ });
    const v = r.map();
    const a = new Uint8Array(v.buffer);
    a.fill(1);
    const part = new Uint8Array(r.map({ offset: 2 * MiB2, length: MiB2 }).buffer);
    assert.equal(part.length, MiB2);
    part[0] = 5;
    assert.equal(a[2 * MiB2], 5);

    const cowView = r.map({ access: 'cow' });
    const cow = new Uint8Array(cowView.buffer);
    assert.equal(cow[0], 1);
    // The cow view maps with MAP_NORESERVE: it took no page of the pool yet.
    assert.equal(freePages(), free - 4);
    cow[10] = 9;
    cow[3 * MiB2 + 1] = 9;
    assert.equal(a[10], 1, 'the region is untouched');
    assert.equal(freePages(), free - 6, 'k written huge pages take k pages from the pool');
    const u = memory.usage(cowView);
    assert.equal(u.privateHugetlb, 2 * MiB2, 'the two copied huge pages are the cow view\'s own');
    assert.equal(u.sharedHugetlb, 0, 'no other page of the region was touched through the cow view');
    assert.equal(u.rss, 0, 'hugetlb memory is not in Rss');
    const region = memory.usage(v);
    assert.equal(region.sharedHugetlb + region.privateHugetlb, 4 * MiB2);
    // pagemap keeps 4 KiB entries: 512 per huge page; the copies are anonymous, the rest the file's.
    const pages = memory.pages(cowView);
    assert.equal(pages.pages, (4 * MiB2) / pageSize);
    assert.equal(pages.anonymous, (2 * MiB2) / pageSize);
    cowView.revert(0, MiB2);
    assert.equal(cow[10], 1, 'revert() shows the region\'s bytes again');
    assert.equal(freePages(), free - 5, 'and gives the copy back to the pool');
    assert.throws(() => cowView.revert(0, pageSize), { name: 'RangeError', message: /"length" argument must be a multiple of the huge page size/ });
  } finally {
    r.close();
  }
  assert.equal(freePages(), free, 'closing the region gives every page back');
});

test('map({ access: \'cow\', populate: true }) maps the region\'s huge pages without taking any from the pool', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: 4 * MiB2, pageSize: MiB2 });
  try {
    new Uint8Array(r.map().buffer).fill(3);
    const free = freePages();
    const cowView = r.map({ access: 'cow', populate: true });
    assert.equal(freePages(), free, 'populate copied no page into the cow view');
    const u = memory.usage(cowView);
    assert.equal(u.sharedHugetlb, 4 * MiB2, 'every huge page of the region is mapped');
    assert.equal(u.privateHugetlb, 0);
    const cow = new Uint8Array(cowView.buffer);
    assert.equal(cow[3 * MiB2 + 5], 3);
    cow[MiB2] = 9;
    assert.equal(freePages(), free - 1, 'a write copies its one huge page');
    // A shared view's populate is unchanged: the region's pages, already in place.
    r.map({ populate: true });
    assert.equal(freePages(), free - 1);
  } finally {
    r.close();
  }
});

test('a pool too small for the region fails at create time, naming its figures and how to raise it, and takes nothing', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  const fds = openFds();
  assert.throws(() => Region.create({ size: (free + 1) * MiB2, pageSize: MiB2 }), (e: Error & { code?: string; syscall?: string }) => {
    assert.equal(e.code, 'ENOSPC');
    assert.equal(e.syscall, 'fallocate');
    assert.match(e.message, new RegExp(`is ${free + 1} pages, and the pool of 2 MiB hugetlb pages has \\d+ pages, ${free} free`));
    assert.match(e.message, /this needs 1 more; raise it as root: echo \d+ > \/sys\/kernel\/mm\/hugepages\/hugepages-2048kB\/nr_hugepages/);
    return true;
  });
  assert.equal(freePages(), free);
  assert.equal(openFds(), fds, 'no descriptor is left behind');
});

test('a sparse region (reserve: false) on huge pages fails at map() when the pool cannot back the view', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  const r = Region.create({ size: (free + 2) * MiB2, pageSize: MiB2, reserve: false });
  try {
    assert.equal(freePages(), free, 'a sparse region takes no page');
    assert.throws(() => r.map(), (e: Error & { code?: string; syscall?: string }) => {
      assert.equal(e.code, 'ENOMEM');
      assert.equal(e.syscall, 'mmap');
      assert.match(e.message, /the pool of 2 MiB hugetlb pages has/);
      return true;
    });
    const v = r.map({ length: MiB2 });
    new Uint8Array(v.buffer)[0] = 1;
    assert.equal(freePages(), free - 1);
  } finally {
    r.close();
  }
  assert.equal(freePages(), free);
});

test('a cow write that finds the pool empty ends the process with a report naming the pool, not a bare SIGBUS', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const free = freePages();
  // The child takes every free page for its region, so its cow write finds none.
  const r = runNode(`
    const { Region, hugePools } = require('cowshm');
    const p = hugePools().find((x) => x.pageSize === ${MiB2});
    const r = Region.create({ size: (p.free - p.reserved) * ${MiB2}, pageSize: ${MiB2} });
    const cow = new Uint8Array(r.map({ access: 'cow' }).buffer);
    cow[${MiB2} + 3] = 1;
    console.log('written', JSON.stringify(hugePools()));
  `);
  assert.equal(r.signal, 'SIGBUS', `status ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stdout, /written/);
  assert.match(r.stderr, /cowshm: fatal write to a view with access 'cow' of memfd region \(fd \d+, 2 MiB pages\), view 1 at view offset 2097155/);
  assert.match(r.stderr, /no free huge page for the private copy this access needs: each huge page first written through a copy-on-write view or a snapshot's buffer takes one page from the pool \(\/sys\/kernel\/mm\/hugepages\/hugepages-2048kB\/: \d+ pages, 0 free\); raise/);
  assert.equal(freePages(), free, 'the pages came back when the process ended');
});

test('Region.fromHandle of a region on huge pages knows its page size', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: MiB2, pageSize: MiB2 });
  try {
    new Uint8Array(r.map().buffer)[7] = 42;
    const again = Region.fromHandle(r.handle());
    assert.equal(again.pageSize, MiB2);
    assert.equal(new Uint8Array(again.map().buffer)[7], 42);
    again.close();
    const child = runNode(`
      const { Region } = require('cowshm');
      const r = Region.fromHandle(${JSON.stringify(r.handle())});
      console.log(r.pageSize, new Uint8Array(r.map({ access: 'read' }).buffer)[7]);
    `);
    assert.equal(child.stderr, '');
    assert.equal(child.stdout.trim(), `${MiB2} 42`);
  } finally {
    r.close();
  }
});

test('a named region on huge pages without a hugetlbfs mount says how to mount one', { skip: hugetlbfsMounts().some((m) => m.pageSize === MiB2) ? 'a hugetlbfs of 2 MiB pages is mounted here' : false }, () => {
  assert.throws(() => Region.create({ name: uniqueName('huge-nomount'), size: MiB2, pageSize: MiB2 }), {
    code: 'ERR_COWSHM_NO_HUGETLBFS',
    message: /A named region on 2 MiB pages lives on a hugetlbfs mount, and there is none for that page size .*mount -t hugetlbfs -o pagesize=2M none \/dev\/hugepages/,
  });
});

/** Runs `code` in a child in its own mount namespace, with a hugetlbfs of 2 MiB pages mounted at `dir`. */
function inHugetlbfs(dir: string, code: string): { stdout: string; stderr: string; status: number | null } {
  const script = `mount -t hugetlbfs -o pagesize=2M,mode=1777 none "$1" && exec "$2" -e "$3"`;
  return spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', dir, process.execPath, code], {
    cwd: packageRoot,
    encoding: 'utf8',
    timeout: 30_000,
  });
}

test('named regions live on a hugetlbfs mount found in /proc/mounts; Region.open and openFile find them (own mount namespace)', { skip: pool.skip }, async () => {
  using _lock = await hugeLock();
  const dir = tempDir('hugetlbfs');
  const free = freePages();
  try {
    const name = uniqueName('huge-named');
    const r = inHugetlbfs(dir, `
      const assert = require('node:assert/strict');
      const fs = require('node:fs');
      const { Region, hugetlbfsMounts, listSegments, removeSegment } = require('cowshm');
      const dir = ${JSON.stringify(dir)}, name = ${JSON.stringify(name)}, H = ${MiB2};
      assert.deepEqual(hugetlbfsMounts().filter((m) => m.path === dir).map((m) => m.pageSize), [H]);
      const r = Region.create({ name, size: 2 * H, pageSize: H, mode: 0o640 });
      assert.equal(r.kind, 'shm');
      assert.equal(r.path, dir + '/' + name);
      assert.equal(fs.statSync(r.path).mode & 0o777, 0o640);
      assert.match(String(r), /\\(shm, 2 MiB pages\\)/);
      new Uint8Array(r.map().buffer)[H] = 7;
      assert.throws(() => Region.create({ name, size: H, pageSize: H }), { code: 'EEXIST' });
      const shmName = name + '-in-shm';
      const shm = Region.create({ name: shmName, size: 4096 });
      assert.throws(() => Region.create({ name: shmName, size: H, pageSize: H }),
        (e) => e.code === 'EEXIST' && e.message.includes('/dev/shm/' + shmName + ' exists, and Region.open') && e.message.includes('would find it first'));
      assert.ok(!fs.existsSync(dir + '/' + shmName), 'nothing was created on hugetlbfs');
      shm.unlink();
      shm.close();
      const o = Region.open(name);
      assert.equal(o.pageSize, H);
      assert.equal(o.path, r.path);
      assert.equal(new Uint8Array(o.map({ offset: H, length: H }).buffer)[0], 7);
      const seg = listSegments().find((s) => s.name === name);
      assert.ok(seg, 'cowshm ls lists it');
      assert.equal(seg.pageSize, H);
      assert.equal(seg.path, r.path);
      assert.ok(seg.holders.some((h) => h.pid === process.pid));
      const ls = require('node:child_process').execFileSync(process.execPath, ['bin/cowshm.js', 'ls'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      assert.ok(ls.split('\\n').some((l) => l.startsWith(name + ' (2 MiB pages)') && l.includes('4.00 MiB')), ls);
      assert.ok(require('cowshm').doctor().hugePages.mounts.some((m) => m.path === dir && m.pageSize === H));
      const h = Region.fromHandle(r.handle());
      assert.equal(h.pageSize, H);
      h.close();
      o.close();
      const other = Region.create({ name: name + '-rm', size: H, pageSize: H });
      assert.equal(removeSegment(name + '-rm'), true, 'cowshm rm removes a region on huge pages too');
      assert.ok(!fs.existsSync(other.path));
      other.close();
      r.unlink();
      assert.ok(!fs.existsSync(r.path));
      assert.throws(() => Region.open(name), { code: 'ENOENT' });
      r.close();

      const file = dir + '/data';
      assert.throws(() => Region.openFile(file, { create: true, size: H + 4096 }), { name: 'RangeError', message: /multiple of the huge page size \\(2097152, 2 MiB\\): '.*' is on hugetlbfs/ });
      assert.ok(!fs.existsSync(file), 'a failed create leaves no file');
      const f = Region.openFile(file, { create: true, size: H });
      assert.equal(f.pageSize, H);
      new Uint8Array(f.map().buffer)[1] = 3;
      f.close();
      const f2 = Region.openFile(file);
      assert.equal(f2.pageSize, H);
      assert.equal(new Uint8Array(f2.map({ access: 'read' }).buffer)[1], 3);
      f2.close();
      fs.rmSync(file);
      console.log('ok');
    `);
    assert.equal(r.stderr, '');
    assert.equal(r.stdout.trim(), 'ok');
  } finally {
    rmTemp(dir);
  }
  assert.equal(freePages(), free);
});

const giant = hugePool(GiB1);
test('a region on a 1 GiB page', { skip: giant.skip }, async () => {
  using _lock = await hugeLock();
  const r = Region.create({ size: GiB1, pageSize: GiB1 });
  try {
    assert.equal(r.pageSize, GiB1);
    assert.match(String(r), /1 GiB pages/);
    const v = r.map();
    new Uint8Array(v.buffer)[GiB1 - 1] = 1;
    const u = memory.usage(v);
    assert.equal(u.sharedHugetlb + u.privateHugetlb, GiB1, 'the page is hugetlb memory');
    assert.equal(u.rss, 0);
    assert.throws(() => r.map({ length: MiB2 }), { message: /multiple of the huge page size \(1073741824, 1 GiB\)/ });
  } finally {
    r.close();
  }
});

test('hugePools() reports every page size the kernel offers', () => {
  const pools = hugePools();
  for (const p of pools) {
    assert.ok(fs.existsSync(p.control));
    assert.equal(path.basename(path.dirname(p.control)), `hugepages-${p.pageSize / 1024}kB`);
    for (const k of ['total', 'free', 'reserved', 'surplus', 'overcommit'] as const) assert.ok(Number.isSafeInteger(p[k]) && p[k] >= 0);
  }
  if (fs.existsSync('/sys/kernel/mm/hugepages/hugepages-2048kB')) assert.ok(pools.some((p) => p.pageSize === MiB2));
});

