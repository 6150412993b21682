import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, sum, pageSize } from 'cowshm';
import { packageRoot, tempDir, rmTemp } from './helpers';

// The addon's functions, loaded the way the package loads them. Calling
// them directly reaches the refusals that the TypeScript checks in front of
// them normally make unreachable.
interface Internals {
  native: {
    viewBuffer(id: number): ArrayBuffer;
    address(id: number): number;
    madvise(id: number, offset: number, length: number, advice: number): void;
    mapView(fd: number, offset: number, length: number, access: number, label: string, owner: number, dev: number, ino: number, populate: number): number;
    snapshotStats(id: number): [number, number];
    fstatInto(fd: number, out: unknown): void;
    sum(array: unknown): unknown;
    hashFile(fd: number, offset: number, length: number): string;
  };
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { native } = require(path.join(packageRoot, 'dist', 'native.js')) as Internals;
const { errorClasses } = require(path.join(packageRoot, 'dist', 'errors.js')) as {
  errorClasses: Record<string, ErrorConstructor>;
};

// The ids the addon files mappings under (internal, so not in the .d.ts).
const idOf = (x: object): number => (x as { _id: number })._id;
const ownerOf = (r: Region): number => (r as unknown as { _owner: number })._owner;

type Trigger = [where: 'native' | 'js', what: string, run: () => unknown];

function triggers(r: Region, dir: string): Record<string, Trigger[]> {
  const closedView = r.map();
  const closedId = idOf(closedView);
  void closedView.buffer;
  closedView.close();
  const released = r.snapshot();
  const releasedId = idOf(released);
  released.release();
  const open = r.map();
  const short = path.join(dir, 'short');
  fs.writeFileSync(short, 'x');
  const fd = fs.openSync(short, 'r');
  return {
    ERR_COWSHM_CLOSED: [
      ['native', 'viewBuffer() of a closed view', () => native.viewBuffer(closedId)],
      ['native', 'address() of a closed view', () => native.address(closedId)],
      ['native', 'snapshotStats() of a released snapshot', () => native.snapshotStats(releasedId)],
      ['js', 'view.buffer after close()', () => closedView.buffer],
      ['js', 'snapshot.buffer after release()', () => released.buffer],
    ],
    ERR_OUT_OF_RANGE: [
      ['native', 'madvise() past the mapping', () => native.madvise(idOf(open), 64 * pageSize, pageSize, 0)],
      ['native', 'mapView() at an unaligned offset', () => native.mapView(r.fd, 1, pageSize, 0, 'x', ownerOf(r), r.dev, r.ino, 0)],
      ['js', 'map() at a negative offset', () => r.map({ offset: -pageSize })],
      ['js', 'map() past the end', () => r.map({ length: 1e9 })],
    ],
    ERR_INVALID_ARG_TYPE: [
      ['native', 'sum() of a string', () => native.sum('x')],
      ['native', 'fstatInto() without a Float64Array', () => native.fstatInto(r.fd, [])],
      ['js', 'sum() of a string', () => sum('x' as unknown as Uint8Array)],
      ['js', 'create() with a string size', () => Region.create({ size: '1' as unknown as number })],
    ],
    ERR_COWSHM_CHECKPOINT_TRUNCATED: [
      ['native', 'hashFile() past the end of a file', () => {
        try {
          return native.hashFile(fd, 0, 4096);
        } finally {
          fs.closeSync(fd);
        }
      }],
    ],
  };
}

test('a code has one class, whether the addon or TypeScript refused', () => {
  const dir = tempDir('classes');
  const r = Region.create({ size: 16 * pageSize });
  try {
    for (const [code, list] of Object.entries(triggers(r, dir))) {
      const expected = errorClasses[code] ?? Error;
      for (const [where, what, run] of list) {
        let caught: unknown;
        try {
          run();
        } catch (err) {
          caught = err;
        }
        const label = `${code} from ${where}: ${what}`;
        assert.ok(caught instanceof Error, `${label}: nothing was thrown`);
        assert.equal((caught as Error & { code?: string }).code, code, label);
        assert.equal(Object.getPrototypeOf(caught), expected.prototype, `${label}: a ${caught.constructor.name}, not a ${expected.name}`);
      }
    }
  } finally {
    r.close();
    rmTemp(dir);
  }
});

test('the class table matches the documented one', () => {
  const doc = fs.readFileSync(path.join(packageRoot, 'docs', 'api.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `([A-Z_]+)` \| `(\w+)` \|/gm)].map((m) => [m[1] as string, m[2] as string] as const);
  assert.ok(rows.length >= 10, 'docs/api.md has a table of error codes');
  for (const [code, name] of rows) assert.equal((errorClasses[code] ?? Error).name, name, `docs/api.md: ${code}`);
  for (const code of Object.keys(errorClasses))
    assert.ok(rows.some(([c]) => c === code), `${code} is missing from the table in docs/api.md`);
});
