// Checkpoint streams: snapshot.createReadStream() to a file in the same
// directory (fs.createWriteStream with flush: true, so it ends with an fsync
// as writeTo does) and through a Unix socket to a reader that counts the
// bytes, each against snapshot.writeTo() of the same snapshot to the same
// directory, and against cp(1) + sync of a file of the same size, in the same
// run. Rounds alternate the order; each figure is the median over rounds of
// the per-round ratio (stream seconds / writeTo seconds: below 1.25 is at
// least 0.8x writeTo's throughput).
// Usage: node bench/stream.bench.js [GiB] [rounds]   (COWSHM_BENCH_DIR picks the directory)
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { pipeline } = require('node:stream/promises');
const { time, median, pairedRatio, report, fmtSeconds, fillRandom: fill } = require('./lib');
const { Region } = require(path.join(__dirname, '..', 'dist', 'index.js'));

const GiB = 1 << 30;
const size = Math.round(Number(process.argv[2] ?? 0.5) * GiB);
const rounds = Number(process.argv[3] ?? 5);
const dir = fs.mkdtempSync(path.join(process.env.COWSHM_BENCH_DIR ?? os.tmpdir(), 'cowshm-stream-bench-'));
const mbps = (s) => `${(size / s / 1e6).toFixed(0)} MB/s`;

async function toSocket(snap, sock) {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(sock, resolve));
  const got = new Promise((resolve, reject) => {
    server.once('connection', (c) => {
      let n = 0;
      c.on('data', (d) => (n += d.length));
      c.on('end', () => resolve(n));
      c.on('error', reject);
    });
  });
  const client = net.connect(sock);
  await pipeline(snap.createReadStream(), client);
  const n = await got;
  server.close();
  if (n !== size + 4096) throw new Error(`the socket carried ${n} bytes`);
}

async function main() {
  console.log(`region ${size / GiB} GiB, directory ${dir} (${execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim()}), ${os.cpus().length} CPUs, ${rounds} rounds`);
  const region = Region.create({ size });
  fill(new Uint8Array(region.map().buffer));
  const snap = region.snapshot();
  const file = path.join(dir, 'w.cow');
  const sfile = path.join(dir, 's.cow');
  const cpsrc = path.join(dir, 'src.bin');
  const cpdst = path.join(dir, 'cp.bin');
  const sock = path.join(dir, 'sock');
  const t = { write: [], file: [], socket: [], cp: [] };
  try {
    await snap.writeTo(file); // warm
    fs.copyFileSync(file, cpsrc);
    const steps = {
      write: () => snap.writeTo(file),
      file: () => pipeline(snap.createReadStream(), fs.createWriteStream(sfile, { flush: true })),
      socket: () => toSocket(snap, sock),
      cp: () => execFileSync('sh', ['-c', 'cp "$1" "$2" && sync "$2"', 'sh', cpsrc, cpdst]),
    };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 ? ['cp', 'socket', 'file', 'write'] : ['write', 'file', 'socket', 'cp'];
      for (const k of order) {
        for (const f of [sfile, cpdst]) fs.rmSync(f, { force: true });
        fs.rmSync(sock, { force: true });
        execFileSync('sync');
        t[k].push(await time(steps[k]));
      }
    }
    const row = (name, k, base, target) => ({
      name, cowshm: median(t[k]), baseline: median(t[base]), ratio: pairedRatio(t[k], t[base]), ...(target ? { target } : {}),
    });
    report('checkpoint streams: seconds, ratio = median of per-round ratios (at most 1.25 = at least 0.8x the throughput)', [
      row('stream -> file (flush) vs writeTo', 'file', 'write', 1.25),
      row('stream -> Unix socket vs writeTo', 'socket', 'write', 1.25),
      row('stream -> file (flush) vs cp + sync', 'file', 'cp'),
      row('writeTo vs cp + sync', 'write', 'cp'),
    ]);
    for (const k of ['write', 'file', 'socket', 'cp']) console.log(`${k}: ${mbps(median(t[k]))}`);
  } finally {
    snap.release();
    region.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
