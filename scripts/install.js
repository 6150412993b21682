#!/usr/bin/env node
// npm's "install" step for cowshm. A published package carries a prebuilt
// Node-API binary (prebuilds/PLATFORM-ARCH/node.napi.LIBC.node, made by
// scripts/prebuild.js when the package is packed); one build serves every
// Node.js version. Use it when it loads here, and build from source with
// node-gyp only when none fits (another architecture, musl, a glibc older
// than the binary needs) or when asked to:
//   npm install cowshm --build-from-source   (or COWSHM_BUILD_FROM_SOURCE=1)
// A git checkout always builds: a prebuilds/ left there by an interrupted
// `npm pack` would be a binary of older sources.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');

function forced() {
  const flag = (process.env.npm_config_build_from_source || '').toLowerCase();
  return flag === 'true' || flag === 'cowshm' || process.env.COWSHM_BUILD_FROM_SOURCE === '1';
}

/** The first prebuilt binary that loads in this process, or why none did. */
function usablePrebuild() {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (!fs.existsSync(dir)) return { file: null, why: `no prebuilt binary for ${process.platform}-${process.arch}` };
  const why = [];
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.node')).sort()) {
    const file = path.join(dir, name);
    try {
      require(file);
      return { file, why: null };
    } catch (err) {
      why.push(`${name}: ${err.message.split('\n')[0]}`);
    }
  }
  return { file: null, why: why.length ? why.join('; ') : `no binary in ${dir}` };
}

function build(reason) {
  console.error(`cowshm: building the native addon from source (${reason})`);
  // npm puts its own node-gyp at npm_config_node_gyp (and on PATH) for install scripts.
  const gyp = process.env.npm_config_node_gyp;
  const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) {
    console.error(`cowshm: could not run node-gyp: ${r.error.message}`);
    return 1;
  }
  if (r.status !== 0) {
    console.error('cowshm: the build failed: it needs python3, make and a C compiler (see README.md, "Install").');
  }
  return r.status === null ? 1 : r.status;
}

if (forced()) {
  process.exitCode = build('--build-from-source');
} else if (fs.existsSync(path.join(root, '.git'))) {
  process.exitCode = build('a git checkout');
} else {
  const { file, why } = usablePrebuild();
  process.exitCode = file ? 0 : build(why);
}
