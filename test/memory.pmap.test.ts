import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Region, memory, pageSize, sum } from 'cowshm';
import * as path from 'node:path';
import { packageRoot, uniqueName } from './helpers';

const PMAP = '/usr/bin/pmap';

/** The row of `pmap -XX PID` for the mapping at `address`, by column name, in kB. */
function pmapRow(pid: number, address: number): Record<string, number> {
  const out = execFileSync(PMAP, ['-XX', String(pid)], { encoding: 'utf8' }).split('\n');
  const header = (out[1] as string).trim().split(/\s+/);
  // VmFlags and Mapping hold spaces: only the columns before them are read.
  const numeric = header.indexOf('VmFlags');
  assert.ok(numeric > 5, `pmap -XX header: ${out[1]}`);
  const row = out.find((l) => l.trim().split(/\s+/)[0] === address.toString(16));
  assert.ok(row, `pmap lists ${address.toString(16)}`);
  const cells = row.trim().split(/\s+/);
  const figures: Record<string, number> = {};
  for (let i = 5; i < numeric; i++) figures[header[i] as string] = Number(cells[i]);
  return figures;
}

// The source's own table of named figures, so a figure added there is compared here too.
const { NAMES: COMPARED } = require(path.join(packageRoot, 'dist', 'memory', 'smaps')) as {
  NAMES: ReadonlyArray<readonly [keyof Omit<memory.Figures, 'fields'>, string]>;
};

function compare(view: memory.Mapped, label: string): void {
  // Nothing in this process touches the views while pmap runs (execFileSync
  // blocks the only thread that uses them): the figures before and after must
  // agree, and pmap's in between.
  const before = memory.usage(view);
  const row = pmapRow(process.pid, view.address);
  const after = memory.usage(view);
  assert.deepEqual(after, before, `${label}: the mapping changed while pmap read it`);
  assert.ok(COMPARED.length >= 10, 'the table of named figures');
  for (const [name, column] of COMPARED) {
    assert.ok(column in row, `pmap -XX prints ${column}`);
    assert.equal(before[name], (row[column] as number) * 1024, `${label} ${column}`);
  }
  // And every other column pmap prints that smaps has in kB.
  for (const [column, kB] of Object.entries(row)) {
    if (column in before.fields) assert.equal(before.fields[column], kB * 1024, `${label} ${column}`);
  }
}

test('figures equal pmap -XX for the same mappings at the same moment', { skip: !fs.existsSync(PMAP) && `${PMAP} is not installed` }, () => {
  const size = 256 * pageSize;
  const r = Region.create({ name: uniqueName('pmap'), size });
  try {
    const shared = r.map();
    const a = new Int32Array(shared.buffer);
    for (let i = 0; i < a.length; i++) a[i] = i;
    const cowView = r.map({ access: 'cow' });
    const cow = new Int32Array(cowView.buffer);
    sum(cow.subarray(0, cow.length / 2)); // half the pages read: shared
    for (let p = 0; p < 10; p++) cow[(p * 3 * pageSize) / 4] = -1; // 10 pages copied
    const partial = r.map({ access: 'read', offset: 64 * pageSize, length: 32 * pageSize });
    sum(new Int32Array(partial.buffer));
    compare(shared, 'shared view');
    compare(cowView, 'cow view');
    compare(partial, 'read view');
    // The figures are worth comparing: they are not all zero or all equal.
    const u = memory.usage(cowView);
    assert.equal(u.anonymous, 10 * pageSize);
    assert.ok(u.rss > u.anonymous && u.pss < u.rss);
  } finally {
    r.unlink();
    r.close();
  }
});
