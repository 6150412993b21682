import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { packageRoot, tempDir, rmTemp } from './helpers';

/** A copy of the package without its build/ directory. */
function unbuiltCopy(): string {
  const dir = tempDir('loader');
  for (const entry of ['package.json', 'dist', 'lib']) fs.cpSync(path.join(packageRoot, entry), path.join(dir, entry), { recursive: true });
  return dir;
}

function load(dir: string, env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(dir)}); console.log('loaded')`], {
    encoding: 'utf8',
    env: { ...process.env, COWSHM_NATIVE_PATH: '', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('without a built addon, loading explains what was tried and how to fix it', () => {
  const dir = unbuiltCopy();
  try {
    const r = load(dir);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cowshm: could not load the native addon\./);
    assert.match(r.stderr, /The native addon was not built, or was built for another Node\.js or architecture\./);
    const at = dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    // A build first (made only when no prebuilt binary fits), then the prebuilt binary.
    assert.match(r.stderr, new RegExp(`Tried:\\n  ${at}/build/Release/cowshm\\.node: not found\\n`));
    assert.match(r.stderr, new RegExp(`\\n  ${at}/prebuilds/linux-${process.arch}/node\\.napi\\.glibc\\.node: not found\\n`));
    assert.match(r.stderr, /Possible solutions:\n {2}- Run `npm rebuild cowshm --build-from-source`/);
    assert.match(r.stderr, /COWSHM_NATIVE_PATH/);
  } finally {
    rmTemp(dir);
  }
});

test('COWSHM_NATIVE_PATH names the addon to load; a broken one is reported', () => {
  const dir = unbuiltCopy();
  try {
    const good = load(dir, { COWSHM_NATIVE_PATH: path.join(packageRoot, 'build', 'Release', 'cowshm.node') });
    assert.equal(good.status, 0, good.stderr);
    assert.equal(good.stdout, 'loaded\n');
    const broken = path.join(dir, 'broken.node');
    fs.writeFileSync(broken, 'not a shared object');
    const bad = load(dir, { COWSHM_NATIVE_PATH: broken });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, new RegExp(`${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*(invalid ELF header|file too short)`));
  } finally {
    rmTemp(dir);
  }
});
