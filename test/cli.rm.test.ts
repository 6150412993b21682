import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { spawn, spawnSync } from 'node:child_process';
import { Region, removeSegment } from 'cowshm';
import { runCli, uniqueName, shmExists, isRoot, packageRoot, type NodeResult } from './helpers';

const bin = path.join(packageRoot, 'bin', 'cowshm.js');

// --orphans removes only while every process can be inspected; in a new pid
// namespace (with its own /proc) this process and its children are the only
// ones, and holders outside it are seen only by their lock.
const pidNamespace = isRoot && spawnSync('unshare', ['-pf', '--mount-proc', 'true']).status === 0;
const noPidNamespace = pidNamespace ? false : 'needs root and unshare(1) to run cowshm rm in a pid namespace of its own';
const unshare = (args: string[]): string[] => ['-pf', '--mount-proc', process.execPath, bin, ...args];

/** `cowshm rm ARGS` alone in a pid namespace: every process it sees can be inspected. */
function rmAlone(args: string[]): NodeResult {
  const r = spawnSync('unshare', unshare(['rm', ...args]), { cwd: packageRoot, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** A process that holds `name` open with plain fs.openSync (not cowshm), until killed. */
function plainHolder(name: string, uid?: number): Promise<{ pid: number; stop: () => void }> {
  const child = spawn(process.execPath, ['-e', `require('fs').openSync('/dev/shm/${name}', 'r'); console.log('open'); setInterval(() => {}, 1e6);`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    ...(uid !== undefined ? { uid, gid: uid } : {}),
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the holder exited (${code})`)));
    child.stdout.once('data', () => resolve({ pid: child.pid as number, stop: () => child.kill('SIGKILL') }));
  });
}

/** A segment nobody holds. */
function orphan(tag: string): string {
  const name = uniqueName(tag);
  Region.create({ name, size: 4096 }).close();
  return name;
}

function cleanup(...names: string[]): void {
  for (const name of names) fs.rmSync(`/dev/shm/${name}`, { force: true });
}

test('rm NAME...: removes each, says so, exit 0', () => {
  const a = orphan('rm-a');
  const b = orphan('rm-b');
  try {
    const r = runCli(['rm', a, b]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `removed /dev/shm/${a}\nremoved /dev/shm/${b}\n`);
    assert.equal(shmExists(a), false);
    assert.equal(shmExists(b), false);
  } finally {
    cleanup(a, b);
  }
});

test('a name may be given as its /dev/shm path', () => {
  const a = orphan('rm-path');
  try {
    const r = runCli(['rm', `/dev/shm/${a}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `removed /dev/shm/${a}\n`);
    assert.equal(shmExists(a), false);
  } finally {
    cleanup(a);
  }
});

test('rm removes a segment even while it is held; the holder keeps its memory', () => {
  const name = uniqueName('rm-held');
  const region = Region.create({ name, size: 4096 });
  try {
    const bytes = new Uint8Array(region.map().buffer);
    bytes[0] = 5;
    const r = runCli(['rm', name]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(shmExists(name), false);
    assert.equal(bytes[0], 5);
  } finally {
    region.close();
    cleanup(name);
  }
});

test('errors are reported per name and the others are still removed; exit 1', () => {
  const missing = uniqueName('rm-missing');
  const present = orphan('rm-present');
  try {
    const r = runCli(['rm', missing, present, 'bad/name']);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, `removed /dev/shm/${present}\n`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    assert.equal(lines[0], `cowshm rm: ENOENT: no such file or directory, shm_unlink '${missing}'`);
    assert.match(lines[1] ?? '', /^cowshm rm: The "name" argument must be a name without '\/'/);
    assert.equal(shmExists(present), false);
  } finally {
    cleanup(present);
  }
});

test('rm with nothing to remove is a usage error (exit 2)', () => {
  const r = runCli(['rm']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^cowshm rm: name the segments to remove, or use --orphans\nRun 'cowshm rm --help' for its usage\.\n$/);
});

test('rm --orphans NAME...: removes the unheld ones, refuses the held ones (exit 1)', () => {
  const free = orphan('rm-orphan');
  const heldName = uniqueName('rm-inuse');
  const held = Region.create({ name: heldName, size: 4096 });
  held.map();
  try {
    const r = runCli(['rm', '--orphans', free, heldName]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^cowshm rm: ${heldName} is held by pid ${process.pid} \\(node\\): not removed$`, 'm'));
    assert.equal(shmExists(heldName), true);
    // Where some process can not be inspected (here, or as any user but root) the free one stays too.
    if (r.stdout === '') assert.match(r.stderr, new RegExp(`^cowshm rm: /dev/shm/${free} is not held by any cowshm process, but /proc of \\d+ process(es)? could not be read \\(pid [\\d, .]+\\) and might hold it: not removed`, 'm'));
    else assert.equal(r.stdout, `removed /dev/shm/${free}\n`);
    assert.equal(shmExists(free), r.stdout === '');
  } finally {
    held.unlink();
    held.close();
    cleanup(free);
  }
});

test('rm --orphans in a pid namespace: a cowshm holder outside it is seen by its lock', { skip: noPidNamespace }, () => {
  const free = orphan('rm-ns-orphan');
  const heldName = uniqueName('rm-ns-inuse');
  const held = Region.create({ name: heldName, size: 4096 });
  // Only a mapping left: the lock lives as long as the open file description, which the mapping keeps.
  const view = Region.open(heldName).map();
  held.close();
  try {
    const r = rmAlone(['--orphans', free, heldName]);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, `removed /dev/shm/${free}\n`);
    assert.match(r.stderr, new RegExp(`^cowshm rm: ${heldName} is held by a cowshm process not visible in /proc here \\(it holds the segment's lock\\): not removed$`, 'm'));
    assert.equal(shmExists(free), false);
    assert.equal(shmExists(heldName), true);
    // --dry-run: a real sweep here would remove every unlocked segment on the machine that only
    // processes outside this pid namespace hold (other test files' too).
    const all = rmAlone(['--orphans', '--dry-run']);
    assert.equal(all.status, 0, all.stderr);
    assert.doesNotMatch(all.stdout, new RegExp(heldName));
    assert.equal(shmExists(heldName), true);
    assert.equal(view.byteLength, 4096);
  } finally {
    view.close();
    cleanup(free, heldName);
  }
});

test('rm --orphans refuses a segment another program holds open, seen in /proc', async () => {
  const name = orphan('rm-plain');
  const holder = await plainHolder(name);
  try {
    const r = runCli(['rm', '--orphans', name]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^cowshm rm: ${name} is held by pid ${holder.pid} \\(node\\): not removed$`, 'm'));
    assert.equal(shmExists(name), true);
    // The library function checks the same, under the segment's exclusive lock.
    assert.throws(() => removeSegment(name, undefined, { ifOrphan: true }), (err: Error & Record<string, unknown>) => {
      assert.equal(err.code, 'ERR_COWSHM_SEGMENT_HELD');
      assert.deepEqual((err['holders'] as Array<{ pid: number }>).map((h) => h.pid), [holder.pid]);
      assert.equal(err['locked'], false);
      assert.equal(err['path'], `/dev/shm/${name}`);
      return true;
    });
    assert.equal(shmExists(name), true);
  } finally {
    holder.stop();
    cleanup(name);
  }
});

test('as uid 65534, rm --orphans leaves its own segment that a root process holds', { skip: isRoot ? false : 'needs root' }, async () => {
  const name = uniqueName('rm-nobody');
  const root = Region.create({ name, size: 4096 });
  fs.chownSync(root.path, 65534, 65534); // nobody's segment, held by root
  try {
    const byName = runCli(['rm', '--orphans', name], { uid: 65534, gid: 65534 });
    assert.equal(byName.status, 1, byName.stdout);
    assert.match(byName.stderr, new RegExp(`^cowshm rm: ${name} is held by a cowshm process not visible in /proc here \\(it holds the segment's lock\\): not removed$`, 'm'));
    const all = runCli(['rm', '--orphans', '--dry-run'], { uid: 65534, gid: 65534 });
    assert.doesNotMatch(all.stdout, new RegExp(name));
    assert.equal(shmExists(name), true);
    // A root holder that is not cowshm: nobody sees no lock and can not read root's /proc.
    const plain = fs.openSync(root.path, 'r');
    root.close();
    try {
      const r = runCli(['rm', '--orphans', name], { uid: 65534, gid: 65534 });
      assert.equal(r.status, 1, r.stdout);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, new RegExp(`^cowshm rm: /dev/shm/${name} is not held by any cowshm process, but /proc of \\d+ process(es)? could not be read \\(pid [\\d, .]+\\) and might hold it: not removed \\(run as root to inspect them, or remove it by name\\)$`, 'm'));
      assert.equal(shmExists(name), true);
    } finally {
      fs.closeSync(plain);
    }
  } finally {
    root.close();
    cleanup(name);
  }
});

/** A process that opens segments with Region.open when told their names, and holds them. */
function opener(): { open: (name: string) => Promise<string>; closeAll: () => Promise<void>; stop: () => void } {
  const code = `
    const { Region } = require('cowshm');
    const held = [];
    require('readline').createInterface({ input: process.stdin }).on('line', (name) => {
      if (name === '') { for (const r of held.splice(0)) r.close(); console.log('closed'); return; }
      try { held.push(Region.open(name)); console.log('opened'); } catch (err) { console.log(err.code); }
    });`;
  const child = spawn(process.execPath, ['-e', code], { cwd: packageRoot, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const next = (): Promise<string> => new Promise((resolve) => lines.once('line', resolve));
  return {
    open: (name) => { const reply = next(); child.stdin.write(`${name}\n`); return reply; },
    closeAll: async () => { const reply = next(); child.stdin.write('\n'); await reply; },
    stop: () => child.kill('SIGKILL'),
  };
}

function rmAloneAsync(args: string[]): Promise<NodeResult> {
  const child = spawn('unshare', unshare(['rm', ...args]), { cwd: packageRoot });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

test('rm --orphans racing a process that opens the segment never removes one it opened', { skip: noPidNamespace }, async () => {
  const o = opener();
  const outcomes = { opened: 0, removedFirst: 0 };
  try {
    // How long a run takes, so the opens are spread over all of it.
    const t0 = Date.now();
    await rmAloneAsync(['--orphans', '--dry-run', uniqueName('rm-race-none')]);
    const span = Date.now() - t0;
    const trials = 40;
    for (let i = 0; i < trials; i++) {
      const name = orphan('rm-race');
      try {
        const rm = rmAloneAsync(['--orphans', name]);
        await new Promise((resolve) => setTimeout(resolve, ((i + 0.5) / trials) * span));
        const reply = await o.open(name);
        const r = await rm;
        const exists = shmExists(name);
        const said = `trial ${i}: open said ${reply}, rm said ${JSON.stringify(r.stdout + r.stderr)}`;
        if (reply === 'opened') {
          outcomes.opened++;
          assert.equal(exists, true, `removed while a process held it (${said})`);
          assert.doesNotMatch(r.stdout, /removed/, said);
        } else {
          outcomes.removedFirst++;
          assert.equal(reply, 'ENOENT', said);
          assert.equal(exists, false, said);
        }
        await o.closeAll();
      } finally {
        cleanup(name);
      }
    }
    console.log(`rm --orphans race: ${outcomes.opened} opened first (kept), ${outcomes.removedFirst} removed first (open failed ENOENT)`);
  } finally {
    o.stop();
  }
});

test('--dry-run says what would go and removes nothing', () => {
  const a = orphan('rm-dry');
  const missing = uniqueName('rm-dry-missing');
  try {
    if (pidNamespace) {
      const r = rmAlone(['--orphans', '--dry-run', a]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `would remove /dev/shm/${a}\n`);
    }
    const plain = runCli(['rm', '--dry-run', a, missing]);
    assert.equal(plain.status, 1);
    assert.equal(plain.stdout, `would remove /dev/shm/${a}\n`);
    assert.match(plain.stderr, new RegExp(`ENOENT: no such file or directory, shm_unlink '${missing}'`));
    assert.equal(shmExists(a), true);
  } finally {
    cleanup(a);
  }
});

test('rm --help says how --orphans tells a segment is held, and what it cannot see', () => {
  const r = runCli(['rm', '--help']);
  assert.equal(r.status, 0);
  const text = r.stdout.replace(/\s+/g, ' ');
  assert.match(text, /every cowshm process keeps a shared lock \(flock\) on each segment it has open/);
  assert.match(text, /Other programs are seen only through \/proc \(\/proc\/PID\/fd and \/proc\/PID\/maps\): only processes of this pid namespace, and only those this user may inspect/);
  assert.match(text, /While any process cannot be inspected, a segment no cowshm process holds is not removed/);
});
