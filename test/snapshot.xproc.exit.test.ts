// What a process or a worker leaves of cross-process snapshots when it ends
// without release() or close(): nothing in /dev/shm once its last user is
// gone, a writer elsewhere that goes on, and a snapshot's mapping that stays
// reserved for as long as a writer may still push into it.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { Region, pageSize, snapshotBackend } from 'cowshm';
import { fdsFor, mapsLineContaining, packageRoot, uniqueName } from './helpers';
import { coordinationFile, cowshmPeer, gone, sleep, stopPeer, stopped, writer } from './xproc-helpers';

const cowshm = JSON.stringify(packageRoot);

/**
 * Waits (at most 2 s) until writer `w` has no page of the region write-protected: it let go of a
 * snapshot. Seen with userfaultfd only (pagemap's uffd-wp bit); with mprotect it is true at once,
 * and the tests see the writer let go by what follows (the next snapshot is not refused).
 */
async function unprotected(w: { ask(line: string): Promise<string> }): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if ((await w.ask('wp 0 16')) === '0') return true;
    await sleep(20);
  }
  return false;
}

/** Runs `node -e code NAME`, resolving with its exit code (or signal), and what it printed. */
async function run(code: string, name: string): Promise<{ code: number | string | null; out: string }> {
  const proc = spawn(process.execPath, ['-e', code, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const [status, signal] = (await once(proc, 'exit')) as [number | null, string | null];
  return { code: status ?? signal, out };
}

// The five lines that left the file: create (taking part), snapshot, unlink, end.
const ENDINGS = {
  returns: '',
  'calls process.exit()': 'process.exit(0);',
  throws: "throw new Error('ends on purpose');",
} as const;

/** Runs a process that takes part in its region, holds a snapshot with scope 'processes' and ends as `end` says, without release() or close(). */
async function endHolding(end: string, unlink: boolean, exitCode: number): Promise<void> {
  const name = uniqueName('xexit');
  const code = `
    const { Region } = require(${cowshm});
    const r = Region.create({ name: process.argv[1], size: 16 * 4096, mode: 0o600, crossProcess: true });
    const s = r.snapshot({ scope: 'processes' });
    new Uint8Array(s.buffer)[0];
    console.log('/dev/shm/cowshm-xproc-' + r.dev.toString(16) + '-' + r.ino.toString(16));
    ${unlink ? 'r.unlink();' : ''}
    ${end}`;
  const { code: status, out } = await run(code, name);
  const file = out.split('\n')[0] as string;
  try {
    assert.match(file, /^\/dev\/shm\/cowshm-xproc-/, out);
    assert.equal(status, exitCode, out);
    assert.equal(fs.existsSync(file), false, `${file} was left behind`);
  } finally {
    if (file.startsWith('/dev/shm/cowshm-xproc-')) fs.rmSync(file, { force: true });
    if (!unlink) fs.rmSync(`/dev/shm/${name}`, { force: true });
  }
}

for (const [how, end] of Object.entries(ENDINGS)) {
  test(`a process that ${how} holding a cross-process snapshot of a region it unlinked leaves no coordination file`, async () => {
    await endHolding(end, true, how === 'throws' ? 1 : 0);
  });
}

test('a process that returns holding a cross-process snapshot of a region that stays leaves no coordination file', async () => {
  await endHolding('', false, 0);
});

test('a process that exits with a writer joined leaves no coordination file while its region exists; one another participant holds is kept', async () => {
  const name = uniqueName('xexitw');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const file = coordinationFile(r);
  const joinAndExit = `
    const { Region } = require(${cowshm});
    const r = Region.open(process.argv[1], { crossProcess: true });
    new Uint8Array(r.map().buffer)[0] = 1;
    process.exit(0);`;
  let peer;
  try {
    assert.equal((await run(joinAndExit, name)).code, 0);
    assert.equal(fs.existsSync(file), false, 'the last participant to go removes the file');

    peer = await cowshmPeer(name, 'participant'); // writes page 0, holds the file
    assert.equal((await run(joinAndExit, name)).code, 0);
    assert.equal(fs.existsSync(file), true, 'a participant still holds the file');
    // It still takes part: a snapshot arms it, and its state is the file's.
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.equal(new Uint8Array(s.buffer)[8], 1);
    assert.deepEqual(s.writers.map((x) => x.pid), [peer.pid]);
    s.release();
    await stopPeer(peer); // closes, then exits: the last one
    assert.equal(await gone(file), true);
  } finally {
    if (peer) await stopPeer(peer);
    r.unlink();
    r.close();
  }
});

test('a writer goes on when a reader process exits without release(), and the next snapshot arms it', async () => {
  const name = uniqueName('xexitr');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const file = coordinationFile(r);
  const w = await writer(name);
  try {
    assert.equal(await w.ask('write 1 5'), 'ok');
    const reader = `
      const { Region } = require(${cowshm});
      const r = Region.open(process.argv[1], { readOnly: true });
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      if (new Uint8Array(s.buffer)[4096] !== 5) process.exit(2);
      process.exit(0);`;
    assert.equal((await run(reader, name)).code, 0);
    assert.equal(await w.ask('write 1 6'), 'ok', 'the writer writes on');
    assert.equal(await unprotected(w), true, 'the writer let go of the snapshot of the reader that went');
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 }); // not EBUSY, and the writer arms
    assert.deepEqual(s.writers.map((x) => x.pid).length, 1);
    assert.equal(await w.ask('write 1 7'), 'ok');
    assert.equal(new Uint8Array(s.buffer)[pageSize], 6);
    assert.equal(s.exact, true);
    s.release();
  } finally {
    await w.end();
    r.unlink();
    r.close();
  }
  assert.equal(await gone(file), true);
});

test("region.close() without release() releases the region's cross-process snapshots: no writer stays armed, another reader is not refused", async () => {
  const name = uniqueName('xexitc');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const file = coordinationFile(r);
  const w = await writer(name);
  try {
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    if (snapshotBackend === 'userfaultfd') assert.equal(await w.ask('wp 0 16'), '16', 'armed for the snapshot');
    r.close();
    assert.equal(s.released, true);
    assert.equal(await unprotected(w), true, 'the writer let go of the snapshot of the closed region');
    const other = `
      const { Region } = require(${cowshm});
      const r = Region.open(process.argv[1], { readOnly: true });
      r.snapshot({ scope: 'processes', timeoutMs: 5000 }).release();`;
    const { code, out } = await run(other, name);
    assert.equal(code, 0, out); // not EBUSY: one cross-process snapshot per region at a time
    // A release() after close does nothing, though the reader's id is another snapshot's by now.
    const again = Region.open(name, { readOnly: true });
    const t = again.snapshot({ scope: 'processes', timeoutMs: 5000 });
    s.release();
    if (snapshotBackend === 'userfaultfd') assert.equal(await w.ask('wp 0 16'), '16', 'still armed for the new snapshot');
    assert.equal(await w.ask('write 2 1'), 'ok');
    assert.equal(new Uint8Array(t.buffer)[2 * pageSize], 0, 'the write was pushed into the new snapshot first');
    assert.equal(t.exact, true);
    again.close();
  } finally {
    await w.end();
    const again = Region.open(name);
    again.unlink();
    again.close();
  }
  assert.equal(await gone(file), true, `${file} was left behind`);
});

// A worker that takes a snapshot of `name` with scope 'processes', posts its
// address and waits to be terminated.
const SNAPSHOT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { Region } = require(workerData.root);
const r = Region.open(workerData.name, { readOnly: true });
const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
parentPort.postMessage({ address: s.address, first: new Uint8Array(s.buffer)[4096] });
setInterval(() => {}, 1000);
`;

async function snapshotInWorker(name: string): Promise<{ worker: Worker; address: number; first: number }> {
  const worker = new Worker(SNAPSHOT_WORKER, { eval: true, workerData: { root: packageRoot, name } });
  const [m] = (await once(worker, 'message')) as [{ address: number; first: number }];
  return { worker, ...m };
}

test('a worker terminated while it holds a cross-process snapshot lets go of it: the writer goes on, and the file goes with its last user', async () => {
  const name = uniqueName('xexitt');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const file = coordinationFile(r);
  const w = await writer(name);
  try {
    assert.equal(await w.ask('write 1 3'), 'ok');
    const { worker, first } = await snapshotInWorker(name);
    assert.equal(first, 3);
    await worker.terminate();
    assert.equal(await w.ask('write 1 4'), 'ok', 'the writer writes on');
    assert.equal(await unprotected(w), true, 'the writer let go of the snapshot of the reader that went');
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 }); // the worker's snapshot is no longer live
    assert.equal(await w.ask('write 1 5'), 'ok');
    assert.equal(new Uint8Array(s.buffer)[pageSize], 4);
    s.release();
  } finally {
    await w.end();
    r.unlink();
    r.close();
  }
  assert.equal(await gone(file), true, `${file} was left behind`);
});

test("a terminated worker's snapshot stays reserved while a stopped writer may still push into it, and goes once it let go", async () => {
  const name = uniqueName('xexits');
  const r = Region.create({ name, size: 16 * pageSize, mode: 0o600 });
  const file = coordinationFile(r);
  const peer = await cowshmPeer(name, 'participant'); // armed for the worker's snapshot, then stopped
  try {
    const { worker, address } = await snapshotInWorker(name);
    const mapped = mapsLineContaining(address);
    assert.match(mapped?.line ?? '', / rw-p /, 'the snapshot is mapped');
    peer.proc.kill('SIGSTOP');
    await stopped(peer.pid);
    await worker.terminate(); // does not wait for the stopped writer
    // Nothing else may be mapped where the stopped writer would push: the range stays taken, its memory gone.
    const held = mapsLineContaining(address);
    assert.ok(held !== undefined, 'the range stays reserved while the writer may push into it');
    assert.match(held.line, / ---p 00000000 00:00 0 /);
    assert.ok(held.start <= address && held.end >= address + r.size);
    assert.equal(fs.existsSync(file), true, 'the stopped writer holds the file');
    const coordination = fs.statSync(file);
    assert.equal(fdsFor(coordination.dev, coordination.ino).length, 1, "the worker's reader keeps the file open meanwhile");
    await sleep(100);
    assert.equal(mapsLineContaining(address)?.line, held.line, 'still reserved while the writer is stopped');
    peer.proc.kill('SIGCONT');
    // Once the writer let go, the reader ends: its descriptor and the reservation go.
    for (let i = 0; i < 250 && fdsFor(coordination.dev, coordination.ino).length > 0; i++) await sleep(20);
    assert.deepEqual(fdsFor(coordination.dev, coordination.ino), [], 'the reader ended once the writer let go');
    assert.notEqual(mapsLineContaining(address)?.line, held.line, 'the reservation went with it');
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 }); // it arms again: it was not broken
    assert.equal(new Uint8Array(s.buffer)[8], 1);
    s.release();
  } finally {
    await stopPeer(peer);
    r.unlink();
    r.close();
  }
  assert.equal(await gone(file), true, `${file} was left behind`);
});

test('a worker of a process that never loaded cowshm ends with its region, a wait on it and a cross-process snapshot open: the process lives on, nothing is left', async () => {
  const name = uniqueName('xexitd');
  // The addon is loaded by the worker alone, so Node unloads it when the worker ends.
  const code = `
    const { Worker } = require('node:worker_threads');
    const w = new Worker(\`
      const { parentPort } = require('node:worker_threads');
      const { Region, atomics } = require(${cowshm});
      const r = Region.create({ name: ${JSON.stringify(name)}, size: 16 * 4096, mode: 0o600, crossProcess: true });
      const v = r.map();
      const s = r.snapshot({ scope: 'processes' });
      new Uint8Array(v.buffer)[0] = 1;
      void atomics.waitAsync(new Int32Array(v.buffer), 4, 0).value; // pending as it ends (futex.c's teardown too)
      r.unlink();
      parentPort.postMessage('/dev/shm/cowshm-xproc-' + r.dev.toString(16) + '-' + r.ino.toString(16));
      setInterval(() => {}, 1000);
    \`, { eval: true });
    w.once('message', async (file) => {
      console.log(file);
      await w.terminate();
      setTimeout(() => console.log('alive'), 300);
    });`;
  const { code: status, out } = await run(code, name);
  const file = out.split('\n')[0] as string;
  try {
    assert.equal(status, 0, out);
    assert.match(out, /alive/);
    assert.equal(fs.existsSync(file), false, `${file} was left behind`);
  } finally {
    if (file.startsWith('/dev/shm/cowshm-xproc-')) fs.rmSync(file, { force: true });
  }
});
