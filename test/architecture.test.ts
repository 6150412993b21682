// The shape docs/architecture.md describes, checked by scripts/check-structure.js
// (which anyone can run: `node scripts/check-structure.js`).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot, tempDir, rmTemp } from './helpers';

const { check } = require(path.join(packageRoot, 'scripts', 'check-structure.js')) as {
  check(root: string): string[];
};

test('src/: no import circle, every import points down the layers, no class reached through .constructor', () => {
  assert.deepEqual(check(packageRoot), []);
});

test('the structure check catches a circle, an upward import and a .constructor reach', () => {
  const root = tempDir('structure');
  try {
    const write = (file: string, text: string): void => {
      fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
      fs.writeFileSync(path.join(root, file), text);
    };
    // region -> snapshot -> checkpoint/write -> (back up) region, as the code once was.
    write('src/region.ts', "import { takeSnapshot } from './snapshot';\nexport class Region {}\n");
    write('src/snapshot.ts', "import { writeFrom } from './checkpoint/write';\nimport type { Region } from './region';\n");
    write(
      'src/checkpoint/write.ts',
      "import { Region } from '../region';\n" +
        "// (region.constructor as typeof Region) in a comment is no reach\n" +
        'export const f = (r: Region) => (r.constructor as typeof Region).name;\n' +
        'export const g = (r: object) => (r as object).constructor?.name;\n',
    );
    write('src/surprise.ts', 'export {};\n');
    write('dist/region.js', 'require("./snapshot");\n');
    write('dist/snapshot.js', 'require("./checkpoint/write");\n');
    write('dist/checkpoint/write.js', 'const region_1 = require("../region");\n');
    const problems = check(root);
    assert.deepEqual(problems.sort(), [
      'checkpoint/write.ts (layer checkpoint) imports region.ts (layer region), a module above it: pass what it needs as a parameter instead',
      'checkpoint/write.ts:3: reaches a class through .constructor: export const f = (r: Region) => (r.constructor as typeof Region).name;',
      'import circle (dist): checkpoint/write.js -> region.js -> snapshot.js -> checkpoint/write.js',
      'surprise.ts: no layer: add it to LAYERS in scripts/check-structure.js and to docs/architecture.md',
    ]);
  } finally {
    rmTemp(root);
  }
});
