import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, type View } from 'cowshm';
import { uniqueName, collectGarbage } from './helpers';

// close() does not unregister a Region or View from its finalization
// registry; it marks the entry closed. These check that the finalizer of a
// closed object, when it runs later, touches nothing that was reused since.

test('a closed Region collected later leaves its old descriptor number alone', async () => {
  const name = uniqueName('finalizer-fd');
  const keep = Region.create({ name, size: 4096 });
  let reused = -1;
  try {
    let fdOfClosed = -1;
    (() => {
      const r = Region.open(name);
      fdOfClosed = r.fd;
      r.close();
      // The lowest free number: the one the closed Region had.
      reused = fs.openSync('/dev/null', 'r');
    })();
    assert.equal(reused, fdOfClosed, 'the descriptor number should have been reused');
    await collectGarbage();
    assert.doesNotThrow(() => fs.fstatSync(reused), 'the reused descriptor must still be open');
    assert.equal(fs.readlinkSync(`/proc/self/fd/${reused}`), '/dev/null');
  } finally {
    if (reused >= 0) fs.closeSync(reused);
    keep.unlink();
    keep.close();
  }
});

test('a closed View collected later leaves the view that took its slot alone', async () => {
  const name = uniqueName('finalizer-view');
  const r = Region.create({ name, size: 4096 });
  try {
    let next: View | undefined;
    (() => {
      const v = r.map();
      v.close();
      next = r.map();
    })();
    await collectGarbage();
    const view = next as View;
    assert.equal(view.closed, false);
    const bytes = new Uint8Array(view.buffer);
    bytes[0] = 7;
    assert.equal(new Uint8Array(r.map().buffer)[0], 7);
    view.close();
  } finally {
    r.unlink();
    r.close();
  }
});
