// A page that cannot be copied into a snapshot (ENOMEM in a full memory
// cgroup) must never let a write through unnoticed: the snapshot says it is
// no longer exact, and every reader afterwards throws ERR_COWSHM_SNAPSHOT_BROKEN.
// COWSHM_FAIL_SNAPSHOT_COPY=N makes the Nth copy fail on demand, as any user can.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { snapshotBackend } from 'cowshm';
import { rmTemp, tempDir } from './helpers';

const child = path.join(__dirname, 'snapshot.broken.child.js');

function run(scenario: string, failAt: number): Record<string, unknown> {
  const dir = tempDir('broken');
  try {
    const r = spawnSync(process.execPath, [child, scenario, dir], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, COWSHM_FAIL_SNAPSHOT_COPY: String(failAt) },
    });
    assert.equal(r.status, 0, `${r.signal ?? ''}\n${r.stdout}\n${r.stderr}`);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(o['backend'], snapshotBackend, 'the child uses the backend of this run');
    return o;
  } finally {
    rmTemp(dir);
  }
}

test('a failed copy: the write lands, exact turns false for good, and every reader throws ERR_COWSHM_SNAPSHOT_BROKEN', () => {
  const o = run('write', 3);
  assert.equal(o['exactBefore'], true);
  assert.equal(o['writesLanded'], true, 'the writing thread is never refused or stopped');
  assert.equal(o['exact'], false);
  assert.equal(o['exactAgain'], false);
  assert.equal(o['buffer'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.equal(o['cause'], 'ENOMEM madvise', 'the cause is the system error of the copy');
  assert.match(o['message'] as string, /is no longer exact: a page could not be copied into it .*\(ENOMEM\)/);
  assert.equal(o['copiedPages'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.equal(o['changedPages'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.equal(o['writeTo'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.equal(o['heldSeesNew'], true, 'the uncopied page shows the new bytes: that is why exact says so');
  assert.equal(o['nextExact'], true, 'a snapshot taken afterwards is exact');
  assert.deepEqual(o['files'], [], 'no checkpoint and no temporary file');
});

test('a snapshot that breaks after writeTo() started: the checkpoint is never completed', () => {
  const o = run('during-writeTo', 2);
  assert.equal(o['writeTo'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.equal(o['exact'], false);
  assert.deepEqual(o['files'], [], 'no checkpoint and no temporary file');
  assert.equal(o['fileVerifies'], null);
});

test('a worker thread whose write hit the failed copy sees nothing; the snapshot it broke says so', () => {
  const o = run('worker', 5);
  assert.equal(o['worker'], 'done');
  assert.equal(o['writesLanded'], true);
  assert.equal(o['exact'], false);
  assert.equal(o['writeTo'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
  assert.deepEqual(o['files'], []);
});

test('two live snapshots: only the one whose copy failed breaks', () => {
  const o = run('two', 1);
  assert.deepEqual(o['exact'], [false, true]);
  assert.equal(o['goodHoldsOld'], true);
  assert.equal(o['goodWrites'], true);
  assert.deepEqual(o['files'], ['broken.cow']);
  assert.equal(o['fileVerifies'], 'full');
});

test('a copy made by prepareWrite() that fails breaks the snapshot too', () => {
  const o = run('prepareWrite', 1);
  assert.equal(o['exact'], false);
  assert.equal(o['buffer'], 'ERR_COWSHM_SNAPSHOT_BROKEN');
});
