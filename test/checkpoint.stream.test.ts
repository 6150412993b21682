import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import * as zlib from 'node:zlib';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable, PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Region, checkpointInfo, pageSize } from 'cowshm';
import { tempDir, rmTemp, packageRoot } from './helpers';
import { filled } from './checkpoint-helpers';

async function collect(readable: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of readable) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('a full stream holds the bytes writeTo writes: same data, page count and checksum; its file restores', async () => {
  const dir = tempDir('ck-stream');
  const size = 3 * 1024 * 1024 + 123;
  const { region, bytes } = filled(size);
  const snap = region.snapshot();
  try {
    const file = path.join(dir, 'a.cow');
    const res = await snap.writeTo(file);
    const streamed = await collect(snap.createReadStream());
    const written = fs.readFileSync(file);
    assert.equal(streamed.length, written.length);
    // Only the id, the creation time and the header checksum differ.
    assert.ok(streamed.subarray(4096).equals(written.subarray(4096)));
    assert.ok(streamed.subarray(0, 56).equals(written.subarray(0, 56)));
    const sfile = path.join(dir, 's.cow');
    fs.writeFileSync(sfile, streamed);
    const info = checkpointInfo(sfile);
    assert.equal(info.checksum, res.checksum);
    const restored = Region.restore(sfile, { verify: 'full' });
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)));
    restored.close();
  } finally {
    snap.release();
    region.close();
    rmTemp(dir);
  }
});

test('a delta stream lists the pages a delta written by writeTo lists, and names its base by id and checksum', async () => {
  const dir = tempDir('ck-stream-delta');
  const size = 64 * pageSize;
  const { region } = filled(size);
  try {
    const base = path.join(dir, 'base.cow');
    const s1 = region.snapshot();
    const b = await s1.writeTo(base);
    s1.release();
    const view = region.map();
    const u8 = new Uint8Array(view.buffer);
    for (const p of [3, 4, 40, 63]) u8[p * pageSize + 7] = (u8[p * pageSize + 7] ?? 0) ^ 0xff;
    const s2 = region.snapshot();
    const d = await s2.writeTo(path.join(dir, 'd.cow'), { base });
    const streamed = await collect(s2.createReadStream({ base }));
    s2.release();
    const dv = new DataView(streamed.buffer, streamed.byteOffset, streamed.byteLength);
    assert.equal(dv.getUint32(12, true), 2);
    assert.equal(dv.getUint32(28, true), 4);
    assert.equal(streamed.subarray(72, 88).toString('hex'), b.id);
    assert.equal(dv.getBigUint64(48, true).toString(16).padStart(16, '0'), d.checksum);
    assert.equal(dv.getUint32(112, true), 0); // no base path
    const list = new Uint32Array(streamed.buffer.slice(streamed.byteOffset + streamed.length - 16, streamed.byteOffset + streamed.length));
    assert.deepEqual([...list], [3, 4, 40, 63]);
    const written = fs.readFileSync(path.join(dir, 'd.cow'));
    assert.ok(streamed.subarray(4096).equals(written.subarray(4096)));
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('restoreStream through gzip and gunzip gives the same bytes, as a writable memfd region', async () => {
  const size = 2 * 1024 * 1024 + 5;
  const { region, bytes } = filled(size, 7);
  const snap = region.snapshot();
  try {
    const gz = snap.createReadStream().pipe(zlib.createGzip({ level: 1 })).pipe(zlib.createGunzip());
    const restored = await Region.restoreStream(gz);
    assert.equal(restored.size, size);
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)));
    restored.close();
  } finally {
    snap.release();
    region.close();
  }
});

test('over HTTP on 127.0.0.1 to another process, which restores the stream and compares byte for byte', async () => {
  const size = 8 * 1024 * 1024;
  const { region, bytes } = filled(size, 3);
  const snap = region.snapshot();
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    snap.createReadStream().pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const port = (server.address() as { port: number }).port;
    const code = `
      const http = require('node:http'); const { Region } = require('cowshm'); const { createHash } = require('node:crypto');
      http.get('http://127.0.0.1:${port}/', async (res) => {
        const r = await Region.restoreStream(res);
        console.log(createHash('sha256').update(new Uint8Array(r.map().buffer)).digest('hex'), r.size);
        r.close();
      });`;
    const child = spawn(process.execPath, ['-e', code], { cwd: packageRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(status, 0);
    assert.equal(out.trim(), `${sha(bytes)} ${size}`);
  } finally {
    server.close();
    snap.release();
    region.close();
  }
});

test('hostile streams: truncated, a flipped data bit, a flipped header bit, a huge declared size; nothing left open', async () => {
  const size = 16 * pageSize;
  const { region } = filled(size, 5);
  const snap = region.snapshot();
  const good = await collect(snap.createReadStream());
  snap.release();
  region.close();
  const before = openFds();
  const reject = async (bytes: Buffer, code: string, re: RegExp): Promise<void> => {
    await assert.rejects(Region.restoreStream(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)])), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, code);
      assert.match(err.message, re);
      return true;
    });
  };
  await reject(good.subarray(0, good.length - 1), 'ERR_COWSHM_CHECKPOINT_INVALID', /truncated/);
  await reject(good.subarray(0, 2000), 'ERR_COWSHM_CHECKPOINT_INVALID', /truncated/);
  await reject(Buffer.concat([good, Buffer.from([0])]), 'ERR_COWSHM_CHECKPOINT_INVALID', /longer/);
  const data = Buffer.from(good);
  data.writeUInt8(data.readUInt8(4096 + 5 * pageSize + 11) ^ 0x10, 4096 + 5 * pageSize + 11);
  await reject(data, 'ERR_COWSHM_CHECKPOINT_INVALID', /data checksum mismatch/);
  const head = Buffer.from(good);
  head.writeUInt8(head.readUInt8(60) ^ 0x01, 60); // inside the id
  await reject(head, 'ERR_COWSHM_CHECKPOINT_INVALID', /header checksum mismatch/);
  const magic = Buffer.from(good);
  magic[0] = 0x41;
  await reject(magic, 'ERR_COWSHM_CHECKPOINT_INVALID', /wrong magic/);
  const huge = Buffer.from(good);
  const pages = 2 ** 32 - 1;
  huge.writeBigUInt64LE(BigInt(pages) * BigInt(pageSize), 16);
  huge.writeUInt32LE(pages, 28);
  await reject(huge, 'ENOMEM', /more than is available/);
  await assert.rejects(Region.restoreStream('not a stream' as never), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.equal(openFds(), before);
});

test('abort mid-stream: the producer errors with AbortError, the restoring side rejects, nothing is left', async () => {
  const size = 32 * 1024 * 1024;
  const { region } = filled(size, 9);
  const snap = region.snapshot();
  try {
    const before = openFds();
    const ac = new AbortController();
    const s = snap.createReadStream({ signal: ac.signal });
    let producerError: Error | null = null;
    s.on('error', (e) => (producerError = e));
    let seen = 0;
    const counted = new PassThrough();
    counted.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen > 4 << 20 && !ac.signal.aborted) ac.abort();
    });
    const restoring = Region.restoreStream(counted);
    s.pipe(counted);
    await new Promise<void>((resolve) => s.on('close', resolve));
    assert.equal((producerError as Error | null)?.name, 'AbortError');
    counted.destroy(new Error('the producer went away'));
    await assert.rejects(restoring, /went away/);

    // The consumer gives up: the producer's destroy() releases its work; a delta's base mapping too.
    const dir = tempDir('ck-stream-abort');
    try {
      const base = path.join(dir, 'b.cow');
      await snap.writeTo(base);
      const maps = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('b.cow')).length;
      const s2 = snap.createReadStream({ base });
      assert.equal(maps(), 1);
      const it = s2[Symbol.asyncIterator]();
      await it.next();
      s2.destroy();
      await new Promise<void>((resolve) => s2.on('close', resolve));
      assert.equal(maps(), 0);
    } finally {
      rmTemp(dir);
    }
    assert.equal(openFds(), before);
    // A stream destroyed mid-way leaves the snapshot usable.
    assert.equal((await collect(snap.createReadStream())).length, 4096 + size);
  } finally {
    snap.release();
    region.close();
  }
});

test('a snapshot released under its stream errors the stream (ERR_COWSHM_CLOSED), never ends it', async () => {
  const { region } = filled(16 * 1024 * 1024, 2);
  const snap = region.snapshot();
  const s = snap.createReadStream();
  const it = s[Symbol.asyncIterator]();
  await it.next();
  snap.release();
  await assert.rejects(collect({ [Symbol.asyncIterator]: () => it }), (err: NodeJS.ErrnoException) => {
    assert.ok(err.code === 'ERR_COWSHM_CLOSED' || err.code === 'ERR_COWSHM_SNAPSHOT_BROKEN', String(err.code));
    return true;
  });
  region.close();
});

test('five streams with UV_THREADPOOL_SIZE=4, four paused: the fifth completes (a paused consumer holds no pool thread)', () => {
  const dir = tempDir('ck-stream-pool');
  try {
    const code = `
      const fs = require('node:fs'); const path = require('node:path'); const { Region } = require('cowshm');
      const size = 16 << 20; const region = Region.create({ size });
      new Uint8Array(region.map().buffer).fill(7); const snap = region.snapshot();
      const dir = ${JSON.stringify(dir)};
      const open = (i) => {
        const s = snap.createReadStream(); const out = fs.createWriteStream(path.join(dir, i + '.cow'));
        s.pipe(out); return { s, out };
      };
      // Four consumers pause after their first chunk: their readables stop asking for more.
      // The fifth starts once all four are paused (a stream's first chunk comes after its
      // scan on the pool, which a loaded machine may finish after the fifth's last chunk).
      const streams = [0, 1, 2, 3].map(open);
      let pausing = 4;
      for (const { s, out } of streams) s.once('data', () => { s.unpipe(out); s.pause(); if (--pausing === 0) fifth(); });
      const fifth = () => open(4).out.on('finish', () => {
        console.log('fifth done');
        for (const { s, out } of streams) { s.pipe(out); s.resume(); }
        let left = 4;
        for (const { out } of streams) out.on('finish', () => { if (--left === 0) {
          for (let i = 0; i < 5; i++) { const r = Region.restore(path.join(dir, i + '.cow'), { verify: 'full' }); r.close(); }
          console.log('all done'); snap.release(); region.close(); } });
      });`;
    const r = spawnSync(process.execPath, ['-e', code], {
      cwd: packageRoot, encoding: 'utf8', timeout: 60_000, env: { ...process.env, UV_THREADPOOL_SIZE: '4' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'fifth done\nall done\n');
  } finally {
    rmTemp(dir);
  }
});

test('a snapshot that broke (COWSHM_FAIL_SNAPSHOT_COPY) errors its stream with ERR_COWSHM_SNAPSHOT_BROKEN', () => {
  const code = `
    const { Region } = require('cowshm');
    const region = Region.create({ size: 1 << 20 }); const v = new Uint8Array(region.map().buffer); v.fill(1);
    const snap = region.snapshot();
    const s = snap.createReadStream();
    v.fill(2); // the copies into the snapshot: the first one fails, the stream is under way
    try { snap.createReadStream(); } catch (e) { console.log('sync', e.code); }
    s.on('data', () => {}); s.on('end', () => { console.log('ended'); });
    s.on('error', (e) => { console.log(e.code); snap.release(); region.close(); });`;
  const r = spawnSync(process.execPath, ['-e', code], {
    cwd: packageRoot, encoding: 'utf8', timeout: 30_000, env: { ...process.env, COWSHM_FAIL_SNAPSHOT_COPY: '1' },
  });
  assert.equal(r.stdout.trim(), 'sync ERR_COWSHM_SNAPSHOT_BROKEN\nERR_COWSHM_SNAPSHOT_BROKEN', r.stderr);
});

test('a chain over streams: full, then two deltas applied with applyDelta, ends byte for byte equal', async () => {
  const dir = tempDir('ck-stream-chain');
  const size = 128 * pageSize + 100;
  const { region, bytes } = filled(size, 11);
  try {
    const s0 = region.snapshot();
    const f0 = path.join(dir, '0.cow');
    await s0.writeTo(f0);
    // The full checkpoint as stored (a file streamed, as from object storage), through gzip.
    const restored = await Region.restoreStream(fs.createReadStream(f0).pipe(zlib.createGzip()).pipe(zlib.createGunzip()));
    s0.release();
    const touch = (round: number, pages: number[]): void => {
      for (const p of pages) {
        const at = Math.min(size - 1, p * pageSize + 3);
        bytes[at] = (bytes[at] ?? 0) ^ (round * 17);
      }
    };
    // Delta 1: written to a file by writeTo (a delta of f0), sent as a stream of that file.
    touch(1, [0, 5, 6, 128]);
    const s1 = region.snapshot();
    const f1 = path.join(dir, '1.cow');
    await s1.writeTo(f1, { base: f0 });
    s1.release();
    await restored.applyDelta(fs.createReadStream(f1));
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)), 'after delta 1');
    // Delta 2: streamed straight from a snapshot against f1.
    touch(2, [5, 77]);
    const s2 = region.snapshot();
    await restored.applyDelta(s2.createReadStream({ base: f1 }).pipe(new PassThrough()));
    s2.release();
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)), 'after delta 2');
    const base = f1;
    // A delta of f0 again: the region now holds another checkpoint, and refuses it.
    const s = region.snapshot();
    await assert.rejects(restored.applyDelta(s.createReadStream({ base: f0 })), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /is a delta of checkpoint/ });
    await assert.rejects(restored.applyDelta(s.createReadStream({ base })), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /is a delta of checkpoint/ });
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)), 'unchanged');
    s.release();
    restored.close();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('applyDelta stages until verified: a flipped page-list bit or a truncated delta leaves the region unchanged', async () => {
  const dir = tempDir('ck-stream-stage');
  const size = 32 * pageSize;
  const { region, bytes } = filled(size, 13);
  try {
    const s0 = region.snapshot();
    const f0 = path.join(dir, '0.cow');
    await s0.writeTo(f0);
    const restored = await Region.restoreStream(fs.createReadStream(f0));
    s0.release();
    const before = Buffer.from(new Uint8Array(restored.map().buffer)); // a copy
    for (const p of [1, 2, 30]) bytes[p * pageSize] = (bytes[p * pageSize] ?? 0) ^ 0x5a;
    const s1 = region.snapshot();
    const delta = await collect(s1.createReadStream({ base: f0 }));
    s1.release();
    const flipped = Buffer.from(delta);
    flipped.writeUInt8(flipped.readUInt8(flipped.length - 4) ^ 0x01, flipped.length - 4); // the last page-list entry
    await assert.rejects(restored.applyDelta(Readable.from([flipped])), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /header checksum/ });
    await assert.rejects(restored.applyDelta(Readable.from([delta.subarray(0, delta.length - 5)])), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /truncated/ });
    const full = await collect((() => { const s = region.snapshot(); const r = s.createReadStream(); r.on('close', () => s.release()); return r; })());
    await assert.rejects(restored.applyDelta(Readable.from([full])), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /not a delta/ });
    assert.ok(Buffer.from(restored.map().buffer).equals(before));
    await restored.applyDelta(Readable.from([delta]));
    assert.ok(Buffer.from(restored.map().buffer).equals(Buffer.from(bytes)));
    await assert.rejects(Region.create({ size }).applyDelta(Readable.from([delta])), { code: 'ERR_COWSHM_CHECKPOINT_INVALID' });
    restored.close();
    // Written since it was restored: refused, and left as written.
    const again = await Region.restoreStream(fs.createReadStream(f0));
    const w = new Uint8Array(again.map().buffer);
    w[9] = (w[9] ?? 0) ^ 1;
    await assert.rejects(again.applyDelta(Readable.from([delta])), { code: 'ERR_COWSHM_CHECKPOINT_INVALID', message: /written since it was restored/ });
    assert.equal(w[1 * pageSize], before[1 * pageSize]);
    again.close();
  } finally {
    region.close();
    rmTemp(dir);
  }
});
