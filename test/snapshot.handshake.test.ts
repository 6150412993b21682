// The cross-process snapshot tests (snapshot.xproc*.test.js) run once on the
// push path each pair of processes gets by itself (npm test: the direct one
// between processes of one user here) and once more here with
// COWSHM_XPROC_HANDSHAKE=1, which makes every pair use the handshake. The
// mprotect run (restricted.userfaultfd) and the uid 65534 run (unprivileged)
// run this file too, so the handshake is exercised under both backends and
// unprivileged.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { rerunTests } from './helpers';

const nested = process.env['COWSHM_XPROC_HANDSHAKE'] === '1'
  ? 'this run forces the handshake already'
  : process.env['COWSHM_SNAPSHOT_BACKEND'] === 'mprotect'
    ? 'the mprotect run of restricted.userfaultfd covers the handshake under mprotect'
    : false;

test('every cross-process snapshot test also passes under COWSHM_XPROC_HANDSHAKE=1', { skip: nested, timeout: 15 * 60_000 }, () => {
  const files = fs
    .readdirSync(__dirname)
    .filter((f) => /^snapshot\.xproc[\w.-]*\.test\.js$/.test(f))
    .sort();
  assert.ok(files.length >= 2, files.join(', '));
  console.log(`with COWSHM_XPROC_HANDSHAKE=1: ${files.join(' ')}`);
  rerunTests(files, { COWSHM_XPROC_HANDSHAKE: '1' }, { timeout: 14 * 60_000 });
});
