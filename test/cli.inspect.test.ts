import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { isRoot, packageRoot, runCli, uniqueName } from './helpers';

const PAGES = 256;
const K = 10;
/** A process holding a region and a cow view of it with K pages written; it exits when its stdin closes. */
async function holder(name: string) {
  const script = `
    const { Region, sum, pageSize } = require(${JSON.stringify(packageRoot)});
    const r = Region.create({ name: ${JSON.stringify(name)}, size: ${PAGES} * pageSize });
    const shared = r.map();
    r.unlink(); // the mappings live on; nothing is left behind if this process is killed
    new Int32Array(shared.buffer).fill(1);
    const cowView = r.map({ access: 'cow' });
    const cow = new Int32Array(cowView.buffer);
    sum(cow);
    for (let p = 0; p < ${K}; p++) cow[p * 2 * pageSize / 4] = 2;
    console.log(JSON.stringify({ shared: shared.address, cow: cowView.address }));
    process.stdin.resume();
    process.stdin.on('end', () => r.close());`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<Buffer>((resolve, reject) => {
    child.stdout.once('data', resolve);
    child.once('exit', (code, signal) => reject(new Error(`the holding process exited early (${code ?? signal})`)));
  });
  return { child, ...(JSON.parse(line.toString()) as { shared: number; cow: number }) };
}

async function stop(child: ReturnType<typeof spawn>): Promise<void> {
  child.stdin?.end();
  if (child.exitCode === null) await once(child, 'exit');
}

test('inspect PID --json: the figures of both mappings of the held region', async () => {
  const name = uniqueName('inspect');
  const h = await holder(name);
  try {
    const r = runCli(['inspect', String(h.child.pid), '--filter', name, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { pid: number; mappings: Array<{ mapping: Record<string, unknown>; pages?: unknown }> };
    assert.equal(out.pid, h.child.pid);
    assert.equal(out.mappings.length, 2);
    const byStart = new Map(out.mappings.map((m) => [m.mapping['start'], m.mapping]));
    const cow = byStart.get(h.cow);
    const shared = byStart.get(h.shared);
    assert.ok(cow && shared);
    assert.equal(cow['perms'], 'rw-p');
    assert.equal(shared['perms'], 'rw-s');
    assert.equal(cow['path'], `/dev/shm/${name}`);
    assert.equal(cow['deleted'], true);
    assert.equal(cow['rss'], PAGES * 4096);
    assert.equal(cow['anonymous'], K * 4096);
    assert.equal(cow['privateDirty'], K * 4096);
    assert.equal(cow['pss'], K * 4096 + ((PAGES - K) * 4096) / 2);
    assert.equal(shared['anonymous'], 0);
    assert.equal(out.mappings[0]?.pages, undefined, 'no page walk without --pages');
  } finally {
    await stop(h.child);
  }
});

test('inspect PID --pages: page counts, and frames shared between the two mappings', async () => {
  const name = uniqueName('inspect-pages');
  const h = await holder(name);
  try {
    const r = runCli(['inspect', String(h.child.pid), '--filter', name, '--pages', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { mappings: Array<{ mapping: { start: number }; pages: Record<string, unknown> }> };
    const cow = out.mappings.find((m) => m.mapping.start === h.cow)?.pages;
    assert.ok(cow);
    assert.equal(cow['pages'], PAGES);
    assert.equal(cow['present'], PAGES);
    assert.equal(cow['anonymous'], K);
    assert.equal(cow['file'], PAGES - K);
    assert.equal(cow['exclusive'], K);
    if (isRoot) {
      assert.deepEqual(cow['mapCounts'], { 1: K, 2: PAGES - K });
      assert.deepEqual(cow['sharedWith'], [{ start: h.shared, perms: 'rw-s', frames: PAGES - K }]);
    } else {
      assert.equal(cow['sharedWith'], null);
      assert.match(String(cow['framesUnavailable']), /CAP_SYS_ADMIN/);
    }

    const text = runCli(['inspect', String(h.child.pid), '--filter', name, '--pages']);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^PID ${h.child.pid}: `));
    assert.match(text.stdout, new RegExp(`${h.cow.toString(16)}  rw-p  1 MiB  1 MiB .* 40 KiB  +0  /dev/shm/${name} \\(deleted\\)`));
    assert.match(text.stdout, /total .* 2 mappings/);
    assert.match(text.stdout, /Pages \(from \/proc\/\d+\/pagemap/);
    if (isRoot) assert.match(text.stdout, new RegExp(`246 with ${h.shared.toString(16)} \\(rw-s\\)`));
    if (isRoot) assert.match(text.stdout, / 246×2 10×1 /, "the most common map counts first");
  } finally {
    await stop(h.child);
  }
});

test('inspect: readable errors for a missing PID, an unreadable one, and bad usage', () => {
  const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
  let r = runCli(['inspect', String(dead)]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`^cowshm inspect: ESRCH: .*there is no process with PID ${dead}`));
  r = runCli(['inspect']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /PID is missing/);
  r = runCli(['inspect', '12x']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /PID must be a positive integer \(received '12x'\)/);
  r = runCli(['inspect', '1', '--bogus']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown option --bogus/);
  if (isRoot) {
    r = runCli(['inspect', String(process.pid)], { uid: 65534, gid: 65534 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^cowshm inspect: EACCES: .*user 65534 may not read its smaps: run as that user or as root/);
  }
});

test('inspect --filter that matches nothing says so', () => {
  const r = runCli(['inspect', String(process.pid), '--filter', 'no-such-mapping-anywhere']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /no mapping matches 'no-such-mapping-anywhere'/);
});

/** A process that has exited but is not reaped (a zombie): `sleep 0 &` under a shell that then execs a sleep that never waits. */
async function zombie(): Promise<{ pid: number; stop: () => void }> {
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = Number((await once(parent.stdout, 'data'))[0].toString().trim());
  for (let i = 0; i < 500; i++) {
    const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout;
    if (/\) Z /.test(stat)) return { pid, stop: () => parent.kill('SIGKILL') };
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  parent.kill('SIGKILL');
  throw new Error(`process ${pid} never became a zombie`);
}

test('inspect of a process that has exited says so (ESRCH), not that the kernel lacks a file', async () => {
  const z = await zombie();
  try {
    const why = `process ${z.pid} has exited: it is a zombie, not yet reaped by its parent; its memory is gone`;
    const r = runCli(['inspect', String(z.pid)]);
    assert.equal(r.status, 1, r.stdout);
    assert.equal(r.stderr, `cowshm inspect: ESRCH: no such process, read '/proc/${z.pid}/smaps' (${why})\n`);
    // What the pages of a mapping read when the process exits between smaps and pagemap.
    const { memory } = require(packageRoot) as typeof import('cowshm');
    assert.throws(() => memory.pages({ address: 0x400000, byteLength: 4096 }, { pid: z.pid }), {
      code: 'ESRCH', syscall: 'open', message: `ESRCH: no such process, open '/proc/${z.pid}/pagemap' (${why})`,
    });
    assert.throws(() => memory.rollup(z.pid), { code: 'ESRCH', message: new RegExp(`\\(${why}\\)$`) });
  } finally {
    z.stop();
  }
});
