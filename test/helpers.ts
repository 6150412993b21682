/** Shared test helpers: unique segment names and /dev/shm bookkeeping. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';

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
