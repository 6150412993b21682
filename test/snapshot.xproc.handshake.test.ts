// The handshake push path of snapshots with scope 'processes': a writer posts
// the page in the coordination file and the reader's helper thread copies it
// into its own snapshot. Used across users (pushes never cross users), where
// the kernel refuses process_vm_writev, and under COWSHM_XPROC_HANDSHAKE=1.
// Readers and writers are child processes (snapshot.xproc.handshake.child.ts,
// snapshot.xproc.child.ts), some of them as uid 65534 when run as root.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Region, pageSize, removeSegment } from 'cowshm';
import { packageFor, uniqueName } from './helpers';
import { cutViolations } from './snapshot.xproc.handshake.child';
import { stopped } from './xproc-helpers';
import { WRITERS } from './snapshot.xproc.child';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const needsRoot = isRoot ? false : 'needs root (it runs processes as uid 65534)';
const PAGES = 64;
const perPage = pageSize / 4;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function coordinationFile(r: Region): string {
  return `/dev/shm/cowshm-xproc-${r.dev.toString(16)}-${r.ino.toString(16)}`;
}

/** A child process and the messages it sent, in order. */
class Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<number | string | null>;
  out = '';
  #messages: object[] = [];
  #waiting: ((m: object) => void) | undefined;

  constructor(script: string, args: string[], env: NodeJS.ProcessEnv, uid?: number) {
    const { root, node } = packageFor(uid);
    const file = path.join(root, 'test', 'build', script);
    this.proc = spawn(node, [file, ...args], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    this.pid = this.proc.pid as number;
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, sig) => resolve(code ?? sig)));
    this.proc.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.on('message', (m: object) => {
      const w = this.#waiting;
      this.#waiting = undefined;
      if (w) w(m);
      else this.#messages.push(m);
    });
  }

  /** The next message, or undefined after `ms`. */
  next(ms = 20_000): Promise<Record<string, unknown> | undefined> {
    const m = this.#messages.shift();
    if (m) return Promise.resolve(m as Record<string, unknown>);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#waiting = undefined;
        resolve(undefined);
      }, ms);
      this.#waiting = (msg) => {
        clearTimeout(t);
        resolve(msg as Record<string, unknown>);
      };
    });
  }

  async ask(m: object, ms?: number): Promise<Record<string, unknown>> {
    this.proc.send(m);
    const reply = await this.next(ms);
    assert.ok(reply, `process ${this.pid} answered ${JSON.stringify(m)}: ${this.out}`);
    return reply;
  }

  async end(): Promise<void> {
    this.proc.kill('SIGCONT');
    if (this.proc.connected) this.proc.send({ cmd: 'release' });
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** The environment of a child: COWSHM_XPROC_HANDSHAKE as given (undefined: as this process has it). */
function env(handshake?: '1' | '0'): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, NODE_TEST_CONTEXT: undefined };
  if (handshake !== undefined) e['COWSHM_XPROC_HANDSHAKE'] = handshake;
  return e;
}

async function started(c: Child): Promise<Record<string, unknown>> {
  const m = await c.next();
  assert.ok(m, `process ${c.pid} started: ${c.out}`);
  return m;
}

async function poke(name: string, ms: number | 'Infinity', handshake?: '1' | '0', extra: NodeJS.ProcessEnv = {}): Promise<Child> {
  const c = new Child('snapshot.xproc.handshake.child.js', ['poke', name, String(ms)], { ...env(handshake), ...extra });
  assert.equal((await started(c))['ready'], true, c.out);
  return c;
}

async function reader(name: string, handshake?: '1' | '0', uid?: number): Promise<[Child, Record<string, unknown>]> {
  const c = new Child('snapshot.xproc.handshake.child.js', ['reader', name], env(handshake), uid);
  return [c, await started(c)];
}

/** A region filled with its page numbers (word 0 of page p is p + 1000), and its cleanup. */
async function withRegion(tag: string, mode: number, body: (r: Region, children: Child[]) => Promise<void>): Promise<void> {
  const name = uniqueName(tag);
  const r = Region.create({ name, size: PAGES * pageSize, mode });
  const words = new Uint32Array(r.map().buffer);
  for (let p = 0; p < PAGES; p++) words[p * perPage] = p + 1000;
  const children: Child[] = [];
  try {
    await body(r, children);
  } finally {
    for (const c of children) await c.end();
    r.unlink();
    const file = coordinationFile(r);
    r.close();
    for (let i = 0; i < 100 && fs.existsSync(file); i++) await sleep(20);
    assert.equal(fs.existsSync(file), false, `${file} is left behind`);
  }
}

/** Runs body with COWSHM_XPROC_HANDSHAKE set (or unset) in this process's environment. */
function withOwnEnv<T>(value: string | undefined, body: () => T): T {
  const before = process.env['COWSHM_XPROC_HANDSHAKE'];
  if (value === undefined) delete process.env['COWSHM_XPROC_HANDSHAKE'];
  else process.env['COWSHM_XPROC_HANDSHAKE'] = value;
  try {
    return body();
  } finally {
    if (before === undefined) delete process.env['COWSHM_XPROC_HANDSHAKE'];
    else process.env['COWSHM_XPROC_HANDSHAKE'] = before;
  }
}

const byPid = (a: { pid: number }, b: { pid: number }): number => a.pid - b.pid;

test('the push path is chosen per pair of processes and reported on the snapshot (snapshot.writers)', async () => {
  await withRegion('paths', 0o600, async (r, children) => {
    const plain = await poke(r.name as string, 1000, '0');
    const forced = await poke(r.name as string, 1000, '1');
    children.push(plain, forced);
    const frozenWords = (s: { buffer: ArrayBuffer }): Uint32Array => new Uint32Array(s.buffer);
    // This process reads without the switch: the writer's own switch decides.
    const s = withOwnEnv(undefined, () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
    assert.deepEqual(
      s.writers.sort(byPid),
      [{ pid: plain.pid, push: 'direct' }, { pid: forced.pid, push: 'handshake' }].sort(byPid),
    );
    await plain.ask({ cmd: 'write', page: 3, value: 7 });
    await forced.ask({ cmd: 'write', page: 4, value: 8 });
    assert.equal(frozenWords(s)[3 * perPage], 1003, 'the direct push copied page 3 first');
    assert.equal(frozenWords(s)[4 * perPage], 1004, 'the handshake copied page 4 first');
    assert.equal(s.exact, true);
    s.release();
    assert.deepEqual(r.snapshot().writers, [], "a snapshot with scope 'process' has no writer processes");
    // The reader's switch: every writer pushes by handshake into its snapshots.
    const t = withOwnEnv('1', () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
    assert.deepEqual(t.writers.map((w) => w.push), ['handshake', 'handshake']);
    await plain.ask({ cmd: 'write', page: 5, value: 9 });
    assert.equal(frozenWords(t)[5 * perPage], 1005);
    assert.equal(frozenWords(t)[3 * perPage], 7);
    assert.equal(t.exact, true);
    t.release();
    assert.throws(
      () => withOwnEnv('yes', () => r.snapshot({ scope: 'processes' })),
      (err: Error & { code?: string }) => err instanceof RangeError && /COWSHM_XPROC_HANDSHAKE/.test(err.message),
    );
  });
});

test('the kernel refusing process_vm_writev (EPERM, as under Yama ptrace_scope >= 1): the handshake, when arming and mid-snapshot', async () => {
  await withRegion('refused', 0o600, async (r, children) => {
    // COWSHM_XPROC_REFUSE_DIRECT makes the writer's direct syscalls fail as Yama does: =1 all of them, =push the pushes only.
    const probed = await poke(r.name as string, 1000, '0', { COWSHM_XPROC_REFUSE_DIRECT: '1' });
    const pushing = await poke(r.name as string, 1000, '0', { COWSHM_XPROC_REFUSE_DIRECT: 'push' });
    children.push(probed, pushing);
    const s = withOwnEnv(undefined, () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
    const paths = (): string[] => s.writers.sort(byPid).map((w) => `${w.pid} ${w.push}`);
    const expect = (a: string, b: string): string[] => [`${probed.pid} ${a}`, `${pushing.pid} ${b}`].sort((x, y) => parseInt(x) - parseInt(y));
    assert.deepEqual(paths(), expect('handshake', 'direct'), 'the probe when arming saw the refusal');
    await probed.ask({ cmd: 'write', page: 3, value: 7 });
    await pushing.ask({ cmd: 'write', page: 4, value: 8 });
    assert.deepEqual(paths(), expect('handshake', 'handshake'), 'a refused push switched its pair over');
    const words = new Uint32Array(s.buffer);
    assert.deepEqual([words[3 * perPage], words[4 * perPage]], [1003, 1004]);
    await pushing.ask({ cmd: 'write', page: 5, value: 9 });
    assert.equal(words[5 * perPage], 1005);
    assert.equal(s.exact, true);
    s.release();
  });
});

test('a stopped reader: a write waits handshakeTimeoutMs once, then breaks that snapshot and goes on', { timeout: 120_000 }, async () => {
  await withRegion('stalled', 0o600, async (r, children) => {
    const writer = await poke(r.name as string, 1500);
    const [rd, ready] = await reader(r.name as string, '1');
    children.push(writer, rd);
    assert.equal(ready['ready'], true, rd.out);
    rd.proc.kill('SIGSTOP');
    await stopped(rd.pid); // every thread, its helper too: on a loaded machine a thread may run on a while
    const first = await writer.ask({ cmd: 'write', page: 3, value: 1 }, 60_000);
    assert.ok((first['ms'] as number) >= 1490, `the write waited for the reader: ${first['ms']} ms`);
    // Broken: later writes do not wait again.
    const second = await writer.ask({ cmd: 'write', page: 4, value: 1 }, 60_000);
    assert.ok((second['ms'] as number) < 1490, `the second write went on at once: ${second['ms']} ms`);
    rd.proc.kill('SIGCONT');
    const seen = await rd.ask({ cmd: 'check' });
    assert.equal(seen['exact'], false);
    assert.equal(seen['code'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
    assert.equal(seen['cause'], 'ETIMEDOUT');
    assert.match(String(seen['message']), /handshakeTimeoutMs/);
  });
});

test('handshakeTimeoutMs: Infinity: the write waits for the stopped reader, and the snapshot stays exact', { timeout: 120_000 }, async () => {
  await withRegion('waits', 0o600, async (r, children) => {
    const writer = await poke(r.name as string, 'Infinity');
    const [rd, ready] = await reader(r.name as string, '1');
    children.push(writer, rd);
    assert.equal(ready['ready'], true, rd.out);
    rd.proc.kill('SIGSTOP');
    await stopped(rd.pid);
    writer.proc.send({ cmd: 'write', page: 3, value: 1 });
    assert.equal(await writer.next(1500), undefined, 'the write waits while the reader is stopped');
    rd.proc.kill('SIGCONT');
    assert.ok(await writer.next(30_000), `the write went through once the reader ran: ${writer.out}`);
    const seen = await rd.ask({ cmd: 'check' });
    assert.deepEqual([seen['exact'], seen['changed'], seen['code']], [true, false, undefined], JSON.stringify(seen));
  });
});

test('a reader killed with SIGKILL in the middle of a handshake: the waiting write goes on', { timeout: 120_000 }, async () => {
  await withRegion('killed', 0o600, async (r, children) => {
    const writer = await poke(r.name as string, 'Infinity');
    children.push(writer);
    for (let round = 0; round < 3; round++) {
      const [rd, ready] = await reader(r.name as string, '1');
      assert.equal(ready['ready'], true, rd.out);
      rd.proc.kill('SIGSTOP');
      await stopped(rd.pid);
      writer.proc.send({ cmd: 'write', page: 3 + round, value: 1 });
      assert.equal(await writer.next(300), undefined, 'the write waits for the stopped reader');
      rd.proc.kill('SIGKILL');
      await rd.exited;
      assert.ok(await writer.next(30_000), `round ${round}: the write went on once the reader died: ${writer.out}`);
    }
    // The next reader gets a frozen snapshot.
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    await writer.ask({ cmd: 'write', page: 10, value: 1 });
    assert.equal(new Uint32Array(s.buffer)[10 * perPage], 1010);
    assert.equal(s.exact, true);
    s.release();
    assert.equal(writer.proc.exitCode, null, 'the writer lives on');
  });
});

/** Three writers of causal stamps (snapshot.xproc.child.ts) of region `name`, as `uid`. */
async function stampWriters(name: string, uid?: number): Promise<Child[]> {
  const out: Child[] = [];
  for (let i = 0; i < WRITERS; i++) {
    const c = new Child('snapshot.xproc.child.js', ['writer', name, String(i)], env(), uid);
    for (let t = 0; t < 500 && !c.out.includes('ready'); t++) await sleep(10);
    assert.ok(c.out.includes('ready'), `writer ${i} started: ${c.out}`);
    out.push(c);
  }
  return out;
}

async function stopWriters(r: Region, writers: Child[]): Promise<void> {
  Atomics.store(new Uint32Array(r.map().buffer, 0, 1), 0, 1);
  for (const w of writers) {
    const t = setTimeout(() => w.proc.kill('SIGKILL'), 10_000);
    assert.equal(await w.exited, 0, w.out);
    clearTimeout(t);
  }
}

async function withStamps(tag: string, body: (r: Region) => Promise<void>): Promise<void> {
  const name = uniqueName(tag);
  const r = Region.create({ name, size: 256 * pageSize, mode: 0o666 });
  try {
    await body(r);
  } finally {
    r.unlink();
    const file = coordinationFile(r);
    r.close();
    for (let i = 0; i < 100 && fs.existsSync(file); i++) await sleep(20);
    assert.equal(fs.existsSync(file), false, `${file} is left behind`);
  }
}

test('a real cross-user pair: root writers and a uid 65534 reader, consistent cuts by handshake', { skip: needsRoot, timeout: 300_000 }, async () => {
  await withStamps('nobody-reads', async (r) => {
    const writers = await stampWriters(r.name as string);
    try {
      const [rd, ready] = await reader(r.name as string, undefined, NOBODY);
      assert.equal(ready['ready'], true, `${JSON.stringify(ready)} ${rd.out}`);
      assert.deepEqual((ready['writers'] as { push: string }[]).map((w) => w.push), ['handshake', 'handshake', 'handshake']);
      const got = await rd.ask({ cmd: 'cuts', rounds: 20 }, 120_000);
      await rd.end();
      assert.deepEqual(got, { violations: 0, unstable: 0, moved: got['moved'], paths: ['handshake'], writers: WRITERS });
      assert.ok((got['moved'] as number) > 0, 'the writers wrote while the snapshots were held');
    } finally {
      await stopWriters(r, writers);
    }
  });
});

test('the other way round: uid 65534 writers and a root reader, consistent cuts by handshake', { skip: needsRoot, timeout: 300_000 }, async () => {
  await withStamps('root-reads', async (r) => {
    fs.chownSync(`/dev/shm/${r.name}`, NOBODY, NOBODY); // nobody's segment: its writers open it as theirs
    const writers = await stampWriters(r.name as string, NOBODY);
    try {
      for (let round = 0; round < 20; round++) {
        const s = withOwnEnv(undefined, () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
        assert.deepEqual(s.writers.map((w) => w.push), ['handshake', 'handshake', 'handshake']);
        const frozen = new Uint32Array(s.buffer);
        const first = Uint32Array.from(frozen);
        await sleep(5 + (round % 4) * 10);
        assert.equal(cutViolations(frozen), 0, `round ${round}`);
        assert.deepEqual(frozen, first, `round ${round}: the snapshot changed while the writers wrote`);
        assert.equal(s.exact, true);
        s.release();
      }
      // The coordination file is the writers' (they made it), with the region's mode.
      const st = fs.statSync(coordinationFile(r));
      assert.deepEqual([st.uid, st.mode & 0o777], [NOBODY, 0o666]);
    } finally {
      await stopWriters(r, writers);
    }
  });
});

test('a reader without write access to the coordination file: EACCES naming it, nothing half-registered', { skip: needsRoot }, async () => {
  await withRegion('readonly-file', 0o644, async (r, children) => {
    const writer = await poke(r.name as string, 1000);
    children.push(writer);
    const file = coordinationFile(r);
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
    const [rd, ready] = await reader(r.name as string, undefined, NOBODY);
    children.push(rd);
    assert.equal(ready['ready'], false);
    assert.equal(ready['code'], 'EACCES');
    assert.equal(ready['syscall'], 'open');
    assert.ok(String(ready['message']).includes(file), String(ready['message']));
    assert.match(String(ready['message']), /needs write access to this file .*give this user write access to the region/);
    // Nothing of it stays behind: the next reader takes its snapshot at once.
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.equal(s.writers.length, 1);
    await writer.ask({ cmd: 'write', page: 2, value: 5 });
    assert.equal(new Uint32Array(s.buffer)[2 * perPage], 1002);
    s.release();
  });
});

test("a coordination file another user's killed processes left behind is reused by this user, not refused (it keeps its owner's mode)", { skip: needsRoot }, async () => {
  await withRegion('foreign-orphan', 0o666, async (r, children) => {
    // Root's writer makes the file (root's, mode 0666) and is killed: nobody holds it now.
    const writer = await poke(r.name as string, 1000);
    const file = coordinationFile(r);
    assert.equal(fs.statSync(file).uid, 0);
    writer.proc.kill('SIGKILL');
    await writer.exited;
    // uid 65534 may write it but not chmod it: starting it over must not need to.
    const [rd, ready] = await reader(r.name as string, undefined, NOBODY);
    children.push(rd);
    assert.equal(ready['ready'], true, JSON.stringify(ready));
    assert.deepEqual([fs.statSync(file).uid, fs.statSync(file).mode & 0o777], [0, 0o666]);
    // The last to leave is not the file's owner: /dev/shm is sticky, so the file
    // stays, unheld, for the next open or `cowshm rm --orphans` (as here).
    await rd.end();
    children.length = 0;
    assert.equal(removeSegment(path.basename(file), undefined, { ifOrphan: true }), true);
  });
});

// Mailbox layout (native/xproc.c): page 0 from HS_AT = 1408: bell, force_gen,
// 6 spare words, then 64 mailboxes of 40 bytes: req, ack, err, count, first
// (u64), done_first (u64), done_count, path.
const HS_AT = 1408;
const MAILBOX = (i: number): number => HS_AT + 32 + 40 * i;

/** A hostile process of the same user: requests out of bounds in an unused mailbox, then garbage over every mailbox. */
const hostile = `
const fs = require('node:fs');
const [file, pages] = process.argv.slice(1);
const fd = fs.openSync(file, 'r+');
const at = ${MAILBOX(63)};
const b = Buffer.alloc(40);
const answers = [];
function ask(first, count) {
  fs.readSync(fd, b, 0, 40, at);
  const q = b.readUInt32LE(4) + 1;
  b.writeUInt32LE(count, 12);
  b.writeBigUInt64LE(BigInt(first), 16);
  b.writeUInt32LE(q, 0);
  fs.writeSync(fd, b, 0, 40, at);
  const bell = Buffer.alloc(4);
  fs.readSync(fd, bell, 0, 4, ${HS_AT});
  bell.writeUInt32LE((bell.readUInt32LE(0) + 1) >>> 0, 0);
  fs.writeSync(fd, bell, 0, 4, ${HS_AT});
  // The helper looks at the mailboxes when it wakes (at least every 50 ms): a loaded machine may take seconds.
  for (const until = Date.now() + 30000; Date.now() < until;) {
    fs.readSync(fd, b, 0, 40, at);
    if (b.readUInt32LE(4) === q) return b.readUInt32LE(8);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
  }
  return 'no answer';
}
answers.push(ask(Number(pages) + 5, 1), ask(0, 0x7fffffff), ask(Number(pages) - 1, 2), ask(2, 1));
const junk = Buffer.alloc(4096 - ${HS_AT});
for (let round = 0; round < 30; round++) {
  for (let i = 0; i < junk.length; i++) junk[i] = (Math.random() * 256) | 0;
  fs.writeSync(fd, junk, 0, junk.length, ${HS_AT});
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
}
process.stdout.write(JSON.stringify(answers));
`;

test('garbage in the handshake mailboxes from a hostile process: refused requests, no wrong copy, nobody crashes', { timeout: 300_000 }, async () => {
  await withStamps('hs-garbage', async (r) => {
    const writers = await stampWriters(r.name as string);
    try {
      const s = withOwnEnv('1', () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
      const frozen = new Uint32Array(s.buffer);
      const first = Uint32Array.from(frozen);
      const pages = r.size / pageSize;
      const h = spawn(process.execPath, ['-e', hostile, coordinationFile(r), String(pages)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      h.stdout.on('data', (d: Buffer) => (out += d.toString()));
      h.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise((resolve) => h.on('exit', resolve));
      assert.equal(code, 0, out);
      // Out of bounds (past the end, too long, running over the end): EINVAL; a page inside: copied.
      assert.deepEqual(JSON.parse(out), [22, 22, 22, 0]);
      // A copy changes nothing a reader sees: the snapshot still holds its instant, or says it is broken.
      if (s.exact) {
        assert.deepEqual(frozen, first);
        assert.equal(cutViolations(frozen), 0);
      } else {
        assert.throws(() => s.buffer, { code: 'ERR_COWSHM_SNAPSHOT_BROKEN' });
      }
      s.release();
      for (const w of writers) assert.equal(w.proc.exitCode, null, `writer ${w.pid} lives on: ${w.out}`);
      // Readers after it start over.
      for (let round = 0; round < 5; round++) {
        const t = withOwnEnv('1', () => r.snapshot({ scope: 'processes', timeoutMs: 5000 }));
        const words = new Uint32Array(t.buffer);
        const copy = Uint32Array.from(words);
        await sleep(20);
        assert.deepEqual(words, copy, `round ${round}`);
        assert.equal(cutViolations(words), 0);
        assert.equal(t.exact, true);
        t.release();
      }
    } finally {
      await stopWriters(r, writers);
    }
  });
});

test('handshakeTimeoutMs is checked like any option', () => {
  for (const bad of [-1, 1.5, 600_001, Number.NaN])
    assert.throws(() => Region.create({ size: pageSize, crossProcess: true, handshakeTimeoutMs: bad }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => Region.create({ size: pageSize, crossProcess: true, handshakeTimeoutMs: '5' as unknown as number }), {
    code: 'ERR_INVALID_ARG_TYPE',
  });
  Region.create({ size: pageSize, crossProcess: true, handshakeTimeoutMs: Number.POSITIVE_INFINITY }).close();
});
