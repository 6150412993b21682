import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import type * as Locks from '../dist/locks';
import { tempDir, rmTemp } from './helpers';

// Internal module: the liveness primitive the rest of the package builds on.
const locks: typeof Locks = require(path.join(__dirname, '..', '..', 'dist', 'locks'));

function withFile(fn: (file: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = tempDir('locks');
    try {
      const file = path.join(dir, 'f');
      fs.writeFileSync(file, 'x'.repeat(64));
      await fn(file);
    } finally {
      rmTemp(dir);
    }
  };
}

test('lockRange: two descriptors of one process conflict (the lock is the open file description\'s)', withFile((file) => {
  const a = fs.openSync(file, 'r+');
  const b = fs.openSync(file, 'r+');
  try {
    assert.equal(locks.lockRange(a, 0, 8, 'exclusive'), true);
    assert.equal(locks.lockRange(b, 0, 8, 'exclusive'), false);
    assert.equal(locks.lockRange(b, 0, 8, 'shared'), false);
    assert.equal(locks.lockRange(b, 8, 8, 'exclusive'), true, 'another range is free');
    locks.unlockRange(a, 0, 8);
    assert.equal(locks.lockRange(b, 0, 8, 'exclusive'), true);
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
}));

test('lockRange: closing the holding descriptor drops its lock; closing another one does not', withFile((file) => {
  const a = fs.openSync(file, 'r+');
  const other = fs.openSync(file, 'r');
  const b = fs.openSync(file, 'r+');
  try {
    assert.equal(locks.lockRange(a, 0, 0, 'shared'), true);
    assert.equal(locks.lockRange(other, 0, 0, 'shared'), true);
    fs.closeSync(other); // a classic fcntl lock of this process would go here
    assert.equal(locks.lockRange(b, 0, 0, 'exclusive'), false, 'a still holds its lock');
    fs.closeSync(a);
    assert.equal(locks.lockRange(b, 0, 0, 'exclusive'), true);
  } finally {
    fs.closeSync(b);
  }
}));

test('lockFile: shared locks coexist, an exclusive one excludes', withFile((file) => {
  const a = fs.openSync(file, 'r');
  const b = fs.openSync(file, 'r');
  try {
    assert.equal(locks.lockFile(a, 'shared'), true);
    assert.equal(locks.lockFile(b, 'shared'), true);
    locks.unlockFile(b);
    assert.equal(locks.lockFile(b, 'exclusive'), false);
    locks.unlockFile(a);
    assert.equal(locks.lockFile(b, 'exclusive'), true);
    assert.equal(locks.lockFile(a, 'shared'), false);
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
}));

test('a lock held by a process killed with SIGKILL is free once it is gone', withFile(async (file) => {
  const holder = `
    const fs = require('node:fs');
    const locks = require(${JSON.stringify(path.join(__dirname, '..', '..', 'dist', 'locks'))});
    const fd = fs.openSync(${JSON.stringify(file)}, 'r+');
    if (!locks.lockRange(fd, 0, 0, 'exclusive') || !locks.lockFile(fd, 'exclusive')) process.exit(3);
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', holder], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`holder exited with ${code} before taking its locks`)));
  });
  const fd = fs.openSync(file, 'r+');
  try {
    assert.equal(locks.lockRange(fd, 0, 0, 'exclusive'), false, 'held by the live child');
    assert.equal(locks.lockFile(fd, 'shared'), false, 'held by the live child');
    child.kill('SIGKILL');
    await exited;
    assert.equal(locks.lockRange(fd, 0, 0, 'exclusive'), true, 'the kernel dropped the dead holder\'s lock');
    assert.equal(locks.lockFile(fd, 'exclusive'), true, 'the kernel dropped the dead holder\'s flock');
  } finally {
    fs.closeSync(fd);
  }
}));

test('a bad descriptor is an EBADF error with its syscall', () => {
  assert.throws(() => locks.lockRange(1 << 30, 0, 0, 'shared'), { code: 'EBADF', syscall: 'fcntl' });
  assert.throws(() => locks.lockFile(1 << 30, 'shared'), { code: 'EBADF', syscall: 'flock' });
});
