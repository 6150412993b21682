/** Shared test helpers: unique segment names and /dev/shm bookkeeping. */
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

/** Runs `node -e code` in the package root, where `require('cowshm')` names this package. */
export function runNode(
  code: string,
  options: { uid?: number; gid?: number; args?: string[]; input?: string; timeout?: number } = {},
): NodeResult {
  const r = spawnSync(process.execPath, [...(options.args ?? []), '-e', code], {
    cwd: packageRoot,
    encoding: 'utf8',
    timeout: options.timeout ?? 30_000,
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
  const r = spawnSync(process.execPath, [path.join(packageRoot, 'bin', 'cowshm.js'), ...args], {
    cwd: packageRoot,
    encoding: 'utf8',
    timeout: 60_000,
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}
