import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { Region, pageSize } from 'cowshm';
import { packageRoot, uniqueName } from './helpers';

test("the kernel's writes into a protected view fail with EFAULT until prepareWrite", () => {
  const r = Region.create({ size: 8 * pageSize });
  const fd = fs.openSync('/dev/urandom', 'r');
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(9);
    const s = r.snapshot();
    const target = view.subarray(2 * pageSize + 100, 3 * pageSize + 50);
    assert.throws(() => fs.readSync(fd, target), { code: 'EFAULT' });
    r.prepareWrite(2 * pageSize + 100, target.length);
    assert.equal(fs.readSync(fd, target), target.length);
    assert.ok(new Uint8Array(s.buffer).every((x) => x === 9), 'the snapshot copied the range first');
    assert.ok(s.copiedPages >= 2);
    // Outside the prepared range, protection stays.
    assert.throws(() => fs.readSync(fd, view.subarray(6 * pageSize, 7 * pageSize)), { code: 'EFAULT' });
    r.prepareWrite(0, 0);
    s.release();
    r.prepareWrite(0, r.size); // no snapshot: nothing to do
  } finally {
    fs.closeSync(fd);
    r.close();
  }
});

test('not intercepted (documented limits): pwrite on the fd, and writes by another process', () => {
  const name = uniqueName('snap-limits');
  const r = Region.create({ name, size: 4 * pageSize });
  try {
    const s = r.snapshot();
    fs.writeSync(r.fd, Buffer.from([42]), 0, 1, 0);
    assert.equal(new Uint8Array(s.buffer)[0], 42, 'pwrite(2) goes to the page cache the snapshot still shares');
    const child = spawnSync(
      process.execPath,
      ['-e', `const { Region } = require(${JSON.stringify(packageRoot)}); const r = Region.open(${JSON.stringify(name)}); new Uint8Array(r.map().buffer)[pageSize] = 43; r.close();`.replace('pageSize', String(pageSize))],
      { encoding: 'utf8' },
    );
    assert.equal(child.status, 0, child.stderr);
    assert.equal(new Uint8Array(s.buffer)[pageSize], 43, "another process's write is not intercepted");
    s.release();
  } finally {
    r.unlink();
    r.close();
  }
});

test('not intercepted (documented limit): truncation; reading a truncated page of a snapshot is reported, not silent', () => {
  const name = uniqueName('snap-trunc');
  const script = `
    const { Region } = require(${JSON.stringify(packageRoot)});
    const fs = require('node:fs');
    const r = Region.create({ name: ${JSON.stringify(name)}, size: 2 * ${pageSize} });
    const s = r.snapshot();
    r.unlink();
    fs.ftruncateSync(r.fd, 0);
    process.stdout.write('truncated\\n');
    new Uint8Array(s.buffer)[${pageSize}];
  `;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.match(child.stdout, /truncated/);
  assert.equal(child.signal, 'SIGBUS', `${child.status} ${child.stderr}`);
  assert.match(child.stderr, /cowshm: fatal .*snapshot 1/);
});

test('a write into a protected view past a truncated end is reported, not retried forever', () => {
  const name = uniqueName('snap-trunc-write');
  const script = `
    const { Region } = require(${JSON.stringify(packageRoot)});
    const fs = require('node:fs');
    const r = Region.create({ name: ${JSON.stringify(name)}, size: 4 * ${pageSize} });
    const view = new Uint8Array(r.map().buffer);
    view[0] = 1;
    const s = r.snapshot();
    r.unlink();
    fs.ftruncateSync(r.fd, ${pageSize});
    view[0] = 2; // still inside the file: resolved as usual
    process.stdout.write('written ' + new Uint8Array(s.buffer)[0] + '\\n');
    view[3 * ${pageSize}] = 3; // past the end: SIGBUS, whatever the protection
  `;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.match(child.stdout, /written 1/);
  assert.equal(child.signal, 'SIGBUS', `${child.status} ${child.signal} ${child.stderr}`);
  assert.match(child.stderr, /cowshm: fatal write to a page past the end of the file/);
});
