import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { packageRoot, rerunTests } from './helpers';

const forced = process.env['COWSHM_SNAPSHOT_BACKEND'];

function probe(env: Record<string, string>): { backend: string; reason: string } {
  const child = spawnSync(
    process.execPath,
    ['-e', `const c = require(${JSON.stringify(packageRoot)}); console.log(JSON.stringify({ backend: c.snapshotBackend, reason: c.snapshotBackendReason }))`],
    { encoding: 'utf8', env: { ...process.env, ...env } },
  );
  assert.equal(child.status, 0, child.stderr);
  return JSON.parse(child.stdout) as { backend: string; reason: string };
}

// The snapshot tests run once under the automatic choice (npm test) and once
// more here under the fallback, so both backends are exercised by one suite.
if (forced === undefined) {
  test('every snapshot test also passes under COWSHM_SNAPSHOT_BACKEND=mprotect', () => {
    const files = fs
      .readdirSync(__dirname)
      .filter((f) => f.startsWith('snapshot.') && f.endsWith('.test.js') && f !== 'snapshot.backends.test.js')
      .sort();
    assert.ok(files.length >= 6, files.join(', '));
    const out = rerunTests(files, { COWSHM_SNAPSHOT_BACKEND: 'mprotect' });
    assert.match(out, /snapshotBackend is mprotect in this run/);
  });
}

test('COWSHM_NO_USERFAULTFD=1 makes userfaultfd fail as a seccomp filter would: the fallback is used', () => {
  const { backend, reason } = probe({ COWSHM_NO_USERFAULTFD: '1', COWSHM_SNAPSHOT_BACKEND: '' });
  assert.equal(backend, 'mprotect');
  assert.match(reason, /userfaultfd\(2\) failed with EPERM/);
  assert.match(reason, /\/dev\/userfaultfd: ENOENT/);
});

test('COWSHM_SNAPSHOT_BACKEND=userfaultfd when userfaultfd is refused: snapshot() says why', () => {
  const child = spawnSync(
    process.execPath,
    ['-e', `const { Region } = require(${JSON.stringify(packageRoot)}); const r = Region.create({ size: 4096 }); try { r.snapshot(); } catch (e) { console.log(e.code + ' ' + e.message); }`],
    { encoding: 'utf8', env: { ...process.env, COWSHM_NO_USERFAULTFD: '1', COWSHM_SNAPSHOT_BACKEND: 'userfaultfd' } },
  );
  assert.equal(child.status, 0, child.stderr);
  assert.match(child.stdout, /^ERR_COWSHM_SNAPSHOT_BACKEND .*forced by COWSHM_SNAPSHOT_BACKEND=userfaultfd, but it is unavailable/);
});

test('an unknown COWSHM_SNAPSHOT_BACKEND is a clear error', () => {
  const child = spawnSync(
    process.execPath,
    ['-e', `const { Region } = require(${JSON.stringify(packageRoot)}); const r = Region.create({ size: 4096 }); try { r.snapshot(); } catch (e) { console.log(e.name + ' ' + e.message); }`],
    { encoding: 'utf8', env: { ...process.env, COWSHM_SNAPSHOT_BACKEND: 'fork' } },
  );
  assert.equal(child.status, 0, child.stderr);
  assert.match(child.stdout, /RangeError The COWSHM_SNAPSHOT_BACKEND environment variable must be one of 'mprotect' or 'userfaultfd'|RangeError The COWSHM_SNAPSHOT_BACKEND environment variable must be 'mprotect' or 'userfaultfd'/);
});
