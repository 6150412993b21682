// The reader's mapping of a snapshot with scope 'processes' lives as long as
// writers may push into it: not as long as some ArrayBuffer happens to.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { collectGarbage, mapsLineAt, uniqueName } from './helpers';
import { writer } from './xproc-helpers';

test("scope 'processes': a snapshot whose buffer was never asked for survives garbage collections, and writers' pushes land in it", async () => {
  const name = uniqueName('xlife');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const w = await writer(name);
  try {
    const fill = r.map();
    new Uint8Array(fill.buffer).fill(1);
    fill.close();
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    const at = s.address;
    await collectGarbage();
    assert.ok(mapsLineAt(at), 'the snapshot is still mapped');
    assert.equal(await w.ask('write 3 2'), 'ok');
    assert.equal(s.exact, true, 'the push reached the snapshot');
    assert.equal(new Uint8Array(s.buffer)[3 * pageSize], 1);
    s.release();
  } finally {
    await w.end();
    r.unlink();
    r.close();
  }
});

test("scope 'processes': a snapshot dropped without release() is released when collected; its mapping goes once the writers let go", async () => {
  const name = uniqueName('xdrop');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const w = await writer(name);
  try {
    let at = 0;
    (() => {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      at = s.address;
      assert.equal(new Uint8Array(s.buffer)[0], 0); // its buffer made, then dropped with it
    })();
    for (let i = 0; i < 50 && mapsLineAt(at) !== undefined; i++) await collectGarbage(2);
    assert.equal(mapsLineAt(at), undefined, 'the mapping went');
    const t = r.snapshot({ scope: 'processes', timeoutMs: 5000 }); // not EBUSY: the first one was released
    assert.equal(await w.ask('write 1 9'), 'ok');
    assert.equal(new Uint8Array(t.buffer)[pageSize], 0);
    t.release();
  } finally {
    await w.end();
    r.unlink();
    r.close();
  }
});
