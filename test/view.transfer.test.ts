import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { runNode } from './helpers';

// ArrayBuffer.prototype.transfer() moves a view's memory into a new buffer
// that cowshm never sees and cannot detach. Whatever is done to the view
// afterwards, that buffer must neither crash the process nor reach memory
// that is not its own any more. Each case runs in a child process: before
// the fix a case ended in SIGSEGV, which would take the test runner with it.

const major = Number(process.versions.node.split('.')[0]);
// Node 20 has transfer() behind a V8 flag; from Node 22 it is on by default.
const flags = major < 22 ? ['--harmony-rab-gsab-transfer', '--expose-gc'] : ['--expose-gc'];

// Helpers every case gets: the child prints one JSON line, or SKIP.
const prelude = `
const fs = require('node:fs');
const { Region } = require('cowshm');
if (typeof ArrayBuffer.prototype.transfer !== 'function') {
  console.log('SKIP ' + process.version + ' has no ArrayBuffer.prototype.transfer, even with ${flags[0]}');
  process.exit(0);
}
// /proc/self/maps lines that map the inode (a region's pages).
const mapsOf = (ino) => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
  .filter((l) => l.split(/\\s+/)[4] === String(ino));
const lineAt = (address) => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => {
  const [a, b] = l.split(' ', 1)[0].split('-').map((x) => parseInt(x, 16));
  return address >= a && address < b;
});
const fdsOf = (ino) => fs.readdirSync('/proc/self/fd').filter((fd) => {
  try { return fs.statSync('/proc/self/fd/' + fd).ino === ino; } catch { return false; }
});
// Pages of [address, address + length) that are in memory (bit 63 of /proc/self/pagemap).
const resident = (address, length) => {
  const page = 4096, n = Math.ceil(length / page), buf = Buffer.alloc(n * 8);
  const fd = fs.openSync('/proc/self/pagemap', 'r');
  try { fs.readSync(fd, buf, 0, buf.length, (address / page) * 8); } finally { fs.closeSync(fd); }
  let count = 0;
  for (let i = 0; i < n; i++) if (buf.readBigUInt64LE(i * 8) >> 63n) count++;
  return count;
};
const done = (result) => console.log(JSON.stringify(result));
`;

interface Outcome { [key: string]: unknown }

function run(t: { skip(message: string): void }, body: string): Outcome | undefined {
  const r = runNode(prelude + body, { args: flags, timeout: 60_000 });
  const out = r.stdout.trim();
  if (out.startsWith('SKIP ')) {
    console.log(out);
    t.skip(out.slice(5));
    return undefined;
  }
  assert.equal(r.signal, null, `the child died by ${r.signal}\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  const last = out.split('\n').pop() ?? '';
  return JSON.parse(last) as Outcome;
}

test('view.close(): a buffer moved by transfer() reads zeros and writes reach nothing', (t) => {
  const o = run(t, `
const r = Region.create({ size: 1 << 16 });
const v = r.map();
const address = v.address;
const moved = v.buffer.transfer();
const bytes = new Uint8Array(moved);
bytes[0] = 7;
bytes[65535] = 8;
v.close();
const after = [bytes[0], bytes[65535], bytes.length];
bytes[1] = 9; // must not reach the region
const region = new Uint8Array(r.map().buffer);
done({ after, back: bytes[1], region: [region[0], region[1], region[65535]], line: lineAt(address),
  mapped: mapsOf(r.ino).length });
r.close();
`);
  if (!o) return;
  assert.deepEqual(o['after'], [0, 0, 65536], 'the moved buffer keeps its length and reads zeros');
  assert.equal(o['back'], 9, 'its own writes stay with it');
  assert.deepEqual(o['region'], [7, 0, 8], 'the region keeps the bytes written before close() and none after');
  assert.match(String(o['line']), / rw-p 00000000 00:00 0 /, 'private anonymous pages replace the mapping');
  assert.equal(o['mapped'], 1, 'only the new view maps the region');
});

test('region.close(): the memory goes at once, without a GC, and the moved buffer stays harmless', (t) => {
  const o = run(t, `
const name = 'cowshm-test-transfer-' + process.pid;
const size = 64 << 20;
const r = Region.create({ name, size });
const ino = r.ino;
const v = r.map();
const address = v.address;
const moved = v.buffer.transfer();
const bytes = new Uint8Array(moved);
bytes.fill(0xab);
const held = [mapsOf(ino).length, fdsOf(ino).length, resident(address, size)];
r.unlink();
r.close();
// No collection in between: the region's pages are unreferenced now.
const freed = [mapsOf(ino).length, fdsOf(ino).length];
const pages = resident(address, size);
const sample = [bytes[0], bytes[size - 1], bytes.length];
bytes[12345] = 1;
done({ held, freed, sample, back: bytes[12345], pages,
  shm: fs.existsSync('/dev/shm/' + name), closed: v.closed });
`);
  if (!o) return;
  assert.deepEqual(o['held'], [1, 1, (64 << 20) / 4096], 'the buffer held all 64 MiB before close()');
  assert.deepEqual(o['freed'], [0, 0], 'nothing maps or holds the unlinked region after close()');
  assert.equal(o['shm'], false);
  assert.equal(o['pages'], 0, 'the moved buffer holds no memory until it writes');
  assert.deepEqual(o['sample'], [0, 0, 64 << 20]);
  assert.equal(o['back'], 1);
  assert.equal(o['closed'], true);
});

test('snapshot.release(): a buffer moved out of the snapshot reads zeros, not the region', (t) => {
  const o = run(t, `
const r = Region.create({ size: 1 << 16 });
const w = new Uint8Array(r.map().buffer);
w[0] = 5;
const s = r.snapshot();
const address = s.address;
const moved = s.buffer.transfer();
const bytes = new Uint8Array(moved);
const before = bytes[0];
w[0] = 6; // copied into the snapshot first
s.release();
const after = [bytes[0], bytes.length];
bytes[0] = 4;
done({ before, after, region: w[0], line: lineAt(address), mapped: mapsOf(r.ino).length });
r.close();
`);
  if (!o) return;
  assert.equal(o['before'], 5);
  assert.deepEqual(o['after'], [0, 1 << 16]);
  assert.equal(o['region'], 6, 'a write to the moved buffer never reaches the region');
  assert.match(String(o['line']), / rw-p 00000000 00:00 0 /);
  assert.equal(o['mapped'], 1, 'only the write view maps the region');
});

test('a buffer moved out of a view, posted from a worker that exits, never reaches a later region', (t) => {
  const o = run(t, `
const { Worker } = require('node:worker_threads');
const size = 1 << 20;
const worker = new Worker(\`
  const { parentPort } = require('node:worker_threads');
  const { Region } = require(\${JSON.stringify(require.resolve('cowshm'))});
  const r = Region.create({ size: \${size} });
  const open = r.map();
  const closed = r.map();
  const a = open.buffer.transfer();
  const b = closed.buffer.transfer();
  new Uint8Array(a).fill(0x11);
  new Uint8Array(b).fill(0x22);
  closed.close();
  parentPort.postMessage({ a, b, addresses: [open.address] }, [a, b]);
  // Ends without closing anything: its environment's teardown releases the rest.
\`, { eval: true });
worker.once('message', async ({ a, b }) => {
  await new Promise((resolve) => worker.once('exit', resolve));
  for (let i = 0; i < 4; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 10)); }
  const moved = [new Uint8Array(a), new Uint8Array(b)];
  const seenAtExit = moved.map((m) => [m[0], m.length]);
  // New regions of the same size, each filled with its own byte: the
  // kernel would place them where the worker's views were if those ranges were free.
  const regions = [];
  for (let i = 0; i < 32; i++) {
    const r = Region.create({ size });
    new Uint8Array(r.map().buffer).fill(0x40 + i);
    regions.push(r);
  }
  const seen = moved.map((m) => [m[0], m[size - 1]]);
  for (const m of moved) m.fill(0x99);
  const hit = regions.filter((r) => new Uint8Array(r.map().buffer).some((x) => x === 0x99)).length;
  done({ seenAtExit, seen, hit });
  for (const r of regions) r.close();
});
`);
  if (!o) return;
  assert.deepEqual(o['seenAtExit'], [[0, 1 << 20], [0, 1 << 20]], 'after the worker ends the moved buffers read zeros');
  assert.deepEqual(o['seen'], [[0, 0], [0, 0]], 'no later region shows through a moved buffer');
  assert.equal(o['hit'], 0, 'no write through a moved buffer lands in a later region');
});

test('the zero pages of a closed view stay until the moved buffer is collected, then the range is given back', (t) => {
  const o = run(t, `
(async () => {
  const gc = async () => { for (let i = 0; i < 6; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); } };
  // 1 GiB and more is placed where nothing else is mapped (mapping.c), so an
  // empty range there means the addon gave it back.
  const r = Region.create({ size: 1 << 30, reserve: false });
  let v = r.map();
  const address = v.address;
  let moved = v.buffer.transfer();
  new Uint8Array(moved)[0] = 1;
  v.close();
  r.close();
  v = undefined;
  await gc();
  const kept = lineAt(address) ?? null;
  const value = new Uint8Array(moved)[0];
  moved = undefined;
  await gc();
  done({ kept, value, after: lineAt(address) ?? null });
})();
`);
  if (!o) return;
  assert.match(String(o['kept']), / rw-p 00000000 00:00 0 /, 'kept while the moved buffer lives, whatever the GC did');
  assert.equal(o['value'], 0);
  assert.equal(o['after'], null, 'unmapped once the moved buffer is gone');
});
