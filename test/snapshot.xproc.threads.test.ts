// A consistent cut with worker threads inside the writer processes: 3 writer
// processes, 2 worker threads each, every thread a writer of causal stamps
// through views of its own Region; a reader takes, checks and releases
// snapshots with scope 'processes' at random moments.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { coordinationFile, gone, sleep, startRole, stopAll, type Peer } from './xproc-helpers';
import { violations } from './snapshot.xproc.peer.child';

const PROCESSES = 3;
const THREADS = 2;
const TOTAL = PROCESSES * THREADS;

test("scope 'processes': a consistent cut of 3 writer processes with 2 writing worker threads each", async () => {
  const name = uniqueName('threads');
  const r = Region.create({ name, size: 256 * pageSize, mode: 0o600 });
  const stop = new Uint32Array(r.map().buffer, 0, 1);
  const writers: Peer[] = [];
  let seed = 12345;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  try {
    for (let p = 0; p < PROCESSES; p++) writers.push(await startRole(['stamps', name, String(p * THREADS), String(THREADS), String(TOTAL)]));
    const live = new Uint32Array(r.map({ access: 'read' }).buffer);
    let changed = 0;
    let stamped = 0;
    for (let round = 0; round < 30; round++) {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      await sleep(random(40)); // every thread goes on writing meanwhile
      assert.equal(violations(frozen, TOTAL), 0, `round ${round}: the snapshot holds an effect without its cause`);
      assert.deepEqual(frozen, first, `round ${round}: the snapshot changed while the threads wrote`);
      assert.equal(s.exact, true);
      if (live.some((v, i) => v !== frozen[i])) changed++;
      // Every thread of every process wrote before this snapshot (their counters in it).
      const perPage = pageSize / 4;
      if (Array.from({ length: TOTAL }, (_, j) => frozen[(1 + j) * perPage] as number).every((c) => c > 0)) stamped++;
      s.release();
      await sleep(random(20));
    }
    assert.ok(changed > 20, `the threads changed the region after the snapshots (${changed} of 30)`);
    assert.ok(stamped > 0, 'every thread wrote');
    for (const w of writers) assert.equal(w.proc.exitCode, null, w.out);
  } finally {
    await stopAll(stop, writers);
    r.unlink();
    r.close();
  }
  for (const w of writers) assert.match(w.out, /done/, w.out);
  assert.equal(await gone(coordinationFile(r)), true, 'the last participant to leave removed the coordination file');
});
