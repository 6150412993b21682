import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { packageRoot, tempDir, rmTemp } from './helpers';

test('import from an .mjs file gives the same named exports, the same objects, as require', () => {
  // The script lives inside the package so that 'cowshm' resolves to it by name.
  const dir = fs.mkdtempSync(path.join(packageRoot, 'test', 'build', 'esm-'));
  const outside = tempDir('esm');
  try {
    const file = path.join(dir, 'child.mjs');
    fs.writeFileSync(
      file,
      `import * as esm from 'cowshm';
       import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('cowshm');
       const names = Object.keys(esm).filter((k) => k !== 'default').sort();
       const same = names.every((k) => esm[k] === cjs[k]);
       const r = esm.Region.create({ size: 4096 });
       const works = new Uint8Array(r.map().buffer).length === 4096 && r instanceof cjs.Region;
       r.close();
       console.log(JSON.stringify({ names, cjsNames: Object.keys(cjs).sort(), same, isDefault: esm.default === cjs, works }));`,
    );
    const r = spawnSync(process.execPath, [file], { cwd: outside, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { names: string[]; cjsNames: string[]; same: boolean; isDefault: boolean; works: boolean };
    assert.deepEqual(out.names, out.cjsNames, 'lib/index.mjs must re-export every name of dist/index.js');
    assert.ok(out.names.includes('Region') && out.names.includes('listSegments'));
    assert.equal(out.same, true);
    assert.equal(out.isDefault, true);
    assert.equal(out.works, true);
  } finally {
    rmTemp(dir);
    rmTemp(outside);
  }
});
