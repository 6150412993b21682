// Child process for snapshot.xproc.test.ts: a writer that takes part in
// cross-process snapshots and writes causal stamps without pausing.
//
// Layout of the region (Uint32 words): page 0 word 0 is the stop flag; page
// 1 + w holds writer w's counter (word 0); from page 8 on, records of
// RECORD words [writer + 1, counter, seen counter of writer 0..2] at random
// places. A writer reads the others' counters, then writes a record, then its
// own counter: so a consistent cut never holds a record whose "seen" values
// are ahead of the counters it holds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, pageSize } from 'cowshm';
import { packageRoot } from './helpers';

export const WRITERS = 3;
export const RECORD = 2 + WRITERS;
export const FIRST_RECORD_PAGE = 8;

/** Takes a snapshot with scope 'processes' and holds it until killed. */
function reader(name: string): void {
  const region = Region.open(name, { readOnly: true });
  const s = region.snapshot({ scope: 'processes', timeoutMs: 5000 });
  process.stdout.write(`ready ${process.pid} ${s.byteLength}\n`);
  setInterval(() => new Uint32Array(s.buffer)[0], 50);
}

/**
 * A hostile process of the same user: it holds the reader lock and announces
 * itself as a reader at an address one page off its own private mapping of
 * the region (which it filled with 0xEE), then writes garbage all over the
 * header. Nothing may be pushed into its memory, and nobody may crash.
 */
async function hostile(name: string, file: string): Promise<void> {
  const { native } = require(path.join(packageRoot, 'dist', 'native.js')) as {
    native: { ofdLock(fd: number, s: number, l: number, k: number, w: number): boolean };
  };
  const region = Region.open(name, { readOnly: true });
  const cow = region.map({ access: 'cow' });
  const mine = new Uint8Array(cow.buffer);
  mine.fill(0xee);
  const fd = fs.openSync(file, 'r+');
  if (!native.ofdLock(fd, 0, 1, 2, 0)) throw new Error('the reader lock is held');
  const h = Buffer.alloc(64);
  fs.readSync(fd, h, 0, 64, 0);
  const gen = h.readUInt32LE(24) + 1;
  h.writeUInt32LE(gen, 24); // gen
  h.writeUInt32LE(process.pid, 36); // reader_pid
  h.writeUInt32LE(fd, 40); // reader_fd
  h.writeUInt32LE(60_000, 44); // timeout_ms
  h.writeBigUInt64LE(BigInt(cow.address + pageSize), 48); // one page off
  h.writeUInt32LE(2, 20); // state: armed
  h.writeUInt32LE(h.readUInt32LE(16) + 1, 16); // seq
  fs.writeSync(fd, h, 0, 64, 0);
  await new Promise((resolve) => setTimeout(resolve, 400));
  const pushed = mine.some((b) => b !== 0xee);
  // Garbage everywhere after the header's identity, slots included.
  for (let round = 0; round < 20; round++) {
    const junk = Buffer.alloc(4096 - 16);
    for (let i = 0; i < junk.length; i++) junk[i] = (Math.random() * 256) | 0;
    fs.writeSync(fd, junk, 0, junk.length, 16);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const claims = Buffer.alloc(4096);
  for (let i = 0; i < claims.length; i++) claims[i] = (Math.random() * 256) | 0;
  fs.writeSync(fd, claims, 0, claims.length, 4096);
  native.ofdLock(fd, 0, 1, 0, 0);
  fs.closeSync(fd);
  process.stdout.write(`ready ${process.pid} pushed=${pushed}\n`);
  region.close();
}

function main(): void {
  const [role, name, index] = process.argv.slice(2) as [string, string, string];
  if (role === 'reader') return reader(name);
  if (role === 'hostile') {
    void hostile(name, index);
    return;
  }
  if (role !== 'writer') throw new Error(`unknown role ${role}`);
  const w = Number(index);
  const region = Region.open(name, { crossProcess: true });
  const words = new Uint32Array(region.map().buffer);
  const perPage = pageSize / 4;
  const records = Math.floor((words.length - FIRST_RECORD_PAGE * perPage) / RECORD);
  let seed = (w + 1) * 2654435761;
  const random = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  process.stdout.write(`ready ${process.pid}\n`);
  let counter = words[(1 + w) * perPage] as number;
  while (Atomics.load(words, 0) === 0) {
    counter++;
    const at = FIRST_RECORD_PAGE * perPage + random(records) * RECORD;
    const seen = [];
    for (let j = 0; j < WRITERS; j++) seen.push(Atomics.load(words, (1 + j) * perPage));
    for (let j = 0; j < WRITERS; j++) Atomics.store(words, at + 2 + j, seen[j] as number);
    Atomics.store(words, at + 1, counter);
    Atomics.store(words, at, w + 1);
    Atomics.store(words, (1 + w) * perPage, counter);
  }
  region.close();
  process.stdout.write(`done ${counter}\n`);
}

if (require.main === module) main();
