/** Shared test helpers: unique segment names and /dev/shm bookkeeping. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { spawnSync } from 'node:child_process';

let counter = 0;

/**
 * A segment name no other test (or test process) uses. It starts with
 * `cowshm-test-RUN-` where RUN identifies this run of the suite
 * (scripts/test.js sets COWSHM_TEST_RUN), so the end-of-suite /dev/shm check
 * looks at this run's segments only, whatever else runs on the machine.
 */
export function uniqueName(tag: string): string {
  return `cowshm-test-${process.env['COWSHM_TEST_RUN'] ?? 'manual'}-${process.pid}-${tag}-${++counter}`;
}

export function shmExists(name: string): boolean {
  return fs.existsSync(path.join('/dev/shm', name));
}

/** A fresh temporary directory, removed by the caller with `rmTemp`. */
export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `cowshm-${tag}-`));
}

export function rmTemp(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Runs the GC a few times with turns of the event loop between, so finalizers run. */
export async function collectGarbage(rounds = 6): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run the tests with --expose-gc (npm test does)');
  for (let i = 0; i < rounds; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The line of /proc/self/maps that starts at `address`, if any. */
export function mapsLineAt(address: number): string | undefined {
  const prefix = `${address.toString(16)}-`;
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.startsWith(prefix));
}

/** Path of the compiled package entry, for child processes and workers. */
export const packageRoot = path.join(__dirname, '..', '..');

/** st_dev as /proc/PID/maps prints it: hex major:minor. */
export function mapsDevice(dev: number): string {
  const major = Number(((BigInt(dev) >> 8n) & 0xfffn) | ((BigInt(dev) >> 32n) & ~0xfffn));
  const minor = Number((BigInt(dev) & 0xffn) | ((BigInt(dev) >> 12n) & ~0xffn));
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

/** Lines of /proc/self/maps that map the file with this device and inode (a region's `dev`, `ino`). */
export function mapsLinesFor(dev: number, ino: number): string[] {
  const device = mapsDevice(dev);
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => {
      const fields = line.split(/\s+/);
      return fields[3] === device && fields[4] === String(ino);
    });
}

/** Descriptors of this process (numbers) that lead to the file with this device and inode. */
export function fdsFor(dev: number, ino: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc/self/fd')) {
    try {
      const st = fs.statSync(`/proc/self/fd/${entry}`);
      if (st.dev === dev && st.ino === ino) out.push(Number(entry));
    } catch {
      // The descriptor readdir itself used, or one closed meanwhile.
    }
  }
  return out;
}

export interface NodeResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Where a child process running as `uid` finds the package and a Node binary
 * it may execute. For this process's own user that is the package root; for
 * another user (tests run as root switch to 65534) it is a copy of what runs
 * at run time, owned by that user, made once per test process: a CI clone's
 * folder (under /root, say) may not be readable by anyone else.
 */
export function packageFor(uid?: number, gid = uid): { root: string; node: string } {
  if (uid === undefined || uid === process.getuid?.()) return { root: packageRoot, node: process.execPath };
  const key = `${uid}:${gid}`;
  let staged = stagedPackages.get(key);
  if (!staged) {
    staged = stagePackage(uid, gid ?? uid);
    stagedPackages.set(key, staged);
  }
  return staged;
}

const stagedPackages = new Map<string, { root: string; node: string }>();
process.on('exit', () => {
  for (const { root } of stagedPackages.values()) fs.rmSync(root, { recursive: true, force: true });
});

/** Whether `file` can be executed by a user who is neither its owner nor in its group. */
function othersCanExecute(file: string): boolean {
  let p = path.resolve(file);
  if ((fs.statSync(p).mode & 0o005) !== 0o005) return false;
  for (p = path.dirname(p); ; p = path.dirname(p)) {
    if ((fs.statSync(p).mode & 0o001) === 0) return false;
    if (p === path.dirname(p)) return true;
  }
}

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

function stagePackage(uid: number, gid: number): { root: string; node: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cowshm-as-other-user-'));
  const copy = (from: string, to: string): void => fs.cpSync(from, to, { recursive: true, dereference: true });
  for (const part of ['package.json', 'dist', 'lib', 'bin', 'examples', path.join('test', 'build'), path.join('test', 'fixtures', 'c')])
    if (fs.existsSync(path.join(packageRoot, part))) copy(path.join(packageRoot, part), path.join(root, part));
  fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
  copy(path.join(packageRoot, 'build', 'Release', 'cowshm.node'), path.join(root, 'build', 'Release', 'cowshm.node'));
  // The test files (run again as that user by unprivileged.test) need fast-check.
  for (const name of runtimeModules(['fast-check']))
    copy(path.join(packageRoot, 'node_modules', name), path.join(root, 'node_modules', name));
  // A Node binary inside the clone (npm run test:matrix) is as unreadable as the clone.
  let node = process.execPath;
  if (!othersCanExecute(node)) {
    node = path.join(root, 'node');
    fs.copyFileSync(process.execPath, node);
  }
  const own = (p: string): void => {
    fs.lchownSync(p, uid, gid);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755);
      for (const entry of fs.readdirSync(p)) own(path.join(p, entry));
    } else if (st.isFile()) {
      fs.chmodSync(p, st.mode & 0o111 ? 0o755 : 0o644);
    }
  };
  own(root);
  return { root, node };
}

/**
 * Runs `node -e code` in the package root, where `require('cowshm')` names
 * this package; with `uid`, as that user, from a copy that user can read.
 */
export function runNode(
  code: string,
  options: { uid?: number; gid?: number; args?: string[]; input?: string; timeout?: number } = {},
): NodeResult {
  const { args = [], timeout = 30_000, ...rest } = options;
  return runPackageNode(() => [...args, '-e', code], { ...rest, timeout });
}

/** Runs this package's Node (for `uid`, the staged copy's) in the package root, as `uid`:`gid` if given. */
function runPackageNode(
  args: (root: string) => string[],
  options: { uid?: number; gid?: number; input?: string; timeout: number },
): NodeResult {
  const { root, node } = packageFor(options.uid, options.gid);
  const r = spawnSync(node, args(root), {
    cwd: root,
    encoding: 'utf8',
    timeout: options.timeout,
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Whether this process runs as root (some tests need to chown or change uid). */
export const isRoot = process.geteuid?.() === 0;

/**
 * The /proc/self/maps line whose range contains `address`, if any. The kernel
 * merges adjacent anonymous PROT_NONE ranges, so a closed view's reservation
 * may be part of a larger line.
 */
export function mapsLineContaining(address: number): { line: string; start: number; end: number } | undefined {
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const range = line.split(' ', 1)[0] ?? '';
    const dash = range.indexOf('-');
    if (dash < 0) continue;
    const start = parseInt(range.slice(0, dash), 16);
    const end = parseInt(range.slice(dash + 1), 16);
    if (address >= start && address < end) return { line, start, end };
  }
  return undefined;
}

/** Runs the `cowshm` command (bin/cowshm.js) as a real process. */
export function runCli(args: string[], options: { uid?: number; gid?: number } = {}): NodeResult {
  return runPackageNode((root) => [path.join(root, 'bin', 'cowshm.js'), ...args], { ...options, timeout: 60_000 });
}

/**
 * Runs compiled test files (names in test/build, or absolute paths) again in a
 * child `node --test` with `env` added, and asserts that the run passed: exit
 * status 0, no failure, some tests passed. Returns the child's TAP output.
 */
export function rerunTests(files: string[], env: NodeJS.ProcessEnv, options: { timeout?: number } = {}): string {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  // Without NODE_TEST_CONTEXT the child reports in TAP, as a top-level run does.
  delete childEnv['NODE_TEST_CONTEXT'];
  const child = spawnSync(process.execPath, ['--expose-gc', '--test', '--test-reporter=tap', ...files], {
    cwd: __dirname,
    encoding: 'utf8',
    env: childEnv,
    maxBuffer: 64 << 20,
    ...options,
  });
  // The failures and their errors, not the whole TAP stream (a CI summary shows only a part).
  const failed = child.stdout
    .split('\n')
    .filter((l) => /^\s*(not ok|error:|code:|location:)|Error|expected|actual/.test(l))
    .join('\n');
  assert.equal(child.status, 0, `${failed}\n${child.stderr}`);
  assert.match(child.stdout, /# fail 0/);
  assert.match(child.stdout, /# pass [1-9]/);
  return child.stdout;
}
