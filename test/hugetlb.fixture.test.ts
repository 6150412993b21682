// The hugetlb pool fixture of scripts/test.js: a run of the suite that starts
// while a test of another run holds the hugetlb test lock must not change the
// pool under it (that test may be comparing free or total counts).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { packageRoot } from './helpers';
import { MiB2, hugeLock, hugePool, poolLock } from './hugetlb-helpers';

const pool = hugePool(MiB2);
const total = (): number => Number(fs.readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', 'utf8'));

test('a second run of the suite waits for the hugetlb test lock before it changes the pool, and gives its pages back', { skip: pool.skip }, async () => {
  const lock = await hugeLock();
  let child: ReturnType<typeof spawn> | undefined;
  try {
    const before = total();
    const env: NodeJS.ProcessEnv = { ...process.env };
    // A run of its own (not a nested one, which leaves the pool to the outer run), reporting nowhere.
    delete env['COWSHM_TEST_HUGETLB'];
    delete env['NODE_TEST_CONTEXT'];
    const run = spawn(process.execPath, [path.join('scripts', 'test.js'), 'validate.test'], { cwd: packageRoot, env, stdio: ['ignore', 'ignore', 'pipe'] });
    child = run;
    const exited = once(run, 'exit') as Promise<[number | null, string | null]>;
    let err = '';
    run.stderr.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      run.stderr.on('data', (d: string) => {
        err += d;
        if (err.includes('waiting for the hugetlb test lock')) resolve();
      });
      run.once('exit', () => reject(new Error(`the other run ended without waiting for the lock:\n${err}`)));
    });
    assert.match(err, new RegExp(`held by pid ${process.pid}, to change the pool`));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(run.exitCode, null, 'still waiting');
    assert.equal(total(), before, 'the pool is unchanged while this test holds the lock');
    lock[Symbol.dispose]();
    const [code] = await exited;
    assert.equal(code, 0, err);
    assert.equal(fs.existsSync(path.join(poolLock().STATE, String(run.pid))), false, 'its record is gone: it gave its pages back');
  } finally {
    lock[Symbol.dispose]();
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
