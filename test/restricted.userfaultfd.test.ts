// Containers' seccomp profiles often refuse userfaultfd. COWSHM_NO_USERFAULTFD=1
// makes cowshm's probe fail the way seccomp does; snapshots must then use the
// mprotect fallback, say why, and pass the same snapshot tests.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { packageRoot } from './helpers';

function env(restricted: boolean): NodeJS.ProcessEnv {
  // NODE_TEST_CONTEXT would make a nested `node --test` report to this runner, not as TAP.
  const e: NodeJS.ProcessEnv = { ...process.env, NODE_TEST_CONTEXT: undefined, COWSHM_SNAPSHOT_BACKEND: undefined };
  e['COWSHM_NO_USERFAULTFD'] = restricted ? '1' : undefined;
  return e;
}

const probe = `
const c = require('cowshm');
const r = c.Region.create({ size: 1 << 20 });
const v = new Uint8Array(r.map().buffer);
v.fill(1);
const s = r.snapshot();
v[5000] = 2;
const out = { backend: c.snapshotBackend, reason: c.snapshotBackendReason ?? null, frozen: new Uint8Array(s.buffer)[5000], live: v[5000] };
s.release();
r.close();
process.stdout.write(JSON.stringify(out));
`;

function runProbe(restricted: boolean): { backend: string; reason: string | null; frozen: number; live: number } {
  const r = spawnSync(process.execPath, ['-e', probe], { cwd: packageRoot, env: env(restricted), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('with userfaultfd refused, snapshots fall back to mprotect, say why, and still isolate', () => {
  const restricted = runProbe(true);
  assert.equal(restricted.backend, 'mprotect');
  // The probe fails as a seccomp filter would: EPERM from userfaultfd(2), and the reason says so.
  assert.match(String(restricted.reason), /userfaultfd.*EPERM/);
  assert.match(String(restricted.reason), /seccomp/);
  assert.deepEqual([restricted.frozen, restricted.live], [1, 2]);
  const normal = runProbe(false);
  console.log(`without the restriction this machine uses ${normal.backend} (${normal.reason ?? 'no reason given'})`);
  if (normal.backend === 'userfaultfd') assert.notEqual(restricted.reason, normal.reason);
});

test('the snapshot tests pass with userfaultfd refused', () => {
  const files = fs
    .readdirSync(__dirname)
    // snapshot.backends runs every snapshot test again itself, under a forced backend.
    .filter((f) => /^snapshot[\w.-]*\.test\.js$/.test(f) && !/^snapshot\.backends\./.test(f))
    .sort();
  assert.ok(files.length > 0, `no snapshot test files in ${__dirname}`);
  console.log(`with COWSHM_NO_USERFAULTFD=1: ${files.join(' ')}`);
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', '--test', '--test-reporter=tap', ...files.map((f) => path.join(__dirname, f))],
    { cwd: packageRoot, env: env(true), encoding: 'utf8', maxBuffer: 64 << 20, timeout: 10 * 60_000 },
  );
  const count = (key: string): number => Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(r.stdout)?.[1] ?? NaN);
  assert.equal(r.status, 0, `${r.stdout.split('\n').filter((l) => /^\s*not ok|Error/.test(l)).join('\n')}\n${r.stderr}`);
  assert.equal(count('fail'), 0);
  assert.ok(count('pass') > 0);
});
