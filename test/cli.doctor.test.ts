import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Region, snapshotBackend } from 'cowshm';
import { packageRoot } from './helpers';

const bin = path.join(packageRoot, 'bin', 'cowshm.js');

function run(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('cowshm doctor --json: the facts, as JSON', () => {
  const r = run(['doctor', '--json'], { COWSHM_SNAPSHOT_BACKEND: '' });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.kernel, os.release());
  assert.equal(report.node, process.version);
  if (!process.env['COWSHM_SNAPSHOT_BACKEND']) assert.equal(report.snapshots.backend, snapshotBackend);
  assert.equal(typeof report.snapshots.reason, 'string');
  assert.equal(typeof report.snapshots.userfaultfd.available, 'boolean');
  assert.equal(report.snapshots.backend === 'userfaultfd', report.snapshots.userfaultfd.available);
  assert.ok(report.devShm.size > 0 && report.devShm.free <= report.devShm.size);
  assert.equal(report.maxMapCount, Number(fs.readFileSync('/proc/sys/vm/max_map_count', 'utf8')));
  assert.equal(typeof report.pageFrames.readable, 'boolean');
  // Root sees page frame numbers in /proc/self/pagemap.
  if (process.getuid?.() === 0) assert.equal(report.pageFrames.readable, true, report.pageFrames.reason);
  assert.equal(report.maxViewLength, Region.maxViewLength);
  assert.equal(typeof report.hugePages.transparent, 'object');
});

test('cowshm doctor: readable text, and the fallback explained under a seccomp-like refusal', () => {
  const plain = run(['doctor'], { COWSHM_SNAPSHOT_BACKEND: '' });
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stdout, /^kernel\s+\S+/m);
  assert.match(plain.stdout, /^snapshot backend\s+(userfaultfd|mprotect)/m);
  assert.match(plain.stdout, /^vm\.max_map_count\s+\d+/m);
  assert.match(plain.stdout, /^largest view\s+.*Region\.maxViewLength/m);
  const refused = run(['doctor'], { COWSHM_NO_USERFAULTFD: '1', COWSHM_SNAPSHOT_BACKEND: '' });
  assert.equal(refused.status, 0, refused.stderr);
  assert.match(refused.stdout, /^snapshot backend\s+mprotect$/m);
  assert.match(refused.stdout, /userfaultfd\(2\) failed with EPERM/);
  const forced = run(['doctor', '--json'], { COWSHM_SNAPSHOT_BACKEND: 'mprotect' });
  assert.equal(JSON.parse(forced.stdout).snapshots.forced, 'mprotect');
});

test('cowshm doctor: usage errors exit with status 2', () => {
  const r = run(['doctor', '--bogus']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown option --bogus/);
  const extra = run(['doctor', 'extra']);
  assert.equal(extra.status, 2);
  const help = run(['doctor', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage: cowshm doctor \[--json\]/);
});

test('doctor shows each hugetlb pool (total, free, reserved, surplus) and the hugetlbfs mounts', () => {
  const json = run(['doctor', '--json']);
  assert.equal(json.status, 0);
  const report = JSON.parse(json.stdout) as { hugePages: { pools: Array<{ pageSize: number; total: number; free: number; control: string }>; mounts: unknown[] } };
  const sizes = fs.existsSync('/sys/kernel/mm/hugepages')
    ? fs.readdirSync('/sys/kernel/mm/hugepages').map((d) => Number(/(\d+)kB/.exec(d)?.[1]) * 1024).sort((a, b) => a - b)
    : [];
  assert.deepEqual(report.hugePages.pools.map((p) => p.pageSize), sizes);
  for (const p of report.hugePages.pools) assert.ok(Number.isSafeInteger(p.total) && Number.isSafeInteger(p.free) && fs.existsSync(p.control));
  assert.ok(Array.isArray(report.hugePages.mounts));
  const text = run(['doctor']);
  for (const p of report.hugePages.pools)
    assert.match(text.stdout, new RegExp(`\\n  pool of ${p.pageSize >= 2 ** 30 ? p.pageSize / 2 ** 30 + ' GiB' : p.pageSize / 2 ** 20 + ' MiB'} pages +\\d+ total, \\d+ free, \\d+ reserved, \\d+ surplus`));
  assert.match(text.stdout, /\nhugetlbfs mounts +\S/);
});
