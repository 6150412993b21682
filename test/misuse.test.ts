import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region, View, sum, pageSize, type RegionHandle } from 'cowshm';
import { uniqueName, shmExists } from './helpers';

/** Every member of a prototype (methods and getters), by name. */
function members(proto: object): Array<string | symbol> {
  return [...Object.getOwnPropertyNames(proto), ...Object.getOwnPropertySymbols(proto)].filter((k) => k !== 'constructor');
}

function use(target: object, key: string | symbol): unknown {
  const proto = Object.getPrototypeOf(target) as object;
  const desc = Object.getOwnPropertyDescriptor(proto, key) as PropertyDescriptor;
  if (desc.get) return desc.get.call(target);
  return (desc.value as (...args: unknown[]) => unknown).call(target);
}

const closed = (err: Error & { code?: string }): boolean => {
  assert.ok(err instanceof TypeError, String(err));
  assert.equal(err.code, 'ERR_COWSHM_CLOSED');
  assert.match(err.message, / is closed$/);
  return true;
};

// Members that stay usable after close(): closing and unlinking again, and
// what a region or view is (for messages and bookkeeping).
const regionAfterClose = new Set<string | symbol>(['size', 'closed', '_owner', 'unlink', 'close', 'toString', Symbol.dispose]);
const viewAfterClose = new Set<string | symbol>(['closed', 'close', Symbol.dispose]);

test('every other Region member throws ERR_COWSHM_CLOSED after close()', () => {
  const name = uniqueName('misuse');
  const r = Region.create({ name, size: pageSize });
  r.close();
  const checked: Array<string | symbol> = [];
  for (const key of members(Region.prototype)) {
    if (regionAfterClose.has(key)) {
      use(r, key);
      continue;
    }
    assert.throws(() => use(r, key), closed, `region.${String(key)}`);
    checked.push(key);
  }
  assert.ok(['map', 'handle', 'flush', 'fd'].every((k) => checked.includes(k)), String(checked.map(String)));
  assert.throws(() => r.map({ offset: 'not even valid' as never }), closed); // closed is reported first
  assert.equal(shmExists(name), false); // unlink() after close still worked
  for (const key of ['kind', 'name', 'path', 'readOnly', 'dev', 'ino'] as const) assert.notEqual(r[key], undefined);
});

test('every other View member throws ERR_COWSHM_CLOSED after close(), and after region.close()', () => {
  for (const how of ['view', 'region'] as const) {
    const r = Region.create({ size: pageSize });
    const v = r.map({ access: 'cow' });
    if (how === 'view') v.close();
    r.close();
    const checked: Array<string | symbol> = [];
    for (const key of members(View.prototype)) {
      if (viewAfterClose.has(key)) {
        use(v, key);
        continue;
      }
      assert.throws(() => use(v, key), closed, `view.${String(key)} (${how} closed)`);
      checked.push(key);
    }
    assert.ok(['buffer', 'address', 'flush', 'revert'].every((k) => checked.includes(k)));
    assert.equal(v.byteLength, pageSize);
    assert.equal(v.access, 'cow');
  }
});

type Case = [label: string, call: () => unknown, type: ErrorConstructor, message: RegExp, code?: string];

function expectAll(cases: Case[]): void {
  for (const [label, call, type, message, code] of cases) {
    assert.throws(call, (err: Error & { code?: string }) => {
      assert.ok(err instanceof type, `${label}: ${String(err)} should be a ${type.name}`);
      assert.equal(err.code, code ?? (type === TypeError ? 'ERR_INVALID_ARG_TYPE' : 'ERR_OUT_OF_RANGE'), label);
      assert.match(err.message, message, label);
      return true;
    });
  }
}

test('Region.create: every option checked by type and range', () => {
  expectAll([
    ['null', () => Region.create(null as never), TypeError, /The "options" argument must be an object\. Received null/],
    ['array', () => Region.create([] as never), TypeError, /"options" argument must be an object\. Received an instance of Array/],
    ['size bigint', () => Region.create({ size: 10n as never }), TypeError, /"size" option must be a number\. Received type bigint \(10n\)/],
    ['size Infinity', () => Region.create({ size: Infinity }), RangeError, /"size" option must be a positive integer\. Received Infinity/],
    ['size too big', () => Region.create({ size: 2 ** 53 }), RangeError, /"size" option must be a positive integer/],
    ['name null', () => Region.create({ size: 1, name: null as never }), TypeError, /"name" option must be a string\. Received null/],
    ['name NUL', () => Region.create({ size: 1, name: 'a\0b' }), TypeError, /"name" option must be a string without null bytes/, 'ERR_INVALID_ARG_VALUE'],
    ['name multibyte too long', () => Region.create({ size: 1, name: 'é'.repeat(128) }), RangeError, /at most 255 bytes/],
    ['mode string', () => Region.create({ size: 1, mode: '600' as never }), TypeError, /"mode" option must be a number\. Received type string \('600'\)/],
    ['mode negative', () => Region.create({ size: 1, mode: -1 }), RangeError, /"mode" option must be an integer from 0 to 511\. Received -1/],
    ['reserve number', () => Region.create({ size: 1, reserve: 1 as never }), TypeError, /"reserve" option must be a boolean\. Received 1/],
    ['hugePages string', () => Region.create({ size: 1, hugePages: 'yes' as never }), TypeError, /"hugePages" option must be a boolean/],
  ]);
});

test('Region.open: name and options checked', () => {
  expectAll([
    ['no name', () => Region.open(undefined as never), TypeError, /The "name" argument must be a string\. Received undefined/],
    ['slash', () => Region.open('/x'), RangeError, /"name" argument must be a name without '\/'/],
    ['empty', () => Region.open(''), RangeError, /"name" argument must be a non-empty string/],
    ['options string', () => Region.open('x', 'r' as never), TypeError, /"options" argument must be an object\. Received type string \('r'\)/],
    ['readOnly', () => Region.open('x', { readOnly: 'true' as never }), TypeError, /"readOnly" option must be a boolean/],
    ['allowForeignOwner', () => Region.open('x', { allowForeignOwner: 0 as never }), TypeError, /"allowForeignOwner" option must be a boolean\. Received 0/],
  ]);
});

test('Region.openFile: path and options checked', () => {
  expectAll([
    ['path number', () => Region.openFile(3 as never), TypeError, /The "path" argument must be a string\. Received 3/],
    ['path empty', () => Region.openFile(''), RangeError, /"path" argument must be a non-empty string/],
    ['options', () => Region.openFile('/tmp/x', 5 as never), TypeError, /"options" argument must be an object/],
    ['size', () => Region.openFile('/tmp/x', { size: -5 }), RangeError, /"size" option must be a positive integer\. Received -5/],
    ['create', () => Region.openFile('/tmp/x', { create: 'yes' as never }), TypeError, /"create" option must be a boolean/],
    ['readOnly', () => Region.openFile('/tmp/x', { readOnly: null as never }), TypeError, /"readOnly" option must be a boolean\. Received null/],
    ['mode', () => Region.openFile('/tmp/x', { mode: 0o7777 }), RangeError, /"mode" option must be an integer from 0 to 511/],
    ['reserve', () => Region.openFile('/tmp/x', { reserve: [] as never }), TypeError, /"reserve" option must be a boolean/],
    ['create + readOnly', () => Region.openFile('/tmp/x', { create: true, readOnly: true }), RangeError, /"create" option must be false when "readOnly" is true/],
  ]);
});

test('region.map: every option checked', () => {
  const r = Region.create({ size: 2 * pageSize });
  try {
    expectAll([
      ['options', () => r.map('all' as never), TypeError, /"options" argument must be an object/],
      ['offset string', () => r.map({ offset: '0' as never }), TypeError, /"offset" option must be a number\. Received type string \('0'\)/],
      ['offset NaN', () => r.map({ offset: NaN }), RangeError, /"offset" option must be a non-negative integer\. Received NaN/],
      ['length string', () => r.map({ length: '1' as never }), TypeError, /"length" option must be a number/],
      ['length negative', () => r.map({ length: -1 }), RangeError, /"length" option must be a positive integer\. Received -1/],
      ['access number', () => r.map({ access: 1 as never }), TypeError, /"access" option must be one of 'read', 'write', 'cow'\. Received 1/],
      ['access unknown', () => r.map({ access: 'snapshot' as never }), RangeError, /"access" option must be one of 'read', 'write', 'cow'\. Received type string \('snapshot'\)/],
      ['populate', () => r.map({ populate: 'yes' as never }), TypeError, /"populate" option must be a boolean/],
    ]);
  } finally {
    r.close();
  }
});

test('view.flush and view.revert: offset and length checked', () => {
  const r = Region.create({ size: 2 * pageSize });
  try {
    const v = r.map({ access: 'cow' });
    expectAll([
      ['flush offset type', () => v.flush('0' as never), TypeError, /"offset" argument must be a number/],
      ['flush unaligned', () => v.flush(10), RangeError, new RegExp(`"offset" argument must be a multiple of the page size \\(${pageSize}\\)\\. Received 10`)],
      ['flush past end', () => v.flush(3 * pageSize), RangeError, new RegExp(`"offset" argument must be an integer from 0 to ${2 * pageSize}`)],
      ['revert length', () => v.revert(0, 2 * pageSize + 1), RangeError, new RegExp(`"length" argument must be an integer from 0 to ${2 * pageSize}\\. Received ${2 * pageSize + 1}`)],
    ]);
    assert.throws(() => r.map().revert(), { code: 'ERR_COWSHM_NOT_COW' });
  } finally {
    r.close();
  }
});

test('Region.fromHandle: the handle and options checked', () => {
  const r = Region.create({ size: pageSize });
  try {
    const h = r.handle();
    const bad = (patch: Partial<Record<keyof RegionHandle, unknown>>): RegionHandle => ({ ...h, ...patch }) as RegionHandle;
    expectAll([
      ['undefined', () => Region.fromHandle(undefined as never), TypeError, /The "handle" argument must be a RegionHandle \(an object from region\.handle\(\)\)\. Received undefined/],
      ['string', () => Region.fromHandle('h' as never), TypeError, /"handle" argument must be a RegionHandle/],
      ['kind missing', () => Region.fromHandle(bad({ kind: undefined })), TypeError, /handle's "kind" must be one of 'shm', 'memfd', 'file'\. Received undefined/],
      ['kind unknown', () => Region.fromHandle(bad({ kind: 'pipe' })), RangeError, /handle's "kind" must be one of/],
      ['pid', () => Region.fromHandle(bad({ pid: 0 })), RangeError, /handle's "pid" must be a positive integer\. Received 0/],
      ['fd', () => Region.fromHandle(bad({ fd: '3' })), TypeError, /handle's "fd" must be a number/],
      ['dev', () => Region.fromHandle(bad({ dev: -1 })), RangeError, /handle's "dev" must be a non-negative integer/],
      ['ino', () => Region.fromHandle(bad({ ino: null })), TypeError, /handle's "ino" must be a number\. Received null/],
      ['readOnly', () => Region.fromHandle(bad({ readOnly: 'no' })), TypeError, /handle's "readOnly" must be a boolean/],
      ['shm name', () => Region.fromHandle(bad({ kind: 'shm', name: 'a/b' })), RangeError, /handle's "name" must be a name without '\/'/],
      ['file path', () => Region.fromHandle(bad({ kind: 'file', path: 7 })), TypeError, /handle's "path" must be a string\. Received 7/],
      ['options', () => Region.fromHandle(h, 'ro' as never), TypeError, /"options" argument must be an object/],
      ['options.readOnly', () => Region.fromHandle(h, { readOnly: 1 as never }), TypeError, /"readOnly" option must be a boolean/],
    ]);
  } finally {
    r.close();
  }
});

test('sum: only TypedArrays', () => {
  expectAll([
    ['array', () => sum([1, 2] as never), TypeError, /The "array" argument must be a TypedArray\. Received an instance of Array/],
    ['DataView', () => sum(new DataView(new ArrayBuffer(4)) as never), TypeError, /"array" argument must be a TypedArray\. Received an instance of DataView/],
    ['undefined', () => sum(undefined as never), TypeError, /Received undefined/],
  ]);
});
