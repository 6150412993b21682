import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Region } from 'cowshm';
import { uniqueName, isRoot, runNode } from './helpers';

test('open by name: same bytes, size from fstat, kind and path', () => {
  const name = uniqueName('open');
  const a = Region.create({ name, size: 12345 });
  try {
    new Uint8Array(a.map().buffer).set([1, 2, 3], 4000);
    const b = Region.open(name);
    try {
      assert.equal(b.kind, 'shm');
      assert.equal(b.name, name);
      assert.equal(b.path, `/dev/shm/${name}`);
      assert.equal(b.size, 12345);
      assert.equal(b.readOnly, false);
      assert.equal(b.dev, a.dev);
      assert.equal(b.ino, a.ino);
      assert.notEqual(b.fd, a.fd);
      const bytes = new Uint8Array(b.map().buffer);
      assert.deepEqual([...bytes.subarray(4000, 4003)], [1, 2, 3]);
      bytes[0] = 99; // and writes go the other way
      assert.equal(new Uint8Array(a.map().buffer)[0], 99);
    } finally {
      b.close();
    }
  } finally {
    a.unlink();
    a.close();
  }
});

test('open reports the size as it is now, not as it was created', () => {
  const name = uniqueName('grown');
  const a = Region.create({ name, size: 4096 });
  try {
    fs.truncateSync(a.path, 3 * 4096);
    const b = Region.open(name);
    assert.equal(b.size, 3 * 4096);
    b.close();
  } finally {
    a.unlink();
    a.close();
  }
});

test('readOnly: write views are refused with a clear error; read and cow views work', () => {
  const name = uniqueName('ro');
  const a = Region.create({ name, size: 8192 });
  try {
    new Uint8Array(a.map().buffer)[10] = 5;
    const r = Region.open(name, { readOnly: true });
    try {
      assert.equal(r.readOnly, true);
      assert.throws(() => r.map({ access: 'write' }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_COWSHM_READ_ONLY');
        assert.match(err.message, new RegExp(`region '${name}' \\(shm\\) was opened read-only: map it with access 'read' or 'cow'`));
        return true;
      });
      const view = r.map(); // the default for a read-only region
      assert.equal(view.access, 'read');
      assert.equal(new Uint8Array(view.buffer)[10], 5);
      const cow = r.map({ access: 'cow' });
      const c = new Uint8Array(cow.buffer);
      c[10] = 77; // private: the region keeps its byte
      assert.equal(c[10], 77);
      assert.equal(new Uint8Array(view.buffer)[10], 5);
      assert.equal(r.handle().readOnly, true);
    } finally {
      r.close();
    }
  } finally {
    a.unlink();
    a.close();
  }
});

test('a missing segment: ENOENT shaped like a Node fs error', () => {
  const name = uniqueName('missing');
  assert.throws(() => Region.open(name), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.errno, -2);
    assert.equal(err.syscall, 'shm_open');
    assert.equal(err.path, name);
    assert.equal(err.message, `ENOENT: no such file or directory, shm_open '${name}'`);
    return true;
  });
});

test('a segment owned by another user is refused unless allowForeignOwner', (t) => {
  if (!isRoot) {
    t.skip('needs root to chown a segment to another user');
    return;
  }
  const name = uniqueName('foreign');
  const a = Region.create({ name, size: 4096, mode: 0o666 });
  try {
    fs.chownSync(a.path, 65534, 65534);
    assert.throws(() => Region.open(name), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_COWSHM_FOREIGN_OWNER');
      assert.match(err.message, /is owned by uid 65534, not by this process \(uid 0\)/);
      assert.match(err.message, /allowForeignOwner: true/);
      return true;
    });
    const b = Region.open(name, { allowForeignOwner: true });
    assert.equal(b.size, 4096);
    b.close();
  } finally {
    a.unlink();
    a.close();
  }
});

test('permission denied: EACCES for another user opening a 0600 segment', (t) => {
  if (!isRoot) {
    t.skip('needs root to run a child process as uid 65534');
    return;
  }
  const name = uniqueName('eacces');
  const a = Region.create({ name, size: 4096, mode: 0o600 });
  try {
    const code = `
      const { Region } = require('cowshm');
      try { Region.open(${JSON.stringify(name)}, { allowForeignOwner: true }); console.log('opened'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, message: e.message })); }`;
    const r = runNode(code, { uid: 65534, gid: 65534 });
    assert.equal(r.status, 0, r.stderr);
    const err = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(err, {
      code: 'EACCES',
      errno: -13,
      syscall: 'shm_open',
      path: name,
      message: `EACCES: permission denied, shm_open '${name}'`,
    });
  } finally {
    a.unlink();
    a.close();
  }
});

test('an empty segment opens (size 0) but has nothing to map', () => {
  const name = uniqueName('empty');
  fs.writeFileSync(`/dev/shm/${name}`, '', { mode: 0o600 });
  try {
    const r = Region.open(name);
    assert.equal(r.size, 0);
    assert.throws(() => r.map(), { code: 'ERR_COWSHM_EMPTY' });
    r.close();
  } finally {
    fs.unlinkSync(`/dev/shm/${name}`);
  }
});

test('names up to 255 bytes work end to end', () => {
  const name = uniqueName('long');
  const long = name + 'x'.repeat(255 - Buffer.byteLength(name));
  const a = Region.create({ name: long, size: 4096 });
  try {
    const b = Region.open(long);
    new Uint8Array(b.map().buffer)[1] = 1;
    assert.equal(new Uint8Array(a.map().buffer)[1], 1);
    b.close();
  } finally {
    a.unlink();
    a.close();
  }
});

test('something other than a segment under the name (a FIFO) is refused without waiting', () => {
  const name = uniqueName('fifo');
  execFileSync('mkfifo', ['-m', '600', `/dev/shm/${name}`]);
  try {
    for (const readOnly of [true, false]) {
      assert.throws(() => Region.open(name, { readOnly }), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'ERR_COWSHM_NOT_A_FILE');
        assert.equal(err.path, name);
        assert.match(err.message, /is not a regular file, so not a shared memory segment/);
        return true;
      });
    }
  } finally {
    fs.unlinkSync(`/dev/shm/${name}`);
  }
});
