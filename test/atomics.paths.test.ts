// How atomics.waitAsync waits: an io_uring futex-wait request polled by the
// event loop where the kernel allows it, waiter threads otherwise (or with
// COWSHM_NO_IO_URING=1). Every atomics test runs once more here on the
// waiter threads, so both paths are exercised by one suite.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Region, atomics, doctor } from 'cowshm';
import { worker, pkg } from './atomics-helpers';
import { tempDir, rmTemp, rerunTests } from './helpers';

const forced = process.env['COWSHM_NO_IO_URING'];
const forcedOff = forced !== undefined && forced !== '' && forced !== '0';

/** Whether this kernel and process should give io_uring's futex wait (Linux 6.7) to cowshm. */
function ringExpected(): string | undefined {
  if (forcedOff) return `COWSHM_NO_IO_URING=${forced}`;
  const [major, minor] = os.release().split('.').map(Number) as [number, number];
  if (major < 6 || (major === 6 && minor < 7)) return `kernel ${os.release()} has no IORING_OP_FUTEX_WAIT`;
  const disabled = fs.existsSync('/proc/sys/kernel/io_uring_disabled')
    ? Number(fs.readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8'))
    : 0;
  if (disabled === 2 || (disabled === 1 && process.getuid?.() !== 0)) return `io_uring_disabled is ${disabled}`;
  if (/^Seccomp:\s+[12]/m.test(fs.readFileSync('/proc/self/status', 'utf8'))) return 'a seccomp filter may refuse io_uring';
  return undefined;
}

const noRing = ringExpected();

function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

test('waitAsync uses io_uring where the kernel has it, in the main thread and in a worker', { skip: noRing }, async () => {
  assert.deepEqual(doctor().waitAsync, { path: 'io_uring', reason: 'io_uring (IORING_OP_FUTEX_WAIT)' });
  const w = worker(`
    const { doctor } = require(${pkg});
    post(doctor().waitAsync.path);`);
  assert.equal(await w.line(), 'io_uring');
  await w.exited;
});

test('pending waits on io_uring take no thread: 8 of them leave the thread count as it was', { skip: noRing }, async () => {
  const r = Region.create({ size: 4096 });
  try {
    const cells = new Int32Array(r.map().buffer);
    // A first wait settles whatever the first one sets up.
    const first = atomics.waitAsync(cells, 0, 0, 1);
    assert.equal(await first.value, 'timed-out');
    const before = threadCount();
    const waits = Array.from({ length: 8 }, (_, i) => atomics.waitAsync(cells, i, 0).value);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(threadCount(), before, 'a thread was started for the waits: the waiter threads are in use');
    for (let i = 0; i < 8; i++) {
      Atomics.store(cells, i, 1);
      assert.equal(atomics.notify(cells, i), 1);
    }
    assert.deepEqual(await Promise.all(waits), Array(8).fill('ok'));
  } finally {
    r.close();
  }
});

test('COWSHM_NO_IO_URING=1 makes waitAsync use waiter threads, and says so', () => {
  const child = spawnSync(
    process.execPath,
    ['-e', `const c = require(${pkg}); console.log(JSON.stringify(c.doctor().waitAsync))`],
    { encoding: 'utf8', env: { ...process.env, COWSHM_NO_IO_URING: '1' } },
  );
  assert.equal(child.status, 0, child.stderr);
  assert.deepEqual(JSON.parse(child.stdout), { path: 'threads', reason: 'COWSHM_NO_IO_URING=1' });
});

const gcc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
const noGcc = gcc.error ? `gcc is not available: ${gcc.error.message}` : undefined;
// io_uring_setup and io_uring_enter have these numbers on every architecture.
const IO_URING_SETUP = 425;
const IO_URING_ENTER = 426;

test('where a seccomp filter refuses io_uring (EPERM, ENOSYS), waitAsync falls back to waiter threads and still works', { skip: noGcc }, () => {
  const dir = tempDir('atomics-seccomp');
  try {
    const bin = path.join(dir, 'refuse-syscall');
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', bin,
      path.join(__dirname, '..', 'fixtures', 'c', 'refuse-syscall.c')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const script = `const { Region, atomics, doctor } = require(${pkg});
      const r = Region.create({ size: 4096 });
      const a = new Int32Array(r.map().buffer);
      const w = atomics.waitAsync(a, 0, 0);
      const timed = atomics.waitAsync(a, 1, 0, 20);
      setTimeout(() => { Atomics.store(a, 0, 1); console.log(atomics.notify(a, 0)); }, 10);
      Promise.all([w.value, timed.value]).then((v) => {
        console.log(v.join(' '));
        console.log(JSON.stringify(doctor().waitAsync));
        r.close();
      });`;
    for (const [nr, errno, reason] of [
      [IO_URING_SETUP, os.constants.errno.EPERM, 'io_uring_setup(2) failed with EPERM'],
      [IO_URING_SETUP, os.constants.errno.ENOSYS, 'io_uring_setup(2) failed with ENOSYS'],
      [IO_URING_ENTER, os.constants.errno.EPERM, 'io_uring_enter(2) failed with EPERM'],
    ] as const) {
      const env: NodeJS.ProcessEnv = { ...process.env };
      delete env['COWSHM_NO_IO_URING'];
      const child = spawnSync(bin, [String(nr), String(errno), process.execPath, '-e', script], { encoding: 'utf8', env, timeout: 20_000 });
      assert.equal(child.status, 0, child.stderr);
      assert.deepEqual(child.stdout.trim().split('\n'), ['1', 'ok timed-out', JSON.stringify({ path: 'threads', reason })]);
    }
  } finally {
    rmTemp(dir);
  }
});

test('a process may exit with waits pending, on either path', () => {
  for (const off of ['0', '1']) {
    const child = spawnSync(
      process.execPath,
      ['-e', `const { Region, atomics } = require(${pkg});
        const r = Region.create({ size: 4096 });
        const a = new Int32Array(r.map().buffer);
        for (let i = 0; i < 4; i++) atomics.waitAsync(a, i, 0);
        atomics.waitAsync(a, 5, 0, 60000);
        setTimeout(() => process.exit(7), 20);`],
      { encoding: 'utf8', env: { ...process.env, COWSHM_NO_IO_URING: off }, timeout: 20_000 },
    );
    assert.equal(child.status, 7, `COWSHM_NO_IO_URING=${off}: ${child.stderr}`);
  }
});

if (!forcedOff) {
  test('every atomics test also passes on the waiter threads (COWSHM_NO_IO_URING=1)', () => {
    const files = fs
      .readdirSync(__dirname)
      .filter((f) => f.startsWith('atomics.') && f.endsWith('.test.js') && f !== 'atomics.paths.test.js')
      .sort();
    assert.ok(files.length >= 2, files.join(', '));
    rerunTests(files, { COWSHM_NO_IO_URING: '1' });
  });
}
