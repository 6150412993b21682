// atomics between processes: Node and Node, Node and C, a waiter killed,
// and async waits that leave libuv's thread pool free.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Region, atomics, doctor } from 'cowshm';
import { packageRoot, uniqueName, shmExists, tempDir, rmTemp } from './helpers';
import { child, pkg } from './atomics-helpers';

function withSegment(fn: (name: string, cells: Int32Array) => Promise<void>): () => Promise<void> {
  return async () => {
    const name = uniqueName('atomics');
    const r = Region.create({ name, size: 1 << 16 });
    try {
      await fn(name, new Int32Array(r.map().buffer));
    } finally {
      r.unlink();
      r.close();
    }
    assert.equal(shmExists(name), false);
  };
}

/**
 * Resolves once a thread of `pid` sleeps in a futex wait, as the kernel's
 * wchan tells: the main thread (a C program's FUTEX_WAIT, or a blocking
 * atomics.wait, which sleeps in futex_waitv), or with `anyThread` one of
 * cowshm's waiter threads (futex_waitv: idle libuv threads sleep in plain
 * futex waits too, so only futex_wait_multiple counts then).
 */
async function asleepInFutex(pid: number, anyThread = false): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    try {
      const tasks = anyThread ? fs.readdirSync(`/proc/${pid}/task`) : [String(pid)];
      const want = anyThread ? /futex_wait_multiple/ : /futex_(do_)?wait/;
      for (const t of tasks) if (want.test(fs.readFileSync(`/proc/${pid}/task/${t}/wchan`, 'utf8'))) return;
    } catch {
      // The process or thread went: try again, the caller's peer tells.
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`process ${pid} never slept in a futex wait`);
}

/** Resolves once every thread of `pid` is stopped (state T in /proc). */
async function allStopped(pid: number): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const states = fs.readdirSync(`/proc/${pid}/task`).map((t) => {
      const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    });
    if (states.every((s) => s === 'T')) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`process ${pid} never stopped`);
}

test('ping-pong between two processes: a child blocking in wait(), this process awaiting waitAsync()', withSegment(async (name, cells) => {
  const rounds = 1000;
  const peer = child(`
    const { Region, atomics } = require(${pkg});
    const a = new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer);
    for (let i = 0; i < ${rounds}; i++) {
      for (let v; (v = Atomics.load(a, 0)) !== 2 * i + 1; ) atomics.wait(a, 0, v);
      Atomics.store(a, 0, 2 * i + 2);
      atomics.notify(a, 0);
    }
    console.log('done');`);
  for (let i = 0; i < rounds; i++) {
    Atomics.store(cells, 0, 2 * i + 1);
    atomics.notify(cells, 0);
    for (let v; (v = Atomics.load(cells, 0)) !== 2 * i + 2; ) {
      const w = atomics.waitAsync(cells, 0, v, 10_000);
      if (w.async) assert.notEqual(await w.value, 'timed-out', `round ${i}`);
    }
  }
  assert.equal(await peer.line(), 'done');
  assert.equal(await peer.exited, 0);
  assert.equal(cells[0], 2 * rounds);
}));

test('a waiter in a child process killed during its wait: the word works on, and counts only live waiters', withSegment(async (name, cells) => {
  const code = `
    const { Region, atomics } = require(${pkg});
    const a = new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer);
    console.log('waiting');
    console.log(atomics.wait(a, 5, 0));`;
  const doomed = child(code);
  assert.equal(await doomed.line(), 'waiting');
  await asleepInFutex(doomed.pid);
  doomed.kill('SIGKILL');
  assert.equal(await doomed.exited, 'SIGKILL');
  assert.equal(atomics.notify(cells, 5), 0, 'the dead waiter is not counted');
  const next = child(code);
  assert.equal(await next.line(), 'waiting');
  await asleepInFutex(next.pid);
  assert.equal(atomics.notify(cells, 5), 1);
  assert.equal(await next.line(), 'ok');
  assert.equal(await next.exited, 0);
}));

test('8 pending waitAsync() leave libuv\'s 4 threads free: fs.readFile and a snapshot writeTo complete meanwhile', async () => {
  const dir = tempDir('atomics-pool');
  try {
    const peer = child(`
      const fs = require('node:fs');
      const path = require('node:path');
      const { Region, atomics } = require(${pkg});
      const r = Region.create({ size: 1 << 20 });
      const a = new Int32Array(r.map().buffer);
      const waits = [];
      for (let i = 0; i < 8; i++) waits.push(atomics.waitAsync(a, i, 0).value);
      const guard = setTimeout(() => { console.log('stuck'); process.exit(3); }, 20000);
      (async () => {
        const file = path.join(${JSON.stringify(dir)}, 'data');
        fs.writeFileSync(file, 'x'.repeat(1 << 20));
        const [text] = await Promise.all([
          fs.promises.readFile(file, 'utf8'),
          fs.promises.readFile(file, 'utf8'),
        ]);
        const s = r.snapshot();
        await s.writeTo(path.join(${JSON.stringify(dir)}, 'ckpt'));
        s.release();
        console.log('io done ' + text.length + ' ' + atomics.notify(a, 0, 0));
        for (let i = 0; i < 8; i++) atomics.notify(a, i);
        console.log((await Promise.all(waits)).join(','));
        clearTimeout(guard);
        r.close();
      })();`, { UV_THREADPOOL_SIZE: '4' });
    assert.equal(await peer.line(), `io done ${1 << 20} 0`);
    assert.equal(await peer.line(), Array(8).fill('ok').join(','));
    assert.equal(await peer.exited, 0);
  } finally {
    rmTemp(dir);
  }
});

const gcc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
const noGcc = gcc.error ? `gcc is not available: ${gcc.error.message}` : undefined;

test('a C program doing FUTEX_WAIT / FUTEX_WAKE on the same word wakes and is woken (examples/c/futex_word.c)', { skip: noGcc }, withSegment(async (name, cells) => {
  const dir = tempDir('atomics-c');
  try {
    const bin = path.join(dir, 'futex_word');
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', bin,
      path.join(packageRoot, 'examples', 'c', 'futex_word.c')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);

    // cowshm wakes C.
    const c = spawn(bin, [name, '7', 'wait', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => c.once('exit', resolve));
    while (!out.includes('waiting')) await new Promise((resolve) => setTimeout(resolve, 5));
    await asleepInFutex(c.pid as number);
    Atomics.store(cells, 7, 42);
    assert.equal(atomics.notify(cells, 7), 1, 'the C waiter was woken');
    assert.equal(await exited, 0);
    assert.equal(out, 'waiting\n42\n');

    // C wakes cowshm. On io_uring the request is queued on the word before
    // waitAsync() returns: the wake, which does not change the word, cannot
    // come too early. A waiter thread has to be asleep first.
    const w = atomics.waitAsync(cells, 9, 0);
    assert.equal(w.async, true);
    if (doctor().waitAsync.path === 'threads') await asleepInFutex(process.pid, true);
    const wake = spawnSync(bin, [name, '9', 'wake', '5'], { encoding: 'utf8' });
    assert.equal(wake.status, 0, wake.stderr);
    assert.equal(wake.stdout, '1\n', 'the C program woke one waiter');
    assert.equal(await w.value, 'ok');
    assert.equal(cells[9], 5);
  } finally {
    rmTemp(dir);
  }
}));

test('a waitAsync whose page another process truncated away rejects with EFAULT (syscall futex), as the blocking wait throws', withSegment(async (name) => {
  // On the waiter threads, where a wait enters the kernel again after a stop
  // and continue: the kernel then finds no page behind the word. (A request on
  // io_uring is keyed once, when submitted: it meets a truncation only then.)
  const peer = child(`
    const { Region, atomics } = require(${pkg});
    const a = new Int32Array(Region.open(${JSON.stringify(name)}).map().buffer);
    const said = (p) => p.then((v) => 'resolved ' + v, (err) => 'rejected ' + err.code + ' ' + err.syscall + (/truncated/.test(err.message) ? ' (truncated)' : ''));
    const plain = said(atomics.waitAsync(a, 4096, 0).value);
    const withSignal = said(atomics.waitAsync(a, 4097, 0, undefined, { signal: new AbortController().signal }).value);
    console.log('waiting');
    plain.then(async (p) => console.log(p, '/', await withSignal));`, { COWSHM_NO_IO_URING: '1' });
  assert.equal(await peer.line(), 'waiting');
  await asleepInFutex(peer.pid, true);
  const r = Region.open(name);
  try {
    fs.ftruncateSync(r.fd, 0);
  } finally {
    r.close();
  }
  // A stopped process's sleeping calls start again when it continues. Every
  // thread must have stopped first: a SIGCONT sent sooner cancels the stop.
  process.kill(peer.pid, 'SIGSTOP');
  await allStopped(peer.pid);
  process.kill(peer.pid, 'SIGCONT');
  assert.equal(await peer.line(), 'rejected EFAULT futex (truncated) / rejected EFAULT futex (truncated)');
  assert.equal(await peer.exited, 0);
}));
