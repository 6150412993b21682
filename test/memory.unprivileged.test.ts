// Without CAP_SYS_ADMIN the kernel shows every frame number as 0: pages()
// must say frames are unavailable, never report those zeros.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { isRoot, runNode } from './helpers';

test('frames and map counts are null, with the reason, for a reader without CAP_SYS_ADMIN', { skip: !isRoot && 'needs root to run a child as another user' }, () => {
  const script = `
    const { Region, memory, pageSize } = require('cowshm');
    const r = Region.create({ size: 64 * pageSize });
    const shared = r.map();
    new Uint8Array(shared.buffer).fill(1);
    const cow = r.map({ access: 'cow' });
    const bytes = new Uint8Array(cow.buffer);
    let s = 0;
    for (let p = 0; p < 64; p++) s += bytes[p * pageSize];  // read every page
    bytes[0] = 2;                                             // copy one
    const p = memory.pages(cow);
    console.log(JSON.stringify({ p, s, shared: memory.sharedFrames(cow, shared), usage: memory.usage(cow) }));
    r.close();`;
  const child = runNode(script, { uid: 65534, gid: 65534 });
  assert.equal(child.status, 0, child.stderr);
  const { p, shared, usage } = JSON.parse(child.stdout);
  // The flags are still there...
  assert.equal(p.pages, 64);
  assert.equal(p.present, 64);
  assert.equal(p.anonymous, 1);
  assert.equal(p.file, 63);
  assert.equal(usage.anonymous, 4096);
  // ...the frames are not, and nothing pretends they are.
  assert.equal(p.frames, null);
  assert.match(p.framesUnavailable, /CAP_SYS_ADMIN/);
  assert.equal(p.mapCounts, null);
  assert.match(p.mapCountsUnavailable, /frame numbers/);
  assert.equal(shared, null);
});
