// A process that opens the region for writing (crossProcess) while a
// snapshot with scope 'processes' is being taken, or while one is live,
// arms before its open returns: its first write lands after the snapshot's
// instant, and the snapshot stays exact.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { coordinationFile, gone, sleep, startRole, stopAll, stopPeer, stopped, type Peer } from './xproc-helpers';
import { MARK_PAGE, violations } from './snapshot.xproc.peer.child';

const WRITERS = 3;
const perPage = pageSize / 4;

async function withStampWriters(tag: string, body: (r: Region, writers: Peer[]) => Promise<void>): Promise<void> {
  const name = uniqueName(tag);
  const r = Region.create({ name, size: 256 * pageSize, mode: 0o600 });
  const stop = new Uint32Array(r.map().buffer, 0, 1);
  const writers: Peer[] = [];
  try {
    for (let i = 0; i < WRITERS; i++) writers.push(await startRole(['stamps', name, String(i), '0', String(WRITERS)]));
    await body(r, writers);
  } finally {
    await stopAll(stop, writers);
    r.unlink();
    r.close();
  }
  assert.equal(await gone(coordinationFile(r)), true);
}

async function wrote(joiner: Peer): Promise<string> {
  for (let i = 0; i < 1000 && !joiner.out.includes('wrote'); i++) await sleep(10);
  const line = joiner.out.split('\n').find((l) => l.startsWith('wrote')) ?? '';
  assert.ok(line !== '', `the joiner wrote: ${joiner.out}`);
  return line;
}

test('a process that opens the region for writing during snapshot() arms first: its write is not in the snapshot', async () => {
  await withStampWriters('join-arming', async (r, writers) => {
    for (let round = 0; round < 3; round++) {
      const held = writers[1] as Peer;
      // Arming waits for the stopped writer: the joiner opens meanwhile, then lets it go on.
      const joiner = await startRole(['joiner', r.name as string, coordinationFile(r), 'arming', String(held.pid)]);
      try {
        held.proc.kill('SIGSTOP');
        await stopped(held.pid);
        const s = r.snapshot({ scope: 'processes', timeoutMs: 15_000 });
        const frozen = new Uint32Array(s.buffer);
        const first = Uint32Array.from(frozen);
        const line = await wrote(joiner);
        assert.match(line, /joined-state=1 /, 'the joiner opened while arming was in progress');
        await sleep(20);
        const live = new Uint32Array(r.map({ access: 'read' }).buffer);
        assert.equal(live[MARK_PAGE * perPage], 0xc0ffee, "the joiner's write landed in the region");
        assert.equal(frozen[MARK_PAGE * perPage], 0, "the joiner's write is not in the snapshot");
        assert.equal(violations(frozen, WRITERS), 0);
        assert.deepEqual(frozen, first, 'frozen against the joiner and the writers');
        assert.equal(s.exact, true);
        s.release();
      } finally {
        await stopPeer(joiner);
        held.proc.kill('SIGCONT');
      }
      // The next round's joiner writes the mark again over a region that has it: clear it first.
      const w = Region.open(r.name as string);
      new Uint32Array(w.map().buffer).fill(0, MARK_PAGE * perPage, (MARK_PAGE + 1) * perPage);
      w.close();
    }
  });
});

test('a process that opens the region for writing while a snapshot is live: its writes are not in it', async () => {
  await withStampWriters('join-live', async (r) => {
    for (let round = 0; round < 3; round++) {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      const joiner = await startRole(['joiner', r.name as string, coordinationFile(r), 'now']);
      try {
        assert.match(await wrote(joiner), /joined-state=2 /, 'joined while the snapshot was armed');
        const live = new Uint32Array(r.map({ access: 'read' }).buffer);
        assert.equal(live[MARK_PAGE * perPage], 0xc0ffee);
        assert.equal(frozen[MARK_PAGE * perPage], 0, "the joiner's first write is not in the snapshot");
        assert.equal(violations(frozen, WRITERS), 0);
        assert.deepEqual(frozen, first);
        assert.equal(s.exact, true);
      } finally {
        s.release();
        await stopPeer(joiner);
      }
      const w = Region.open(r.name as string);
      new Uint32Array(w.map().buffer).fill(0, MARK_PAGE * perPage, (MARK_PAGE + 1) * perPage);
      w.close();
    }
  });
});
