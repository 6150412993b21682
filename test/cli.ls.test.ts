import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region, type Segment } from 'cowshm';
import { spawn } from 'node:child_process';
import { runCli, uniqueName, collectGarbage, isRoot, packageRoot } from './helpers';

function lsJson(): Segment[] {
  const r = runCli(['ls', '--json']);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Segment[];
}

function userName(uid: number): string {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , id] = line.split(':');
    if (id === String(uid) && name) return name;
  }
  return String(uid);
}

test('ls --json: size, memory, owner, mode, and this process as the holder (map and fd)', () => {
  const held = Region.create({ name: uniqueName('ls-held'), size: 3 * 4096 + 5, mode: 0o640 });
  const sparse = Region.create({ name: uniqueName('ls-sparse'), size: 1 << 20, reserve: false });
  try {
    const views = [held.map(), held.map({ access: 'read' })];
    const segments = lsJson();
    const s = segments.find((x) => x.name === held.name);
    assert.ok(s, 'the held segment is listed');
    assert.deepEqual(
      { ...s, holders: undefined, uninspected: undefined },
      {
        name: held.name, path: held.path, pageSize: held.pageSize, deleted: false, size: 3 * 4096 + 5, allocated: 4 * 4096,
        uid: process.getuid?.(), owner: userName(process.getuid?.() ?? 0), gid: process.getgid?.(),
        mode: 0o640, dev: held.dev, ino: held.ino, locked: true, orphan: false, holders: undefined, uninspected: undefined, coordination: null,
      },
    );
    assert.deepEqual(s.holders, [{ pid: process.pid, command: 'node', mappings: 2, fds: [held.fd] }]);
    const sp = segments.find((x) => x.name === sparse.name);
    assert.equal(sp?.size, 1 << 20);
    assert.equal(sp?.allocated, 0);
    assert.equal(views.length, 2);
  } finally {
    held.unlink();
    held.close();
    sparse.unlink();
    sparse.close();
  }
});

test('a segment nobody holds is an orphan; one held only by a mapping is not', async () => {
  const orphanName = uniqueName('ls-orphan');
  Region.create({ name: orphanName, size: 4096 }).close();
  const mappedName = uniqueName('ls-maponly');
  // Keep only a TypedArray: its Region and View are collected, so the
  // descriptor is closed and the mapping is all that holds the segment.
  let bytes: Uint8Array | undefined = (() => new Uint8Array(Region.create({ name: mappedName, size: 4096 }).map().buffer))();
  await collectGarbage();
  try {
    const segments = lsJson();
    const orphan = segments.find((x) => x.name === orphanName);
    assert.equal(orphan?.orphan, true);
    assert.deepEqual(orphan?.holders, []);
    const mapped = segments.find((x) => x.name === mappedName);
    assert.equal(mapped?.orphan, false);
    assert.deepEqual(mapped?.holders, [{ pid: process.pid, command: 'node', mappings: 1, fds: [] }]);
    assert.equal(bytes.length, 4096);

    const table = runCli(['ls']);
    assert.equal(table.status, 0);
    assert.match(table.stdout, /^NAME +SIZE +IN MEMORY +OWNER +MODE +HELD BY\n/);
    assert.match(table.stdout, new RegExp(`\\n${orphanName} +4\\.00 KiB +4\\.00 KiB +\\S+ +0600 +orphan\\n`));
    assert.match(table.stdout, new RegExp(`\\n${mappedName} +4\\.00 KiB +4\\.00 KiB +\\S+ +0600 +${process.pid} node \\(1 map\\)`));
  } finally {
    bytes = undefined;
    fs.unlinkSync(`/dev/shm/${orphanName}`);
    fs.unlinkSync(`/dev/shm/${mappedName}`);
  }
});

test('holders are matched by device and inode: a removed and re-created name is two segments', () => {
  const name = uniqueName('ls-recreated');
  const old = Region.create({ name, size: 4096 });
  old.map();
  old.unlink();
  const fresh = Region.create({ name, size: 8192 });
  fresh.close();
  try {
    const mine = lsJson().filter((x) => x.name === name);
    assert.equal(mine.length, 2);
    const [current, deleted] = [mine.find((x) => !x.deleted), mine.find((x) => x.deleted)];
    // The live name: nobody holds it, though this process maps "/dev/shm/NAME (deleted)".
    assert.equal(current?.ino, fresh.ino);
    assert.equal(current?.size, 8192);
    assert.equal(current?.orphan, true);
    // The old one, still held, listed as deleted.
    assert.equal(deleted?.ino, old.ino);
    assert.equal(deleted?.size, 4096);
    assert.equal(deleted?.orphan, false);
    assert.deepEqual(deleted?.holders.map((h) => [h.pid, h.mappings, h.fds]), [[process.pid, 1, [old.fd]]]);
    const table = runCli(['ls']).stdout;
    assert.match(table, new RegExp(`\\n${name} \\(deleted\\) +4\\.00 KiB`));
  } finally {
    old.close();
    fs.unlinkSync(`/dev/shm/${name}`);
  }
});

test('the owner is shown by name, and by uid when it has none', (t) => {
  if (!isRoot) {
    t.skip('needs root to chown segments');
    return;
  }
  const named = Region.create({ name: uniqueName('ls-nobody'), size: 4096 });
  const numeric = Region.create({ name: uniqueName('ls-uid'), size: 4096 });
  try {
    fs.chownSync(named.path, 65534, 65534);
    fs.chownSync(numeric.path, 54321, 54321);
    const segments = lsJson();
    assert.equal(segments.find((x) => x.name === named.name)?.owner, userName(65534));
    const n = segments.find((x) => x.name === numeric.name);
    assert.equal(n?.uid, 54321);
    assert.equal(n?.owner, '54321');
  } finally {
    for (const r of [named, numeric]) {
      r.unlink();
      r.close();
    }
  }
});

test('another process holding a segment is listed with its pid and command', async () => {
  const name = uniqueName('ls-child');
  const r = Region.create({ name, size: 4096 });
  r.close();
  const child = spawn(process.execPath, ['-e', `
    const { Region } = require('cowshm');
    const r = Region.open(${JSON.stringify(name)});
    globalThis.v = r.map();
    console.log('ready');
    setTimeout(() => {}, 60000);`], { cwd: packageRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code, signal) => reject(new Error(`the holding process exited early (${code ?? signal})`)));
    });
    const s = lsJson().find((x) => x.name === name);
    assert.deepEqual(s?.holders.map((h) => [h.pid, h.command, h.mappings, h.fds.length]), [[child.pid, 'node', 1, 1]]);
    assert.equal(s?.orphan, false);
  } finally {
    child.kill();
    fs.unlinkSync(`/dev/shm/${name}`);
  }
});

test('processes that can not be inspected are named; a cowshm holder among them is seen by its lock', (t) => {
  if (!isRoot) {
    t.skip('needs root to run the command as another user');
    return;
  }
  const name = uniqueName('ls-uninspected');
  const r = Region.create({ name, size: 4096, mode: 0o644 });
  try {
    r.map();
    // As uid 65534 this (root) process can not be inspected.
    const json = runCli(['ls', '--json'], { uid: 65534, gid: 65534 });
    assert.equal(json.status, 0, json.stderr);
    const s = (JSON.parse(json.stdout) as Segment[]).find((x) => x.name === name);
    assert.deepEqual(s?.holders, []);
    assert.equal(s?.locked, true, 'the Region of this (root) process holds the lock');
    assert.equal(s?.orphan, false);
    assert.ok(s?.uninspected.includes(process.pid), 'this process is listed as uninspected');
    const table = runCli(['ls'], { uid: 65534, gid: 65534 });
    assert.match(table.stdout, new RegExp(`\\n${name} .* a cowshm process not visible here \\(its lock\\)\\n`));
    // Whether the note on unreadable /proc shows depends on the other segments listed: see the next test.
    const rm = runCli(['rm', '--orphans', name], { uid: 65534, gid: 65534 });
    assert.equal(rm.status, 1);
    assert.match(rm.stderr, new RegExp(`^cowshm rm: ${name} is held by a cowshm process not visible in /proc here \\(it holds the segment's lock\\): not removed$`, 'm'));
    assert.equal(fs.existsSync(r.path), true);
  } finally {
    r.unlink();
    r.close();
  }
});

test('the note on unreadable /proc appears only when a segment listed as orphan may be held there', () => {
  const { uninspectedNote } = require('../../dist/cli/commands/ls') as { uninspectedNote(s: Segment[]): string | null };
  const segment = (orphan: boolean): Segment => ({
    name: 'x', path: '/dev/shm/x', pageSize: 4096, deleted: false, size: 4096, allocated: 4096, uid: 0, owner: 'root', gid: 0, mode: 0o600,
    dev: 1, ino: 2, holders: orphan ? [] : [{ pid: 2, command: 'node', mappings: 1, fds: [] }], locked: false, orphan, uninspected: [1], coordination: null,
  });
  assert.equal(uninspectedNote([segment(false), segment(false)]), null, 'every segment is held: pid 1 changes nothing');
  assert.match(uninspectedNote([segment(false), segment(true)]) ?? '', /^note: \/proc of 1 process could not be read \(pid 1\); a segment another program holds only there would show as orphan\./);
  assert.equal(uninspectedNote([{ ...segment(true), uninspected: [] }]), null);
});
