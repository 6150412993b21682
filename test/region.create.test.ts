import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region } from 'cowshm';
import { spawnSync } from 'node:child_process';
import { uniqueName, shmExists, packageRoot } from './helpers';

test('create a named segment: /dev/shm/NAME with the exact size and mode', () => {
  const name = uniqueName('create');
  const r = Region.create({ name, size: 123457, mode: 0o640 });
  try {
    assert.equal(r.kind, 'shm');
    assert.equal(r.name, name);
    assert.equal(r.size, 123457);
    assert.equal(r.path, `/dev/shm/${name}`);
    const st = fs.statSync(r.path);
    assert.equal(st.size, 123457);
    assert.equal(st.mode & 0o777, 0o640);
  } finally {
    r.unlink();
    r.close();
  }
  assert.equal(shmExists(name), false);
});

test('create never reuses an existing segment: EEXIST, and its data survives', () => {
  const name = uniqueName('exists');
  const r = Region.create({ name, size: 4096 });
  try {
    new Uint8Array(r.map().buffer)[0] = 7;
    assert.throws(() => Region.create({ name, size: 8192 }), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'EEXIST');
      assert.equal(err.syscall, 'shm_open');
      assert.equal(err.errno, -17);
      assert.equal(err.path, name);
      assert.match(err.message, /^EEXIST: file already exists, shm_open '/);
      return true;
    });
    assert.equal(fs.statSync(r.path).size, 4096);
    assert.equal(new Uint8Array(r.map().buffer)[0], 7);
  } finally {
    r.unlink();
    r.close();
  }
});

test('create without a name makes a sealed memfd', () => {
  const r = Region.create({ size: 1 << 16 });
  try {
    assert.equal(r.kind, 'memfd');
    assert.equal(r.name, null);
    assert.equal(r.path, `/proc/${process.pid}/fd/${r.fd}`);
    // F_SEAL_SHRINK: nobody holding the fd can truncate it under our mappings...
    assert.throws(() => fs.ftruncateSync(r.fd, 0), { code: 'EPERM' });
    // ...but growing is still allowed.
    fs.ftruncateSync(r.fd, 1 << 17);
  } finally {
    r.close();
  }
});

test('reserve: true allocates every page; reserve: false stays sparse', () => {
  const size = 8 << 20;
  const a = Region.create({ size, name: uniqueName('reserved') });
  const b = Region.create({ size, name: uniqueName('sparse'), reserve: false });
  try {
    assert.equal(fs.statSync(a.path).blocks * 512, size);
    assert.equal(fs.statSync(b.path).blocks, 0);
  } finally {
    a.unlink();
    a.close();
    b.unlink();
    b.close();
  }
});

test('bad arguments: TypeError or RangeError naming the argument, and nothing created', () => {
  const name = uniqueName('bad');
  const cases: Array<[unknown, RegExp, ErrorConstructor]> = [
    [undefined, /"options" argument must be an object/, TypeError],
    [{}, /"size" option must be a number\. Received undefined/, TypeError],
    [{ size: '1' }, /"size" option must be a number\. Received type string \('1'\)/, TypeError],
    [{ size: 0 }, /"size" option must be a positive integer\. Received 0/, RangeError],
    [{ size: -1 }, /Received -1/, RangeError],
    [{ size: Number.NaN }, /Received NaN/, RangeError],
    [{ size: 1.5 }, /Received 1\.5/, RangeError],
    [{ size: 10, name: '' }, /"name" option must be a non-empty string/, RangeError],
    [{ size: 10, name: 'a/b' }, /without '\/'/, RangeError],
    [{ size: 10, name: 'x'.repeat(256) }, /at most 255 bytes/, RangeError],
    [{ size: 10, name: '..' }, /other than '\.' and '\.\.'/, RangeError],
    [{ size: 10, name: 42 }, /"name" option must be a string\. Received 42/, TypeError],
    [{ size: 10, name, mode: 0o1777 }, /"mode" option must be an integer from 0 to 511/, RangeError],
    [{ size: 10, name, reserve: 'yes' }, /"reserve" option must be a boolean/, TypeError],
  ];
  for (const [options, message, type] of cases) {
    assert.throws(() => Region.create(options as never), (err: Error) => {
      assert.ok(err instanceof type, `${String(err)} should be a ${type.name}`);
      assert.match(err.message, message);
      return true;
    });
  }
  assert.equal(shmExists(name), false);
});

test('a create that fails after shm_open removes the segment it made', () => {
  const name = uniqueName('toolarge');
  // Larger than any tmpfs here: ftruncate succeeds, fallocate fails with ENOSPC or EFBIG.
  assert.throws(() => Region.create({ name, size: 2 ** 52 }), (err: NodeJS.ErrnoException) => {
    assert.ok(['ENOSPC', 'EFBIG', 'EINVAL'].includes(err.code ?? ''), String(err));
    return true;
  });
  assert.equal(shmExists(name), false);
});

test('ENOSPC at create names the segment and says how much /dev/shm has', () => {
  const name = uniqueName('nospace');
  const st = fs.statfsSync('/dev/shm');
  // Larger than all of /dev/shm: tmpfs refuses before allocating anything.
  const size = st.blocks * st.bsize + 4096;
  assert.throws(() => Region.create({ name, size }), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'ENOSPC');
    assert.equal(err.errno, -28);
    assert.equal(err.syscall, 'fallocate');
    assert.equal(err.path, name);
    assert.match(err.message, new RegExp(`^ENOSPC: no space left on device, fallocate '${name}' \\(/dev/shm has .+ free; the region needs .+\\)$`));
    return true;
  });
  assert.equal(shmExists(name), false);
});

test('a reservation larger than the memory available is refused with ENOMEM, before anything exists', () => {
  const name = uniqueName('nomem');
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  const available = kib('MemAvailable') + kib('SwapFree');
  const st = fs.statfsSync('/dev/shm');
  const shmTotal = st.blocks * st.bsize;
  // A named segment must fit in /dev/shm (or ENOSPC comes first): only when
  // all of /dev/shm is well beyond the memory available can it show ENOMEM.
  const cases: Array<[string | null, number]> = [[null, 2 ** 50]];
  if (shmTotal > available * 1.1) cases.push([name, Math.floor(shmTotal / 4096) * 4096]);
  // In a child whose file size limit is 2 MiB: were the check missing, ftruncate
  // would fail there (EFBIG, SIGXFSZ) instead of fallocate waking the OOM killer.
  const code = `
    const { Region } = require('cowshm');
    const out = [];
    for (const [name, size] of ${JSON.stringify(cases)}) {
      try { Region.create({ name: name ?? undefined, size }).close(); out.push('created'); }
      catch (e) { out.push({ code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, message: e.message }); }
    }
    console.log(JSON.stringify(out));`;
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -f 2048 && exec "$0" -e "$1"', process.execPath, code], { cwd: packageRoot, encoding: 'utf8' });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  const results = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
  assert.equal(results.length, cases.length);
  for (const [i, result] of results.entries()) {
    const target = cases[i]?.[0];
    assert.equal(result['code'], 'ENOMEM', JSON.stringify(result));
    assert.equal(result['errno'], -12);
    assert.equal(result['syscall'], 'fallocate');
    assert.equal(result['path'], target ?? undefined);
    assert.match(
      String(result['message']),
      /needs more memory than is available \(.+: MemAvailable \+ SwapFree, within the cgroup limit\); allocating it would wake the OOM killer\. Pass reserve: false for a sparse region/,
    );
  }
  assert.match(String(results[0]?.['message']), /^ENOMEM: not enough memory, fallocate \(reserving 1\.00 PiB needs/);
  assert.equal(shmExists(name), false);
});
