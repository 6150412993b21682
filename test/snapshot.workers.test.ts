import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region, pageSize } from 'cowshm';
import { command } from './snapshot-helpers';
import type { WorkerCommand } from './snapshot-worker';

test('writes from worker threads, through views made before and after the snapshot, are isolated', async () => {
  const r = Region.create({ size: 64 * pageSize });
  const workers = [0, 1, 2].map(() => new Worker(path.join(__dirname, 'snapshot-worker.js')));
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(1);
    await Promise.all(workers.map((w) => command(w, { op: 'open', handle: r.handle() })));
    const s = r.snapshot();
    const copy = Buffer.from(view);
    // Worker 0 keeps its early views; workers 1 and 2 map new ones now.
    await Promise.all(workers.slice(1).map((w) => command(w, { op: 'remap' })));
    await Promise.all(
      workers.map((w, i) => {
        const writes: Array<[number, number, number]> = [];
        for (let p = i; p < 64; p += 2) writes.push([p * pageSize + 4 * i, 1000 + i, 4]);
        writes.push([40 * pageSize, 50 + i, 3 * pageSize]);
        return command(w, { op: 'write', writes });
      }),
    );
    assert.notEqual(Buffer.compare(Buffer.from(view), copy), 0, 'the workers wrote');
    assert.equal(Buffer.compare(Buffer.from(s.buffer), copy), 0);
    assert.ok(s.copiedPages >= 32);
    // Taken while workers are idle, a second snapshot freezes what they wrote.
    const t = r.snapshot();
    const copy2 = Buffer.from(view);
    await Promise.all(workers.map((w, i) => command(w, { op: 'write', writes: [[i * pageSize, 9, pageSize * 20]] })));
    assert.equal(Buffer.compare(Buffer.from(s.buffer), copy), 0);
    assert.equal(Buffer.compare(Buffer.from(t.buffer), copy2), 0);
    s.release();
    t.release();
    await Promise.all(workers.map((w) => command(w, { op: 'write', writes: [[0, 77, 64 * pageSize]] })));
    assert.ok(view.every((x) => x === 77));
    await Promise.all(workers.map((w) => command(w, { op: 'close' })));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    r.close();
  }
});

test('a worker that exits with its views armed leaves the snapshot intact', async () => {
  const r = Region.create({ size: 8 * pageSize });
  const w = new Worker(path.join(__dirname, 'snapshot-worker.js'));
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(4);
    await command(w, { op: 'open', handle: r.handle() });
    const s = r.snapshot();
    await command(w, { op: 'write', writes: [[0, 5, pageSize]] });
    await w.terminate();
    view.fill(6);
    assert.ok(new Uint8Array(s.buffer).every((x) => x === 4));
    s.release();
  } finally {
    await w.terminate();
    r.close();
  }
});

test("writes from libuv's thread pool (crypto.randomFill into a view) are isolated", async () => {
  const { randomFill } = await import('node:crypto');
  const r = Region.create({ size: 64 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(7);
    const s = r.snapshot();
    await new Promise<void>((resolve, reject) => randomFill(view, 0, 32 * pageSize, (err) => (err ? reject(err) : resolve())));
    assert.ok(view.subarray(0, 32 * pageSize).some((x) => x !== 7), 'the thread pool wrote');
    assert.ok(new Uint8Array(s.buffer).every((x) => x === 7));
    assert.equal(s.copiedPages, 32);
    s.release();
  } finally {
    r.close();
  }
});

test('a snapshot taken in a worker is isolated from the main thread; its release there lifts protection here', async () => {
  const r = Region.create({ size: 16 * pageSize });
  const w = new Worker(path.join(__dirname, 'snapshot-worker.js'));
  const read = (): Promise<Uint8Array> =>
    new Promise((resolve, reject) => {
      w.once('message', (m: { ok: boolean; bytes?: Uint8Array; error?: string }) =>
        m.ok && m.bytes ? resolve(m.bytes) : reject(new Error(m.error)),
      );
      w.postMessage({ op: 'read-snapshot' } satisfies WorkerCommand);
    });
  try {
    const view = new Uint8Array(r.map().buffer);
    view.fill(11);
    await command(w, { op: 'open', handle: r.handle() });
    await command(w, { op: 'snapshot' });
    view.fill(12, 0, 9 * pageSize);
    const frozen = await read();
    assert.equal(frozen.length, r.size);
    assert.ok(frozen.every((x) => x === 11));
    await command(w, { op: 'release' });
    const fs = await import('node:fs');
    const fd = fs.openSync('/dev/zero', 'r');
    try {
      assert.equal(fs.readSync(fd, view, 0, view.length, null), view.length, 'no protection left');
    } finally {
      fs.closeSync(fd);
    }
    await command(w, { op: 'close' });
  } finally {
    await w.terminate();
    r.close();
  }
});
