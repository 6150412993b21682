// A container's /dev/shm is often a small tmpfs (Docker: 64 MiB). Creating a
// reserved region larger than that must fail at create time with ENOSPC and a
// message naming /dev/shm and its size, instead of a SIGBUS on first touch.
// Reproduced with a 16 MiB tmpfs mounted over /dev/shm in a private mount
// namespace (unshare -m), so the machine's own /dev/shm is never touched.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { packageRoot } from './helpers';

const MiB = 1 << 20;

function whyNot(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to mount a tmpfs in a private mount namespace';
  const probe = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm'], { encoding: 'utf8' });
  if (probe.error) return `unshare is not available: ${probe.error.message}`;
  if (probe.status !== 0) return `unshare -m with a tmpfs mount is not permitted here: ${probe.stderr.trim()}`;
  return undefined;
}

// Runs in the private namespace: the first create must fail, the second (which
// fits) must succeed, proving the small tmpfs is really the /dev/shm in use.
const child = `
const fs = require('node:fs');
const { Region } = require('cowshm');
const out = { statfs: null, error: null, fits: false, anonymous: false, left: null };
const st = fs.statfsSync('/dev/shm');
out.statfs = st.blocks * st.bsize;
try {
  Region.create({ name: 'cowshm-smallshm-big', size: ${32 * MiB} }).close();
} catch (err) {
  out.error = { code: err.code, syscall: err.syscall, message: err.message };
}
const ok = Region.create({ name: 'cowshm-smallshm-fits', size: ${8 * MiB} });
new Uint8Array(ok.map().buffer).fill(1);
out.fits = true;
ok.unlink();
ok.close();
// A memfd lives on the kernel's internal tmpfs: /dev/shm's size does not limit it.
const anon = Region.create({ size: ${32 * MiB} });
new Uint8Array(anon.map().buffer).fill(1);
anon.close();
out.anonymous = true;
out.left = fs.readdirSync('/dev/shm');
process.stdout.write(JSON.stringify(out));
`;

test('a reserved region larger than a 16 MiB /dev/shm fails with ENOSPC naming /dev/shm and its size', (t) => {
  const reason = whyNot();
  if (reason !== undefined) {
    console.log(`skipped: ${reason}`);
    t.skip(reason);
    return;
  }
  const r = spawnSync(
    'unshare',
    ['-m', 'sh', '-c', 'mount -t tmpfs -o size=16m tmpfs /dev/shm && exec "$0" "$@"', process.execPath, '-e', child],
    { cwd: packageRoot, encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    statfs: number;
    error: { code: string; syscall: string; message: string } | null;
    fits: boolean;
    anonymous: boolean;
    left: string[];
  };
  assert.equal(out.statfs, 16 * MiB, 'the child saw the 16 MiB tmpfs');
  assert.ok(out.error, 'creating 32 MiB on a 16 MiB /dev/shm must fail');
  assert.equal(out.error.code, 'ENOSPC');
  assert.equal(out.error.syscall, 'fallocate');
  assert.match(out.error.message, /\/dev\/shm/);
  assert.match(out.error.message, /16(\.0)? MiB/, 'the message states the size of /dev/shm');
  assert.match(out.error.message, /32(\.0)? MiB/, 'the message states what the region needs');
  assert.equal(out.fits, true, 'a region that fits is created normally');
  assert.equal(out.anonymous, true, 'an anonymous region is not bound by /dev/shm');
  assert.deepEqual(out.left, [], 'the failed create left nothing in /dev/shm');
});
