// Most users run cowshm as an ordinary user. When the suite runs as root, this
// file runs the region, view, cow, memory/proof and snapshot tests again as
// uid/gid 65534 (nobody), from a private copy of what they need (a CI clone's
// folder may not be readable by that user), and checks what must differ:
// page frames read as unavailable, userfaultfd works in user-mode-only mode,
// and other users' segments are refused.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { Region, listSegments, pageSize } from 'cowshm';
import { packageFor, uniqueName, shmExists } from './helpers';

const NOBODY = 65534;
const notRoot = process.getuid?.() !== 0 ? 'runs only as root (it switches to uid 65534)' : undefined;
if (notRoot) console.log(`unprivileged tests skipped: ${notRoot}`);

/** The compiled test files to run again, by name: region.*, view.*, cow.*, memory.*, proof.*, snapshot.*, misuse.*, atomics.*, mutex.*, rwlock.*, cli.demo.*, cli.inspect.* */
// Files that themselves run the snapshot tests again (under the mprotect backend): left out
// of nested runs, which would otherwise run every snapshot test three times.
const RERUNS = /^snapshot\.backends\./;
const FILES = /^(region|view|cow|memory|proof|snapshot|misuse|atomics|mutex|rwlock|cli\.(demo|inspect))[\w.-]*\.test\.js$/;

function ownedByNobody(file: string): boolean {
  try {
    return fs.lstatSync(file).uid === NOBODY;
  } catch {
    return false;
  }
}

/**
 * The segments in /dev/shm that are not in `before` and that this run's
 * unprivileged tests may have left: owned by uid 65534, and not named by
 * another run's uniqueName() (other runs of the suite on the machine re-run
 * their tests as uid 65534 too, and their segments come and go meanwhile).
 * A coordination file (named by its region's dev/ino, not by a run) counts
 * only when no process holds a lock on it, as in scripts/test.js: one still
 * held belongs to a live process of another run, or of a test file running
 * beside this one (snapshot.xproc.handshake's uid-65534 writers make one).
 */
function leftByNobody(before: Set<string>): string[] {
  const ours = `cowshm-test-${process.env['COWSHM_TEST_RUN'] ?? 'manual'}-`;
  const held = new Set(listSegments({ holders: false }).filter((s) => s.coordination !== null && !s.coordination.orphan).map((s) => s.name));
  return fs
    .readdirSync('/dev/shm')
    .filter((f) => !before.has(f) && ownedByNobody(path.join('/dev/shm', f)) && (f.startsWith(ours) || !f.startsWith('cowshm-test-')) && !held.has(f));
}

function asNobody(args: string[], options: SpawnSyncOptions = {}) {
  const { root: dir, node } = packageFor(NOBODY);
  return spawnSync(node, args, {
    cwd: dir,
    uid: NOBODY,
    gid: NOBODY,
    // NODE_TEST_CONTEXT would make a nested `node --test` report to this runner, not as TAP.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined, HOME: dir, TMPDIR: os.tmpdir() },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 10 * 60_000, // a hang fails the test (status null) instead of the whole suite
    ...options,
  }) as ReturnType<typeof spawnSync> & { stdout: string; stderr: string };
}

test('the region, view, cow, memory, snapshot, atomics and mutex tests pass as uid 65534', { skip: notRoot }, () => {
  const files = fs
    .readdirSync(__dirname)
    .filter((f) => FILES.test(f) && !RERUNS.test(f))
    .sort();
  assert.ok(files.length > 0, `no test files matching ${FILES} in ${__dirname}`);
  console.log(`as uid ${NOBODY}: ${files.join(' ')}`);
  const before = new Set(fs.readdirSync('/dev/shm'));
  const r = asNobody(['--expose-gc', '--test', '--test-reporter=tap', ...files.map((f) => path.join('test', 'build', f))]);
  // Other processes on the machine may create segments meanwhile: count only this run's.
  const left = leftByNobody(before);
  const summary = (key: string): number => Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(r.stdout)?.[1] ?? NaN);
  const failed = summary('fail');
  const passed = summary('pass');
  assert.equal(r.status, 0, `the unprivileged run failed:\n${r.stdout.split('\n').filter((l) => /^\s*(not ok|error:|code:|location:)|Error|expected|actual/.test(l)).join('\n')}\n${r.stderr}`);
  assert.equal(failed, 0);
  assert.ok(passed > 0, 'some tests ran and passed');
  const skipped = [...r.stdout.matchAll(/^\s*ok \d+ - (.*) # SKIP (.*)$/gm)].map((m) => `${m[1]} (${m[2]})`);
  console.log(`as uid ${NOBODY}: ${passed} passed, ${skipped.length} skipped${skipped.length ? `:\n  ${skipped.join('\n  ')}` : ''}`);
  assert.deepEqual(left, [], 'the unprivileged run left segments in /dev/shm');
});

test("the uid-65534 leak check counts this run's segments, unnamed ones and unheld coordination files, not another run's or held ones", { skip: notRoot }, () => {
  const before = new Set(fs.readdirSync('/dev/shm'));
  const other = `cowshm-test-${process.pid}other${Date.now().toString(36)}-1-demo-midway-1`;
  const orphan = `cowshm-xproc-${(0xfff000 + (process.pid & 0xfff)).toString(16)}-${Date.now().toString(16)}`; // no region has this dev
  const names = [uniqueName('left-ours'), other, `cowshm-bench-${process.pid}-left`, orphan];
  // A live participant's coordination file, made uid 65534's as the handshake test's writers make one.
  const live = Region.create({ size: pageSize, crossProcess: true });
  const coordination = `cowshm-xproc-${live.dev.toString(16)}-${live.ino.toString(16)}`;
  try {
    for (const name of names) {
      fs.writeFileSync(path.join('/dev/shm', name), '');
      fs.chownSync(path.join('/dev/shm', name), NOBODY, NOBODY);
    }
    fs.chownSync(path.join('/dev/shm', coordination), NOBODY, NOBODY);
    fs.writeFileSync(path.join('/dev/shm', `${names[0]}-root`), ''); // root's: not the unprivileged run's
    assert.deepEqual(leftByNobody(before).sort(), [names[0], names[2], orphan].sort());
  } finally {
    live.close();
    for (const name of [...names, `${names[0]}-root`]) fs.rmSync(path.join('/dev/shm', name), { force: true });
  }
  assert.equal(fs.existsSync(path.join('/dev/shm', coordination)), false, 'the participant removed its coordination file');
});

// What an unprivileged process sees, checked directly.
const probe = `
const c = require('cowshm');
const out = { uid: process.getuid(), gid: process.getgid() };
const r = c.Region.create({ size: 1 << 20 });
const v = r.map();
new Uint8Array(v.buffer).fill(7);
const p = c.memory.pages(v);
out.pages = { present: p.present, frames: p.frames, framesUnavailable: p.framesUnavailable };
out.backend = c.snapshotBackend;
out.reason = c.snapshotBackendReason;
const s = r.snapshot();
new Uint8Array(v.buffer)[4096] = 9;
out.snapshot = { frozen: new Uint8Array(s.buffer)[4096], live: new Uint8Array(v.buffer)[4096] };
s.release();
r.close();
for (const [key, name] of Object.entries(JSON.parse(process.argv[1]))) {
  try { c.Region.open(name).close(); out[key] = 'opened'; } catch (err) { out[key] = err.code; }
}
process.stdout.write(JSON.stringify(out));
`;

interface ProbeResult {
  uid: number;
  gid: number;
  pages?: { present: number; frames: number[] | null; framesUnavailable: string | null };
  backend?: string;
  reason?: string;
  snapshot?: { frozen: number; live: number };
  privateSegment: string;
  readableSegment: string;
}

let probed: ProbeResult | undefined;
function runProbe(): ProbeResult {
  if (probed) return probed;
  const privateSegment = Region.create({ name: uniqueName('root-private'), size: 4096, mode: 0o600 });
  const readableSegment = Region.create({ name: uniqueName('root-readable'), size: 4096, mode: 0o666 });
  try {
    const names = { privateSegment: privateSegment.name, readableSegment: readableSegment.name };
    const r = asNobody(['-e', probe, JSON.stringify(names)]);
    assert.equal(r.status, 0, r.stderr);
    probed = JSON.parse(r.stdout) as ProbeResult;
    return probed;
  } finally {
    for (const s of [privateSegment, readableSegment]) {
      s.unlink();
      s.close();
      assert.equal(shmExists(s.name as string), false);
    }
  }
}

test('as uid 65534: the probe really runs unprivileged', { skip: notRoot }, () => {
  const p = runProbe();
  assert.equal(p.uid, NOBODY);
  assert.equal(p.gid, NOBODY);
});

test("as uid 65534: root's 0600 segment is refused with EACCES, a 0666 one as another owner's", { skip: notRoot }, () => {
  const p = runProbe();
  assert.equal(p.privateSegment, 'EACCES');
  assert.equal(p.readableSegment, 'ERR_COWSHM_FOREIGN_OWNER');
});

test('as uid 65534: page frames read as unavailable, null with the reason', { skip: notRoot }, () => {
  const p = runProbe();
  assert.ok(p.pages);
  assert.equal(p.pages.present, 256, 'every written page is present');
  assert.equal(p.pages.frames, null, 'frame numbers are never zeros presented as data');
  assert.equal(typeof p.pages.framesUnavailable, 'string');
  assert.match(p.pages.framesUnavailable ?? '', /CAP_SYS_ADMIN/);
});

test('as uid 65534: snapshots use userfaultfd (user-mode-only) and isolate writes', { skip: notRoot }, () => {
  const p = runProbe();
  const sysctl = fs.readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim();
  console.log(`vm.unprivileged_userfaultfd = ${sysctl}; COWSHM_NO_USERFAULTFD=${process.env['COWSHM_NO_USERFAULTFD'] ?? ''}`);
  if (process.env['COWSHM_NO_USERFAULTFD'] || process.env['COWSHM_SNAPSHOT_BACKEND'] === 'mprotect') {
    assert.equal(p.backend, 'mprotect');
  } else {
    assert.equal(p.backend, 'userfaultfd', p.reason);
    // With the sysctl at 0 an unprivileged process may only open it in user-mode-only mode.
    if (sysctl === '0') assert.match(p.reason ?? '', /UFFD_USER_MODE_ONLY/);
  }
  assert.deepEqual(p.snapshot, { frozen: 7, live: 9 });
});
