/**
 * Temporary files of checkpoint writers: a temporary is removed by another
 * writer only when its own writer is gone, which the writer's OFD lock on it
 * tells in any pid namespace; never by the pid in its name or its age.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import type * as Locks from '../dist/locks';
import { Region, writeCheckpoint, pageSize } from 'cowshm';
import { packageRoot, isRoot, tempDir, rmTemp } from './helpers';

const locks: typeof Locks = require(path.join(packageRoot, 'dist', 'locks'));

/** A pid no process has in this namespace. */
function deadPid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let pid = max - 1; pid > 1; pid--) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
  throw new Error('no free pid');
}

/** A temporary as a live writer holds it: created, and locked for as long as `fd` is open. */
function liveTemporary(dir: string, target: string, pid: number): { file: string; fd: number } {
  const file = path.join(dir, `.${target}.${pid}.0123456789ab.tmp`);
  const fd = fs.openSync(file, 'wx+', 0o600);
  fs.writeSync(fd, 'partial checkpoint');
  assert.equal(locks.lockRange(fd, 0, 0, 'exclusive'), true);
  return { file, fd };
}

async function writeSmall(file: string): Promise<void> {
  const region = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    await writeCheckpoint(view, file);
    view.close();
  } finally {
    region.close();
  }
}

const temporaries = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'));

test('a live writer\'s temporary survives another writer of the same target, whatever pid its name shows', async () => {
  const dir = tempDir('ck-tmp-live');
  try {
    // The pid in the name is of no process here: what a writer in another
    // pid namespace (or on another host) looks like. Its lock says it is alive.
    const live = liveTemporary(dir, 'c.cow', deadPid());
    try {
      await writeSmall(path.join(dir, 'c.cow'));
      assert.ok(fs.existsSync(live.file), 'the live temporary was removed');
      assert.equal(fs.readFileSync(live.file, 'utf8'), 'partial checkpoint');
    } finally {
      fs.closeSync(live.fd);
    }
    assert.ok(fs.existsSync(path.join(dir, 'c.cow')));
  } finally {
    rmTemp(dir);
  }
});

test('a temporary nobody holds is removed by the next writer, even when its name shows a live pid', async () => {
  const dir = tempDir('ck-tmp-dead');
  try {
    // Named with this very process's pid (as a worker that was terminated
    // would leave it) and brand new: neither keeps it once its lock is gone.
    const stale = liveTemporary(dir, 'c.cow', process.pid);
    fs.closeSync(stale.fd);
    const other = liveTemporary(dir, 'c.cow', 1);
    fs.closeSync(other.fd);
    fs.renameSync(other.file, other.file.replace('0123456789ab', 'ba9876543210'));
    await writeSmall(path.join(dir, 'c.cow'));
    assert.deepEqual(temporaries(dir), []);
    // Another target's temporaries are not this writer's business.
    const foreign = liveTemporary(dir, 'd.cow', deadPid());
    fs.closeSync(foreign.fd);
    await writeSmall(path.join(dir, 'c.cow'));
    assert.deepEqual(temporaries(dir), [path.basename(foreign.file)]);
  } finally {
    rmTemp(dir);
  }
});

/** Whether `unshare -p -f --mount-proc` works here; the reason when not. */
function pidNamespaceRefusal(): string | null {
  if (!isRoot) return 'needs root to make a pid namespace';
  const r = spawnSync('unshare', ['-p', '-f', '--mount-proc', 'sh', '-c', 'echo $$'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0 || r.stdout.trim() !== '1') return `unshare -p -f --mount-proc refused: ${r.error?.message ?? r.stderr.trim()}`;
  return null;
}

const refusal = pidNamespaceRefusal();
if (refusal) console.log(`# skipping the pid namespace test: ${refusal}`);

test('writers in two pid namespaces sharing a directory keep each other\'s live temporaries', { skip: refusal ?? false }, async () => {
  const dir = tempDir('ck-tmp-pidns');
  fs.chmodSync(dir, 0o755);
  const target = path.join(dir, 'c.cow');
  const inNamespace = (code: string): string[] => [
    '-p', '-f', '--mount-proc', process.execPath, '-e',
    `const cowshm = require(${JSON.stringify(path.join(packageRoot, 'dist', 'index.js'))}); ${code}`,
  ];
  try {
    // The host's writer is alive; its pid means nothing inside the namespace.
    const host = liveTemporary(dir, 'c.cow', process.pid);
    try {
      const r = spawnSync('unshare', inNamespace(`
        (async () => {
          const r = cowshm.Region.create({ size: 4 * cowshm.pageSize }); const v = r.map();
          await cowshm.writeCheckpoint(v, ${JSON.stringify(target)});
          v.close(); r.close(); console.log('pid ' + process.pid);
        })().catch((e) => { console.error(e); process.exit(1); });`), { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'pid 1', 'the writer ran in a pid namespace of its own');
      assert.ok(fs.existsSync(host.file), 'the namespaced writer removed the host writer\'s live temporary');
    } finally {
      fs.closeSync(host.fd);
    }
    // And the other way round: a namespaced writer (pid 1 there) holds one while the host writes.
    const child = spawn('unshare', inNamespace(`
      const fs = require('node:fs');
      const file = ${JSON.stringify(path.join(dir, '.c.cow.1.fedcba987654.tmp'))};
      const fd = fs.openSync(file, 'wx+', 0o600);
      const locks = require(${JSON.stringify(path.join(packageRoot, 'dist', 'locks.js'))});
      if (!locks.lockRange(fd, 0, 0, 'exclusive')) process.exit(2);
      console.log('ready');
      process.stdin.on('data', () => process.exit(0));`), { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`the namespaced holder exited with ${code}`)));
      });
      await writeSmall(target);
      assert.ok(fs.existsSync(path.join(dir, '.c.cow.1.fedcba987654.tmp')), 'the host writer removed a live temporary');
    } finally {
      child.stdin.end('x');
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)));
    }
    // Both holders gone: the next writer removes what they left.
    await writeSmall(target);
    assert.deepEqual(temporaries(dir), []);
  } finally {
    rmTemp(dir);
  }
});

test('a worker terminated in the middle of writeTo() leaves no temporary behind', async () => {
  const dir = tempDir('ck-tmp-worker');
  try {
    const target = path.join(dir, 'big.cow');
    const worker = new Worker(
      `
      const { parentPort } = require('node:worker_threads');
      const cowshm = require(${JSON.stringify(path.join(packageRoot, 'dist', 'index.js'))});
      const r = cowshm.Region.create({ size: 512 * 1024 * 1024, reserve: false });
      const s = r.snapshot();
      let told = false;
      s.writeTo(${JSON.stringify(target)}, { onProgress: () => { if (!told) { told = true; parentPort.postMessage('writing'); } } });
      `,
      { eval: true },
    );
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the worker exited with ${code} before writing`)));
    });
    assert.equal(temporaries(dir).length, 1, 'the worker is writing its temporary');
    await worker.terminate();
    assert.equal(fs.existsSync(target), false, 'the write finished before the worker was terminated');
    assert.deepEqual(temporaries(dir), [], 'the terminated worker left its temporary');
  } finally {
    rmTemp(dir);
  }
});
