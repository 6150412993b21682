import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Region, checkpointInfo } from 'cowshm';
import { tempDir, rmTemp } from './helpers';

const child = path.join(__dirname, 'checkpoint.crash.child.js');

/** Starts the rewriting child; resolves once it has written `generations` checkpoints. */
function start(file: string, size: number, generations: number) {
  const proc = spawn(process.execPath, [child, file, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let last = 0;
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) if (line) last = Number(line);
      if (last >= generations) resolve();
    });
    proc.on('exit', (code, signal) => reject(new Error(`child exited early (${code ?? signal})`)));
  });
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  return { proc, ready, exited, written: () => last };
}

test('SIGKILL at random moments during writeTo: the last complete checkpoint stays loadable', async () => {
  const dir = tempDir('ck-crash');
  const file = path.join(dir, 'state.cow');
  const size = 24 << 20;
  try {
    for (let round = 0; round < 6; round++) {
      const c = start(file, size, 1);
      await c.ready;
      // Somewhere in a later write: during the copy, the fsync or the rename.
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 300)));
      c.proc.kill('SIGKILL');
      await c.exited;
      const reported = c.written();

      // Only the checkpoint and leftover temporary files; never a half file under the final name.
      for (const f of fs.readdirSync(dir)) assert.ok(f === 'state.cow' || /^\.state\.cow\.\d+\.[0-9a-f]+\.tmp$/.test(f), f);
      const info = checkpointInfo(file, { verify: 'full' });
      assert.equal(info.regionSize, size);
      const back = Region.restore(file, { verify: 'full' });
      try {
        const words = new Uint32Array(back.map().buffer);
        const k = findGeneration(words[0] as number, reported + 1);
        assert.ok(k >= reported && k <= reported + 1, `generation ${k}, child had reported ${reported}`);
        for (let i = 0; i < words.length; i += 1021) assert.equal(words[i], (Math.imul(k, 0x9e3779b1) + i) >>> 0);
      } finally {
        back.close();
      }
    }
    // The next writer of the same target removes what killed writers left behind.
    const c = start(file, size, 1);
    await c.ready;
    c.proc.kill('SIGKILL');
    await c.exited;
    const left = fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));
    assert.ok(left.length <= 1, `temporary files of dead writers remain: ${left.join(', ')}`);
  } finally {
    rmTemp(dir);
  }
});

function findGeneration(first: number, upTo: number): number {
  for (let k = 1; k <= upTo; k++) if ((Math.imul(k, 0x9e3779b1) >>> 0) === first) return k;
  return -1;
}
