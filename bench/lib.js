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

/** Runs a compiled C baseline and parses the JSON object it prints on stdout. */
function runC(binary, args = [], options = {}) {
  const out = execFileSync(binary, args.map(String), { encoding: 'utf8', maxBuffer: 1 << 24, ...options });
  return JSON.parse(out.trim().split('\n').pop());
}

/** Seconds taken by fn (sync or async). */
async function time(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
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
  for (let i = 0; i < runs; i++) xs.push(await time(fn));
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
 * `target` is the allowed ratio (cowshm / baseline). Returns true when every row meets it.
 */
function report(title, rows) {
  console.log(`\n${title}`);
  const lines = [['measure', 'cowshm', 'baseline', 'ratio', 'target', '']];
  let ok = true;
  for (const r of rows) {
    const fmt = r.format ?? fmtSeconds;
    const ratio = r.higherIsBetter ? r.cowshm / r.baseline : r.cowshm / r.baseline;
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
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => String(l[i]).length)));
  for (const l of lines) console.log('  ' + l.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd());
  return ok;
}

module.exports = { compileC, runC, time, measure, median, fmtSeconds, report, buildDir };
