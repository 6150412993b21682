// Registry slots are reused as views come and go. The fault handler finds a
// slot by address without a lock; the slot it found can be closed and taken
// by another mapping before it enters its reader section, so it confirms the
// slot's generation there (native/snapshot.c, cowshm_snapshot_fault). The
// window is a few instructions wide and cannot be hit on demand; this test
// keeps the slot table churning (views of the written region and of another
// one mapped, armed, closed and their slots reused) while worker threads take
// write faults under snapshots, and checks that every snapshot stays exact.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region, pageSize, type Snapshot, type View } from 'cowshm';
import { startSpinning } from './snapshot-helpers';

test('slots reused while other threads take snapshot write faults: snapshots stay exact, nothing crashes', async () => {
  if (pageSize !== 4096) return; // the worker's layout assumes 4 KiB pages
  const WORKERS = 2;
  const PAGES_EACH = 32;
  const r = Region.create({ size: WORKERS * PAGES_EACH * pageSize });
  const other = Region.create({ size: 16 * pageSize });
  const workers = Array.from({ length: WORKERS }, () => new Worker(path.join(__dirname, 'snapshot-worker.js')));
  const control = new Int32Array(new SharedArrayBuffer(4 * (1 + WORKERS)));
  const live: Array<{ s: Snapshot; first: Buffer }> = [];
  try {
    const words = new Int32Array(r.map().buffer);
    const spinning = await startSpinning(workers, r, control, PAGES_EACH);
    let churned = 0;
    for (let i = 0; i < 120; i++) {
      const s = r.snapshot();
      live.push({ s, first: Buffer.from(s.buffer) });
      // Churn: write views of the protected region (armed as they are mapped)
      // and views of another region, closed in an order that frees slots
      // below the ones still open, so the next map reuses them.
      const views: View[] = [];
      for (let k = 0; k < 24; k++) views.push(k % 2 ? r.map({ offset: (k % PAGES_EACH) * pageSize, length: pageSize }) : other.map());
      for (let k = 0; k < views.length; k += 2) (views[k] as View).close();
      for (let k = 1; k < views.length; k += 2) {
        const v = views[k] as View;
        new Uint8Array(v.buffer)[7] = 1; // a fault of its own through a reused slot
        v.close();
      }
      churned += views.length;
      if (live.length > 3 || i % 5 === 2) live.splice((i * 7) % live.length, 1)[0]?.s.release();
      await new Promise((resolve) => setImmediate(resolve));
      for (const { s: t, first } of live) assert.equal(Buffer.compare(Buffer.from(t.buffer), first), 0);
    }
    assert.ok(churned > 2000);
    Atomics.store(control, 0, 1);
    await Promise.all(spinning);
    for (const { s, first } of live) assert.equal(Buffer.compare(Buffer.from(s.buffer), first), 0);
    // The counters the workers wrote went through: the faults were resolved, not skipped.
    for (let p = 0; p < WORKERS * PAGES_EACH; p++) assert.ok((words[p * 1024] as number) > 0);
  } finally {
    Atomics.store(control, 0, 1);
    for (const { s } of live) s.release();
    await Promise.all(workers.map((w) => w.terminate()));
    other.close();
    r.close();
  }
});
