#!/usr/bin/env node
// This tree against another build of cowshm (a commit, or a built checkout),
// in alternating rounds of one run: each round measures both builds, the
// order swapping from round to round, and a row's ratio is the median of the
// per-round ratios this tree / baseline (> 1: this tree is slower), so that
// neither build gets the quieter moments of a shared machine.
//
// Usage: node bench/compare.js --base REV|DIR [--suite NAME,...] [options] [-- bench options]
//   --base REV|DIR  a git revision (68a05a5, main, HEAD~3): checked out in a
//                   temporary worktree under the system's temporary directory
//                   and built there (npm install); or a package root already
//                   built (dist/ and build/Release/cowshm.node)
//   --suite LIST    suites, comma-separated (default: ts); --list shows them:
//                     map, snapshot, restore, write (ts = all four)
//                     engine          the snapshot engine, per backend
//                     checkpoint      checkpoint writes and restores, 0.25 GiB
//                     region, cow     both builds in one process
//                     bench:NAME      bench/NAME.bench.js, its report() rows
//   --rounds N      alternating rounds (default 7; 31 for region and cow,
//                   whose rounds are milliseconds long; 5 for bench:NAME)
//   --target X      the ratio a row must stay under (default 1.05); the exit
//                   status is 1 when a row misses it
//   --quick         fewer rounds and iterations, smaller engine sizes
//   --same-native   both builds load this tree's addon (when only TypeScript
//                   differs); otherwise each loads its own, or the one
//                   COWSHM_NATIVE_PATH names
//   --keep-base     leave the base worktree built, for the next run with the
//                   same revision (which then reuses it)
//   --mib M, --gib G, --backends auto,mprotect   engine: the written region,
//                   the snapshotted region, the backends (default 256, 1, both)
//   --iters N       region, cow: calls per timed run (default 100)
//   --checkpoint-gib G   checkpoint: the region's size (default 0.25)
//   -- ...          options passed to each bench:NAME script
// Example: node --expose-gc bench/compare.js --base 68a05a5 --suite restore,engine --rounds 11
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { spawnSync, execFileSync } = require('node:child_process');
const { median, fmtSeconds, printTable } = require('./lib');
const { SUITES, ALIASES, runCases, runEngine, runOps } = require('./compare-suites');

const here = path.join(__dirname, '..');

function usage(message) {
  if (message) console.error(`bench/compare.js: ${message}`);
  console.error('usage: node bench/compare.js --base REV|DIR [--suite NAME,...] [--rounds N] [--target X] [--quick] [--same-native] [--keep-base] [-- bench options]\n       node bench/compare.js --list');
  process.exit(2);
}

// --- Children: one build (or both, for in-process suites), one round; JSON on stdout.
async function child(kind, roots, suites, o) {
  const load = (root) => require(path.join(root, 'dist', 'index.js'));
  let out;
  if (kind === 'process') out = await runCases(load(roots[0]), suites, o);
  else if (kind === 'engine') out = runEngine(load(roots[0]), o);
  else out = await runOps(roots.map(load), suites, o);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// --- The base build.
const git = (...args) => execFileSync('git', args, { cwd: here, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const isBuilt = (root) => fs.existsSync(path.join(root, 'dist', 'index.js')) && fs.existsSync(path.join(root, 'build', 'Release', 'cowshm.node'));

/** { root, label, done() } for --base: a built directory as it is, or a revision built in a worktree of its own. */
function prepareBase(spec, keep) {
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory()) {
    const root = path.resolve(spec);
    if (!isBuilt(root)) usage(`${root} has no dist/index.js or build/Release/cowshm.node: run npm install there first`);
    return { root, label: root, done() {} };
  }
  let sha;
  try {
    sha = git('rev-parse', '--verify', '--quiet', `${spec}^{commit}`);
  } catch {
    usage(`--base ${spec} is neither a directory nor a revision of this repository`);
  }
  const root = path.join(os.tmpdir(), `cowshm-compare-${sha.slice(0, 12)}`);
  const marker = path.join(root, '.cowshm-compare-built');
  const label = `${spec} (${sha.slice(0, 12)})`;
  const remove = () => {
    try {
      git('worktree', 'remove', '--force', root);
    } catch {
      fs.rmSync(root, { recursive: true, force: true });
      git('worktree', 'prune');
    }
  };
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === sha && isBuilt(root)) {
    process.stderr.write(`base ${label}: reusing the build in ${root}\n`);
  } else {
    if (fs.existsSync(root)) remove();
    process.stderr.write(`base ${label}: checking out and building in ${root} (npm install)\n`);
    git('worktree', 'add', '--detach', root, sha);
    const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: root, stdio: ['ignore', 2, 2] });
    if (r.status !== 0 || !isBuilt(root)) {
      remove();
      throw new Error(`building ${label} failed (npm install exited with ${r.status ?? r.signal})`);
    }
    fs.writeFileSync(marker, sha);
  }
  return { root, label, done: keep ? () => process.stderr.write(`base build kept in ${root}\n`) : remove };
}

// --- One measurement of one build, in a child process.
function spawnChild(args, env) {
  const r = spawnSync(process.execPath, ['--expose-gc', __filename, ...args], { encoding: 'utf8', env, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: exit ${r.status ?? r.signal}\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

/** Rows where a higher figure is better (throughputs of bench scripts): their ratio is baseline / this tree. */
const higher = new Set();

/** A bench script's report() rows as { 'bench:NAME: row': figure }. */
function runScript(dir, bench, benchArgs, env) {
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(dir, `${bench}.bench.js`), ...benchArgs], {
    cwd: dir,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
    env: { ...env, COWSHM_BENCH_JSON: '1' },
  });
  const tables = r.stdout.split('\n').filter((l) => l.startsWith('COWSHM_BENCH_JSON ')).map((l) => JSON.parse(l.slice(18)));
  // A bench exits 1 when it misses its own targets against C: the figures still count.
  if (tables.length === 0) throw new Error(`${bench}.bench.js in ${dir} printed no figures:\n${r.stdout}\n${r.stderr}`);
  const out = {};
  for (const t of tables) {
    for (const row of t.rows) {
      const name = `bench:${bench}: ${row.name}`;
      out[name] = row.value;
      if (row.higherIsBetter) higher.add(name);
    }
  }
  return out;
}

/** fn() again, up to twice, when it fails outright (another program removing a bench's segment, say). */
function retried(what, fn, tries = 3) {
  for (;;) {
    try {
      return fn();
    } catch (err) {
      if (--tries <= 0) throw err;
      process.stderr.write(`${what}: ${err.message.split('\n').slice(0, 3).join(' ')}: running it again\n`);
    }
  }
}

async function parent() {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const { values: v } = parseArgs({
    args: dash === -1 ? argv : argv.slice(0, dash),
    options: {
      base: { type: 'string' },
      suite: { type: 'string', default: 'ts' },
      rounds: { type: 'string' },
      target: { type: 'string', default: '1.05' },
      quick: { type: 'boolean', default: false },
      'same-native': { type: 'boolean', default: false },
      'keep-base': { type: 'boolean', default: false },
      mib: { type: 'string' },
      gib: { type: 'string' },
      backends: { type: 'string', default: 'auto,mprotect' },
      iters: { type: 'string' },
      'checkpoint-gib': { type: 'string' },
      list: { type: 'boolean', default: false },
    },
  });
  const benchArgs = dash === -1 ? [] : argv.slice(dash + 1);
  if (v.list) {
    for (const [name, s] of Object.entries(SUITES)) console.log(`${name.padEnd(10)} ${s.about}`);
    for (const [name, list] of Object.entries(ALIASES)) console.log(`${name.padEnd(10)} ${list.join(', ')}`);
    const benches = fs.readdirSync(__dirname).filter((f) => f.endsWith('.bench.js')).map((f) => `bench:${f.slice(0, -9)}`);
    console.log(`${'bench:NAME'.padEnd(10)} the rows a bench script reports: ${benches.join(', ')}`);
    return 0;
  }
  if (!v.base) usage('--base is required');
  const positive = (name, raw, fallback) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!(n > 0) || !Number.isFinite(n)) usage(`--${name} must be a positive number (received '${raw}')`);
    return n;
  };
  const rounds = v.rounds === undefined ? undefined : positive('rounds', v.rounds);
  if (rounds !== undefined && !Number.isInteger(rounds)) usage(`--rounds must be a whole number (received '${v.rounds}')`);
  const target = positive('target', v.target);
  const quick = v.quick;
  const engineOpts = ['--mib', String(positive('mib', v.mib, quick ? 64 : 256)), '--gib', String(positive('gib', v.gib, quick ? 0.25 : 1))];
  const iters = positive('iters', v.iters, quick ? 20 : 100);
  const suites = [...new Set(v.suite.split(',').flatMap((s) => ALIASES[s] ?? [s]))];
  for (const s of suites) {
    if (s.startsWith('bench:')) {
      if (!fs.existsSync(path.join(__dirname, `${s.slice(6)}.bench.js`))) usage(`no bench/${s.slice(6)}.bench.js (--list shows the suites)`);
    } else if (!SUITES[s]) usage(`unknown suite '${s}' (--list shows them)`);
  }
  const backends = v.backends.split(',');
  for (const b of backends) if (!['auto', 'userfaultfd', 'mprotect'].includes(b)) usage(`--backends: unknown backend '${b}' (auto, userfaultfd, mprotect)`);

  const base = prepareBase(v.base, v['keep-base']);
  const env = { ...process.env };
  if (v['same-native']) env.COWSHM_NATIVE_PATH = path.join(here, 'build', 'Release', 'cowshm.node');
  // This tree's bench scripts, next to the baseline package, where require('..') is the baseline.
  const copy = path.join(base.root, '.bench-compare');
  const cleanup = () => {
    fs.rmSync(copy, { recursive: true, force: true });
    base.done();
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      cleanup();
      process.kill(process.pid, sig);
    });
  }
  try {
    const builds = [
      { which: 'base', root: base.root, benchDir: copy },
      { which: 'this', root: here, benchDir: __dirname },
    ];
    if (suites.some((s) => s.startsWith('bench:'))) {
      fs.rmSync(copy, { recursive: true, force: true });
      fs.cpSync(__dirname, copy, { recursive: true, filter: (f) => !f.startsWith(path.join(__dirname, 'build')) });
    }
    // Units: one child (or script run) per build per round.
    const units = [];
    const cases = suites.filter((s) => SUITES[s]?.kind === 'process');
    if (cases.length) {
      const args = ['--child', 'process', cases.join(','), ...(quick ? ['--quick'] : [])];
      units.push({ rounds: rounds ?? (quick ? 3 : 7), run: (b) => retried(`${cases.join(',')} (${b.which})`, () => spawnChild([...args, b.root], env)) });
    }
    if (suites.includes('engine')) {
      for (const backend of backends) {
        const e = { ...env };
        if (backend === 'auto') delete e.COWSHM_SNAPSHOT_BACKEND;
        else e.COWSHM_SNAPSHOT_BACKEND = backend;
        const args = ['--child', 'engine', 'engine', ...engineOpts];
        units.push({ rounds: rounds ?? (quick ? 3 : 7), run: (b) => retried(`engine, ${backend} (${b.which})`, () => spawnChild([...args, b.root], e)) });
      }
    }
    if (suites.includes('checkpoint')) {
      const gib = String(positive('checkpoint-gib', v['checkpoint-gib'], quick ? 0.0625 : 0.25));
      const names = ['full writeTo', 'delta writeTo (1% changed)', "restore verify: 'full' (chain of 2)"].map((n) => `checkpoint: ${n}`);
      // This tree's script, loading the build's dist/ (as its --one mode does).
      const run = (b) => {
        const out = execFileSync(process.execPath, [path.join(__dirname, 'checkpoint.bench.js'), '--one', b.root, gib], { encoding: 'utf8', env });
        return Object.fromEntries(JSON.parse(out.trim().split('\n').pop()).map((t, i) => [names[i], t]));
      };
      units.push({ rounds: rounds ?? (quick ? 3 : 9), run: (b) => retried(`checkpoint (${b.which})`, () => run(b)) });
    }
    for (const s of suites.filter((x) => x.startsWith('bench:'))) {
      units.push({ rounds: rounds ?? (quick ? 2 : 5), run: (b) => retried(`${s} (${b.which})`, () => runScript(b.benchDir, s.slice(6), benchArgs, env)) });
    }

    const figures = new Map(); // row -> { base: [], this: [], ratios: [] }
    const add = (name, b, t) => {
      const f = figures.get(name) ?? { base: [], this: [], ratios: [] };
      f.base.push(b);
      f.this.push(t);
      f.ratios.push(higher.has(name) ? b / t : t / b);
      figures.set(name, f);
    };
    const most = Math.max(0, ...units.map((u) => u.rounds));
    for (let round = 0; round < most; round++) {
      for (const u of units.filter((x) => round < x.rounds)) {
        const got = {};
        for (const b of round % 2 === 0 ? builds : [...builds].reverse()) got[b.which] = u.run(b);
        for (const [name, t] of Object.entries(got.this)) if (got.base[name] !== undefined) add(name, got.base[name], t);
      }
      process.stderr.write(`round ${round + 1}/${most} done\n`);
    }
    const ops = suites.filter((s) => SUITES[s]?.kind === 'inproc');
    if (ops.length) {
      const n = rounds ?? (quick ? 9 : 31);
      const got = spawnChild(['--child', 'inproc', ops.join(','), '--rounds', String(n), '--iters', String(iters), base.root, here], env);
      for (const [name, t] of Object.entries(got)) t.this.forEach((x, i) => add(name, t.base[i], x));
      process.stderr.write(`${ops.join(', ')}: ${n} rounds in one process done\n`);
    }

    const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    console.log(`\nthis tree (${here}) vs ${base.label}; node ${process.version}, load average ${load}` +
      (env.COWSHM_NATIVE_PATH ? `; both builds load ${env.COWSHM_NATIVE_PATH}` : '; each build loads its own addon'));
    console.log('ratio = median of per-round ratios, this tree / baseline for times, baseline / this tree for throughputs (> 1: this tree is slower)');
    const lines = [['measure', 'baseline', 'this tree', 'ratio', 'target', '']];
    let ok = true;
    for (const [name, f] of figures) {
      const ratio = median(f.ratios);
      const pass = ratio <= target;
      ok &&= pass;
      const fmt = higher.has(name) ? (x) => x.toFixed(2) : fmtSeconds;
      lines.push([name, fmt(median(f.base)), fmt(median(f.this)), `${ratio.toFixed(3)}×`, `≤ ${target}×`, pass ? 'ok' : 'MISSED']);
    }
    printTable(lines);
    for (const [name, f] of figures) console.log(`  per-round ratios (${f.ratios.length}), ${name}: ${f.ratios.map((r) => r.toFixed(2)).join(' ')}`);
    return ok ? 0 : 1;
  } finally {
    cleanup();
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  // --child KIND SUITES [--quick] [--mib M --gib G] [--rounds N --iters N] ROOT...
  const [, kind, suites, ...rest] = argv;
  const opt = (k, d) => (rest.includes(`--${k}`) ? Number(rest[rest.indexOf(`--${k}`) + 1]) : d);
  const roots = rest.filter((a, i) => !a.startsWith('--') && !(i > 0 && rest[i - 1].startsWith('--') && rest[i - 1] !== '--quick'));
  child(kind, roots, suites.split(','), { quick: rest.includes('--quick'), mib: opt('mib'), gib: opt('gib'), rounds: opt('rounds'), iters: opt('iters') }).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  parent().then(
    (status) => {
      process.exitCode = status;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
