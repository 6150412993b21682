import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region } from 'cowshm';
import { runCli, uniqueName, shmExists } from './helpers';

/** A segment nobody holds. */
function orphan(tag: string): string {
  const name = uniqueName(tag);
  Region.create({ name, size: 4096 }).close();
  return name;
}

function cleanup(...names: string[]): void {
  for (const name of names) fs.rmSync(`/dev/shm/${name}`, { force: true });
}

test('rm NAME...: removes each, says so, exit 0', () => {
  const a = orphan('rm-a');
  const b = orphan('rm-b');
  try {
    const r = runCli(['rm', a, b]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `removed /dev/shm/${a}\nremoved /dev/shm/${b}\n`);
    assert.equal(shmExists(a), false);
    assert.equal(shmExists(b), false);
  } finally {
    cleanup(a, b);
  }
});

test('a name may be given as its /dev/shm path', () => {
  const a = orphan('rm-path');
  try {
    const r = runCli(['rm', `/dev/shm/${a}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `removed /dev/shm/${a}\n`);
    assert.equal(shmExists(a), false);
  } finally {
    cleanup(a);
  }
});

test('rm removes a segment even while it is held; the holder keeps its memory', () => {
  const name = uniqueName('rm-held');
  const region = Region.create({ name, size: 4096 });
  try {
    const bytes = new Uint8Array(region.map().buffer);
    bytes[0] = 5;
    const r = runCli(['rm', name]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(shmExists(name), false);
    assert.equal(bytes[0], 5);
  } finally {
    region.close();
    cleanup(name);
  }
});

test('errors are reported per name and the others are still removed; exit 1', () => {
  const missing = uniqueName('rm-missing');
  const present = orphan('rm-present');
  try {
    const r = runCli(['rm', missing, present, 'bad/name']);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, `removed /dev/shm/${present}\n`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    assert.equal(lines[0], `cowshm rm: ENOENT: no such file or directory, shm_unlink '${missing}'`);
    assert.match(lines[1] ?? '', /^cowshm rm: The "name" argument must be a name without '\/'/);
    assert.equal(shmExists(present), false);
  } finally {
    cleanup(present);
  }
});

test('rm with nothing to remove is a usage error (exit 2)', () => {
  const r = runCli(['rm']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^cowshm rm: name the segments to remove, or use --orphans\nRun 'cowshm rm --help' for its usage\.\n$/);
});

test('rm --orphans NAME...: removes the unheld ones, refuses the held ones (exit 1)', () => {
  const free = orphan('rm-orphan');
  const heldName = uniqueName('rm-inuse');
  const held = Region.create({ name: heldName, size: 4096 });
  held.map();
  try {
    const r = runCli(['rm', '--orphans', free, heldName]);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, `removed /dev/shm/${free}\n`);
    assert.match(r.stderr, new RegExp(`^cowshm rm: ${heldName} is held by pid ${process.pid} \\(node\\): not removed$`, 'm'));
    assert.equal(shmExists(free), false);
    assert.equal(shmExists(heldName), true);
  } finally {
    held.unlink();
    held.close();
    cleanup(free);
  }
});

test('--dry-run says what would go and removes nothing', () => {
  const a = orphan('rm-dry');
  const missing = uniqueName('rm-dry-missing');
  try {
    const r = runCli(['rm', '--orphans', '--dry-run', a]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `would remove /dev/shm/${a}\n`);
    const plain = runCli(['rm', '--dry-run', a, missing]);
    assert.equal(plain.status, 1);
    assert.equal(plain.stdout, `would remove /dev/shm/${a}\n`);
    assert.match(plain.stderr, new RegExp(`ENOENT: no such file or directory, shm_unlink '${missing}'`));
    assert.equal(shmExists(a), true);
  } finally {
    cleanup(a);
  }
});
