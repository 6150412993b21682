import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region } from 'cowshm';
import { collectGarbage, mapsLinesFor, fdsFor, uniqueName, shmExists } from './helpers';

test('a view collected without close() releases its mapping', async () => {
  const r = Region.create({ size: 1 << 20 });
  try {
    (() => {
      for (let i = 0; i < 5; i++) new Uint8Array(r.map().buffer)[i] = i;
    })();
    assert.equal(mapsLinesFor(r.dev, r.ino).length, 5);
    await collectGarbage();
    assert.deepEqual(mapsLinesFor(r.dev, r.ino), []);
    // The region itself is untouched.
    assert.deepEqual([...new Uint8Array(r.map().buffer).subarray(0, 5)], [0, 1, 2, 3, 4]);
  } finally {
    r.close();
  }
});

test('a region collected without close() closes its descriptor', async () => {
  const name = uniqueName('gc');
  const ids = (() => {
    const named = Region.create({ name, size: 4096 });
    const anonymous = Region.create({ size: 4096 });
    return [named, anonymous].map((r) => ({ dev: r.dev, ino: r.ino, fd: r.fd }));
  })();
  try {
    for (const { dev, ino, fd } of ids) assert.deepEqual(fdsFor(dev, ino), [fd]);
    await collectGarbage();
    for (const { dev, ino } of ids) assert.deepEqual(fdsFor(dev, ino), []);
  } finally {
    const cleanup = Region.open(name);
    cleanup.unlink();
    cleanup.close();
  }
  assert.equal(shmExists(name), false);
});

test('a buffer outlives its collected View and Region; both go when it does', async () => {
  let bytes: Uint8Array | undefined;
  const { dev, ino } = (() => {
    const r = Region.create({ size: 8192 });
    bytes = new Uint8Array(r.map().buffer);
    bytes[8191] = 42;
    return { dev: r.dev, ino: r.ino };
  })();
  await collectGarbage();
  // The descriptor is closed; the mapping stays valid for as long as the array lives.
  assert.deepEqual(fdsFor(dev, ino), []);
  assert.equal(mapsLinesFor(dev, ino).length, 1);
  assert.equal(bytes?.[8191], 42);
  bytes = undefined;
  await collectGarbage();
  assert.deepEqual(mapsLinesFor(dev, ino), []);
});
