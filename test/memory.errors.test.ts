import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { memory, pageSize } from 'cowshm';
import { isRoot, runNode } from './helpers';

function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '0']);
  assert.equal(child.status, 0);
  return child.pid as number;
}

test('a PID that does not exist: ESRCH, saying so', () => {
  const pid = deadPid();
  for (const call of [() => memory.smaps(pid), () => memory.rollup(pid), () => memory.pages({ address: pageSize, byteLength: 1 }, { pid })]) {
    assert.throws(call, (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ESRCH');
      assert.equal(err.errno, -3);
      assert.match(err.message, new RegExp(`there is no process with PID ${pid}`));
      assert.match(err.path ?? '', new RegExp(`^/proc/${pid}/`));
      return true;
    });
  }
});

test('bad PIDs are argument errors', () => {
  assert.throws(() => memory.smaps(0), { name: 'RangeError', message: /"pid" argument must be an integer from 1 to 2147483647/ });
  assert.throws(() => memory.smaps(-5), { name: 'RangeError' });
  assert.throws(() => memory.smaps('1' as never), { name: 'TypeError', message: /"pid" argument must be a number/ });
  assert.throws(() => memory.rollup(1.5), { name: 'RangeError' });
});

test('another user\'s process: EACCES with a readable message', { skip: !isRoot && 'needs root to run a child as another user' }, () => {
  const script = `
    const { memory } = require('cowshm');
    const out = {};
    for (const [name, fn] of [['smaps', () => memory.smaps(${process.pid})], ['rollup', () => memory.rollup(${process.pid})]]) {
      try { fn(); out[name] = 'no error'; } catch (e) { out[name] = { code: e.code, message: e.message }; }
    }
    console.log(JSON.stringify(out));`;
  const child = runNode(script, { uid: 65534, gid: 65534 });
  assert.equal(child.status, 0, child.stderr);
  const out = JSON.parse(child.stdout) as Record<string, { code: string; message: string }>;
  for (const name of ['smaps', 'rollup']) {
    const e = out[name];
    assert.ok(e && typeof e === 'object', `${name}: ${JSON.stringify(e)}`);
    assert.equal(e.code, 'EACCES');
    assert.match(e.message, new RegExp(`process ${process.pid} belongs to uid 0; user 65534 may not read`));
    assert.match(e.message, /run as that user or as root/);
  }
});
