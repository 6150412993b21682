import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { packageRoot } from './helpers';

// These drive a child process to vm.max_map_count on purpose, with the
// mprotect backend and its chunk forced down to one page
// (COWSHM_MPROTECT_CHUNK), which the automatic choice would never allow.
function child(script: string): { status: number | null; signal: string | null; out: Record<string, unknown>; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', `const cowshm = require(${JSON.stringify(packageRoot)});\n${script}`], {
    encoding: 'utf8',
    env: { ...process.env, COWSHM_SNAPSHOT_BACKEND: 'mprotect', COWSHM_MPROTECT_CHUNK: '4096' },
    timeout: 120000,
  });
  const last = r.stdout.trim().split('\n').pop() ?? '{}';
  return { status: r.status, signal: r.signal, out: JSON.parse(last.startsWith('{') ? last : '{}'), stderr: r.stderr };
}

const common = `
  const fs = require('node:fs');
  const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').length - 1;
  const max = Number(fs.readFileSync('/proc/sys/vm/max_map_count', 'utf8'));
  const page = cowshm.pageSize;
`;

test('mprotect: writes that reach vm.max_map_count degrade to copying the whole view: no crash, snapshot exact', () => {
  const { status, signal, out, stderr } = child(`${common}
    // Every other page: each first write splits two more VMAs off, so
    // max / 2 writes reach the limit.
    const pages = max + 1024;
    const r = cowshm.Region.create({ size: pages * page, reserve: false });
    const view = new Uint8Array(r.map().buffer);
    view[5] = 9;
    const s = r.snapshot();
    for (let p = 0; p < pages; p += 2) view[p * page + 1] = 1;
    const frozen = new Uint8Array(s.buffer);
    let wrong = 0;
    for (let p = 0; p < pages; p += 2) if (frozen[p * page + 1] !== 0) wrong++;
    const result = { wrong, five: frozen[5], copied: s.copiedPages, pages, mapsAfter: maps(), max };
    s.release();
    r.close();
    console.log(JSON.stringify(result));
  `);
  assert.equal(status, 0, `${signal} ${stderr}`);
  assert.equal(out['wrong'], 0);
  assert.equal(out['five'], 9);
  assert.equal(out['copied'], out['pages'], 'the whole view was copied when no more VMAs could be split');
  assert.ok((out['mapsAfter'] as number) < (out['max'] as number) / 4, `${out['mapsAfter']} mappings left`);
});

test('mprotect: a snapshot that cannot be protected near vm.max_map_count is an explicit ENOMEM', () => {
  const { status, signal, out, stderr } = child(`${common}
    const a = cowshm.Region.create({ size: (max + 1024) * page, reserve: false });
    const b = cowshm.Region.create({ size: 16 * page });
    const bv = b.map();
    const view = new Uint8Array(a.map().buffer);
    const s = a.snapshot();
    // Each write two pages apart adds two VMAs: stop about 150 short of the limit.
    const writes = Math.floor((max - maps() - 150) / 2);
    for (let i = 1; i <= writes; i++) view[2 * i * page] = 1;
    let error = null;
    try {
      b.snapshot().release();
    } catch (e) {
      error = { code: e.code, syscall: e.syscall, message: e.message };
    }
    s.release();
    const after = b.snapshot(); // far from the limit again
    after.release();
    console.log(JSON.stringify({ error }));
  `);
  assert.equal(status, 0, `${signal} ${stderr}`);
  const error = out['error'] as { code: string; syscall: string; message: string } | null;
  assert.ok(error, 'snapshot() near the limit threw');
  assert.equal(error.code, 'ENOMEM');
  assert.equal(error.syscall, 'mprotect');
  assert.match(error.message, /vm\.max_map_count/);
});
