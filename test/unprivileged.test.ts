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
import { Region } from 'cowshm';
import { packageRoot, uniqueName, shmExists } from './helpers';

const NOBODY = 65534;
const notRoot = process.getuid?.() !== 0 ? 'runs only as root (it switches to uid 65534)' : undefined;
if (notRoot) console.log(`unprivileged tests skipped: ${notRoot}`);

/** The compiled test files to run again, by name: region.*, view.*, cow.*, memory.*, proof.*, snapshot.*, cli.demo.*, cli.inspect.* */
// Files that themselves run the snapshot tests again (under the mprotect backend): left out
// of nested runs, which would otherwise run every snapshot test three times.
const RERUNS = /^snapshot\.backends\./;
const FILES = /^(region|view|cow|memory|proof|snapshot|cli\.(demo|inspect))[\w.-]*\.test\.js$/;

/** A package's runtime dependencies, transitively, as folders under node_modules. */
function runtimeModules(names: string[], seen = new Set<string>()): Set<string> {
  for (const name of names) {
    if (seen.has(name)) continue;
    const dir = path.join(packageRoot, 'node_modules', name);
    if (!fs.existsSync(dir)) continue;
    seen.add(name);
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { dependencies?: object };
    runtimeModules(Object.keys(pkg.dependencies ?? {}), seen);
  }
  return seen;
}

/** Whether `file` can be executed by a user who is neither its owner nor in its group. */
function othersCanExecute(file: string): boolean {
  let p = path.resolve(file);
  if ((fs.statSync(p).mode & 0o005) !== 0o005) return false;
  for (p = path.dirname(p); ; p = path.dirname(p)) {
    if ((fs.statSync(p).mode & 0o001) === 0) return false;
    if (p === path.dirname(p)) return true;
  }
}

function ownedByNobody(file: string): boolean {
  try {
    return fs.lstatSync(file).uid === NOBODY;
  } catch {
    return false;
  }
}

function copyInto(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true, dereference: true });
}

/** Copies what the tests need at run time into a fresh directory owned by nobody. */
function stage(): { dir: string; node: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowshm-unprivileged-'));
  for (const part of ['package.json', 'dist', 'lib', 'bin', path.join('test', 'build')])
    if (fs.existsSync(path.join(packageRoot, part))) copyInto(path.join(packageRoot, part), path.join(dir, part));
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  copyInto(path.join(packageRoot, 'build', 'Release', 'cowshm.node'), path.join(dir, 'build', 'Release', 'cowshm.node'));
  for (const name of runtimeModules(['fast-check']))
    copyInto(path.join(packageRoot, 'node_modules', name), path.join(dir, 'node_modules', name));
  // A Node binary inside the clone (npm run test:matrix) is as unreadable as the clone.
  let node = process.execPath;
  if (!othersCanExecute(node)) {
    node = path.join(dir, 'node');
    fs.copyFileSync(process.execPath, node);
  }
  const own = (p: string): void => {
    fs.lchownSync(p, NOBODY, NOBODY);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755);
      for (const entry of fs.readdirSync(p)) own(path.join(p, entry));
    } else if (st.isFile()) {
      fs.chmodSync(p, st.mode & 0o111 ? 0o755 : 0o644);
    }
  };
  own(dir);
  return { dir, node };
}

let staged: { dir: string; node: string } | undefined;
function staging(): { dir: string; node: string } {
  staged ??= stage();
  return staged;
}
process.on('exit', () => {
  if (staged) fs.rmSync(staged.dir, { recursive: true, force: true });
});

function asNobody(args: string[], options: SpawnSyncOptions = {}) {
  const { dir, node } = staging();
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

test('the region, view, cow, memory and snapshot tests pass as uid 65534', { skip: notRoot }, () => {
  const files = fs
    .readdirSync(__dirname)
    .filter((f) => FILES.test(f) && !RERUNS.test(f))
    .sort();
  assert.ok(files.length > 0, `no test files matching ${FILES} in ${__dirname}`);
  console.log(`as uid ${NOBODY}: ${files.join(' ')}`);
  const before = new Set(fs.readdirSync('/dev/shm'));
  const r = asNobody(['--expose-gc', '--test', '--test-reporter=tap', ...files.map((f) => path.join('test', 'build', f))]);
  // Other processes on the machine may create segments meanwhile: count only nobody's.
  const left = fs.readdirSync('/dev/shm').filter((f) => !before.has(f) && ownedByNobody(path.join('/dev/shm', f)));
  const summary = (key: string): number => Number(new RegExp(`^# ${key} (\\d+)$`, 'm').exec(r.stdout)?.[1] ?? NaN);
  const failed = summary('fail');
  const passed = summary('pass');
  assert.equal(r.status, 0, `the unprivileged run failed:\n${r.stdout.split('\n').filter((l) => /^\s*not ok|Error|expected|actual/.test(l)).join('\n')}\n${r.stderr}`);
  assert.equal(failed, 0);
  assert.ok(passed > 0, 'some tests ran and passed');
  const skipped = [...r.stdout.matchAll(/^\s*ok \d+ - (.*) # SKIP (.*)$/gm)].map((m) => `${m[1]} (${m[2]})`);
  console.log(`as uid ${NOBODY}: ${passed} passed, ${skipped.length} skipped${skipped.length ? `:\n  ${skipped.join('\n  ')}` : ''}`);
  assert.deepEqual(left, [], 'the unprivileged run left segments in /dev/shm');
});

// What an unprivileged process sees, checked directly.
const probe = `
const c = require('cowshm');
const out = { uid: process.getuid(), gid: process.getgid(), exports: Object.keys(c) };
const r = c.Region.create({ size: 1 << 20 });
const v = r.map();
new Uint8Array(v.buffer).fill(7);
if (c.memory) {
  const p = c.memory.pages(v);
  out.pages = { present: p.present, frames: p.frames, framesUnavailable: p.framesUnavailable };
}
if ('snapshotBackend' in c) {
  out.backend = c.snapshotBackend;
  out.reason = c.snapshotBackendReason;
  const s = r.snapshot();
  new Uint8Array(v.buffer)[4096] = 9;
  out.snapshot = { frozen: new Uint8Array(s.buffer)[4096], live: new Uint8Array(v.buffer)[4096] };
  s.release();
}
r.close();
for (const [key, name] of Object.entries(JSON.parse(process.argv[1]))) {
  try { c.Region.open(name).close(); out[key] = 'opened'; } catch (err) { out[key] = err.code; }
}
process.stdout.write(JSON.stringify(out));
`;

interface ProbeResult {
  uid: number;
  gid: number;
  exports: string[];
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

test('as uid 65534: page frames read as unavailable, null with the reason', { skip: notRoot }, (t) => {
  const p = runProbe();
  if (!p.exports.includes('memory')) {
    t.skip('this build has no memory API');
    return;
  }
  assert.ok(p.pages);
  assert.equal(p.pages.present, 256, 'every written page is present');
  assert.equal(p.pages.frames, null, 'frame numbers are never zeros presented as data');
  assert.equal(typeof p.pages.framesUnavailable, 'string');
  assert.match(p.pages.framesUnavailable ?? '', /CAP_SYS_ADMIN/);
});

test('as uid 65534: snapshots use userfaultfd (user-mode-only) and isolate writes', { skip: notRoot }, (t) => {
  const p = runProbe();
  if (!p.exports.includes('snapshotBackend')) {
    t.skip('this build has no snapshots');
    return;
  }
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
