// Snapshots with scope 'processes': frozen against writes from every process
// that takes part (Region.open(name, { crossProcess: true })), from one
// instant for all of them. The writers are child processes
// (snapshot.xproc.child.ts) writing causal stamps without pausing.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Region, pageSize } from 'cowshm';
import { uniqueName } from './helpers';
import { WRITERS, RECORD, FIRST_RECORD_PAGE } from './snapshot.xproc.child';
import { stopAll, stopped } from './xproc-helpers';

const child = path.join(__dirname, 'snapshot.xproc.child.js');
const PAGES = 256;
const perPage = pageSize / 4;

function coordinationFile(r: Region): string {
  return `/dev/shm/cowshm-xproc-${r.dev.toString(16)}-${r.ino.toString(16)}`;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The push path writers of this user get: the handshake when forced or when Yama refuses siblings, else direct. */
function yamaScope(): number {
  try {
    return Number(fs.readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8'));
  } catch {
    return 0; // no Yama
  }
}
const pushPath = process.env['COWSHM_XPROC_HANDSHAKE'] === '1' || yamaScope() >= 1 ? 'handshake' : 'direct';

interface Writer {
  proc: ChildProcess;
  pid: number;
  exited: Promise<number | string | null>;
  out: string;
}

async function startWriter(name: string, index: number | string, role = 'writer'): Promise<Writer> {
  const proc = spawn(process.execPath, [child, role, name, String(index)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const w: Writer = { proc, pid: proc.pid as number, out: '', exited: new Promise((resolve) => proc.on('exit', (code, sig) => resolve(code ?? sig))) };
  proc.stdout?.on('data', (d: Buffer) => (w.out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (w.out += d.toString()));
  for (let i = 0; i < 500 && !w.out.includes('ready'); i++) await sleep(10);
  assert.ok(w.out.includes('ready'), `writer ${index} started: ${w.out}`);
  return w;
}

/** The violations of a consistent cut in a snapshot's words: a record that saw a counter the snapshot's counters are behind. */
function violations(words: Uint32Array): number {
  const cells: number[] = [];
  for (let j = 0; j < WRITERS; j++) cells.push(words[(1 + j) * perPage] as number);
  let bad = 0;
  for (let at = FIRST_RECORD_PAGE * perPage; at + RECORD <= words.length; at += RECORD) {
    if (words[at] === 0) continue;
    for (let j = 0; j < WRITERS; j++) if ((words[at + 2 + j] as number) > (cells[j] as number)) bad++;
  }
  return bad;
}

async function withWriters(tag: string, body: (r: Region, stop: Uint32Array, writers: Writer[]) => Promise<void>): Promise<void> {
  const name = uniqueName(tag);
  const r = Region.create({ name, size: PAGES * pageSize, mode: 0o600 });
  const stop = new Uint32Array(r.map().buffer, 0, 1);
  const writers: Writer[] = [];
  try {
    for (let i = 0; i < WRITERS; i++) writers.push(await startWriter(name, i));
    await body(r, stop, writers);
  } finally {
    await stopAll(stop, writers);
    r.unlink();
    const file = coordinationFile(r);
    r.close();
    for (let i = 0; i < 100 && fs.existsSync(file); i++) await sleep(20);
    // A participant killed with SIGKILL cannot remove the file; the last one that leaves does.
    assert.equal(fs.existsSync(file), false, `${file} is left behind`);
  }
}

test("scope 'processes': every snapshot is a consistent cut of 3 writer processes", async () => {
  await withWriters('cut', async (r) => {
    let checked = 0;
    let changed = 0;
    for (let round = 0; round < 30; round++) {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      assert.equal(s.scope, 'processes');
      assert.deepEqual(s.writers.map((w) => w.push), [pushPath, pushPath, pushPath], 'every writer armed, on the expected push path');
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      await sleep(5 + (round % 4) * 10); // the writers go on meanwhile
      assert.equal(violations(frozen), 0, `round ${round}: the snapshot holds an effect without its cause`);
      assert.deepEqual(frozen, first, `round ${round}: the snapshot changed while writers wrote`);
      const live = new Uint32Array(r.map({ access: 'read' }).buffer);
      if (live.some((v, i) => v !== frozen[i])) changed++;
      assert.equal(s.exact, true);
      s.release();
      checked++;
    }
    assert.equal(checked, 30);
    assert.ok(changed > 0, 'the writers changed the region after the snapshots');
  });
});

test("without scope 'processes' the same writers tear a snapshot (the check above can fail)", async () => {
  await withWriters('torn', async (r) => {
    let torn = false;
    for (let round = 0; round < 50 && !torn; round++) {
      const s = r.snapshot();
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      await sleep(10);
      torn = violations(frozen) > 0 || frozen.some((v, i) => v !== first[i]);
      s.release();
    }
    assert.ok(torn, 'a plain snapshot saw other processes\' writes');
  });
});

test("a stopped writer makes snapshot() fail after timeoutMs naming its pid; never an unfrozen snapshot", async () => {
  await withWriters('stop', async (r, _stop, writers) => {
    const victim = writers[1] as Writer;
    victim.proc.kill('SIGSTOP');
    await stopped(victim.pid); // every thread: on a loaded machine that takes a while, and a running one still arms
    const t0 = Date.now();
    assert.throws(
      () => r.snapshot({ scope: 'processes', timeoutMs: 300 }),
      (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT' && err.message.includes(`process ${victim.pid}`),
    );
    assert.ok(Date.now() - t0 < 5000);
    victim.proc.kill('SIGCONT');
    await sleep(100);
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    const frozen = new Uint32Array(s.buffer);
    const first = Uint32Array.from(frozen);
    await sleep(30);
    assert.equal(violations(frozen), 0);
    assert.deepEqual(frozen, first);
    s.release();
  });
});

test('a writer killed with SIGKILL neither hangs snapshot() nor disturbs the others', async () => {
  await withWriters('kill', async (r, _stop, writers) => {
    for (let round = 0; round < 20; round++) {
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      if (round === 5) {
        const w = writers[0] as Writer;
        w.proc.kill('SIGKILL');
        await w.exited;
        writers[0] = await startWriter(r.name as string, 0);
      }
      await sleep(5);
      assert.equal(violations(frozen), 0, `round ${round}`);
      assert.deepEqual(frozen, first, `round ${round}`);
      assert.equal(s.exact, true);
      s.release();
    }
    for (const w of writers.slice(1)) assert.equal(w.proc.exitCode, null, 'the other writers live on');
  });
});

test('a reader killed with SIGKILL holding a snapshot: the writers drop it and go on', async () => {
  await withWriters('reader', async (r, _stop, writers) => {
    for (let round = 0; round < 3; round++) {
      const reader = await startWriter(r.name as string, 0, 'reader');
      await sleep(30);
      reader.proc.kill('SIGKILL');
      await reader.exited;
    }
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    const frozen = new Uint32Array(s.buffer);
    const first = Uint32Array.from(frozen);
    await sleep(30);
    assert.equal(violations(frozen), 0);
    assert.deepEqual(frozen, first);
    s.release();
    for (const w of writers) assert.equal(w.proc.exitCode, null, 'every writer lives on');
  });
});

test('garbage in the coordination file from a hostile process: nothing pushed into it, nobody crashes', async () => {
  await withWriters('garbage', async (r, _stop, writers) => {
    const hostile = await startWriter(r.name as string, coordinationFile(r), 'hostile');
    for (let i = 0; i < 500 && !hostile.out.includes('pushed='); i++) await sleep(10);
    assert.equal(await hostile.exited, 0, hostile.out);
    assert.match(hostile.out, /pushed=false/, 'a pid and address from shared state were verified before any push');
    for (const w of writers) assert.equal(w.proc.exitCode, null, `writer ${w.pid} lives on: ${w.out}`);
    // The next reader starts over from whatever is there: a snapshot, or a clear error.
    for (let round = 0; round < 5; round++) {
      let s;
      try {
        s = r.snapshot({ scope: 'processes', timeoutMs: 3000 });
      } catch (err) {
        assert.ok(typeof (err as NodeJS.ErrnoException).code === 'string', String(err));
        continue;
      }
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      await sleep(20);
      if (s.exact) {
        assert.equal(violations(frozen), 0);
        assert.deepEqual(frozen, first);
      }
      s.release();
    }
    for (const w of writers) assert.equal(w.proc.exitCode, null, `writer ${w.pid} lives on: ${w.out}`);
  });
});
