import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, pageSize } from 'cowshm';
import { runNode, uniqueName } from './helpers';

function withSegment(tag: string, size: number, body: (name: string) => void): void {
  const name = uniqueName(tag);
  const r = Region.create({ name, size });
  try {
    body(name);
  } finally {
    r.unlink();
    r.close();
  }
}

test('a write through a read view kills the process with SIGSEGV and says where', () => {
  withSegment('fault-read', 4 * pageSize, (name) => {
    const r = runNode(`
      const { Region } = require('cowshm');
      const region = Region.open(${JSON.stringify(name)});
      region.map();                                             // view 1
      const view = region.map({ access: 'read', offset: ${pageSize} }); // view 2
      const bytes = new Uint8Array(view.buffer);
      console.log('before', bytes[100]);
      bytes[100] = 1;
      console.log('after');`);
    assert.equal(r.signal, 'SIGSEGV', `status ${r.status}, stderr: ${r.stderr}`);
    assert.equal(r.stdout, 'before 0\n');
    assert.match(
      r.stderr,
      new RegExp(
        `cowshm: fatal write to a view with access 'read' of region '${name}' \\(shm\\), view 2 ` +
          `at view offset 100 \\(region offset ${pageSize + 100}, address 0x[0-9a-f]+\\)\n` +
          `cowshm: map the region with \\{ access: 'write' \\} or \\{ access: 'cow' \\} to write to it\n`,
      ),
    );
  });
});

test('the same from a worker thread: the whole process dies with the report', () => {
  withSegment('fault-worker', pageSize, (name) => {
    const r = runNode(`
      const { Worker } = require('node:worker_threads');
      new Worker(\`
        const { Region } = require(\${JSON.stringify(require.resolve('cowshm'))});
        const view = Region.open(${JSON.stringify(name)}).map({ access: 'read' });
        new Uint8Array(view.buffer)[7] = 1;
      \`, { eval: true });
      setTimeout(() => console.log('still alive'), 20000);`);
    assert.equal(r.signal, 'SIGSEGV', `status ${r.status}, stderr: ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`fatal write to a view with access 'read' of region '${name}' \\(shm\\), view 1 at view offset 7 `));
  });
});

test('a region truncated under a view: SIGBUS, reported as such', () => {
  withSegment('fault-bus', 2 * pageSize, (name) => {
    const r = runNode(`
      const fs = require('node:fs');
      const { Region } = require('cowshm');
      const view = Region.open(${JSON.stringify(name)}).map();
      fs.truncateSync('/dev/shm/${name}', 0); // what another process could do
      console.log(new Uint8Array(view.buffer)[${pageSize} + 5]);`);
    assert.equal(r.signal, 'SIGBUS', `status ${r.status}, stderr: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(`cowshm: fatal read from a page past the end of the file behind region '${name}' \\(shm\\), view 1 at view offset ${pageSize + 5} `),
    );
    assert.match(r.stderr, /another process truncated the region/);
  });
});

test('signals that are not about cowshm memory keep their default action and say nothing', () => {
  const r = runNode(`
    require('cowshm');
    process.kill(process.pid, 'SIGSEGV');
    setTimeout(() => console.log('still alive'), 20000);`);
  assert.equal(r.signal, 'SIGSEGV');
  assert.equal(r.stdout, '');
  assert.doesNotMatch(r.stderr, /cowshm/);
});

test('faults that belong to V8 still reach it: a WebAssembly out-of-bounds load is a RuntimeError', () => {
  // (module (memory 1) (func (export "load") (param i32) (result i32) local.get 0 i32.load))
  const wasm = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x03, 0x02,
    0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x08, 0x01, 0x04, 0x6c, 0x6f, 0x61, 0x64, 0x00, 0x00, 0x0a,
    0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x28, 0x02, 0x00, 0x0b,
  ];
  const r = runNode(`
    const { Region } = require('cowshm');
    const region = Region.create({ size: 4096 });
    const view = region.map({ access: 'read' }); // cowshm's handler is installed and has a range
    const load = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(${JSON.stringify(wasm)}))).exports.load;
    console.log(load(8));
    try { load(70000); console.log('no trap'); } catch (e) { console.log(e.constructor.name + ': ' + e.message); }
    console.log(new Uint8Array(view.buffer)[0]);`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '0\nRuntimeError: memory access out of bounds\n0\n');
});
