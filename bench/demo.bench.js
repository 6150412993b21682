// `cowshm demo --json` end to end against the program of the original
// question (bench/c/demo.c: shm_open, ftruncate, mmap shared, A[i] = i,
// mmap MAP_PRIVATE copy, sum both, check, unlink; no getchar), compiled with
// gcc -O3 -march=native. Wall time of each process, runs alternating, and the
// phases each reports, side by side.
// Options: --elements N (default 2**30: 4 GiB), --runs N (default 5),
// --cli PATH (default bin/cowshm.js of this checkout), --huge (both on 2 MiB
// hugetlb pages: `cowshm demo --huge` against the C program on a
// memfd_create(MFD_HUGETLB) region; the pool is raised for the run, as root,
// and given back at exit).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { compileC, median, pairedRatio, report, benchName, option, intOption, fmtSeconds, reservePool } = require('./lib');

const elements = intOption('elements', 2 ** 30);
const runs = intOption('runs', 5);
const cli = path.resolve(option('cli', path.join(__dirname, '..', 'bin', 'cowshm.js')));
const huge = process.argv.includes('--huge');
const HUGE = 2 << 20;

function wall(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.error) throw r.error;
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited with ${r.status} and no JSON:\n${r.stdout}\n${r.stderr}`);
  }
  if (r.status !== 0 || json.ok !== true)
    throw new Error(`${path.basename(cmd)} ${args.join(' ')}: exit status ${r.status}, ok ${json.ok}\n${r.stderr}`);
  return { seconds, json };
}

const phaseSeconds = (json, name) => json.phases.find((p) => p.name === name)?.seconds;

async function main() {
  if (!fs.existsSync(cli)) throw new Error(`no CLI at ${cli}`);
  // The C program does not reserve its segment: short of memory, it would die of SIGBUS mid-fill.
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  const st = fs.statfsSync('/dev/shm');
  const room = Math.min(m ? Number(m[1]) * 1024 : Infinity, huge ? Infinity : st.bavail * st.bsize);
  // One process at a time holds the region: the pool needs its pages once.
  if (huge) reservePool(Math.ceil((elements * 4) / HUGE));
  if (!huge && room < elements * 4 + 2 ** 30)
    throw new Error(`${(room / 2 ** 30).toFixed(1)} GiB of memory or /dev/shm is free; ${elements} elements need ${((elements * 4 + 2 ** 30) / 2 ** 30).toFixed(1)} GiB: pass a smaller --elements`);
  const c = compileC('demo');
  const cWall = [], jsWall = [], cRuns = [], jsRuns = [];
  for (let run = 0; run < runs; run++) {
    const cr = wall(c, [benchName('c'), String(elements), ...(huge ? ['huge'] : [])]);
    cWall.push(cr.seconds);
    cRuns.push(cr.json);
    const jr = wall(process.execPath, [cli, 'demo', '--json', '--elements', String(elements), '--name', benchName('demo'), ...(huge ? ['--huge'] : [])]);
    jsWall.push(jr.seconds);
    jsRuns.push(jr.json);
    if (jr.json.sumRegion !== cr.json.sumRegion || jr.json.sumCopy !== cr.json.sumCopy)
      throw new Error(`the sums differ: C ${cr.json.sumRegion}/${cr.json.sumCopy}, cowshm ${jr.json.sumRegion}/${jr.json.sumCopy}`);
  }
  const ok = report(`the original experiment${huge ? ' on 2 MiB hugetlb pages' : ''}, ${elements} int32 elements (${(elements * 4) / 2 ** 30} GiB), wall time of the process, median of ${runs} runs; ratio = median of per-run ratios`, [
    { name: 'cowshm demo --json vs the C program', cowshm: median(jsWall), baseline: median(cWall), ratio: pairedRatio(jsWall, cWall), target: 1.2 },
  ]);

  // Phase by phase (medians). The demo's 'fill' includes creating the region;
  // its other phases leave out the reading of /proc that follows each of them.
  const pairs = [
    ['create + fill', ['create', 'fill'], ['fill']],
    ['map the copy', ['copy'], ['map copy']],
    ['sum the region', ['sum-region'], ['sum region']],
    ['sum the copy', ['sum-copy'], ['sum copy']],
  ];
  const sumOf = (json, names) => names.reduce((s, n) => s + (phaseSeconds(json, n) ?? NaN), 0);
  console.log('\n  phases (median seconds)     C            cowshm       ratio');
  let cAccounted = [], jsAccounted = [];
  for (const [label, cNames, jsNames] of pairs) {
    const cs = cRuns.map((j) => sumOf(j, cNames));
    const js = jsRuns.map((j) => sumOf(j, jsNames));
    cAccounted = cAccounted.length ? cAccounted.map((x, i) => x + cs[i]) : cs;
    jsAccounted = jsAccounted.length ? jsAccounted.map((x, i) => x + js[i]) : js;
    console.log(`  ${label.padEnd(26)}  ${fmtSeconds(median(cs)).padEnd(11)}  ${fmtSeconds(median(js)).padEnd(11)}  ${(median(js) / median(cs)).toFixed(2)}×`);
  }
  const cRest = cWall.map((w, i) => w - cAccounted[i]);
  const jsRest = jsWall.map((w, i) => w - jsAccounted[i]);
  console.log(`  ${'outside the phases'.padEnd(26)}  ${fmtSeconds(median(cRest)).padEnd(11)}  ${fmtSeconds(median(jsRest)).padEnd(11)}  (start-up, /proc readings, unmapping at exit)`);
  console.log(`  runs (s): C ${cWall.map((x) => x.toFixed(2)).join(' ')} | cowshm ${jsWall.map((x) => x.toFixed(2)).join(' ')}`);
  const all = jsRuns[jsRuns.length - 1].phases.map((p) => `${p.name} ${p.seconds.toFixed(3)}`).join(', ');
  console.log(`  cowshm phases of the last run: ${all}`);
  return ok;
}

main().then(
  (ok) => { process.exitCode = ok ? 0 : 1; },
  (err) => { console.error(err); process.exitCode = 1; },
);
