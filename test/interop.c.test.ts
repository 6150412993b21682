// A C program opens a cowshm segment with shm_open by name (examples/c).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Region } from 'cowshm';
import { packageRoot, uniqueName, shmExists, tempDir, rmTemp } from './helpers';

const source = path.join(packageRoot, 'examples', 'c', 'shm_peek.c');
const gcc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
const skip = gcc.error ? `gcc is not available: ${gcc.error.message}` : undefined;
if (skip) console.log(`C interop test skipped: ${skip}`);

test('a C program maps a cowshm segment by name, reads its int32 values and writes one back', { skip }, () => {
  const dir = tempDir('c-interop');
  const name = uniqueName('c');
  const r = Region.create({ name, size: 1 << 20 });
  try {
    const bin = path.join(dir, 'shm_peek');
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', bin, source, '-lrt'], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);

    const a = new Int32Array(r.map().buffer);
    for (let i = 0; i < a.length; i++) a[i] = i % 2 === 0 ? i : -i;
    const expected = a.reduce((s, x) => s + BigInt(x), 0n);
    const run = spawnSync(bin, [name, '12345', '-2147483648'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), { count: a.length, sum: String(expected), first: 0 });
    assert.equal(a[12345], -2147483648, "the C program's write is visible through the view");

    const missing = spawnSync(bin, [`${name}-missing`], { encoding: 'utf8' });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /shm_open .*: No such file or directory/);
  } finally {
    r.unlink();
    r.close();
    rmTemp(dir);
  }
  assert.equal(shmExists(name), false);
});
