/** Shared by the test/snapshot.xproc.*.test.ts files: child processes that stay up, and the coordination file. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Region } from 'cowshm';
import { packageRoot } from './helpers';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process that printed `ready` and keeps running. */
export interface Peer {
  proc: ChildProcess;
  pid: number;
  /** Resolves with the exit code, or the signal's name. */
  exited: Promise<number | string | null>;
  /** Everything it printed so far, stdout and stderr. */
  out: string;
}

/** Spawns `command args` and waits (at most 10 s) until it prints `ready`. */
export async function startPeer(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Peer> {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const p: Peer = {
    proc,
    pid: proc.pid as number,
    out: '',
    exited: new Promise((resolve) => proc.on('exit', (code, sig) => resolve(code ?? sig))),
  };
  proc.stdout?.on('data', (d: Buffer) => (p.out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (p.out += d.toString()));
  let done = false;
  void p.exited.then(() => (done = true));
  for (let i = 0; i < 1000 && !p.out.includes('ready') && !done; i++) await sleep(10);
  assert.ok(p.out.includes('ready'), `${command} ${args.join(' ')} started: ${p.out}`);
  return p;
}

/** Ends a peer however it is (stopped included), waiting at most 10 s before SIGKILL. */
export async function stopPeer(p: Peer, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  p.proc.kill('SIGCONT');
  p.proc.kill(signal);
  const t = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(t);
}

/** The region's coordination file. */
export function coordinationFile(r: Region): string {
  return `/dev/shm/cowshm-xproc-${r.dev.toString(16)}-${r.ino.toString(16)}`;
}

/** Waits (at most 2 s) for a file to go, and says whether it did. */
export async function gone(file: string): Promise<boolean> {
  for (let i = 0; i < 100 && fs.existsSync(file); i++) await sleep(20);
  return !fs.existsSync(file);
}

// A cowshm process holding the segment NAME: 'participant' opens it with
// crossProcess and writes, 'plain' opens it without and writes, 'reader'
// opens it read-only with a copy-on-write view. SIGTERM closes it first.
const COWSHM_PEER = `
const { Region } = require(${JSON.stringify(packageRoot)});
const [name, how] = process.argv.slice(1);
const r = how === 'reader' ? Region.open(name, { readOnly: true }) : Region.open(name, { crossProcess: how === 'participant' });
const v = r.map({ access: how === 'reader' ? 'cow' : 'write' });
if (how !== 'reader') new Uint8Array(v.buffer)[8] = 1;
process.on('SIGTERM', () => { r.close(); process.exit(0); }); // leaves: the last one removes the coordination file
console.log('ready');
setInterval(() => {}, 1000);
`;

export function cowshmPeer(name: string, how: 'participant' | 'plain' | 'reader'): Promise<Peer> {
  return startPeer(process.execPath, ['-e', COWSHM_PEER, name, how]);
}

/** The compiled child of the snapshot.xproc.* tests (snapshot.xproc.peer.child.ts). */
export const peerChild = `${__dirname}/snapshot.xproc.peer.child.js`;

/** Starts a role of snapshot.xproc.peer.child.ts. */
export function startRole(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Peer> {
  return startPeer(process.execPath, [peerChild, ...args], env);
}

/** Sets the stop flag (page 0, word 0) and waits for every peer to end, stopped ones too. */
export async function stopAll(stop: Uint32Array, peers: Peer[]): Promise<void> {
  Atomics.store(stop, 0, 1);
  await endAll(peers);
}

/** Waits (at most 10 s each, then SIGKILL) for peers told to end, stopped ones too. */
export async function endAll(peers: Pick<Peer, 'proc' | 'exited'>[]): Promise<void> {
  for (const p of peers) {
    p.proc.kill('SIGCONT');
    const t = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
    await p.exited;
    clearTimeout(t);
  }
}

/** Waits until every thread of `pid` is stopped: a loaded machine may take a while to stop them all. */
export async function stopped(pid: number): Promise<void> {
  const states = (): string[] =>
    fs.readdirSync(`/proc/${pid}/task`).map((t) => (fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').split(') ')[1] ?? '').split(' ')[0] ?? '');
  for (let i = 0; i < 500 && !states().every((st) => st === 'T' || st === 't'); i++) await sleep(10);
  assert.ok(states().every((st) => st === 'T' || st === 't'), `process ${pid} stopped: ${states().join(' ')}`);
}

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

