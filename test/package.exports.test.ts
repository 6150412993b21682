import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as cowshm from 'cowshm';
import { packageRoot, uniqueName, shmExists } from './helpers';

const cjsNames = (): string[] => Object.keys(require('cowshm') as object).sort();

test('import and require load the same module with the same named exports', async () => {
  // Kept as a real dynamic import by the compiler (module node16): Node resolves
  // the "import" condition of the exports map, i.e. lib/index.mjs.
  const esm = (await import('cowshm')) as Record<string, unknown>;
  const cjs = require('cowshm') as Record<string, unknown>;
  const esmNames = Object.keys(esm).filter((k) => k !== 'default').sort();
  assert.deepEqual(esmNames, cjsNames(), 'lib/index.mjs must re-export every name of dist/index.js');
  for (const name of esmNames) assert.equal(esm[name], cjs[name], `export '${name}' differs between import and require`);
  assert.equal(esm.default, cjs, 'the default export is the CommonJS module itself');
  assert.equal(cjs, cowshm);
});

test('an ES module and a CommonJS script in separate processes share a region by name', () => {
  const name = uniqueName('esm');
  const writer =
    `import { Region } from 'cowshm';` +
    `const r = Region.create({ name: ${JSON.stringify(name)}, size: 4096 });` +
    `new Int32Array(r.map().buffer)[1] = 1234567; r.close();`;
  const reader =
    `const { Region } = require('cowshm');` +
    `const r = Region.open(${JSON.stringify(name)});` +
    `process.stdout.write(String(new Int32Array(r.map().buffer)[1])); r.unlink(); r.close();`;
  try {
    // --eval resolves 'cowshm' from the working directory: the package itself.
    const w = spawnSync(process.execPath, ['--input-type=module', '--eval', writer], { cwd: packageRoot, encoding: 'utf8' });
    assert.equal(w.status, 0, w.stderr);
    const r = spawnSync(process.execPath, ['--input-type=commonjs', '--eval', reader], { cwd: packageRoot, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '1234567');
  } finally {
    fs.rmSync(`/dev/shm/${name}`, { force: true });
  }
  assert.equal(shmExists(name), false);
});
