/**
 * The snapshot property of snapshot.property.test.ts, for any kind of region
 * and snapshot options: worker threads and the main thread write at random,
 * snapshots are taken and released at random, and every live snapshot must
 * equal a plain copy taken at the same instant. Used by the tests that run it
 * on hugetlb pages and with other chunk sizes.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { pageSize, type Region, type Snapshot, type SnapshotOptions } from 'cowshm';
import { command } from './snapshot-helpers';

type Write = [offset: number, value: number, length: number];
type Step =
  | { kind: 'write'; perWorker: Write[][] }
  | { kind: 'main'; writes: Write[] }
  | { kind: 'snapshot'; options: number }
  | { kind: 'release'; pick: number }
  | { kind: 'remap'; worker: number };

export interface PropertyCase {
  /** Makes the region (its size a multiple of `unit`, at least 2 units). */
  create(): Region;
  size: number;
  /** The page of the region: writes cross it, fills span up to three of them. */
  unit: number;
  /** Options for each snapshot, picked at random per snapshot. */
  snapshotOptions: SnapshotOptions[];
  workers?: number;
  numRuns?: number;
}

export async function snapshotProperty(c: PropertyCase): Promise<void> {
  const WORKERS = c.workers ?? 2;
  const SIZE = c.size;
  const write: fc.Arbitrary<Write> = fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: SIZE / 4 - 1 }), fc.integer()).map(([i, v]): Write => [i * 4, v, 4]),
    // A fill across up to three 4 KiB pages, or up to a whole unit: a memset that faults in native code.
    fc
      .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: Math.min(c.unit, 3 * pageSize) }))
      .map(([o, v, n]): Write => [o, v, Math.min(n, SIZE - o)]),
  );
  const writes = fc.array(write, { maxLength: 10 });
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 4, arbitrary: fc.array(writes, { minLength: WORKERS, maxLength: WORKERS }).map((perWorker): Step => ({ kind: 'write', perWorker })) },
    { weight: 1, arbitrary: writes.map((w): Step => ({ kind: 'main', writes: w })) },
    { weight: 2, arbitrary: fc.nat().map((options): Step => ({ kind: 'snapshot', options })) },
    { weight: 1, arbitrary: fc.nat().map((pick): Step => ({ kind: 'release', pick })) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: WORKERS - 1 }).map((worker): Step => ({ kind: 'remap', worker })) },
  );
  const apply = (view: Uint8Array, list: Write[]): void => {
    for (const [offset, value, length] of list) {
      if (length === 4) new DataView(view.buffer).setInt32(offset, value, true);
      else view.fill(value & 0xff, offset, offset + length);
    }
  };
  const workers = Array.from({ length: WORKERS }, () => new Worker(path.join(__dirname, 'snapshot-worker.js')));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 20 }), async (steps) => {
        const r = c.create();
        const live: Array<{ s: Snapshot; copy: Buffer }> = [];
        try {
          const view = new Uint8Array(r.map().buffer);
          for (let p = 0; p < SIZE / pageSize; p++) view.fill((p % 250) + 1, p * pageSize, (p + 1) * pageSize);
          await Promise.all(workers.map((w) => command(w, { op: 'open', handle: r.handle() })));
          for (const st of steps) {
            if (st.kind === 'write') await Promise.all(workers.map((w, i) => command(w, { op: 'write', writes: st.perWorker[i] ?? [] })));
            else if (st.kind === 'main') apply(view, st.writes);
            else if (st.kind === 'snapshot')
              live.push({ s: r.snapshot(c.snapshotOptions[st.options % c.snapshotOptions.length]), copy: Buffer.from(view) });
            else if (st.kind === 'release' && live.length > 0) live.splice(st.pick % live.length, 1)[0]?.s.release();
            else if (st.kind === 'remap') await command(workers[st.worker] as Worker, { op: 'remap' });
            for (const { s, copy } of live) assert.equal(Buffer.compare(Buffer.from(s.buffer), copy), 0);
          }
          for (const { s } of live) {
            // Copies are whole chunks, counted in 4 KiB pages.
            assert.equal(s.copiedPages % (s.chunkSize / pageSize), 0);
            assert.equal(s.changedPages().length, s.copiedPages);
          }
        } finally {
          for (const { s } of live) s.release();
          await Promise.all(workers.map((w) => command(w, { op: 'close' })));
          r.close();
        }
      }),
      { numRuns: c.numRuns ?? 25 },
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
