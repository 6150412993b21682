// The first write per 4 KiB page in a writer process after a snapshot with
// scope 'processes', on the handshake push path (COWSHM_XPROC_HANDSHAKE=1 in
// that writer: it posts each page and this process's helper thread copies
// it) against the direct path (process_vm_writev) and against the writer's
// own in-process snapshot, same run, rounds alternating; ratios are medians
// of per-round ratios. The issue asks to report the handshake's figures (no
// target). Each writer is a child process running this file with `writer`.
// Usage: node bench/xproc-handshake.bench.js [--quick] [--rounds N] [--mib M]
'use strict';
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const { median, pairedRatio, report, benchName, intOption, fmtSeconds } = require('./lib');
const { Region, pageSize, snapshotBackend } = require('..');

/** A random order of n page numbers (xorshift, fixed seed per round). */
function order(n, seed) {
  const o = new Uint32Array(n);
  for (let i = 0; i < n; i++) o[i] = i;
  let x = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    const t = o[i];
    o[i] = o[j];
    o[j] = t;
  }
  return o;
}

/** Writes one byte into every page in random order; returns seconds per page. */
function firstWrites(bytes, seed) {
  const pages = bytes.length / pageSize;
  const o = order(pages, seed);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < pages; i++) bytes[o[i] * pageSize] += 1;
  return Number(process.hrtime.bigint() - t0) / 1e9 / pages;
}

function writer(name) {
  const region = Region.open(name, { crossProcess: true });
  const bytes = new Uint8Array(region.map().buffer);
  const lines = readline.createInterface({ input: process.stdin });
  process.stdout.write('ready\n');
  lines.on('line', (line) => {
    const [cmd, seed] = line.split(' ');
    if (cmd === 'go') process.stdout.write(`${firstWrites(bytes, Number(seed))}\n`);
    else if (cmd === 'self') {
      // The in-process baseline: this process's own snapshot, the same writes.
      const s = region.snapshot();
      const t = firstWrites(bytes, Number(seed));
      s.release();
      process.stdout.write(`${t}\n`);
    }
  });
  lines.on('close', () => region.close());
}

async function main() {
  const quick = process.argv.includes('--quick');
  const rounds = intOption('rounds', quick ? 3 : 9);
  const mib = intOption('mib', quick ? 32 : 128);
  const size = mib << 20;
  const children = [];
  const regions = [];
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
  /** A region written full, and a writer process for it with env. */
  async function start(tag, env) {
    const name = benchName(tag);
    const r = Region.create({ name, size, mode: 0o600 });
    new Uint8Array(r.map().buffer).fill(1);
    const proc = spawn(process.execPath, [__filename, 'writer', name], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    children.push(proc);
    const lines = readline.createInterface({ input: proc.stdout });
    const queue = [];
    let waiting;
    lines.on('line', (l) => (waiting ? (waiting(l), (waiting = undefined)) : queue.push(l)));
    const next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => (waiting = resolve)));
    if ((await next()) !== 'ready') throw new Error(`writer ${tag} did not start`);
    r.unlink(); // nothing left in /dev/shm however the bench ends
    regions.push(r);
    return {
      r,
      proc,
      async ask(cmd) {
        proc.stdin.write(`${cmd}\n`);
        return Number(await next());
      },
    };
  }
  const direct = await start('direct', { COWSHM_XPROC_HANDSHAKE: '0' });
  const hand = await start('hand', { COWSHM_XPROC_HANDSHAKE: '1' });
  const viaSnapshot = async (w, seed, want) => {
    const s = w.r.snapshot({ scope: 'processes', timeoutMs: 10_000 });
    const got = s.writers.map((x) => x.push).join(',');
    if (got !== want) throw new Error(`expected the ${want} path, the snapshot says ${got}`);
    const t = await w.ask(`go ${seed}`);
    if (!s.exact) throw new Error('the snapshot broke during the bench');
    s.release();
    return t;
  };
  const d = [];
  const h = [];
  const self = [];
  for (let round = 0; round < rounds; round++) {
    const seed = 1 + round;
    const steps = [
      async () => d.push(await viaSnapshot(direct, seed, 'direct')),
      async () => h.push(await viaSnapshot(hand, seed, 'handshake')),
      async () => self.push(await hand.ask(`self ${seed}`)),
    ];
    for (let i = 0; i < steps.length; i++) await steps[(i + round) % steps.length]();
  }
  const perPage = (s) => `${fmtSeconds(s)}/page`;
  const title = `First write per 4 KiB page after snapshot({ scope: 'processes' }), ${mib} MiB, random order, ` +
    `${rounds} rounds, backend ${snapshotBackend}, ${require('node:os').loadavg()[0].toFixed(1)} load`;
  report(title, [
    { name: 'handshake vs direct (process_vm_writev)', cowshm: median(h), baseline: median(d), ratio: pairedRatio(h, d), format: perPage },
    { name: 'handshake vs the writer\'s in-process snapshot', cowshm: median(h), baseline: median(self), ratio: pairedRatio(h, self), format: perPage },
    { name: 'direct vs the writer\'s in-process snapshot', cowshm: median(d), baseline: median(self), ratio: pairedRatio(d, self), format: perPage },
  ]);
  for (const c of children) c.stdin.end();
  for (const r of regions) r.close();
}

if (process.argv[2] === 'writer') writer(process.argv[3]);
else main().catch((err) => {
  console.error(err);
  process.exit(1);
});
