import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';

// (module (memory 1)
//   (func (export "load") (param i32) (result i32) local.get 0 i32.load)
//   (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store))
const bytes = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x0b, 0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x02, 0x7f, 0x7f, 0x00,
  0x03, 0x03, 0x02, 0x00, 0x01,
  0x05, 0x03, 0x01, 0x00, 0x01,
  0x07, 0x10, 0x02, 0x04, 0x6c, 0x6f, 0x61, 0x64, 0x00, 0x00, 0x05, 0x73, 0x74, 0x6f, 0x72, 0x65, 0x00, 0x01,
  0x0a, 0x13, 0x02, 0x07, 0x00, 0x20, 0x00, 0x28, 0x02, 0x00, 0x0b, 0x09, 0x00, 0x20, 0x00, 0x20, 0x01, 0x36, 0x02, 0x00, 0x0b,
]);

// The lib settings have no WebAssembly declarations: the few used here.
const WebAssembly = (globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => object;
    Instance: new (module: object) => { exports: unknown };
    RuntimeError: ErrorConstructor;
  };
}).WebAssembly;

interface Exports {
  load(addr: number): number;
  store(addr: number, value: number): void;
}

function wasm(): Exports {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Exports;
}

test('WebAssembly out-of-bounds accesses still throw RuntimeError, with and without live snapshots', () => {
  const w = wasm();
  w.store(8, 5);
  assert.equal(w.load(8), 5);
  const oob = [65536, 0x7fff0000, 0xfffffff0];
  for (const a of oob) {
    assert.throws(() => w.load(a), WebAssembly.RuntimeError);
    assert.throws(() => w.store(a, 1), WebAssembly.RuntimeError);
  }
  const r = Region.create({ size: 4 * pageSize });
  try {
    const view = new Uint8Array(r.map().buffer);
    const s = r.snapshot();
    view[0] = 1; // a snapshot fault resolved...
    for (const a of oob) {
      // ...and the traps around it still reach V8.
      assert.throws(() => w.load(a), WebAssembly.RuntimeError);
      assert.throws(() => w.store(a, 1), WebAssembly.RuntimeError);
      view[pageSize * 2 + (a % 100)] = 2;
    }
    assert.equal(new Uint8Array(s.buffer)[0], 0);
    s.release();
  } finally {
    r.close();
  }
});
