/**
 * Every path a checkpoint operation opens must be a regular file, refused at
 * once otherwise: a FIFO opened without O_NONBLOCK waits for a writer forever,
 * and a device (/dev/zero) reads forever. Each case runs in a child process
 * with a timeout, so a regression fails here instead of hanging the suite.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { runNode, runCli, tempDir, rmTemp } from './helpers';

const TIMEOUT = 15_000;

/** Runs `body` (an async function's body, with `cowshm`, `fs`, `path` in scope) in a child; returns its error's fields. */
function inChild(body: string): { code?: string; name?: string; message?: string; ok?: boolean } {
  const code = `
    const cowshm = require('cowshm'); const fs = require('node:fs'); const path = require('node:path');
    (async () => { ${body} })().then(
      () => console.log(JSON.stringify({ ok: true })),
      (e) => console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })),
    );`;
  const r = runNode(code, { timeout: TIMEOUT });
  assert.equal(r.signal, null, `the child hung (killed after ${TIMEOUT} ms): ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string);
}

function setup(): { dir: string; fifo: string } {
  const dir = tempDir('ck-files');
  const fifo = path.join(dir, 'fifo.cow');
  execFileSync('mkfifo', [fifo]);
  return { dir, fifo };
}

const notAFile = (r: { code?: string; message?: string }, what: string): void => {
  assert.equal(r.code, 'ERR_COWSHM_NOT_A_FILE', `${what}: ${JSON.stringify(r)}`);
  assert.match(r.message ?? '', /is not a regular file/, what);
};

test('Region.restore and checkpointInfo refuse a FIFO and a device promptly', () => {
  const { dir, fifo } = setup();
  try {
    for (const target of [fifo, '/dev/zero']) {
      const p = JSON.stringify(target);
      notAFile(inChild(`cowshm.Region.restore(${p});`), `restore ${target}`);
      notAFile(inChild(`cowshm.Region.restore(${p}, { verify: 'full' });`), `restore full ${target}`);
      notAFile(inChild(`cowshm.checkpointInfo(${p});`), `checkpointInfo ${target}`);
    }
  } finally {
    rmTemp(dir);
  }
});

test('`cowshm checkpoint info` refuses a FIFO promptly', () => {
  const { dir, fifo } = setup();
  try {
    const r = runCli(['checkpoint', 'info', fifo]);
    assert.equal(r.signal, null, 'the command hung');
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /is not a regular file/);
  } finally {
    rmTemp(dir);
  }
});

test('a delta whose base path names a FIFO or a device is refused promptly, by restore and by a new delta', () => {
  const { dir, fifo } = setup();
  try {
    const p = JSON.stringify(dir);
    // A full checkpoint and a delta on it; then the base's name is taken by a FIFO.
    const made = inChild(`
      const r = cowshm.Region.create({ size: 4 * cowshm.pageSize }); const v = r.map();
      await cowshm.writeCheckpoint(v, path.join(${p}, 'base.cow'));
      new Uint8Array(v.buffer)[0] = 1;
      await cowshm.writeCheckpoint(v, path.join(${p}, 'delta.cow'), { base: path.join(${p}, 'base.cow') });
      v.close(); r.close();`);
    assert.equal(made.ok, true, JSON.stringify(made));
    fs.rmSync(path.join(dir, 'base.cow'));
    execFileSync('mkfifo', [path.join(dir, 'base.cow')]);
    const delta = JSON.stringify(path.join(dir, 'delta.cow'));
    notAFile(inChild(`cowshm.Region.restore(${delta});`), 'restore of a delta on a FIFO');
    notAFile(inChild(`cowshm.checkpointInfo(${delta});`), 'checkpointInfo of a delta on a FIFO');
    for (const base of [fifo, '/dev/zero']) {
      const r = inChild(`
        const r = cowshm.Region.create({ size: 4 * cowshm.pageSize }); const v = r.map();
        try { await cowshm.writeCheckpoint(v, path.join(${p}, 'next.cow'), { base: ${JSON.stringify(base)} }); }
        finally { v.close(); r.close(); }`);
      notAFile(r, `writeCheckpoint with base ${base}`);
    }
    assert.equal(fs.existsSync(path.join(dir, 'next.cow')), false);
  } finally {
    rmTemp(dir);
  }
});

test('writeTo() refuses a target that exists and is not a regular file, and leaves it in place', () => {
  const { dir, fifo } = setup();
  try {
    const r = inChild(`
      const r = cowshm.Region.create({ size: 4 * cowshm.pageSize }); const s = r.snapshot();
      try { await s.writeTo(${JSON.stringify(fifo)}); } finally { s.release(); r.close(); }`);
    notAFile(r, 'writeTo a FIFO');
    assert.ok(fs.lstatSync(fifo).isFIFO(), 'the FIFO is still there');
    assert.deepEqual(fs.readdirSync(dir), ['fifo.cow'], 'no temporary left behind');
    // A device: refused before anything is created in its directory.
    const dev = inChild(`
      const r = cowshm.Region.create({ size: 4 * cowshm.pageSize }); const v = r.map();
      try { await cowshm.writeCheckpoint(v, '/dev/zero'); } finally { v.close(); r.close(); }`);
    notAFile(dev, 'writeCheckpoint to /dev/zero');
    assert.ok(fs.statSync('/dev/zero').isCharacterDevice());
    assert.deepEqual(fs.readdirSync('/dev').filter((n) => n.startsWith('.zero.')), []);
  } finally {
    rmTemp(dir);
  }
});

test('Region.openFile refuses a character device such as /dev/zero', () => {
  for (const readOnly of [true, false]) {
    notAFile(inChild(`cowshm.Region.openFile('/dev/zero', { readOnly: ${readOnly} });`), `openFile /dev/zero ${readOnly}`);
  }
});
