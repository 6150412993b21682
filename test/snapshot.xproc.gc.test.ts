// A snapshot with scope 'processes' keeps its mapping through garbage
// collections for as long as it is live (and until every writer process
// has let go): writers push into that address, so a collected buffer must
// never unmap it.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { uniqueName, collectGarbage } from './helpers';
import { coordinationFile, gone, sleep, startRole, stopAll, type Peer } from './xproc-helpers';
import { violations } from './snapshot.xproc.peer.child';

test("scope 'processes': the snapshot's buffer and mapping survive garbage collection while writers push", async () => {
  const name = uniqueName('xgc');
  const r = Region.create({ name, size: 64 * pageSize, mode: 0o600 });
  const stop = new Uint32Array(r.map().buffer, 0, 1);
  const writers: Peer[] = [];
  try {
    for (let i = 0; i < 2; i++) writers.push(await startRole(['stamps', name, String(i), '0', '2']));
    for (let round = 0; round < 3; round++) {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      await collectGarbage(); // nothing in JS refers to the mapping's buffer yet
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      await sleep(30);
      await collectGarbage();
      assert.equal(violations(frozen, 2), 0);
      assert.deepEqual(new Uint32Array(s.buffer), first, `round ${round}: still frozen, still mapped`);
      assert.equal(s.exact, true);
      s.release();
    }
  } finally {
    await stopAll(stop, writers);
    r.unlink();
    r.close();
  }
  assert.equal(await gone(coordinationFile(r)), true);
});
