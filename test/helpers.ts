/** Shared test helpers: unique segment names and /dev/shm bookkeeping. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { spawnSync } from 'node:child_process';

let counter = 0;

/** A segment name no other test (or test process) uses. */
export function uniqueName(tag: string): string {
  return `cowshm-test-${process.pid}-${tag}-${++counter}`;
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

/** Lines of /proc/self/maps that map the file with this inode (a region's `ino`). */
export function mapsLinesForInode(ino: number): string[] {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => {
      const fields = line.split(/\s+/);
      return fields.length >= 5 && fields[4] === String(ino) && fields[3] !== '00:00';
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
