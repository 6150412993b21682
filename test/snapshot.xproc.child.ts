// Child process for snapshot.xproc.test.ts: a writer that takes part in
// cross-process snapshots and writes causal stamps without pausing.
//
// Layout of the region (Uint32 words): page 0 word 0 is the stop flag; page
// 1 + w holds writer w's counter (word 0); from page 8 on, records of
// RECORD words [writer + 1, counter, seen counter of writer 0..2] at random
// places. A writer reads the others' counters, then writes a record, then its
// own counter: so a consistent cut never holds a record whose "seen" values
// are ahead of the counters it holds.
import { Region, pageSize } from 'cowshm';

export const WRITERS = 3;
export const RECORD = 2 + WRITERS;
export const FIRST_RECORD_PAGE = 8;

function main(): void {
  const [role, name, index] = process.argv.slice(2) as [string, string, string];
  if (role !== 'writer') throw new Error(`unknown role ${role}`);
  const w = Number(index);
  const region = Region.open(name, { crossProcess: true });
  const words = new Uint32Array(region.map().buffer);
  const perPage = pageSize / 4;
  const records = Math.floor((words.length - FIRST_RECORD_PAGE * perPage) / RECORD);
  let seed = (w + 1) * 2654435761;
  const random = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  process.stdout.write(`ready ${process.pid}\n`);
  let counter = words[(1 + w) * perPage] as number;
  while (Atomics.load(words, 0) === 0) {
    counter++;
    const at = FIRST_RECORD_PAGE * perPage + random(records) * RECORD;
    const seen = [];
    for (let j = 0; j < WRITERS; j++) seen.push(Atomics.load(words, (1 + j) * perPage));
    for (let j = 0; j < WRITERS; j++) Atomics.store(words, at + 2 + j, seen[j] as number);
    Atomics.store(words, at + 1, counter);
    Atomics.store(words, at, w + 1);
    Atomics.store(words, (1 + w) * perPage, counter);
  }
  region.close();
  process.stdout.write(`done ${counter}\n`);
}

if (require.main === module) main();
