import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, listSegments, removeSegment } from 'cowshm';
import { uniqueName, shmExists } from './helpers';

test('listSegments() from the library: the same data ls --json prints', () => {
  const r = Region.create({ name: uniqueName('seg-lib'), size: 4096 });
  try {
    const s = listSegments().find((x) => x.name === r.name);
    assert.equal(s?.ino, r.ino);
    assert.deepEqual(s?.holders.map((h) => h.pid), [process.pid]);
    const quick = listSegments({ holders: false }).find((x) => x.name === r.name);
    assert.deepEqual(quick?.holders, []);
    assert.equal(quick?.orphan, false); // not known without looking at /proc
    assert.deepEqual(quick?.uninspected, []);
    assert.throws(() => listSegments({ holders: 'no' as never }), { code: 'ERR_INVALID_ARG_TYPE' });
  } finally {
    r.unlink();
    r.close();
  }
});

test('removeSegment(name, expected) leaves a name that now leads to another segment', () => {
  const name = uniqueName('seg-replaced');
  const first = Region.create({ name, size: 4096 });
  const seen = { dev: first.dev, ino: first.ino };
  first.unlink();
  first.close();
  const second = Region.create({ name, size: 4096 });
  try {
    assert.equal(removeSegment(name, seen), false);
    assert.equal(shmExists(name), true);
    assert.equal(removeSegment(name, { dev: second.dev, ino: second.ino }), true);
    assert.equal(shmExists(name), false);
    assert.throws(() => removeSegment(name), { code: 'ENOENT', syscall: 'shm_unlink', path: name });
    assert.throws(() => removeSegment(name, seen), { code: 'ENOENT' });
    assert.throws(() => removeSegment('a/b'), RangeError);
    assert.throws(() => removeSegment(name, 5 as never), TypeError);
  } finally {
    second.close();
  }
});
