/** What the Mutex and RwLock tests share: a segment per test, and a child that holds a lock. */
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { uniqueName, shmExists } from './helpers';
import { pkg } from './atomics-helpers';

/** Runs `fn` on a new named segment's 'write' view, and checks that the segment is gone after. */
export function withSegment(tag: string, fn: (name: string, cells: Int32Array, r: Region) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const name = uniqueName(tag);
    const r = Region.create({ name, size: 4 * pageSize });
    try {
      await fn(name, new Int32Array(r.map().buffer), r);
    } finally {
      r.unlink();
      r.close();
    }
    assert.equal(shmExists(name), false);
  };
}

/**
 * The code of a child (for `child()`) that makes `new Lock(cells, at, options)`
 * over segment `name`, calls `take` on it (a method name: 'acquireSync',
 * 'readSync'...), prints `held <ownerDied>`, and stays until killed.
 */
export function holder(name: string, Lock: 'Mutex' | 'RwLock', at: number, take: string, options = '{}'): string {
  return `
    const cowshm = require(${pkg});
    const r = cowshm.Region.open(${JSON.stringify(name)});
    const l = new cowshm.${Lock}(new Int32Array(r.map().buffer), ${at}, ${options});
    const g = l.${take}();
    console.log('held ' + g.ownerDied);
    setInterval(() => {}, 1000);`;
}
