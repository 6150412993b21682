/**
 * A worker thread that writes into a region through its own views, on
 * command from the test that started it (see snapshot.workers.test.ts and
 * snapshot.property.test.ts). Every command is answered with one message.
 */
import { parentPort } from 'node:worker_threads';
import { Region, type RegionHandle, type Snapshot, type View } from 'cowshm';

export type WorkerCommand =
  | { op: 'open'; handle: RegionHandle }
  | { op: 'remap' }
  | { op: 'write'; writes: Array<[offset: number, value: number, length: number]> }
  | { op: 'spin'; control: SharedArrayBuffer; index: number; firstPage: number; pages: number }
  | { op: 'snapshot' }
  | { op: 'read-snapshot' }
  | { op: 'release' }
  | { op: 'close' };

let region: Region | undefined;
let views: View[] = [];
let snapshot: Snapshot | undefined;

function mapViews(): void {
  const r = region as Region;
  for (const v of views) v.close();
  // Two overlapping write views: the whole region, and its second half.
  const half = Math.floor(r.size / 2 / 4096) * 4096;
  views = [r.map(), r.map({ offset: half })];
}

parentPort?.on('message', (cmd: WorkerCommand) => {
  try {
    if (cmd.op === 'open') {
      region = Region.fromHandle(cmd.handle);
      mapViews();
    } else if (cmd.op === 'remap') {
      mapViews();
    } else if (cmd.op === 'write') {
      const [whole, half] = views as [View, View];
      for (const [offset, value, length] of cmd.writes) {
        // Writes at or past the second view's start go through it, as another
        // view of the same pages would.
        const view = offset >= half.byteOffset ? half : whole;
        const bytes = new Uint8Array(view.buffer);
        const at = offset - view.byteOffset;
        if (length === 4 && at % 4 === 0) new Int32Array(view.buffer)[at / 4] = value;
        else bytes.fill(value & 0xff, at, Math.min(at + length, bytes.length));
      }
    } else if (cmd.op === 'spin') {
      // Write a rising counter into every page of the range until told to stop:
      // control[0] != 0 stops; control[1 + index] counts rounds.
      const control = new Int32Array(cmd.control);
      const words = new Int32Array((views[0] as View).buffer);
      const per = 4096 / 4;
      let round = 0;
      while (Atomics.load(control, 0) === 0) {
        round++;
        for (let p = cmd.firstPage; p < cmd.firstPage + cmd.pages; p++) {
          words[p * per] = round;
          words[p * per + per - 1] = round;
        }
        Atomics.store(control, 1 + cmd.index, round);
      }
    } else if (cmd.op === 'close') {
      region?.close();
      region = undefined;
      views = [];
    }
    if (cmd.op === 'snapshot') {
      snapshot = (region as Region).snapshot();
    } else if (cmd.op === 'read-snapshot') {
      parentPort?.postMessage({ ok: true, bytes: new Uint8Array((snapshot as Snapshot).buffer).slice() });
      return;
    } else if (cmd.op === 'release') {
      snapshot?.release();
      snapshot = undefined;
    }
    parentPort?.postMessage({ ok: true });
  } catch (err) {
    parentPort?.postMessage({ ok: false, error: String((err as Error).stack ?? err) });
  }
});
