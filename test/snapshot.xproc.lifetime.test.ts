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
