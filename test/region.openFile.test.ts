import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { Region } from 'cowshm';
import { tempDir, rmTemp, uniqueName, packageRoot } from './helpers';

test('create a file region: size, kind, path, mode; the bytes land in the file', () => {
  const dir = tempDir('file');
  try {
    const file = path.join(dir, 'data.bin');
    const r = Region.openFile(file, { create: true, size: 3 * 4096, mode: 0o640 });
    try {
      assert.equal(r.kind, 'file');
      assert.equal(r.name, null);
      assert.equal(r.path, file);
      assert.equal(r.size, 3 * 4096);
      const st = fs.statSync(file);
      assert.equal(st.size, 3 * 4096);
      assert.equal(st.mode & 0o777, 0o640 & ~process.umask());
      new Uint8Array(r.map().buffer).set([10, 20, 30], 5000);
      r.flush();
      assert.deepEqual([...fs.readFileSync(file).subarray(5000, 5003)], [10, 20, 30]);
    } finally {
      r.close();
    }
  } finally {
    rmTemp(dir);
  }
});

test('a relative path is resolved once, at open', () => {
  const dir = tempDir('relative');
  const cwd = process.cwd();
  try {
    process.chdir(dir);
    const r = Region.openFile('rel.bin', { create: true, size: 4096 });
    assert.equal(r.path, path.join(dir, 'rel.bin'));
    r.close();
  } finally {
    process.chdir(cwd);
    rmTemp(dir);
  }
});

test('size grows a shorter file and never shrinks a longer one', () => {
  const dir = tempDir('grow');
  try {
    const file = path.join(dir, 'g.bin');
    fs.writeFileSync(file, Buffer.alloc(10000, 7));
    const grown = Region.openFile(file, { size: 20000 });
    assert.equal(grown.size, 20000);
    assert.equal(fs.statSync(file).size, 20000);
    const bytes = new Uint8Array(grown.map().buffer);
    assert.equal(bytes[9999], 7); // the old content stays
    assert.equal(bytes[10000], 0); // the new part reads as zeros
    grown.close();
    const kept = Region.openFile(file, { size: 4096 });
    assert.equal(kept.size, 20000);
    assert.equal(fs.statSync(file).size, 20000);
    kept.close();
    const asIs = Region.openFile(file);
    assert.equal(asIs.size, 20000);
    asIs.close();
  } finally {
    rmTemp(dir);
  }
});

test('create opens an existing file as it is (no truncation)', () => {
  const dir = tempDir('exists');
  try {
    const file = path.join(dir, 'e.bin');
    fs.writeFileSync(file, Buffer.alloc(8192, 3));
    const r = Region.openFile(file, { create: true, size: 4096 });
    assert.equal(r.size, 8192);
    assert.equal(new Uint8Array(r.map().buffer)[8191], 3);
    r.close();
  } finally {
    rmTemp(dir);
  }
});

test('O_NOFOLLOW: a symbolic link is refused with ELOOP', () => {
  const dir = tempDir('symlink');
  try {
    const target = path.join(dir, 'target.bin');
    const link = path.join(dir, 'link.bin');
    fs.writeFileSync(target, Buffer.alloc(4096));
    fs.symlinkSync(target, link);
    for (const options of [{}, { readOnly: true }, { create: true, size: 4096 }]) {
      assert.throws(() => Region.openFile(link, options), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'ELOOP');
        assert.equal(err.syscall, 'open');
        assert.equal(err.path, link);
        return true;
      });
    }
    assert.equal(fs.statSync(target).size, 4096);
  } finally {
    rmTemp(dir);
  }
});

test('readOnly: read and cow views only; the file is never written', () => {
  const dir = tempDir('readonly');
  try {
    const file = path.join(dir, 'ro.bin');
    fs.writeFileSync(file, Buffer.alloc(4096, 1));
    fs.chmodSync(file, 0o400);
    const r = Region.openFile(file, { readOnly: true });
    try {
      assert.equal(r.readOnly, true);
      assert.throws(() => r.map({ access: 'write' }), { code: 'ERR_COWSHM_READ_ONLY' });
      const cow = new Uint8Array(r.map({ access: 'cow' }).buffer);
      cow[0] = 9;
      r.flush();
      assert.equal(fs.readFileSync(file)[0], 1);
      assert.throws(() => Region.openFile(file, { readOnly: true, size: 8192 }), (err: Error) => {
        assert.ok(err instanceof RangeError);
        assert.match(err.message, /"size" option must be at most the file's size \(4096\) for a read-only file/);
        return true;
      });
      assert.throws(() => Region.openFile(file, { readOnly: true, create: true }), RangeError);
    } finally {
      r.close();
    }
  } finally {
    rmTemp(dir);
  }
});

test('only regular files: a directory, a FIFO and a device are refused (without hanging)', () => {
  const dir = tempDir('notfile');
  try {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    for (const target of [dir, fifo, '/dev/null']) {
      assert.throws(() => Region.openFile(target, { readOnly: true }), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'ERR_COWSHM_NOT_A_FILE');
        assert.equal(err.path, target);
        assert.match(err.message, /is not a regular file/);
        return true;
      });
    }
    assert.throws(() => Region.openFile(dir), { code: 'EISDIR', syscall: 'open' });
  } finally {
    rmTemp(dir);
  }
});

test('a missing file without create: ENOENT naming the path', () => {
  const dir = tempDir('missing');
  try {
    const file = path.join(dir, 'nope.bin');
    assert.throws(() => Region.openFile(file), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.path, file);
      assert.equal(err.message, `ENOENT: no such file or directory, open '${file}'`);
      return true;
    });
    assert.equal(fs.existsSync(file), false);
  } finally {
    rmTemp(dir);
  }
});

test('a create that fails removes the file it created, and only that', () => {
  const dir = tempDir('failcreate');
  try {
    const file = path.join(dir, 'new.bin');
    // No size for a new, empty file: refused after the file was made.
    assert.throws(() => Region.openFile(file, { create: true }), (err: Error) => {
      assert.ok(err instanceof RangeError);
      assert.match(err.message, /"size" option must be a positive integer when the file is created/);
      return true;
    });
    assert.equal(fs.existsSync(file), false);
    // Too large for any filesystem here: ftruncate fails (EFBIG or EINVAL) after the create.
    assert.throws(() => Region.openFile(file, { create: true, size: 2 ** 53 - 1 }), (err: NodeJS.ErrnoException) => {
      assert.ok(['EFBIG', 'EINVAL', 'ENOSPC'].includes(err.code ?? ''), String(err));
      assert.equal(err.path, file);
      return true;
    });
    assert.equal(fs.existsSync(file), false);
    // A file that was already there survives a failed open.
    const existing = path.join(dir, 'old.bin');
    fs.writeFileSync(existing, 'kept');
    assert.throws(() => Region.openFile(existing, { create: true, size: 2 ** 53 - 1 }), { path: existing });
    assert.equal(fs.readFileSync(existing, 'utf8'), 'kept'); // content and length as they were
  } finally {
    rmTemp(dir);
  }
});

test('flush() writes every write view back; unlink() removes the file, the mapping stays', () => {
  const dir = tempDir('flush');
  try {
    const file = path.join(dir, 'f.bin');
    const r = Region.openFile(file, { create: true, size: 2 * 4096 });
    try {
      const a = new Uint8Array(r.map({ length: 4096 }).buffer);
      const b = new Uint8Array(r.map({ offset: 4096 }).buffer);
      a[1] = 0xaa;
      b[2] = 0xbb;
      r.flush();
      const onDisk = fs.readFileSync(file);
      assert.equal(onDisk[1], 0xaa);
      assert.equal(onDisk[4096 + 2], 0xbb);
      r.unlink();
      assert.equal(fs.existsSync(file), false);
      a[3] = 1; // still mapped
      assert.equal(a[3], 1);
      r.unlink(); // idempotent
    } finally {
      r.close();
    }
  } finally {
    rmTemp(dir);
  }
});

test('an existing file that could not be grown is left at its old length', () => {
  // On tmpfs ftruncate accepts a huge size and fallocate then fails with ENOSPC.
  const file = `/dev/shm/${uniqueName('grow-fail')}`;
  fs.writeFileSync(file, 'abc');
  try {
    assert.throws(() => Region.openFile(file, { size: 2 ** 50 }), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOSPC');
      assert.equal(err.syscall, 'fallocate');
      assert.equal(err.path, file);
      assert.match(err.message, /\/dev\/shm has .* free; the region needs 1\.00 PiB/);
      return true;
    });
    assert.equal(fs.statSync(file).size, 3);
    assert.equal(fs.readFileSync(file, 'utf8'), 'abc');
  } finally {
    fs.unlinkSync(file);
  }
});

test('growing a file on tmpfs beyond the memory available: ENOMEM, the file left as it was', (t) => {
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  const available = kib('MemAvailable') + kib('SwapFree');
  const st = fs.statfsSync('/dev/shm');
  const size = Math.floor((st.blocks * st.bsize) / 4096) * 4096; // fits in /dev/shm, so ENOSPC would not come first
  if (size < available * 1.1) {
    t.skip('/dev/shm is not much larger than the memory available here');
    return;
  }
  const file = `/dev/shm/${uniqueName('tmpfs-grow')}`;
  fs.writeFileSync(file, 'abc');
  try {
    // File size limit 2 MiB: were the check missing, ftruncate would fail (EFBIG) before fallocate could allocate.
    const code = `
      const { Region } = require('cowshm');
      try { Region.openFile(${JSON.stringify(file)}, { size: ${size} }).close(); console.log('grown'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, syscall: e.syscall, path: e.path })); }`;
    const r = spawnSync('/bin/sh', ['-c', 'ulimit -f 2048 && exec "$0" -e "$1"', process.execPath, code], { cwd: packageRoot, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { code: 'ENOMEM', syscall: 'fallocate', path: file });
    assert.equal(fs.readFileSync(file, 'utf8'), 'abc');
  } finally {
    fs.unlinkSync(file);
  }
});
