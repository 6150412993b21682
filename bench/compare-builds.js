#!/usr/bin/env node
// The old name of `node bench/compare.js --base ROOT --suite ts`, kept while
// scripts and notes still use it; the measurements are the same, with the
// same iterations, in the same order, in one child process per build per
// round. Use bench/compare.js (see docs/benchmarks.md): it also builds a
// revision for you (--base 68a05a5) and offers the other suites.
// Usage: node bench/compare-builds.js BASELINE_ROOT [--rounds N]
'use strict';
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const [root, ...rest] = process.argv.slice(2);
if (root === undefined || root.startsWith('--') || !(rest.length === 0 || (rest.length === 2 && rest[0] === '--rounds'))) {
  console.error('usage: node bench/compare-builds.js BASELINE_ROOT [--rounds N]   (now: node bench/compare.js --base ROOT --suite ts)');
  process.exit(2);
}
const r = spawnSync(process.execPath, [path.join(__dirname, 'compare.js'), '--base', root, '--suite', 'ts', ...rest], { stdio: 'inherit' });
process.exit(r.status ?? 1);
