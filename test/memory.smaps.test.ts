import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, memory, pageSize } from 'cowshm';
import { uniqueName, tempDir, rmTemp } from './helpers';

// From the original question (Linux 3.13): no Pss_Dirty line, a deleted shm file.
const QUESTION = `7f3b9b4ae000-7f3c9b4ae000 r--p 00000000 00:14 168154                     /run/shm/cowtest (deleted)
Size:            4194304 kB
Rss:             4194304 kB
Pss:             2097152 kB
Shared_Clean:          0 kB
Shared_Dirty:    4194304 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:      4194304 kB
Anonymous:             0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
7f3c9b4ae000-7f3d9b4ae000 rw-s 00000000 00:14 168154                     /run/shm/cowtest (deleted)
Size:            4194304 kB
Rss:             4194304 kB
Pss:             2097152 kB
Shared_Clean:          0 kB
Shared_Dirty:    4194304 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Referenced:      4194304 kB
Anonymous:             0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd wr sh mr mw me ms sd
7ffd1c3f0000-7ffd1c411000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
VmFlags: rd wr mr mw me gd ac
7ffd1c500000-7ffd1c501000 r--p 00001000 fe:01 77                         /tmp/my data/a file  with spaces
Size:                  4 kB
VmFlags: rd mr mw me
7ffd1c600000-7ffd1c601000 rw-p 00000000 00:00 0 
Size:                  4 kB
VmFlags: rd wr mr mw me ac
`;

const parse = memory.parseSmaps;

test('parses the question\'s smaps: header, figures in bytes, VmFlags, (deleted)', () => {
  const [copy, shared, stack, spaced, anon] = parse(QUESTION);
  assert.ok(copy && shared && stack && spaced && anon);
  const GiB4 = 4194304 * 1024;
  assert.equal(copy.start, 0x7f3b9b4ae000);
  assert.equal(copy.end, 0x7f3c9b4ae000);
  assert.equal(copy.perms, 'r--p');
  assert.equal(copy.offset, 0);
  assert.equal(copy.device, '00:14');
  assert.equal(copy.inode, 168154);
  assert.equal(copy.path, '/run/shm/cowtest');
  assert.equal(copy.deleted, true);
  assert.equal(copy.size, GiB4);
  assert.equal(copy.rss, GiB4);
  assert.equal(copy.pss, GiB4 / 2);
  assert.equal(copy.sharedDirty, GiB4);
  assert.equal(copy.privateDirty, 0);
  assert.equal(copy.anonymous, 0);
  assert.equal(copy.pssDirty, 0, 'a kernel without Pss_Dirty reports 0');
  assert.equal('Pss_Dirty' in copy.fields, false, 'fields holds only what the kernel printed');
  assert.equal(copy.fields['Referenced'], GiB4);
  assert.equal(copy.fields['KernelPageSize'], 4096);
  assert.equal(copy.fields['AnonHugePages'], 0);
  assert.equal(Object.keys(copy.fields).length, 14);
  assert.deepEqual(copy.vmFlags, ['rd', 'mr', 'mw', 'me', 'sd']);
  assert.equal(copy.header.startsWith('7f3b9b4ae000-7f3c9b4ae000 r--p'), true);
  assert.deepEqual(shared.other, { THPeligible: '0', ProtectionKey: '0' });
  assert.deepEqual(shared.vmFlags, ['rd', 'wr', 'sh', 'mr', 'mw', 'me', 'ms', 'sd']);
  assert.equal(stack.path, '[stack]');
  assert.equal(stack.rss, 16 * 1024);
  assert.equal(stack.pss, 0);
  assert.equal(spaced.path, '/tmp/my data/a file  with spaces');
  assert.equal(spaced.deleted, false);
  assert.equal(spaced.offset, 0x1000);
  assert.equal(spaced.device, 'fe:01');
  assert.equal(anon.path, '');
  assert.equal(anon.inode, 0);
});

test('a line smaps never prints is an error, not silently skipped', () => {
  assert.throws(() => parse('Rss: 4 kB\n'), /unexpected line 1 in smaps/);
  assert.throws(() => parse('7f3b9b4ae000-7f3c9b4ae000 r--p 00000000 00:14 1 /x\nnonsense\n'), /unexpected line 2/);
});

test('smaps() of this process: a mapped file with spaces in its path, then deleted', () => {
  const dir = tempDir('smaps');
  const file = path.join(dir, 'a file (with) spaces');
  try {
    const r = Region.openFile(file, { create: true, size: 4 * pageSize });
    try {
      const v = r.map();
      new Uint8Array(v.buffer).fill(1, 0, 2 * pageSize);
      let e = memory.smaps().find((x) => x.start === v.address);
      assert.ok(e);
      assert.equal(e.path, file);
      assert.equal(e.deleted, false);
      assert.equal(e.end - e.start, 4 * pageSize);
      assert.equal(e.size, 4 * pageSize);
      assert.equal(e.rss, 2 * pageSize);
      assert.equal(e.perms, 'rw-s');
      assert.ok(e.vmFlags.includes('sh'));
      assert.equal(e.inode, r.ino);
      fs.unlinkSync(file);
      e = memory.smaps(process.pid).find((x) => x.start === v.address);
      assert.ok(e);
      assert.equal(e.path, file);
      assert.equal(e.deleted, true);
      assert.match(e.header, / \(deleted\)$/);
    } finally {
      r.close();
    }
  } finally {
    rmTemp(dir);
  }
});

test('usage(view) is the entry that starts at view.address; every kB field is kept', () => {
  const r = Region.create({ name: uniqueName('usage'), size: 16 * pageSize });
  try {
    const v = r.map();
    new Uint8Array(v.buffer).fill(7, 0, 3 * pageSize);
    const u = memory.usage(v);
    assert.equal(u.start, v.address);
    assert.equal(u.end, v.address + 16 * pageSize);
    assert.equal(u.path, `/dev/shm/${r.name}`);
    assert.equal(u.rss, 3 * pageSize);
    assert.equal(u.privateDirty, 3 * pageSize, 'mapped once: private');
    assert.equal(u.pss, 3 * pageSize);
    for (const key of ['Size', 'Rss', 'Pss', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean', 'Private_Dirty', 'Referenced', 'Anonymous', 'Swap', 'Locked'])
      assert.equal(typeof u.fields[key], 'number', key);
    // The same figures as the raw file, line by line.
    const raw = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
    const at = raw.findIndex((l) => l.startsWith(`${v.address.toString(16)}-`));
    for (let i = at + 1; i < raw.length && !/^[0-9a-f]+-/.test(raw[i] as string); i++) {
      const m = /^(\w+):\s+(\d+) kB$/.exec(raw[i] as string);
      if (m) assert.equal(u.fields[m[1] as string], Number(m[2]) * 1024, m[1]);
    }
  } finally {
    r.unlink();
    r.close();
  }
});

test('rollup() sums the process: Rss at least that of any one mapping', () => {
  const all = memory.smaps();
  const total = memory.rollup();
  assert.ok(total.rss > 0);
  assert.ok(total.rss >= Math.max(...all.map((e) => e.rss)));
  assert.ok(total.size >= total.rss);
  assert.equal(typeof total.fields['Pss_Anon'], 'number');
  assert.equal('Size' in total.fields, false);
});

test('usage() refuses what is not a mapping, and closed views', () => {
  assert.throws(() => memory.usage(null as never), { name: 'TypeError', message: /"mapping" argument must be a View/ });
  assert.throws(() => memory.usage({ address: 'x', byteLength: 1 } as never), { name: 'TypeError', message: /"address"/ });
  assert.throws(() => memory.usage({ address: pageSize + 1, byteLength: 1 }), { name: 'RangeError', message: /multiple of the page size/ });
  assert.throws(() => memory.usage({ address: pageSize, byteLength: 1 }), { code: 'ERR_COWSHM_NOT_MAPPED' });
  const r = Region.create({ size: pageSize });
  const v = r.map();
  r.close();
  assert.throws(() => memory.usage(v), { code: 'ERR_COWSHM_CLOSED' });
});

test('usage() refuses a view the kernel merged with its neighbour', (t) => {
  const r = Region.create({ size: 2 * pageSize });
  try {
    // The second view usually lands just below the first; with the file
    // offsets in order the kernel makes them one mapping.
    const high = r.map({ offset: pageSize, length: pageSize });
    const low = r.map({ offset: 0, length: pageSize });
    if (low.address + pageSize !== high.address) {
      t.skip('the kernel placed the views apart');
      return;
    }
    for (const v of [high, low]) {
      assert.throws(() => memory.usage(v), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_COWSHM_MAPPING_MERGED');
        assert.match(err.message, new RegExp(`as part of ${low.address.toString(16)}-${(high.address + pageSize).toString(16)}: its figures would not be this mapping's alone`));
        return true;
      });
    }
    // pages() works page by page: merging does not matter there.
    new Uint8Array(high.buffer)[0] = 1;
    assert.equal(memory.pages(high).present, 1);
    assert.equal(memory.pages(low).present, 0);
  } finally {
    r.close();
  }
});
