// Byte for byte: a snapshot with scope 'processes' against a copy of the
// region taken while every writer process stood at a barrier built from
// cowshm's coordination primitives (a Mutex and atomics.wait/notify on a
// second region). The writers then write all over the region; the snapshot
// must still equal the copy, byte for byte, and the region must not.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, Mutex, atomics, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { coordinationFile, endAll, gone, sleep, startRole, type Peer } from './xproc-helpers';

const WRITERS = 3;

test("scope 'processes': a snapshot equals, byte for byte, a copy taken with every writer paused at a barrier", async () => {
  const name = uniqueName('barrier');
  const controlName = uniqueName('barrier-ctl');
  const r = Region.create({ name, size: 512 * pageSize, mode: 0o600 });
  const control = Region.create({ name: controlName, size: pageSize, mode: 0o600 });
  const ctl = new Int32Array(control.map().buffer);
  const mutex = new Mutex(ctl, 2);
  const writers: Peer[] = [];

  /** Asks every writer to stop at the barrier and waits until all stand there. */
  const pauseAll = async (): Promise<void> => {
    Atomics.add(ctl, 0, 1); // odd: pause
    atomics.notify(ctl, 0);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const g = mutex.acquireSync({ timeoutMs: 10_000 });
      const paused = ctl[1] as number;
      g.release();
      if (paused === WRITERS) return;
      assert.ok(Date.now() < deadline, `only ${paused} of ${WRITERS} writers reached the barrier`);
      const w = atomics.waitAsync(ctl, 1, paused, 50);
      if (w.async) await w.value;
    }
  };
  const resumeAll = (): void => {
    const g = mutex.acquireSync({ timeoutMs: 10_000 });
    ctl[1] = 0;
    g.release();
    Atomics.add(ctl, 0, 1); // even: run
    atomics.notify(ctl, 0);
  };

  try {
    for (let i = 0; i < WRITERS; i++) writers.push(await startRole(['barrier', name, controlName, String(i)]));
    const live = new Uint8Array(r.map({ access: 'read' }).buffer);
    for (let round = 0; round < 12; round++) {
      await pauseAll();
      const copy = Buffer.from(live); // nobody writes now
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      const frozen = new Uint8Array(s.buffer);
      // Touch part of the snapshot before the writers go on: read pages and untouched ones alike must hold.
      for (let p = 0; p < frozen.length; p += 2 * pageSize) void frozen[p];
      resumeAll();
      await sleep(20 + round * 5); // thousands of writes on random pages
      await pauseAll();
      assert.ok(Buffer.compare(copy, live) !== 0, `round ${round}: the writers changed the region`);
      const differ = (() => {
        for (let i = 0; i < copy.length; i++) if (copy[i] !== frozen[i]) return i;
        return -1;
      })();
      assert.equal(differ, -1, `round ${round}: the snapshot differs from the paused copy at byte ${differ} (page ${Math.floor(differ / pageSize)})`);
      assert.equal(s.exact, true);
      s.release();
      resumeAll();
      await sleep(10);
    }
    for (const w of writers) assert.equal(w.proc.exitCode, null, w.out);
  } finally {
    Atomics.store(ctl, 3, 1);
    resumeAll();
    await endAll(writers);
    r.unlink();
    r.close();
    control.unlink();
    control.close();
  }
  for (const w of writers) assert.match(w.out, /done [1-9]/, w.out);
  assert.equal(await gone(coordinationFile(r)), true);
});
