// The README's tour, run as a user would paste it: saved as an .mjs file and
// run by plain Node.js (no compiler step), printing what its `// →` comments say.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { packageRoot, rmTemp, uniqueName, shmExists } from './helpers';
import { pageSize } from 'cowshm';

function tour(): string {
  const readme = fs.readFileSync(path.join(packageRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## A tour'));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'README.md has a ```js block under "## A tour"');
  return block[1] as string;
}

test('the README tour runs on plain Node.js and prints what its comments say', () => {
  const code = tour();
  assert.doesNotMatch(code, /^\s*(await\s+)?using\s/m, 'no `using` declaration: Node.js 20 and 22 cannot parse it');
  const expected = [...code.matchAll(/\/\/ → (.*?)(?:\s{3,}\(.*)?$/gm)].map((m) => (m[1] as string).trim().replace(/\b4096\b/, String(pageSize)));
  assert.ok(expected.length >= 5);
  // A name of this run instead of 'prices', so that the suite's /dev/shm check sees it.
  const name = uniqueName('tour');
  assert.ok(code.includes("'prices'"));
  const script = code.replaceAll("'prices'", JSON.stringify(name));
  // Inside the package, as in a user's project: 'cowshm' resolves by name, from
  // the file and (for the worker's eval code) from the working directory.
  const dir = fs.mkdtempSync(path.join(packageRoot, 'test', 'build', 'tour-'));
  try {
    const file = path.join(dir, 'tour.mjs');
    fs.writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), expected);
    assert.equal(shmExists(name), false, 'the tour removes its segment');
    assert.deepEqual(fs.readdirSync(dir), ['tour.mjs'], 'the tour removes its checkpoint file');
  } finally {
    rmTemp(dir);
  }
});
