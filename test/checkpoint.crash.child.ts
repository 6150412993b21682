// Child process for checkpoint.crash.test.ts: rewrites one checkpoint over
// and over until it is killed. Generation k fills word i with (k * 0x9e3779b1 + i) >>> 0.
import { Region, writeCheckpoint } from 'cowshm';

async function main(): Promise<void> {
  const [file, sizeArg] = process.argv.slice(2);
  const size = Number(sizeArg);
  const region = Region.create({ size });
  const view = region.map();
  const words = new Uint32Array(view.buffer);
  for (let k = 1; ; k++) {
    for (let i = 0; i < words.length; i++) words[i] = (Math.imul(k, 0x9e3779b1) + i) >>> 0;
    await writeCheckpoint(view, file as string);
    process.stdout.write(`${k}\n`);
  }
}

void main();
