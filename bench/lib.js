// Shared benchmark helpers: compile a C baseline with gcc in the same run,
// time things with hrtime, and print ratio tables.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const buildDir = path.join(__dirname, 'build');

/** Compiles bench/c/NAME.c with `gcc -O3 -march=native` (once per run) and returns the binary's path. */
function compileC(name, extraFlags = []) {
  fs.mkdirSync(buildDir, { recursive: true });
  const src = path.join(__dirname, 'c', `${name}.c`);
  const out = path.join(buildDir, name);
  execFileSync('gcc', ['-O3', '-march=native', '-o', out, src, '-lrt', '-lpthread', ...extraFlags], { stdio: 'inherit' });
  return out;
}

/** Runs a compiled C baseline (killed after 5 minutes: a hung baseline fails the run) and parses the JSON object it prints on stdout. */
function runC(binary, args = [], options = {}) {
  const out = execFileSync(binary, args.map(String), { encoding: 'utf8', maxBuffer: 1 << 24, timeout: 300_000, ...options });
  return JSON.parse(out.trim().split('\n').pop());
}

/** Seconds taken by fn (sync or async). */
async function time(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/**
 * CPU seconds of this process so far, all its threads (user + system): on a
 * shared machine wall time would also measure the neighbours. The C
 * baselines use CLOCK_PROCESS_CPUTIME_ID, the same clock.
 */
function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** 0 .. n-1 in an order shuffled by a fixed xorshift seed: the same order in every run and every build. */
function shuffled(n, seed = 12345) {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let x = seed | 0 || 1; // xorshift stays at 0 from 0
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** Writes `value` to one byte of each page in `order` (page p of `unit` bytes, at an offset within it that varies with p). */
function writePages(bytes, order, unit, value) {
  for (let i = 0; i < order.length; i++) {
    const p = order[i];
    bytes[p * unit + (p & 4095)] = value;
  }
}

/** Fills `bytes` with xorshift words (no page alike, nothing a sparse file or compression could skip). */
function fillRandom(bytes) {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let x = 88172645;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

/** Prints rows of cells (the first row the header) as aligned columns, indented by two spaces. */
function printTable(lines) {
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => String(l[i]).length)));
  for (const l of lines) console.log('  ' + l.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd());
}

/** The median of an array of numbers. */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs fn `runs` times (after `warmup` untimed runs) and returns the median seconds. */
async function measure(fn, { runs = 7, warmup = 1 } = {}) {
  for (let i = 0; i < warmup; i++) await fn();
  const xs = [];
  for (let i = 0; i < runs; i++) {
    // A turn of the event loop between runs, as any Node program has: the
    // finalizers of collected views run there, not in synchronous code.
    await new Promise(setImmediate);
    xs.push(await time(fn));
  }
  return median(xs);
}

function fmtSeconds(s) {
  if (s < 1e-6) return `${(s * 1e9).toFixed(0)} ns`;
  if (s < 1e-3) return `${(s * 1e6).toFixed(1)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(2)} ms`;
  return `${s.toFixed(3)} s`;
}

/**
 * Prints a table of rows { name, cowshm, baseline, unit?, target } where
 * cowshm and baseline are seconds (lower is better) unless `higherIsBetter`.
 * `target` is the allowed ratio (cowshm / baseline). A row may give its own
 * `ratio` (e.g. the median of ratios paired round by round, steadier than a
 * ratio of medians on a shared machine). Returns true when every row meets it.
 */
function report(title, rows) {
  console.log(`\n${title}`);
  const lines = [['measure', 'cowshm', 'baseline', 'ratio', 'target', '']];
  let ok = true;
  for (const r of rows) {
    const fmt = r.format ?? fmtSeconds;
    const ratio = r.ratio ?? r.cowshm / r.baseline;
    const pass = r.target === undefined ? true : r.higherIsBetter ? ratio >= r.target : ratio <= r.target;
    ok &&= pass;
    lines.push([
      r.name,
      fmt(r.cowshm),
      fmt(r.baseline),
      `${ratio.toFixed(2)}×`,
      r.target === undefined ? '' : `${r.higherIsBetter ? '≥' : '≤'} ${r.target}×`,
      r.target === undefined ? '' : pass ? 'ok' : 'MISSED',
    ]);
  }
  printTable(lines);
  // bench/compare.js (suite bench:NAME) reads the figures from here.
  if (process.env.COWSHM_BENCH_JSON)
    console.log(`COWSHM_BENCH_JSON ${JSON.stringify({ title, rows: rows.map((r) => ({ name: r.name, value: r.cowshm, higherIsBetter: !!r.higherIsBetter })) })}`);
  return ok;
}

let names = 0;
/** A shm segment name no other bench (or bench process) uses. */
function benchName(tag) {
  return `cowshm-bench-${process.pid}-${tag}-${++names}`;
}

/** The value of `--key value` / `--key=value` on this bench's command line, or `fallback`. */
function option(key, fallback) {
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${key}`) return args[i + 1] ?? fallback;
    if (args[i].startsWith(`--${key}=`)) return args[i].slice(key.length + 3);
  }
  return fallback;
}

/** An integer option; accepts `2**30`-style powers and `1<<30`-style shifts. */
function intOption(key, fallback) {
  const raw = option(key, undefined);
  if (raw === undefined) return fallback;
  const m = /^(\d+)(?:\*\*(\d+)|<<(\d+))?$/.exec(String(raw));
  if (!m) throw new RangeError(`--${key} must be an integer (e.g. 1073741824, 2**30 or 1<<30); received ${raw}`);
  const n = m[2] !== undefined ? Number(m[1]) ** Number(m[2]) : m[3] !== undefined ? Number(m[1]) * 2 ** Number(m[3]) : Number(m[1]);
  if (!Number.isSafeInteger(n)) throw new RangeError(`--${key} is too large: ${raw}`);
  return n;
}

/** Bytes as GB/s given seconds: for throughput rows. */
function gbps(bytes, seconds) {
  return bytes / seconds / 1e9;
}

/** Median of xs[i] / ys[i]: ratios paired run by run (or round by round). */
function pairedRatio(xs, ys) {
  return median(xs.map((x, i) => x / ys[i]));
}

const poolControl = (pageSize) => `/sys/kernel/mm/hugepages/hugepages-${pageSize / 1024}kB/nr_hugepages`;
const pools = new Map(); // page size -> pages this bench added

/** Gives back the pages reservePool() added. Runs at exit, however the bench ends. */
function releasePools() {
  for (const [pageSize, pages] of pools) {
    const now = Number(fs.readFileSync(poolControl(pageSize), 'utf8'));
    fs.writeFileSync(poolControl(pageSize), String(Math.max(0, now - pages)));
  }
  pools.clear();
}

/**
 * Makes sure the hugetlb pool of `pageSize` has `pages` free pages for this
 * bench (as root): adds what is missing and takes exactly that away again
 * when the process ends, also on SIGINT/SIGTERM. Throws, naming the pool,
 * when it can't.
 */
function reservePool(pages, pageSize = 2 << 20) {
  const dir = path.dirname(poolControl(pageSize));
  const free = Number(fs.readFileSync(path.join(dir, 'free_hugepages'), 'utf8'));
  const missing = pages - free;
  if (missing <= 0) return;
  if (process.geteuid?.() !== 0)
    throw new Error(`the pool of ${pageSize}-byte pages has ${free} free pages, this bench needs ${pages}: run it as root, or raise ${poolControl(pageSize)}`);
  if (pools.size === 0) {
    process.on('exit', releasePools);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { releasePools(); process.kill(process.pid, sig); });
  }
  const before = Number(fs.readFileSync(poolControl(pageSize), 'utf8'));
  fs.writeFileSync(poolControl(pageSize), String(before + missing));
  const added = Number(fs.readFileSync(poolControl(pageSize), 'utf8')) - before;
  pools.set(pageSize, (pools.get(pageSize) ?? 0) + added);
  if (added < missing) throw new Error(`the kernel added only ${added} of ${missing} pages of ${pageSize} bytes to the pool`);
}

module.exports = {
  compileC, runC, time, measure, median, pairedRatio, fmtSeconds, report, printTable, buildDir, benchName, option, intOption, gbps,
  reservePool, cpuSeconds, shuffled, writePages, fillRandom,
};
