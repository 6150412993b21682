import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { Region, pageSize, type Snapshot } from 'cowshm';
import { command } from './snapshot-helpers';

const PAGES = 24;
const WORKERS = 3;
const SIZE = PAGES * pageSize;

type Write = [offset: number, value: number, length: number];
type Step =
  | { kind: 'write'; perWorker: Write[][] }
  | { kind: 'main'; writes: Write[] }
  | { kind: 'snapshot' }
  | { kind: 'release'; pick: number }
  | { kind: 'remap'; worker: number };

const write: fc.Arbitrary<Write> = fc.oneof(
  // A 32-bit store somewhere in a page.
  fc.tuple(fc.integer({ min: 0, max: SIZE / 4 - 1 }), fc.integer()).map(([i, v]): Write => [i * 4, v, 4]),
  // A fill across up to three pages (a memset in V8, faulting in native code).
  fc
    .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 3 * pageSize }))
    .map(([o, v, n]): Write => [o, v, Math.min(n, SIZE - o)]),
);
const writes = fc.array(write, { maxLength: 12 });
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.array(writes, { minLength: WORKERS, maxLength: WORKERS }).map((perWorker): Step => ({ kind: 'write', perWorker })) },
  { weight: 1, arbitrary: writes.map((w): Step => ({ kind: 'main', writes: w })) },
  { weight: 2, arbitrary: fc.constant<Step>({ kind: 'snapshot' }) },
  { weight: 1, arbitrary: fc.nat().map((pick): Step => ({ kind: 'release', pick })) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: WORKERS - 1 }).map((worker): Step => ({ kind: 'remap', worker })) },
);

function applyMain(view: Uint8Array, list: Write[]): void {
  for (const [offset, value, length] of list) {
    if (length === 4) new DataView(view.buffer).setInt32(offset, value, true);
    else view.fill(value & 0xff, offset, offset + length);
  }
}

test('property: every snapshot equals a plain copy taken at the same instant, whatever workers write', async () => {
  const workers = Array.from({ length: WORKERS }, () => new Worker(path.join(__dirname, 'snapshot-worker.js')));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
        const r = Region.create({ size: SIZE });
        const live: Array<{ s: Snapshot; copy: Buffer }> = [];
        try {
          const view = new Uint8Array(r.map().buffer);
          for (let p = 0; p < PAGES; p++) view.fill(p + 1, p * pageSize, (p + 1) * pageSize);
          await Promise.all(workers.map((w) => command(w, { op: 'open', handle: r.handle() })));
          for (const st of steps) {
            // Workers are idle between steps: that is the instant a snapshot and its copy share.
            if (st.kind === 'write') await Promise.all(workers.map((w, i) => command(w, { op: 'write', writes: st.perWorker[i] ?? [] })));
            else if (st.kind === 'main') applyMain(view, st.writes);
            else if (st.kind === 'snapshot') live.push({ s: r.snapshot(), copy: Buffer.from(view) });
            else if (st.kind === 'release' && live.length > 0) live.splice(st.pick % live.length, 1)[0]?.s.release();
            else if (st.kind === 'remap') await command(workers[st.worker] as Worker, { op: 'remap' });
            for (const { s, copy } of live) assert.equal(Buffer.compare(Buffer.from(s.buffer), copy), 0);
          }
          for (const { s } of live) {
            assert.ok(s.copiedPages <= PAGES);
            assert.equal(s.changedPages().length, s.copiedPages);
          }
        } finally {
          for (const { s } of live) s.release();
          await Promise.all(workers.map((w) => command(w, { op: 'close' })));
          r.close();
        }
      }),
      { numRuns: 60 },
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
});
