import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, writeCheckpoint, pageSize } from 'cowshm';
import { tempDir, rmTemp, runCli } from './helpers';

const cli = (...args: string[]) => runCli(args);

test('cowshm checkpoint info: text and --json, verified; exit 1 on a bad file, 2 on misuse', async () => {
  const dir = tempDir('ck-cli');
  const region = Region.create({ size: 4 * pageSize });
  try {
    const view = region.map();
    const full = path.join(dir, 'full.cow');
    const delta = path.join(dir, 'delta.cow');
    const a = await writeCheckpoint(view, full);
    new Uint8Array(view.buffer)[pageSize] = 1;
    const d = await writeCheckpoint(view, delta, { base: full });

    const text = cli('checkpoint', 'info', full);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^kind\s+full$/m);
    assert.match(text.stdout, new RegExp(`^region size\\s+${4 * pageSize} bytes`, 'm'));
    assert.match(text.stdout, new RegExp(`^checksum\\s+${a.checksum} `, 'm'));
    assert.match(text.stdout, /^verified\s+headers and data checksums: ok$/m);

    const json = cli('checkpoint', 'info', delta, '--json');
    assert.equal(json.status, 0, json.stderr);
    const info = JSON.parse(json.stdout);
    assert.equal(info.kind, 'delta');
    assert.equal(info.pageCount, 1);
    assert.equal(info.checksum, d.checksum);
    assert.equal(info.id, d.id);
    assert.deepEqual(info.base, { id: a.id, checksum: a.checksum, regionSize: 4 * pageSize, path: 'full.cow' });
    assert.deepEqual(info.chain, [full, delta]);
    assert.equal(info.verified, 'full');

    // Corrupt data: caught by default, not with --header-only.
    const bytes = fs.readFileSync(full);
    bytes[4096 + 10] = (bytes[4096 + 10] as number) ^ 0x40;
    fs.writeFileSync(full, bytes);
    const bad = cli('checkpoint', 'info', delta);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /full\.cow' is not a valid cowshm checkpoint: data checksum mismatch/);
    assert.equal(cli('checkpoint', 'info', full, '--header-only').status, 0);

    const missing = cli('checkpoint', 'info', path.join(dir, 'nope.cow'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /ENOENT/);
    assert.equal(cli('checkpoint').status, 2);
    assert.equal(cli('checkpoint', 'info').status, 2);
    assert.equal(cli('checkpoint', 'info', full, '--bogus').status, 2);
    assert.match(cli('checkpoint', '--help').stdout, /Usage: cowshm checkpoint info FILE/);
  } finally {
    region.close();
    rmTemp(dir);
  }
});
