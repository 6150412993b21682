// Child process for snapshot.xproc.handshake.test.ts, driven over IPC.
//
//   reader NAME   takes a snapshot with scope 'processes' of NAME (opened
//                 read-only, another owner's allowed) and answers:
//                 check    -> { exact, code, message, cause, changed, writers }
//                 cuts N   -> releases it, then takes, checks and releases N
//                             snapshots of the causal stamps that
//                             snapshot.xproc.child.ts writers write
//                 release  -> releases it, then exits
//   poke NAME MS  opens NAME for writing with crossProcess and
//                 handshakeTimeoutMs MS ('Infinity' allowed) and answers:
//                 write P V -> writes V into word 0 of page P, then { ms }
import { Region, pageSize, type Snapshot } from 'cowshm';
import { WRITERS, RECORD, FIRST_RECORD_PAGE } from './snapshot.xproc.child';

interface Message {
  cmd: string;
  page?: number;
  value?: number;
  rounds?: number;
}

const perPage = pageSize / 4;
const send = (m: object): void => {
  process.send?.(m);
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Records in a snapshot of causal stamps whose "seen" counters are ahead of the counters it holds. */
export function cutViolations(words: Uint32Array): number {
  const cells: number[] = [];
  for (let j = 0; j < WRITERS; j++) cells.push(words[(1 + j) * perPage] as number);
  let bad = 0;
  for (let at = FIRST_RECORD_PAGE * perPage; at + RECORD <= words.length; at += RECORD) {
    if (words[at] === 0) continue;
    for (let j = 0; j < WRITERS; j++) if ((words[at + 2 + j] as number) > (cells[j] as number)) bad++;
  }
  return bad;
}

function describe(s: Snapshot, first: Uint32Array): object {
  try {
    const words = new Uint32Array(s.buffer);
    const changed = words.some((v, i) => v !== first[i]);
    return { exact: s.exact, changed, writers: s.writers };
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } };
    return { exact: s.exact, code: e.code, message: e.message, cause: e.cause?.code, writers: s.writers };
  }
}

async function cuts(region: Region, rounds: number): Promise<object> {
  let violations = 0;
  let unstable = 0;
  let moved = 0;
  const paths = new Set<string>();
  let writers = 0;
  for (let round = 0; round < rounds; round++) {
    const s = region.snapshot({ scope: 'processes', timeoutMs: 5000 });
    const frozen = new Uint32Array(s.buffer);
    const first = Uint32Array.from(frozen);
    await sleep(5 + (round % 4) * 10);
    violations += cutViolations(frozen);
    if (frozen.some((v, i) => v !== first[i])) unstable++;
    const live = new Uint32Array(region.map({ access: 'read' }).buffer);
    if (live.some((v, i) => v !== frozen[i])) moved++;
    for (const w of s.writers) paths.add(w.push);
    writers = Math.max(writers, s.writers.length);
    if (!s.exact) unstable++;
    s.release();
  }
  return { violations, unstable, moved, paths: [...paths], writers };
}

function reader(name: string): void {
  const region = Region.open(name, { readOnly: true, allowForeignOwner: true });
  let s: Snapshot | undefined;
  let first = new Uint32Array(0);
  try {
    s = region.snapshot({ scope: 'processes', timeoutMs: 5000 });
    first = Uint32Array.from(new Uint32Array(s.buffer));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    send({ ready: false, code: e.code, syscall: e.syscall, message: e.message });
  }
  if (s !== undefined) send({ ready: true, pid: process.pid, writers: s.writers });
  process.on('message', (m: Message) => {
    if (m.cmd === 'check' && s !== undefined) send(describe(s, first));
    else if (m.cmd === 'cuts') {
      s?.release(); // one cross-process snapshot of a region at a time
      s = undefined;
      cuts(region, m.rounds ?? 10).then(send, (err: Error) => send({ error: String(err) }));
    }
    else if (m.cmd === 'release') {
      s?.release();
      region.close();
      process.disconnect();
    }
  });
}

function poke(name: string, ms: string): void {
  const handshakeTimeoutMs = ms === 'Infinity' ? Number.POSITIVE_INFINITY : Number(ms);
  const region = Region.open(name, { crossProcess: true, allowForeignOwner: true, handshakeTimeoutMs });
  const words = new Uint32Array(region.map().buffer);
  send({ ready: true, pid: process.pid });
  process.on('message', (m: Message) => {
    if (m.cmd === 'write') {
      const t0 = Date.now();
      words[(m.page as number) * perPage] = m.value as number;
      send({ ms: Date.now() - t0 });
    } else if (m.cmd === 'release') {
      region.close();
      process.disconnect();
    }
  });
}

if (require.main === module) {
  const [role, name, arg] = process.argv.slice(2) as [string, string, string];
  if (role === 'reader') reader(name);
  else if (role === 'poke') poke(name, arg);
  else throw new Error(`unknown role ${role}`);
}
