import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, writeCheckpoint, checkpointInfo, pageSize } from 'cowshm';
import { tempDir, rmTemp } from './helpers';
import { filled } from './checkpoint-helpers';

/** A memfd region filled with a pattern that differs on every page. */
const tmpFiles = (dir: string): string[] => fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));

test('full checkpoint round trip: file layout, result, and restored bytes equal', async () => {
  const dir = tempDir('ck-write');
  const size = 3 * 1024 * 1024 + 123; // not a whole number of pages
  const { region, bytes } = filled(size);
  try {
    const view = region.map();
    const file = path.join(dir, 'a.cow');
    const res = await writeCheckpoint(view, file);
    const pages = Math.ceil(size / pageSize);
    assert.equal(res.kind, 'full');
    assert.equal(res.pages, pages);
    assert.equal(res.bytes, fs.statSync(file).size);
    assert.equal(res.bytes, 4096 + pages * pageSize);
    assert.match(res.checksum, /^[0-9a-f]{16}$/);
    assert.ok(res.seconds > 0);
    assert.deepEqual(tmpFiles(dir), []);
    assert.equal((fs.statSync(file).mode & 0o777), 0o600);

    const info = checkpointInfo(file, { verify: 'full' });
    assert.equal(info.regionSize, size);
    assert.equal(info.checksum, res.checksum);
    assert.equal(info.id, res.id);
    // Data starts page aligned, right after the header block, in page order.
    const raw = fs.readFileSync(file);
    assert.equal(raw.subarray(0, 8).toString('latin1'), 'COWSHMCK');
    assert.deepEqual(raw.subarray(4096, 4096 + size), Buffer.from(bytes.buffer, 0, size));

    const back = Region.restore(file);
    try {
      assert.equal(back.size, size);
      assert.equal(back.readOnly, true);
      const r = new Uint8Array(back.map().buffer);
      assert.equal(r.length, size);
      assert.deepEqual(r, bytes);
      // A view at an offset reads the region's offset, not the file's.
      const tail = new Uint8Array(back.map({ offset: pageSize, length: 100 }).buffer);
      assert.deepEqual(tail, bytes.subarray(pageSize, pageSize + 100));
    } finally {
      back.close();
    }
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('writing replaces an existing checkpoint atomically and keeps the source intact', async () => {
  const dir = tempDir('ck-replace');
  const { region, bytes } = filled(1 << 20, 7);
  try {
    const view = region.map();
    const file = path.join(dir, 'a.cow');
    const first = await writeCheckpoint(view, file);
    bytes[10] = (bytes[10] as number) ^ 0xff;
    const second = await writeCheckpoint(view, file);
    assert.notEqual(first.checksum, second.checksum);
    assert.notEqual(first.id, second.id);
    assert.equal(checkpointInfo(file, { verify: 'full' }).id, second.id);
    const back = Region.restore(file);
    assert.deepEqual(new Uint8Array(back.map().buffer), bytes);
    back.close();
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('onProgress is monotonic and ends at the total', async () => {
  const dir = tempDir('ck-progress');
  const size = 48 << 20;
  const { region } = filled(size, 3);
  try {
    const calls: Array<[number, number]> = [];
    await writeCheckpoint(region.map(), path.join(dir, 'p.cow'), { onProgress: (d, t) => calls.push([d, t]) });
    assert.ok(calls.length >= 1);
    for (let i = 1; i < calls.length; i++) assert.ok(calls[i]![0] > calls[i - 1]![0], `call ${i} went backwards`);
    for (const [d, t] of calls) {
      assert.equal(t, size);
      assert.ok(d > 0 && d <= t);
    }
    assert.deepEqual(calls[calls.length - 1], [size, size]);
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('abort: the partial file is removed, the previous checkpoint is untouched, AbortError', async () => {
  const dir = tempDir('ck-abort');
  const size = 256 << 20;
  const { region } = filled(size, 5);
  try {
    const view = region.map();
    const file = path.join(dir, 'a.cow');
    const small = Region.create({ size: 1 << 16 });
    // A valid checkpoint of another region sits at the target name first.
    const before = await writeCheckpoint(small.map(), file);
    small.close();

    const ac = new AbortController();
    let sawProgress = false;
    const p = writeCheckpoint(view, file, {
      signal: ac.signal,
      onProgress: () => {
        sawProgress = true;
        ac.abort(new Error('stop'));
      },
    });
    await assert.rejects(p, (err: Error & { code?: string; cause?: unknown }) => {
      assert.equal(err.name, 'AbortError');
      assert.equal(err.code, 'ABORT_ERR');
      assert.equal((err.cause as Error).message, 'stop');
      return true;
    });
    assert.ok(sawProgress);
    assert.deepEqual(tmpFiles(dir), []);
    assert.deepEqual(fs.readdirSync(dir), ['a.cow']);
    assert.equal(checkpointInfo(file, { verify: 'full' }).id, before.id);

    // Already aborted: nothing is created at all.
    const done = new AbortController();
    done.abort();
    await assert.rejects(writeCheckpoint(view, path.join(dir, 'b.cow'), { signal: done.signal }), { name: 'AbortError' });
    assert.deepEqual(fs.readdirSync(dir), ['a.cow']);
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('an onProgress that throws cancels the write and rejects with its error', async () => {
  const dir = tempDir('ck-progress-throws');
  const { region } = filled(128 << 20, 4);
  try {
    const boom = new Error('boom');
    await assert.rejects(
      writeCheckpoint(region.map(), path.join(dir, 't.cow'), {
        onProgress: () => {
          throw boom;
        },
      }),
      (err) => err === boom,
    );
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('a mapping closed during the write: a clear rejection, never a crash, no file left', async () => {
  const dir = tempDir('ck-closed');
  const { region } = filled(256 << 20, 9);
  try {
    const view = region.map();
    const file = path.join(dir, 'c.cow');
    const p = writeCheckpoint(view, file, { onProgress: () => view.close() });
    await assert.rejects(p, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_COWSHM_CLOSED');
      assert.match(err.message, /released before the checkpoint was complete/);
      return true;
    });
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    region.close();
    rmTemp(dir);
  }
});

test('bad arguments: TypeError or RangeError naming the argument; nothing created', async () => {
  const dir = tempDir('ck-badargs');
  const region = Region.create({ size: 1 << 16 });
  try {
    const view = region.map();
    const file = path.join(dir, 'x.cow');
    const cases: Array<[unknown, unknown, RegExp, ErrorConstructor]> = [
      [42, undefined, /"path" argument must be a string\. Received 42/, TypeError],
      ['', undefined, /"path" argument must be a non-empty string/, RangeError],
      [file, null, /"options" argument must be an object/, TypeError],
      [file, { signal: {} }, /"signal" option must be an AbortSignal/, TypeError],
      [file, { onProgress: 1 }, /"onProgress" option must be a function/, TypeError],
      [file, { base: 5 }, /"base" option must be a string/, TypeError],
      [file, { base: '' }, /"base" option must be a non-empty string/, RangeError],
    ];
    for (const [p, o, message, type] of cases) {
      await assert.rejects(writeCheckpoint(view, p as string, o as never), (err: Error) => {
        assert.ok(err instanceof type, `${String(err)} should be a ${type.name}`);
        assert.match(err.message, message);
        return true;
      });
    }
    // A partial view is not a checkpoint of the region.
    const part = region.map({ length: pageSize });
    await assert.rejects(writeCheckpoint(part, file), /must be a mapping of the whole region \(65536 bytes from offset 0\)/);
    // A directory that does not exist: ENOENT naming it.
    await assert.rejects(writeCheckpoint(view, path.join(dir, 'no', 'x.cow')), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.path, path.join(dir, 'no'));
      return true;
    });
    view.close();
    await assert.rejects(writeCheckpoint(view, file), { code: 'ERR_COWSHM_CLOSED' });
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    region.close();
    rmTemp(dir);
  }
});
