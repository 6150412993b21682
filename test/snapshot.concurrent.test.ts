import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region, pageSize, type Snapshot } from 'cowshm';
import { startSpinning } from './snapshot-helpers';

test('snapshots taken and released while worker threads keep writing never change after they are taken', async () => {
  if (pageSize !== 4096) return; // the worker's layout assumes 4 KiB pages
  const WORKERS = 3;
  const PAGES_EACH = 32;
  const r = Region.create({ size: WORKERS * PAGES_EACH * pageSize });
  const workers = Array.from({ length: WORKERS }, () => new Worker(path.join(__dirname, 'snapshot-worker.js')));
  const control = new Int32Array(new SharedArrayBuffer(4 * (1 + WORKERS)));
  const live: Array<{ s: Snapshot; first: Buffer }> = [];
  try {
    const words = new Int32Array(r.map().buffer);
    const spinning = await startSpinning(workers, r, control, PAGES_EACH);
    for (let i = 0; i < 150; i++) {
      const s = r.snapshot();
      // Read while the workers write: a snapshot that let a write through would differ later.
      live.push({ s, first: Buffer.from(s.buffer) });
      if (live.length > 4 || i % 7 === 3) live.splice((i * 13) % live.length, 1)[0]?.s.release();
      await new Promise((resolve) => setImmediate(resolve));
      for (const { s: t, first } of live) {
        const now = new Int32Array(t.buffer);
        assert.equal(Buffer.compare(Buffer.from(t.buffer), first), 0);
        // Counters only rise: the frozen value is never ahead of the live one.
        for (let p = 0; p < WORKERS * PAGES_EACH; p++) assert.ok((now[p * 1024] as number) <= (words[p * 1024] as number));
      }
    }
    Atomics.store(control, 0, 1);
    await Promise.all(spinning);
    for (const { s, first } of live) assert.equal(Buffer.compare(Buffer.from(s.buffer), first), 0);
  } finally {
    Atomics.store(control, 0, 1);
    for (const { s } of live) s.release();
    await Promise.all(workers.map((w) => w.terminate()));
    r.close();
  }
});
