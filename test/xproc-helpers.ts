// Helpers for the snapshot.xproc.*.test.ts files.
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';

const child = path.join(__dirname, 'snapshot.xproc.writer.child.js');

/** A writer process taking part in cross-process snapshots of `name`; ask(line) sends a command and resolves with its answer. */
export async function writer(name: string): Promise<{ ask(line: string): Promise<string>; end(): Promise<void> }> {
  const proc = spawn(process.execPath, [child, name], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: proc.stdout });
  const waiting: ((line: string) => void)[] = [];
  lines.on('line', (line) => waiting.shift()?.(line));
  const next = (): Promise<string> => new Promise((resolve) => waiting.push(resolve));
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  assert.equal(await next(), 'ready');
  return {
    ask(line) {
      const answer = next();
      proc.stdin.write(`${line}\n`);
      return answer;
    },
    async end() {
      proc.stdin.end();
      await exited;
    },
  };
}

