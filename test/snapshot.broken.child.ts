// Child process for snapshot.broken.test.ts, started with
// COWSHM_FAIL_SNAPSHOT_COPY=N so that the Nth copy of a page into a snapshot
// fails with ENOMEM, as it does in a full memory cgroup. Prints one JSON line
// describing what the program could observe.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Region, checkpointInfo, pageSize } from 'cowshm';

const PAGES = 16;
const OLD = 0x11;
const NEW = 0x22;

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

async function rejection(p: Promise<unknown>): Promise<string | null> {
  try {
    await p;
    return null;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

async function main(): Promise<void> {
  const [scenario, dir] = process.argv.slice(2) as [string, string];
  const region = Region.create({ size: PAGES * pageSize });
  const view = region.map({ access: 'write' });
  const bytes = new Uint8Array(view.buffer);
  bytes.fill(OLD);
  const out: Record<string, unknown> = { backend: '' };
  const target = path.join(dir, 'broken.cow');
  try {
    if (scenario === 'write') {
      // The copy fails while the program writes; every reader afterwards is told.
      const s = region.snapshot();
      out['backend'] = s.backend;
      out['exactBefore'] = s.exact;
      const held = new Uint8Array(s.buffer); // taken while exact
      for (let p = 0; p < PAGES; p++) bytes[p * pageSize] = NEW;
      out['writesLanded'] = bytes.every((b, i) => b === (i % pageSize === 0 ? NEW : OLD));
      out['exact'] = s.exact;
      out['exactAgain'] = s.exact;
      out['buffer'] = codeOf(() => s.buffer);
      try {
        void s.buffer;
      } catch (err) {
        const cause = (err as { cause?: { code?: string; syscall?: string } }).cause;
        out['cause'] = `${cause?.code} ${cause?.syscall}`;
        out['message'] = (err as Error).message;
      }
      out['copiedPages'] = codeOf(() => s.copiedPages);
      out['changedPages'] = codeOf(() => s.changedPages());
      out['writeTo'] = await rejection(s.writeTo(target));
      // What a TypedArray taken earlier sees is not exact: only `exact` says so.
      out['heldSeesNew'] = Array.from({ length: PAGES }, (_, p) => held[p * pageSize]).includes(NEW);
      s.release();
      out['releaseThrows'] = false;
      // A new snapshot is exact again: the failure belongs to the snapshot.
      const t = region.snapshot();
      bytes[0] = OLD;
      out['nextExact'] = t.exact && new Uint8Array(t.buffer)[0] === NEW;
      t.release();
    } else if (scenario === 'during-writeTo') {
      // The snapshot is exact when writeTo() starts and breaks before it renames.
      const s = region.snapshot();
      out['backend'] = s.backend;
      const p = s.writeTo(target);
      for (let q = 0; q < PAGES; q++) bytes[q * pageSize] = NEW;
      out['writeTo'] = await rejection(p);
      out['exact'] = s.exact;
      s.release();
    } else if (scenario === 'two') {
      // Two live snapshots: the one whose copy failed breaks, the other stays exact.
      const a = region.snapshot();
      const b = region.snapshot();
      out['backend'] = a.backend;
      bytes[0] = NEW;
      const good = a.exact ? a : b;
      out['exact'] = [a.exact, b.exact].sort();
      out['goodHoldsOld'] = new Uint8Array(good.buffer).every((x) => x === OLD);
      out['goodWrites'] = (await good.writeTo(target)).pages === PAGES;
      a.release();
      b.release();
    } else if (scenario === 'worker') {
      // The writing thread is a worker: its writes land and it sees nothing.
      const s = region.snapshot();
      out['backend'] = s.backend;
      const code = `
        const { parentPort, workerData } = require('node:worker_threads');
        const { Region } = require(${JSON.stringify(require.resolve('cowshm'))});
        const r = Region.fromHandle(workerData.handle);
        const v = r.map({ access: 'write' });
        const b = new Uint8Array(v.buffer);
        for (let p = 0; p < b.length; p += workerData.pageSize) b[p] = workerData.value;
        v.close();
        r.close();
        parentPort.postMessage('done');
      `;
      const w = new Worker(code, { eval: true, workerData: { handle: region.handle(), pageSize, value: NEW } });
      out['worker'] = await new Promise((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      await w.terminate();
      out['writesLanded'] = Array.from({ length: PAGES }, (_, p) => bytes[p * pageSize]).every((b) => b === NEW);
      out['exact'] = s.exact;
      out['writeTo'] = await rejection(s.writeTo(target));
      s.release();
    } else if (scenario === 'prepareWrite') {
      // A copy made by prepareWrite() (cowshm's own I/O paths) breaks the snapshot the same way.
      const s = region.snapshot();
      out['backend'] = s.backend;
      region.prepareWrite(0, PAGES * pageSize);
      out['exact'] = s.exact;
      out['buffer'] = codeOf(() => s.buffer);
      s.release();
    }
    out['files'] = fs.readdirSync(dir);
    out['fileVerifies'] = fs.existsSync(target) ? checkpointInfo(target, { verify: 'full' }).kind : null;
  } finally {
    view.close();
    region.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
