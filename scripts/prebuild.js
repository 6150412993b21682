#!/usr/bin/env node
// Run by `npm pack` / `npm publish` (prepack, after `node-gyp rebuild`): puts
// the addon just built into prebuilds/PLATFORM-ARCH/node.napi.LIBC.node, the
// layout prebuildify and node-gyp-build use, so that the tarball installs
// without a compiler. It prints the newest glibc symbol version the binary
// needs: the oldest glibc it loads on. `--clean` (postpack) removes
// prebuilds/ again, so that a later `npm install` in this checkout builds
// from the sources instead of keeping a stale binary.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const prebuilds = path.join(root, 'prebuilds');

/** The GLIBC_x.y version names an ELF file references, newest last. */
function glibcVersions(file) {
  const text = fs.readFileSync(file).toString('latin1');
  const names = new Set(text.match(/GLIBC_\d+(?:\.\d+)+/g) || []);
  const key = (v) => v.slice(6).split('.').map(Number);
  return [...names].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
    return 0;
  });
}

function main() {
  if (process.argv.includes('--clean')) {
    fs.rmSync(prebuilds, { recursive: true, force: true });
    return;
  }
  const built = path.join(root, 'build', 'Release', 'cowshm.node');
  const versions = glibcVersions(built);
  const libc = versions.length > 0 ? 'glibc' : 'musl';
  const dir = path.join(prebuilds, `${process.platform}-${process.arch}`);
  fs.rmSync(prebuilds, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const out = path.join(dir, `node.napi.${libc}.node`);
  fs.copyFileSync(built, out);
  // Symbols a loader never needs; the dynamic symbol table stays.
  const strip = spawnSync('strip', ['--strip-unneeded', out], { stdio: 'inherit' });
  if (strip.error) console.error(`prebuild: not stripped (${strip.error.message})`);
  const newest = versions[versions.length - 1];
  console.error(`prebuild: ${path.relative(root, out)} (${fs.statSync(out).size} bytes${newest ? `, needs ${newest} or newer` : ''})`);
}

// Run as a script by npm; required by the tests for glibcVersions() alone.
if (require.main === module) main();

module.exports = { glibcVersions };
