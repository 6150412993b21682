// Page claims left behind by a writer that died or stopped mid-push (native/xproc.c,
// push()). A claim names its writer by slot, and a slot is reused by the next
// process to join: the claim of a dead writer must still be taken over when a
// newcomer holds its slot, and a write waiting on a stopped writer's claim must
// go on as soon as the snapshot is released, not hold its process (and the
// process's next arming) for the old snapshot's whole timeout.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, pageSize } from 'cowshm';
import { packageRoot, uniqueName } from './helpers';
import { coordinationFile, sleep, startPeer, stopPeer, stopped, type Peer } from './xproc-helpers';

const PAGE = 3;

// Takes part in NAME's snapshots; on SIGUSR2 writes VALUE into the first word
// of page PAGE (the write faults and pushes), then prints `wrote`.
const WRITER = `
const { Region, pageSize } = require(${JSON.stringify(packageRoot)});
const [name, page, value] = process.argv.slice(1).map((a, i) => (i === 0 ? a : Number(a)));
const r = Region.open(name, { crossProcess: true });
const words = new Uint32Array(r.map().buffer);
process.on('SIGUSR2', () => { words[(page * pageSize) / 4] = value; console.log('wrote'); });
process.on('SIGTERM', () => { r.close(); process.exit(0); });
console.log('ready');
setInterval(() => {}, 1000);
`;

function writer(name: string, value: number, env: NodeJS.ProcessEnv = {}): Promise<Peer> {
  return startPeer(process.execPath, ['-e', WRITER, name, String(PAGE), String(value)], env);
}

/** A writer that holds each page claim for about a second before pushing (the test hook). */
const holdsClaims = { COWSHM_TEST_XPROC_PUSH_DELAY_US: '999999' };

/** Waits (at most 10 s) until page PAGE's claim in the coordination file says a push is in progress. */
async function claimed(file: string): Promise<void> {
  const word = Buffer.alloc(4);
  const copying = (): boolean => {
    const fd = fs.openSync(file, 'r');
    try {
      fs.readSync(fd, word, 0, 4, pageSize + PAGE * 4);
    } finally {
      fs.closeSync(fd);
    }
    return (word.readUInt32LE(0) & 3) === 1;
  };
  for (let i = 0; i < 1000 && !copying(); i++) await sleep(10);
  assert.ok(copying(), 'the writer holds the page claim');
}

async function wrote(p: Peer): Promise<void> {
  for (let i = 0; i < 2000 && !p.out.includes('wrote'); i++) await sleep(10);
  assert.match(p.out, /wrote/, `the write landed: ${p.out}`);
}

/**
 * Waits (at most 10 s) until the main thread of `pid` is held in its write:
 * pausing between looks at the claim (a fault handler, as the mprotect
 * backend runs it), or in the kernel until the userfaultfd thread that pushes
 * for it is done. Before its write it waits in epoll, or runs. (wchan reads
 * 0 whenever the thread is on a CPU, which a writer pausing 20 µs at a time
 * often is: one look that finds it held is enough.)
 */
async function blockedInWrite(pid: number): Promise<void> {
  const wchan = (): string => fs.readFileSync(`/proc/${pid}/task/${pid}/wchan`, 'utf8');
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const w = wchan();
    if (w === 'hrtimer_nanosleep' || w === 'handle_userfault') return;
    seen.add(w);
    await sleep(10);
  }
  assert.fail(`the writer waits in its write (its main thread was seen in ${[...seen].join(', ')})`);
}

function region(tag: string): { r: Region; words: Uint32Array } {
  const r = Region.create({ name: uniqueName(tag), size: 8 * pageSize, mode: 0o600 });
  const words = new Uint32Array(r.map().buffer);
  words[(PAGE * pageSize) / 4] = 0x11;
  return { r, words };
}

async function cleanUp(r: Region, peers: Peer[]): Promise<void> {
  for (const p of peers) await stopPeer(p);
  r.close();
  r.unlink();
}

test("a dead writer's claim is taken over even when a newcomer holds its slot", async () => {
  const { r, words } = region('claims-dead');
  const peers: Peer[] = [];
  try {
    const dying = await writer(r.name as string, 0x22, holdsClaims); // slot 0
    peers.push(dying, await writer(r.name as string, 0x33)); // slot 1
    const s = r.snapshot({ scope: 'processes', timeoutMs: 3000 });
    dying.proc.kill('SIGUSR2');
    await claimed(coordinationFile(r));
    dying.proc.kill('SIGKILL');
    await dying.exited;
    peers.push(await writer(r.name as string, 0x44)); // takes the dead writer's slot 0
    (peers[1] as Peer).proc.kill('SIGUSR2'); // the same page: finds slot 0's claim, held by the newcomer
    await wrote(peers[1] as Peer);
    // Waiting out the claim (before: the snapshot's timeout + 1 s) breaks the snapshot.
    assert.equal(s.exact, true, 'the claim was taken over, not waited out');
    assert.equal(new Uint32Array(s.buffer)[(PAGE * pageSize) / 4], 0x11, 'the snapshot holds the page as it was');
    assert.equal(words[(PAGE * pageSize) / 4], 0x33);
    s.release();
    const next = r.snapshot({ scope: 'processes', timeoutMs: 3000 });
    assert.equal(next.exact, true);
    next.release();
  } finally {
    await cleanUp(r, peers);
  }
});

test("a write waiting on a stopped writer's claim goes on once the snapshot is released", async () => {
  const { r } = region('claims-stopped');
  const peers: Peer[] = [];
  try {
    const waiting = await writer(r.name as string, 0x33); // slot 0
    const holder = await writer(r.name as string, 0x22, holdsClaims); // slot 1
    peers.push(waiting, holder);
    const s = r.snapshot({ scope: 'processes', timeoutMs: 10_000 });
    holder.proc.kill('SIGUSR2');
    await claimed(coordinationFile(r));
    holder.proc.kill('SIGSTOP');
    await stopped(holder.pid);
    waiting.proc.kill('SIGUSR2'); // waits for the stopped holder's push
    await blockedInWrite(waiting.pid);
    s.release();
    // The stopped holder cannot arm: the next snapshot names it, not the writer
    // that waited (before: that one's arming thread waited out the old
    // snapshot's 11 s behind its write, and the error named it).
    assert.throws(
      () => r.snapshot({ scope: 'processes', timeoutMs: 3000 }),
      (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT' && err.message.includes(`process ${holder.pid},`),
    );
    await wrote(waiting);
    holder.proc.kill('SIGCONT');
    await wrote(holder);
    const next = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    assert.equal(next.exact, true);
    next.release();
  } finally {
    await cleanUp(r, peers);
  }
});
