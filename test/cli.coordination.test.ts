// cowshm ls / rm / doctor and the coordination files of cross-process
// snapshots (/dev/shm/cowshm-xproc-<dev>-<ino>): shown with their region and
// who takes part; removed only when no process holds a lock on them, under
// the lock joiners take; a left-over one is started over at the next open.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region, pageSize, removeSegment } from 'cowshm';
import { runCli, uniqueName, packageRoot } from './helpers';
import { coordinationFile, cowshmPeer, gone, startPeer, stopPeer, type Peer } from './xproc-helpers';

interface Listed {
  name: string;
  orphan: boolean;
  locked: boolean | null;
  coordination: { dev: number; ino: number; participants: number | null; snapshot: boolean | null; orphan: boolean; valid: boolean | null; regionSize: number | null } | null;
}

function listed(name: string): Listed | undefined {
  const r = runCli(['ls', '--json']);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as Listed[]).find((s) => s.name === name);
}

/** A region with two participant processes; the test process only reads. */
async function withParticipants(tag: string, body: (r: Region, file: string, peers: Peer[]) => Promise<void>): Promise<void> {
  const name = uniqueName(tag);
  const r = Region.create({ name, size: 8 * pageSize, mode: 0o600 });
  const peers: Peer[] = [];
  const file = coordinationFile(r);
  try {
    peers.push(await cowshmPeer(name, 'participant'), await cowshmPeer(name, 'participant'));
    await body(r, file, peers);
  } finally {
    for (const p of peers) await stopPeer(p);
    r.unlink();
    r.close();
    if (fs.existsSync(file)) fs.rmSync(file, { force: true }); // a test that failed half-way
  }
}

test('cowshm ls: a coordination file shows its region, how many take part, and a live snapshot', async () => {
  await withParticipants('ls', async (r, file) => {
    const base = path.basename(file);
    const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
    try {
      const entry = listed(base);
      assert.ok(entry?.coordination, `ls lists ${base} as a coordination file`);
      assert.deepEqual(
        { ...entry.coordination, orphan: entry.orphan, locked: entry.locked },
        { dev: r.dev, ino: r.ino, participants: 2, snapshot: true, orphan: false, valid: true, regionSize: r.size, locked: true },
      );
      const text = runCli(['ls']);
      assert.equal(text.status, 0, text.stderr);
      const line = text.stdout.split('\n').find((l) => l.startsWith(base)) ?? '';
      assert.match(line, new RegExp(`coordination file of ${r.name}: 2 participants, a snapshot live`));
    } finally {
      s.release();
    }
    const line = runCli(['ls']).stdout.split('\n').find((l) => l.startsWith(base)) ?? '';
    assert.match(line, /: 2 participants$/, 'no snapshot once released');
  });
});

test('cowshm rm: a coordination file in use is never removed, by name or as an orphan; once its participants are killed it is', async () => {
  await withParticipants('rm', async (_r, file, peers) => {
    const base = path.basename(file);
    for (const args of [['rm', base], ['rm', '--orphans', base], ['rm', '--orphans', '--dry-run', base]]) {
      const res = runCli(args);
      assert.equal(res.status, 1, `${args.join(' ')}: ${res.stdout}`);
      assert.match(res.stderr, /in use|taking part/);
      assert.equal(fs.existsSync(file), true, `${args.join(' ')} removed nothing`);
    }
    assert.throws(
      () => removeSegment(base, undefined, { ifOrphan: true }),
      (err: Error & { code?: string; participants?: number }) => err.code === 'ERR_COWSHM_SEGMENT_HELD' && err.participants === 2,
      'removeSegment(..., { ifOrphan: true }) applies the same rule',
    );
    assert.equal(fs.existsSync(file), true);
    // kill -9: nobody leaves, nobody removes the file; the kernel drops their locks.
    for (const p of peers) {
      p.proc.kill('SIGKILL');
      await p.exited;
    }
    assert.equal(fs.existsSync(file), true, 'left behind by the killed participants');
    const entry = listed(base);
    assert.equal(entry?.orphan, true);
    assert.equal(entry?.coordination?.participants, 0);
    assert.match(runCli(['ls']).stdout, new RegExp(`${base}.*orphan \\(coordination file of .*, nobody takes part\\)`));
    const dry = runCli(['rm', '--orphans', '--dry-run', base]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.equal(dry.stdout, `would remove /dev/shm/${base}\n`);
    assert.equal(fs.existsSync(file), true);
    const res = runCli(['rm', '--orphans', base]);
    assert.equal(res.status, 0, res.stderr);
    assert.equal(res.stdout, `removed /dev/shm/${base}\n`);
    assert.equal(fs.existsSync(file), false);
  });
});

// A process stopped between opening the file and joining holds the lock
// joiners take: a removal waits for it a bounded time, then removes nothing.
const OPENER = `
const fs = require('fs');
const { native } = require(${JSON.stringify(path.join(packageRoot, 'dist', 'native.js'))});
const fd = fs.openSync(process.argv[1], 'r+');
if (!native.ofdLock(fd, native.xprocLayout.initLock, 1, 2, 0)) throw new Error('initLock is held');
console.log('ready');
setInterval(() => {}, 1000);
`;

test('cowshm rm --orphans: an orphaned coordination file that a process is opening (its join lock held) is not removed', async () => {
  await withParticipants('rm-opening', async (_r, file, peers) => {
    for (const p of peers) {
      p.proc.kill('SIGKILL');
      await p.exited;
    }
    const opener = await startPeer(process.execPath, ['-e', OPENER, file]);
    try {
      assert.equal(listed(path.basename(file))?.orphan, false, 'a lock is held: not an orphan');
      const res = runCli(['rm', path.basename(file)]);
      assert.equal(res.status, 1, res.stdout);
      assert.match(res.stderr, /is in use: a process has been joining it for 2 s/);
      assert.equal(fs.existsSync(file), true);
    } finally {
      await stopPeer(opener, 'SIGKILL');
    }
    const res = runCli(['rm', path.basename(file)]);
    assert.equal(res.status, 0, res.stderr);
    assert.equal(fs.existsSync(file), false);
  });
});

// A process holding a lock on a byte of the file that no reader or participant uses.
const LOCKER = `
const fs = require('fs');
const { native } = require(${JSON.stringify(path.join(packageRoot, 'dist', 'native.js'))});
const fd = fs.openSync(process.argv[1], 'r+');
if (!native.ofdLock(fd, native.xprocLayout.initLock + 1, 1, 2, 0)) throw new Error('the byte is held');
console.log('ready');
setInterval(() => {}, 1000);
`;

test('the last participant to leave and cowshm rm apply one rule: a file on which any process holds a lock stays', async () => {
  await withParticipants('rm-onerule', async (_r, file, peers) => {
    const locker = await startPeer(process.execPath, ['-e', LOCKER, file]);
    try {
      for (const p of peers) await stopPeer(p); // each closes its region: leaves, the last one last
      assert.equal(fs.existsSync(file), true, 'a lock is held on it: the last participant leaves it');
      const res = runCli(['rm', '--orphans', path.basename(file)]);
      assert.equal(res.status, 1, res.stdout);
      assert.match(res.stderr, /is held by a process holding a lock on it that neither reads nor takes part/);
    } finally {
      await stopPeer(locker, 'SIGKILL');
    }
    const res = runCli(['rm', '--orphans', path.basename(file)]);
    assert.equal(res.status, 0, res.stderr);
    assert.equal(fs.existsSync(file), false);
  });
});

test('a coordination file left by killed participants is started over at the next open, even holding garbage', async () => {
  await withParticipants('reopen', async (r, file, peers) => {
    for (const p of peers) {
      p.proc.kill('SIGKILL');
      await p.exited;
    }
    // Garbage of the wrong size where the header was: no process holds a lock on it.
    fs.writeFileSync(file, Buffer.alloc(3 * pageSize + 5, 0xa5));
    const w = Region.open(r.name as string, { crossProcess: true });
    try {
      assert.equal(listed(path.basename(file))?.coordination?.valid, true, 'a valid header again');
      assert.equal(fs.statSync(file).size, 2 * pageSize);
      const s = r.snapshot({ scope: 'processes', timeoutMs: 5000 });
      const frozen = new Uint8Array(s.buffer);
      new Uint8Array(w.map().buffer)[pageSize] = 7;
      assert.equal(frozen[pageSize], 0, 'the snapshot holds against the new participant');
      assert.equal(s.exact, true);
      s.release();
    } finally {
      w.close();
    }
    assert.equal(await gone(file), true, 'the last to leave removes it');
  });
});

test('garbage in a coordination file that a process still takes part in is refused, not started over', async () => {
  await withParticipants('reopen-live', async (r, file) => {
    fs.writeFileSync(file, Buffer.alloc(2 * pageSize, 0xa5)); // keeps the inode: the participants' locks stay
    assert.throws(
      () => Region.open(r.name as string, { crossProcess: true }),
      (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && err.message.includes('holds garbage'),
    );
  });
});

test('cowshm doctor: what snapshots across processes cover and not, and the coordination files', async () => {
  await withParticipants('doctor', async (r, file) => {
    const json = runCli(['doctor', '--json']);
    assert.equal(json.status, 0, json.stderr);
    const report = JSON.parse(json.stdout) as { crossProcess: { covered: string; notCovered: string; coordinationFiles: Array<{ name: string; region: string | null; participants: number }> } };
    assert.match(report.crossProcess.covered, /crossProcess: true/);
    assert.match(report.crossProcess.notCovered, /Python, C\), pwrite/);
    const mine = report.crossProcess.coordinationFiles.find((c) => c.name === path.basename(file));
    assert.deepEqual(mine && { region: mine.region, participants: mine.participants }, { region: r.name, participants: 2 });
    const text = runCli(['doctor']);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /not covered\s+writers that are not such processes/);
    assert.match(text.stdout, new RegExp(`${path.basename(file)}\\s+region ${r.name}, 2 participants`));
  });
});
