// Child process for the snapshot.xproc.*.test.ts files (xproc-helpers' writer()): a writer taking part in
// cross-process snapshots that writes where it is told. One command per line
// on stdin, one answer per line on stdout:
//   "write PAGE VALUE"  writes VALUE into the first byte of page PAGE
//   "wp PAGE PAGES"     how many of PAGES pages from PAGE are write-protected
// It ends when stdin does.
import * as readline from 'node:readline';
import { Region, memory, pageSize } from 'cowshm';

const region = Region.open(process.argv[2] as string, { crossProcess: true });
const view = region.map();
const bytes = new Uint8Array(view.buffer);
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [op, a, b] = line.split(' ');
  if (op === 'write') {
    bytes[Number(a) * pageSize] = Number(b);
    process.stdout.write('ok\n');
  } else if (op === 'wp') {
    process.stdout.write(`${memory.pages(view, { offset: Number(a) * pageSize, length: Number(b) * pageSize }).writeProtected}\n`);
  }
});
rl.on('close', () => {
  view.close();
  region.close();
});
process.stdout.write('ready\n');
