// kill -9 and SIGSTOP of each role at random moments, 24 rounds: the reader
// (a process taking, checking and releasing snapshots with scope
// 'processes' at random), a writer, and a writer that holds every page claim
// for 2 ms before its push (the test hook COWSHM_TEST_XPROC_PUSH_DELAY_US,
// native/xproc.c), so a kill or stop lands mid-push or holding a claim more
// often than not. After each round: nobody hangs (the reader completes
// another snapshot), nobody else crashed, the coordination file counts the
// live participants, and every snapshot handed out stayed exact or said it
// was broken. At the end nothing is left in /dev/shm.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, listSegments, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { coordinationFile, gone, sleep, startRole, stopped, type Peer } from './xproc-helpers';

const WRITERS = 3;
const ROUNDS = 24;
const READER_TIMEOUT_MS = 600;

type Role = 'reader' | 'writer' | 'claimer';

test('kill -9 and SIGSTOP of the reader, a writer, and a writer mid-push, 24 rounds: no hang, no crash, nothing leaked', async () => {
  const name = uniqueName('deaths');
  const r = Region.create({ name, size: 128 * pageSize, mode: 0o600 });
  const stop = new Uint32Array(r.map().buffer, 0, 1);
  const file = coordinationFile(r);
  let seed = 20261202;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const start = (role: Role, id = 0): Promise<Peer> =>
    role === 'reader'
      ? startRole(['looper', name, String(WRITERS), String(READER_TIMEOUT_MS)])
      : startRole(['stamps', name, String(id), '0', String(WRITERS)], role === 'claimer' ? { COWSHM_TEST_XPROC_PUSH_DELAY_US: '2000' } : {});
  const peers: { role: Role; id: number; peer: Peer }[] = [];
  const readerLog: string[] = [];
  const alive = (p: Peer): boolean => p.proc.exitCode === null && p.proc.signalCode === null;
  const participants = (): number | null | undefined => listSegments({ holders: false }).find((s) => `/dev/shm/${s.name}` === file)?.coordination?.participants;

  try {
    peers.push({ role: 'writer', id: 0, peer: await start('writer', 0) });
    peers.push({ role: 'writer', id: 1, peer: await start('writer', 1) });
    peers.push({ role: 'claimer', id: 2, peer: await start('claimer', 2) });
    peers.push({ role: 'reader', id: 0, peer: await start('reader') });
    const plan: Array<[Role, 'SIGKILL' | 'SIGSTOP']> = [];
    for (let k = 0; k < ROUNDS / 6; k++)
      for (const role of ['reader', 'writer', 'claimer'] as const) for (const sig of ['SIGKILL', 'SIGSTOP'] as const) plan.push([role, sig]);
    for (let i = plan.length - 1; i > 0; i--) {
      const j = random(i + 1);
      [plan[i], plan[j]] = [plan[j] as [Role, 'SIGKILL' | 'SIGSTOP'], plan[i] as [Role, 'SIGKILL' | 'SIGSTOP']];
    }
    for (const [round, [role, sig]] of plan.entries()) {
      const what = `round ${round} (${sig} of the ${role})`;
      const victims = peers.filter((p) => p.role === role);
      const victim = victims[random(victims.length)] as (typeof peers)[number];
      await sleep(10 + random(150));
      if (sig === 'SIGKILL') {
        victim.peer.proc.kill('SIGKILL');
        await victim.peer.exited;
        if (role === 'reader') readerLog.push(victim.peer.out);
        victim.peer = await start(role, victim.id);
      } else {
        victim.peer.proc.kill('SIGSTOP');
        await stopped(victim.peer.pid); // every thread: a loaded machine takes a while
        await sleep(random(1200)); // sometimes past the reader's timeoutMs
        victim.peer.proc.kill('SIGCONT');
      }
      // No hang: the reader completes another snapshot (exact or broken) within a bound.
      const reader = (peers.find((p) => p.role === 'reader') as (typeof peers)[number]).peer;
      const mark = reader.out.length;
      for (let i = 0; i < 1000 && !/^(ok|broken)/m.test(reader.out.slice(mark)); i++) await sleep(10);
      assert.match(reader.out.slice(mark), /^(ok|broken)/m, `${what}: the reader completed a snapshot afterwards: ${reader.out.slice(-500)}`);
      assert.doesNotMatch(reader.out, /^bad/m, `${what}: a snapshot said it was exact but was not`);
      for (const p of peers) assert.ok(alive(p.peer), `${what}: ${p.role} ${p.peer.pid} lives on: ${p.peer.out.slice(-500)}`);
      assert.equal(participants(), WRITERS, `${what}: the coordination file counts the live writers`);
    }
    for (const p of peers) if (p.role === 'reader') readerLog.push(p.peer.out);
  } finally {
    // The reader first, holding whatever it holds: the last writer to leave then removes the file.
    for (const p of peers.filter((x) => x.role === 'reader')) {
      p.peer.proc.kill('SIGKILL');
      await p.peer.exited;
    }
    Atomics.store(stop, 0, 1);
    for (const p of peers.filter((x) => x.role !== 'reader')) {
      p.peer.proc.kill('SIGCONT');
      const t = setTimeout(() => p.peer.proc.kill('SIGKILL'), 10_000);
      await p.peer.exited;
      clearTimeout(t);
    }
    r.unlink();
    r.close();
  }
  for (const p of peers.filter((x) => x.role !== 'reader')) assert.match(p.peer.out, /done/, `writer ${p.peer.pid} ended on its own`);
  const log = readerLog.join('');
  const count = (re: RegExp): number => log.match(re)?.length ?? 0;
  const errors = [...log.matchAll(/^err (\S+)/gm)].map((m) => m[1]);
  console.log(`snapshots: ${count(/^ok$/gm)} exact, ${count(/^broken/gm)} broken (said so), ${errors.length} refused (${[...new Set(errors)].join(', ')})`);
  assert.doesNotMatch(log, /^bad/m);
  assert.ok(count(/^ok$/gm) >= ROUNDS, 'exact snapshots all along');
  // A snapshot is refused only for a writer that could not arm in time (stopped).
  assert.deepEqual([...new Set(errors)].filter((c) => c !== 'ETIMEDOUT'), [], log.split('\n').filter((l) => l.startsWith('err')).join('\n'));
  assert.equal(await gone(file), true, 'the coordination file is removed by the last to leave');
  assert.equal(fs.existsSync(`/dev/shm/${name}`), false);
});
