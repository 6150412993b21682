/** Child processes and workers that talk in lines, for the atomics and mutex tests. */
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { packageRoot } from './helpers';

/** What `require` gives a child or worker for the package. */
export const pkg = JSON.stringify(packageRoot);

export interface Peer {
  /** The next line the peer prints (rejects if it exits first). */
  line(): Promise<string>;
  send(line: string): void;
  /** Resolves with the exit code (or the signal's name). */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
  readonly pid: number;
}

function lineReader(onData: (cb: (chunk: Buffer | string) => void) => void, exited: Promise<number | string>, stderr: () => string) {
  let buffered = '';
  const lines: string[] = [];
  const waiting: Array<{ resolve: (l: string) => void; reject: (e: Error) => void }> = [];
  onData((chunk) => {
    buffered += chunk.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const l = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const w = waiting.shift();
      if (w) w.resolve(l);
      else lines.push(l);
    }
  });
  void exited.then((code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the peer exited (${code}) before printing a line: ${stderr()}`));
  });
  let done = false;
  void exited.then(() => (done = true));
  return (): Promise<string> => {
    const l = lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (done) return Promise.reject(new Error(`the peer has exited: ${stderr()}`));
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
}

/** `node -e code` in the package root, stdin/stdout as lines. */
export function child(code: string, env: NodeJS.ProcessEnv = {}): Peer {
  const proc: ChildProcess = spawn(process.execPath, ['-e', code], {
    cwd: packageRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  proc.stderr?.on('data', (d) => (err += d));
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (c, s) => resolve(c ?? s ?? -1)));
  const line = lineReader((cb) => proc.stdout?.on('data', cb), exited, () => err);
  return {
    line,
    send: (l) => proc.stdin?.write(`${l}\n`),
    exited,
    kill: (s = 'SIGKILL') => proc.kill(s),
    pid: proc.pid ?? -1,
  };
}

/** A worker running `code` (CommonJS; `post(line)` and `onLine(cb)` are defined for it). */
export function worker(code: string, workerData?: unknown): Peer & { worker: Worker } {
  const prelude = `
    const { parentPort, workerData } = require('node:worker_threads');
    const post = (l) => parentPort.postMessage(String(l));
    const onLine = (cb) => parentPort.on('message', cb);
  `;
  const w = new Worker(prelude + code, { eval: true, workerData });
  let err = '';
  w.on('error', (e) => (err += String(e?.stack ?? e)));
  const exited = new Promise<number | string>((resolve) => w.once('exit', resolve));
  const line = lineReader((cb) => w.on('message', (m) => cb(`${m}\n`)), exited, () => err);
  return {
    worker: w,
    line,
    send: (l) => w.postMessage(l),
    exited,
    kill: () => void w.terminate(),
    pid: process.pid,
  };
}

export const root = path.join(packageRoot);
