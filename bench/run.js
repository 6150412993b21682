#!/usr/bin/env node
// Runs every bench/*.bench.js (or those named on the command line) in turn.
// Usage: npm run bench [-- NAME... [--option value...]]
// Arguments from the first `--option` on are passed to every bench run.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const argv = process.argv.slice(2);
const firstOption = argv.findIndex((a) => a.startsWith('--'));
const wanted = firstOption === -1 ? argv : argv.slice(0, firstOption);
const options = firstOption === -1 ? [] : argv.slice(firstOption);
const files = fs
  .readdirSync(__dirname)
  .filter((f) => f.endsWith('.bench.js'))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w)))
  .sort();
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f} (${new Date().toISOString()}, node ${process.version}) ===`);
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, f), ...options], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
