#!/usr/bin/env node
// Runs the whole suite with node:test, then checks that nothing was left
// behind in /dev/shm. Usage: node scripts/test.js [file-filter...]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const built = path.join(root, 'test', 'build');
const filters = process.argv.slice(2);

function testFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...testFiles(full));
    else if (entry.name.endsWith('.test.js')) out.push(full);
  }
  return out.sort();
}

const listShm = () => new Set(fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm') : []);

const files = testFiles(built).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error(`no test files under ${built}${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  process.exit(1);
}
const before = listShm();
// Names made by test/helpers.ts uniqueName() in this run start with this
// prefix; other programs (other runs of the suite among them) may create and
// remove segments meanwhile.
const run = `${process.pid}r${Date.now().toString(36)}`;
const prefix = `cowshm-test-${run}-`;
const result = spawnSync(process.execPath, ['--expose-gc', '--test', ...files], {
  stdio: 'inherit',
  cwd: root,
  env: { ...process.env, COWSHM_TEST_RUN: run },
});
const left = [...listShm()].filter((name) => !before.has(name) && name.startsWith(prefix));
let status = result.status ?? 1;
if (left.length > 0) {
  console.error(`\n/dev/shm check: the suite left ${left.length} segment(s) behind:\n  ${left.join('\n  ')}`);
  status = status || 1;
} else {
  console.log('\n/dev/shm check: nothing left behind');
}
process.exit(status);
