/** Helpers shared by the snapshot tests. */
import * as fs from 'node:fs';
import type { Worker } from 'node:worker_threads';
import type { WorkerCommand } from './snapshot-worker';
import type { Region } from 'cowshm';

/** The value of `field` (in bytes) in the /proc/self/smaps block of the mapping at `address`. */
export function smapsField(address: number, field: string): number {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const prefix = `${address.toString(16)}-`;
  const at = lines.findIndex((l) => l.startsWith(prefix));
  if (at === -1) throw new Error(`no mapping at 0x${address.toString(16)} in /proc/self/smaps`);
  for (let i = at + 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) break;
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m && m[1] === field) return Number(m[2]) * 1024;
  }
  throw new Error(`no ${field} line for the mapping at 0x${address.toString(16)}`);
}

/** How many mappings (VMAs) this process has. */
export function mapsCount(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.length > 0).length;
}

/** The permissions column ('rw-s', 'r--s', …) of the maps lines inside [address, address + length). */
export function mapsPermissions(address: number, length: number): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
    if (!m) continue;
    const lo = parseInt(m[1] as string, 16);
    const hi = parseInt(m[2] as string, 16);
    if (hi > address && lo < address + length) out.push(m[3] as string);
  }
  return out;
}

/** A deterministic byte pattern for page `page` written at time `tag`. */
export function fillPage(bytes: Uint8Array, page: number, tag: number, pageSize: number): void {
  bytes.fill((page * 31 + tag * 7 + 1) & 0xff, page * pageSize, (page + 1) * pageSize);
}

/**
 * Sends a command to a snapshot-worker thread; settles with the worker's one
 * answer, or rejects if the worker fails first (instead of waiting forever).
 */
export function command(w: Worker, cmd: WorkerCommand): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      w.off('message', onMessage);
      reject(err);
    };
    // Removed once answered: a property run sends hundreds of commands to one worker.
    const onMessage = (m: { ok: boolean; error?: string }): void => {
      w.off('error', onError);
      if (m.ok) resolve();
      else reject(new Error(m.error));
    };
    w.once('message', onMessage);
    w.once('error', onError);
    w.postMessage(cmd);
  });
}

/**
 * Opens `region` in each snapshot-worker thread and sets worker i writing
 * its own `pagesEach` pages until `control[0]` is set; resolves once every
 * worker is writing, with the promises of their runs.
 */
export async function startSpinning(workers: Worker[], region: Region, control: Int32Array, pagesEach: number): Promise<Array<Promise<void>>> {
  await Promise.all(workers.map((w) => command(w, { op: 'open', handle: region.handle() })));
  const spinning = workers.map((w, i) =>
    command(w, { op: 'spin', control: control.buffer as SharedArrayBuffer, index: i, firstPage: i * pagesEach, pages: pagesEach }),
  );
  while (control.subarray(1).some((x) => x < 3)) await new Promise((resolve) => setTimeout(resolve, 1));
  return spinning;
}
