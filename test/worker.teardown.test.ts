import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { Region } from 'cowshm';
import { packageRoot, uniqueName, mapsLinesFor, mapsLineContaining, fdsFor, collectGarbage } from './helpers';

interface Made { dev: number; ino: number; fd: number; closedAt: number }

// Creates regions of every kind, maps them in every mode (one view closed,
// the rest open, one buffer kept in a global), then exits without closing.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const { Region } = require(workerData.root);
const path = require('node:path');
const made = [];
const regions = [
  Region.create({ name: workerData.name, size: 1 << 20 }),
  Region.create({ size: 1 << 20 }),
  Region.create({ size: 1 << 16, reserve: false }),
  Region.openFile(workerData.file, { create: true, size: 1 << 16 }),
];
globalThis.kept = [];
for (const r of regions) {
  const views = [r.map(), r.map({ access: 'read' }), r.map({ access: 'cow' })];
  const closedAt = views[1].address;
  new Uint8Array(views[1].buffer); // with a buffer made, closing leaves a reservation
  new Uint8Array(views[0].buffer)[0] = 1;
  new Uint8Array(views[2].buffer)[0] = 2;
  // Keep the closed view's (detached) buffer: its reservation lasts until that buffer is
  // collected, and a GC in the worker (Node 24 runs one sooner) must not free it early.
  const closedBuffer = views[1].buffer;
  views[1].close();
  globalThis.kept.push(new Uint8Array(views[0].buffer), views, closedBuffer);
  made.push({ dev: r.dev, ino: r.ino, fd: r.fd, closedAt: closedAt });
}
parentPort.postMessage(made);
// The parent looks at /proc first, then says when to end.
parentPort.once('message', () => {
  if (workerData.how === 'throw') throw new Error('worker failed on purpose');
  if (workerData.how === 'exit') process.exit(3);
  parentPort.close(); // 'return': nothing is left to do, the event loop runs out
});
`;

for (const how of ['return', 'exit', 'throw', 'terminate'] as const) {
  test(`a worker that ends by ${how} releases every mapping and descriptor it made`, async () => {
    const name = uniqueName(`teardown-${how}`);
    const file = `/dev/shm/${uniqueName(`teardown-file-${how}`)}`;
    const worker = new Worker(workerSource, { eval: true, workerData: { root: packageRoot, name, file, how } });
    worker.on('error', () => {}); // the 'throw' case
    try {
      const [made] = (await once(worker, 'message')) as [Made[]];
      assert.equal(made.length, 4);
      // While the worker lives, its mappings and descriptors are there (threads share them).
      for (const m of made) {
        assert.ok(mapsLinesFor(m.dev, m.ino).length >= 2, `worker's views of inode ${m.ino} should be mapped`);
        assert.deepEqual(fdsFor(m.dev, m.ino), [m.fd]);
        assert.match(mapsLineContaining(m.closedAt)?.line ?? '', / ---p 00000000 00:00 0 /, 'the closed view is reserved');
      }
      // Not events.once: it would reject on the 'error' event of the 'throw' case.
      const exited = new Promise<[number]>((resolve) => worker.once('exit', (code: number) => resolve([code])));
      if (how === 'terminate') void worker.terminate();
      else worker.postMessage('end');
      const [code] = await exited;
      assert.equal(code, { return: 0, exit: 3, throw: 1, terminate: 1 }[how]);
      await collectGarbage(2);
      for (const m of made) {
        assert.deepEqual(mapsLinesFor(m.dev, m.ino), [], `inode ${m.ino} is still mapped`);
        assert.deepEqual(fdsFor(m.dev, m.ino), [], `inode ${m.ino} is still open`);
        assert.doesNotMatch(mapsLineContaining(m.closedAt)?.line ?? '', / ---p 00000000 00:00 0 /, 'a reservation is left');
      }
    } finally {
      await worker.terminate();
      try {
        const r = Region.open(name);
        r.unlink();
        r.close();
      } catch {
        // The worker failed before creating it.
      }
      const f = Region.openFile(file, { readOnly: true });
      f.unlink();
      f.close();
    }
  });
}
