// chunkSize for snapshots with scope 'processes': a writer process's first
// write to a page pushes the whole chunk around it into the reader's
// snapshot, and makes that chunk writable at once (one fault per chunk).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, memory, pageSize, snapshotBackend } from 'cowshm';
import { uniqueName } from './helpers';
import { writer } from './xproc-helpers';

const KiB = 1024;
test("scope 'processes': chunkSize is checked as for any snapshot", () => {
  const r = Region.create({ size: 16 * pageSize });
  try {
    for (const bad of [3 * pageSize, pageSize + 1, 2 ** 31])
      assert.throws(() => r.snapshot({ scope: 'processes', chunkSize: bad }), { name: 'RangeError', message: /"chunkSize" option must be a power of two/ });
    assert.throws(() => r.snapshot({ scope: 'processes', chunkSize: pageSize / 2 }), { name: 'RangeError', message: /of at least \d+ \(the region's page size\)/ });
    assert.throws(() => r.snapshot({ scope: 'processes', chunkSize: '64k' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
    const s = r.snapshot({ scope: 'processes' });
    assert.equal(s.chunkSize, pageSize, 'the page by default');
    s.release();
  } finally {
    r.close();
  }
});

test(`scope 'processes', 64 KiB chunks (${snapshotBackend}): a writer's first write pushes the 16 pages around it, and makes them writable at once`, async () => {
  const name = uniqueName('xchunk');
  const r = Region.create({ name, size: 64 * pageSize, mode: 0o600 });
  const w = await writer(name);
  try {
    const fill = r.map();
    new Uint8Array(fill.buffer).fill(1);
    fill.close();
    const per = (64 * KiB) / pageSize;
    const s = r.snapshot({ scope: 'processes', chunkSize: 64 * KiB, timeoutMs: 5000 });
    assert.equal(s.chunkSize, 64 * KiB);
    assert.equal(memory.usage(s).privateDirty, 0);
    assert.equal(await w.ask('write 5 2'), 'ok');
    // The pushes are the snapshot's private memory: the whole chunk, no more.
    assert.equal(memory.usage(s).privateDirty, per * pageSize);
    if (snapshotBackend === 'userfaultfd') {
      assert.equal(await w.ask(`wp 0 ${per}`), '0', 'the chunk was made writable at once');
      assert.equal(await w.ask(`wp ${per} ${per}`), String(per), 'the next chunk is still protected');
    }
    assert.equal(await w.ask('write 7 2'), 'ok'); // same chunk: written without a push
    assert.equal(memory.usage(s).privateDirty, per * pageSize);
    assert.equal(await w.ask('write 40 2'), 'ok');
    assert.equal(memory.usage(s).privateDirty, 2 * per * pageSize);
    const frozen = new Uint8Array(s.buffer);
    assert.ok(frozen.every((x) => x === 1), 'the snapshot holds every page as it was');
    const live = new Uint8Array(r.map({ access: 'read' }).buffer);
    assert.deepEqual([live[5 * pageSize], live[7 * pageSize], live[40 * pageSize], live[6 * pageSize]], [2, 2, 2, 1]);
    assert.equal(s.exact, true);
    s.release();
    // Without chunkSize, the page alone.
    const t = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.equal(await w.ask('write 20 3'), 'ok');
    assert.equal(memory.usage(t).privateDirty, pageSize);
    assert.equal(new Uint8Array(t.buffer)[20 * pageSize], 1);
    t.release();
  } finally {
    await w.end();
    r.unlink();
    r.close();
  }
});
