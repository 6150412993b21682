import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { Region, type RegionHandle } from 'cowshm';
import { uniqueName, packageRoot, runNode, tempDir, rmTemp } from './helpers';

// In a worker: open the handle, check the byte the parent wrote, write one back.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const { Region } = require(workerData.root);
const r = Region.fromHandle(workerData.handle);
const bytes = new Uint8Array(r.map().buffer);
const seen = bytes[100];
bytes[101] = seen + 1;
parentPort.postMessage({ seen, kind: r.kind, size: r.size, ino: r.ino, fd: r.fd });
r.close();
`;

async function roundTripInWorker(handle: RegionHandle): Promise<{ seen: number; kind: string; size: number; ino: number; fd: number }> {
  const worker = new Worker(workerSource, { eval: true, workerData: { root: packageRoot, handle } });
  // Listen for 'exit' now: a worker that posts and ends can emit 'message' and
  // 'exit' in one turn, before the code after the first await runs.
  const exited = once(worker, 'exit');
  const [message] = (await once(worker, 'message')) as [{ seen: number; kind: string; size: number; ino: number; fd: number }];
  await exited;
  return message;
}

function childOpens(handle: RegionHandle, extra = ''): Record<string, unknown> {
  const code = `
    const { Region } = require('cowshm');
    const h = JSON.parse(${JSON.stringify(JSON.stringify(handle))});
    const r = Region.fromHandle(h);
    const bytes = new Uint8Array(r.map().buffer);
    const seen = bytes[100];
    bytes[102] = seen + 2;
    ${extra}
    console.log(JSON.stringify({ seen, kind: r.kind, size: r.size, ino: r.ino, path: r.path }));
    r.close();`;
  const r = runNode(code);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

test('handle() is plain data: it survives structuredClone and JSON', () => {
  const name = uniqueName('handle');
  const r = Region.create({ name, size: 8192 });
  try {
    const h = r.handle();
    assert.deepEqual(structuredClone(h), h);
    assert.deepEqual(JSON.parse(JSON.stringify(h)), h);
    assert.deepEqual(h, {
      kind: 'shm', name, path: `/dev/shm/${name}`, size: 8192, pid: process.pid, fd: r.fd,
      dev: r.dev, ino: r.ino, readOnly: false,
    });
  } finally {
    r.unlink();
    r.close();
  }
});

for (const kind of ['shm', 'memfd', 'file'] as const) {
  test(`a worker thread maps a ${kind} region from its handle and shares its bytes`, async () => {
    const dir = kind === 'file' ? tempDir('handle-worker') : undefined;
    // The directory goes even when the region could not be made in it.
    try {
      const r =
        kind === 'shm' ? Region.create({ name: uniqueName('worker'), size: 3 * 4096 })
        : kind === 'memfd' ? Region.create({ size: 3 * 4096 })
        : Region.openFile(path.join(dir as string, 'w.bin'), { create: true, size: 3 * 4096 });
      try {
        const bytes = new Uint8Array(r.map().buffer);
        bytes[100] = 41;
        const reply = await roundTripInWorker(r.handle());
        assert.deepEqual({ seen: reply.seen, kind: reply.kind, size: reply.size, ino: reply.ino }, { seen: 41, kind, size: 3 * 4096, ino: r.ino });
        assert.notEqual(reply.fd, r.fd); // its own descriptor
        assert.equal(bytes[101], 42);
      } finally {
        r.unlink();
        r.close();
      }
    } finally {
      if (dir) rmTemp(dir);
    }
  });
}

for (const kind of ['shm', 'memfd'] as const) {
  test(`a child process opens a ${kind} region from its handle`, () => {
    const r = kind === 'shm' ? Region.create({ name: uniqueName('child'), size: 4096 }) : Region.create({ size: 4096 });
    try {
      const bytes = new Uint8Array(r.map().buffer);
      bytes[100] = 7;
      const reply = childOpens(r.handle());
      assert.equal(reply['seen'], 7);
      assert.equal(reply['kind'], kind);
      assert.equal(reply['size'], 4096);
      assert.equal(reply['ino'], r.ino);
      assert.equal(bytes[102], 9);
    } finally {
      r.unlink();
      r.close();
    }
  });
}

test('a child process opens a segment by name', () => {
  const name = uniqueName('byname');
  const r = Region.create({ name, size: 4096 });
  try {
    new Uint8Array(r.map().buffer)[0] = 123;
    const out = runNode(`
      const { Region } = require('cowshm');
      const r = Region.open(${JSON.stringify(name)});
      const b = new Uint8Array(r.map().buffer);
      console.log(b[0]); b[1] = 124; r.close();`);
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stdout.trim(), '123');
    assert.equal(new Uint8Array(r.map().buffer)[1], 124);
  } finally {
    r.unlink();
    r.close();
  }
});

test('after the creator unlinked the name, the handle still opens it (through /proc/PID/fd)', () => {
  const r = Region.create({ name: uniqueName('unlinked'), size: 4096 });
  try {
    new Uint8Array(r.map().buffer)[100] = 5;
    const h = r.handle();
    r.unlink();
    const reply = childOpens(h);
    assert.equal(reply['seen'], 5);
    assert.equal(reply['ino'], r.ino);
    // And in this process (a worker would do the same) through /proc/self/fd.
    const again = Region.fromHandle(h);
    assert.equal(again.ino, r.ino);
    again.close();
  } finally {
    r.close();
  }
});

test('after the creator closed it, a named region is found by its name', () => {
  const name = uniqueName('byname-after-close');
  const r = Region.create({ name, size: 4096 });
  new Uint8Array(r.map().buffer)[100] = 3;
  const h = r.handle();
  r.close();
  try {
    const again = Region.fromHandle(h);
    assert.equal(new Uint8Array(again.map().buffer)[100], 3);
    again.close();
  } finally {
    const cleanup = Region.open(name);
    cleanup.unlink();
    cleanup.close();
  }
});

test('a handle whose region is gone: ENOENT that says so', () => {
  const name = uniqueName('gone');
  const r = Region.create({ name, size: 4096 });
  const h = r.handle();
  r.unlink();
  r.close();
  assert.throws(() => Region.fromHandle(h), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.errno, -2);
    assert.match(err.message, new RegExp(`The region this handle describes \\(shm '${name}', pid ${process.pid}, fd ${h.fd}\\) is gone`));
    return true;
  });
});

test('a reused descriptor number never opens another region', () => {
  const a = Region.create({ size: 4096 });
  const h = a.handle();
  a.close();
  const b = Region.create({ size: 4096 }); // very likely the same fd number
  try {
    assert.throws(() => Region.fromHandle(h), { code: 'ENOENT' });
    // A name that now leads to another segment is refused the same way.
    const name = uniqueName('replaced');
    const first = Region.create({ name, size: 4096 });
    const stale = first.handle();
    first.unlink();
    first.close();
    const second = Region.create({ name, size: 4096 });
    try {
      assert.throws(() => Region.fromHandle(stale), { code: 'ENOENT' });
    } finally {
      second.unlink();
      second.close();
    }
  } finally {
    b.close();
  }
});

test('fromHandle(h, { readOnly: true }) opens a writable region read-only', () => {
  const r = Region.create({ size: 4096 });
  try {
    const ro = Region.fromHandle(r.handle(), { readOnly: true });
    assert.equal(ro.readOnly, true);
    assert.throws(() => ro.map({ access: 'write' }), { code: 'ERR_COWSHM_READ_ONLY' });
    assert.equal(ro.map().access, 'read');
    ro.close();
    // A read-only handle stays read-only.
    const rw = Region.fromHandle({ ...r.handle(), readOnly: true }, { readOnly: false });
    assert.equal(rw.readOnly, true);
    rw.close();
  } finally {
    r.close();
  }
});

test('a forged handle to /dev/zero, a FIFO or a file off /dev/shm is refused, whatever its kind', () => {
  const zero = fs.openSync('/dev/zero', 'r+');
  const dir = tempDir('forged');
  try {
    const z = fs.fstatSync(zero);
    const forged = (patch: Partial<RegionHandle>): RegionHandle => ({
      kind: 'memfd', name: null, path: '', size: 4096, pid: process.pid, fd: zero, dev: z.dev, ino: z.ino, readOnly: false, ...patch,
    });
    const notRegion = (kind: string, why: RegExp) => (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_COWSHM_NOT_A_FILE', String(err));
      assert.match(err.message, new RegExp(`^The handle's ${kind} region \\('[^']+'\\) ${why.source}: the handle does not describe a region$`));
      return true;
    };
    assert.throws(() => Region.fromHandle(forged({})), notRegion('memfd', /is not a regular file/));
    assert.throws(() => Region.fromHandle(forged({ kind: 'shm', name: uniqueName('forged-zero') })), notRegion('shm', /is not a regular file/));
    assert.throws(() => Region.fromHandle(forged({ kind: 'file', path: '/dev/zero' })), notRegion('file', /is not a regular file/));
    // A regular file some process holds open is neither a segment nor a memfd.
    const file = path.join(dir, 'data');
    fs.writeFileSync(file, Buffer.alloc(4096));
    const fd = fs.openSync(file, 'r+');
    try {
      const st = fs.fstatSync(fd);
      const asFile = forged({ fd, dev: st.dev, ino: st.ino });
      assert.throws(() => Region.fromHandle({ ...asFile, kind: 'shm', name: uniqueName('forged-file') }), notRegion('shm', /is not on \/dev\/shm \(nor on a hugetlbfs\), so not a shared memory segment/));
      assert.throws(() => Region.fromHandle(asFile), notRegion('memfd', /is not a memfd/));
      const fifo = path.join(dir, 'fifo');
      spawnSync('mkfifo', [fifo]);
      const f = fs.statSync(fifo);
      assert.throws(() => Region.fromHandle(forged({ kind: 'file', path: fifo, pid: 2 ** 22 + 1, dev: f.dev, ino: f.ino })), notRegion('file', /is not a regular file/));
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.closeSync(zero);
    rmTemp(dir);
  }
});

test('a forged handle never follows a symbolic link planted at /dev/shm/NAME', () => {
  const victim = Region.create({ name: uniqueName('forged-victim'), size: 4096 });
  const link = uniqueName('forged-link');
  fs.symlinkSync(victim.path, `/dev/shm/${link}`);
  try {
    // Region.open refuses the link too (shm_open never follows one).
    assert.throws(() => Region.open(link), { code: 'ELOOP' });
    const h: RegionHandle = { ...victim.handle(), name: link, path: `/dev/shm/${link}`, pid: 2 ** 22 + 1 };
    assert.throws(() => Region.fromHandle(h), (err: Error & { code?: string; path?: string }) => {
      assert.equal(err.code, 'ELOOP');
      assert.equal(err.path, `/dev/shm/${link}`);
      assert.match(err.message, /\(a symbolic link, not a segment: handles are never followed through one\)$/);
      return true;
    });
  } finally {
    fs.unlinkSync(`/dev/shm/${link}`);
    victim.unlink();
    victim.close();
  }
});
