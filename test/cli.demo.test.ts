import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { isRoot, packageRoot, runCli, shmExists, uniqueName, tempDir, rmTemp } from './helpers';

const BIN = path.join(packageRoot, 'bin', 'cowshm.js');
const N = 2 ** 20;
const PAGES = (N * 4) / 4096;
const EXPECTED = (BigInt(N) * BigInt(N - 1)) / 2n;

function demo(args: string[]) {
  return runCli(['demo', ...args]);
}

interface Figures { rss: number; pss: number; sharedDirty: number; privateDirty: number; anonymous: number }
interface Phase { name: string; seconds: number; region: Figures; copy: Figures | null; sharedFrames: number | null }
interface Report {
  name: string; elements: string; pages: number; expectedSum: string; sumRegion: string; sumCopy: string;
  sumCopyAfterWrite: string | null; sumRegionAfterWrite: string | null; pagesWritten: number;
  phases: Phase[]; checks: Array<{ what: string; ok: boolean }>; verdict: string; ok: boolean;
}

test('demo --json: exact sums, and the figures of each phase', () => {
  const name = uniqueName('demo');
  const r = demo(['--elements', String(N), '--json', '--name', name]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(shmExists(name), false, 'the segment is removed');
  const j = JSON.parse(r.stdout) as Report;
  assert.equal(j.name, name);
  assert.equal(j.elements, String(N));
  assert.equal(j.pages, PAGES);
  assert.equal(j.expectedSum, String(EXPECTED));
  assert.equal(j.sumRegion, j.expectedSum);
  assert.equal(j.sumCopy, j.expectedSum);
  assert.equal(j.sumCopyAfterWrite, null);
  assert.equal(j.pagesWritten, 0);
  assert.deepEqual(j.phases.map((p) => p.name), ['fill', 'map copy', 'sum region', 'sum copy']);
  for (const p of j.phases) assert.ok(p.seconds >= 0 && Number.isFinite(p.seconds), p.name);
  const [fill, mapped, , read] = j.phases as [Phase, Phase, Phase, Phase];
  assert.equal(fill.copy, null);
  assert.equal(fill.region.rss, N * 4);
  assert.equal(fill.region.privateDirty, N * 4, 'mapped once: private');
  assert.equal(mapped.copy?.rss, 0);
  const c = read.copy as Figures;
  assert.equal(c.rss, N * 4);
  assert.equal(c.pss, (N * 4) / 2);
  assert.equal(c.privateDirty, 0);
  assert.equal(c.anonymous, 0);
  assert.equal(c.sharedDirty, N * 4);
  assert.equal(read.region.pss, (N * 4) / 2);
  assert.equal(read.sharedFrames, isRoot ? PAGES : null);
  assert.equal(j.ok, true);
  assert.equal(j.checks.length, 6);
  assert.ok(j.checks.every((x) => x.ok));
  assert.match(j.verdict, isRoot ? /\nReading the copy made no copy: both mappings use the same 1,024 frames, Pss is half of Rss/ : /\nReading the copy made no copy/);
  assert.match(j.verdict, /^After the fill the region shows its 4 MiB as Private_Dirty: smaps calls a page private while one mapping maps it/);
});

test('demo --write --json: the copy\'s Private_Dirty and Anonymous are the pages written, the region untouched', () => {
  const name = uniqueName('demo-write');
  const r = demo(['--size', '4MiB', '--write', '--json', '--name', name]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(shmExists(name), false);
  const j = JSON.parse(r.stdout) as Report;
  assert.equal(j.elements, String(N));
  assert.equal(j.pagesWritten, PAGES);
  const wrote = j.phases.find((p) => p.name === 'write copy');
  assert.ok(wrote?.copy);
  assert.equal(wrote.copy.privateDirty, j.pagesWritten * 4096);
  assert.equal(wrote.copy.anonymous, j.pagesWritten * 4096);
  assert.equal(wrote.copy.pss, wrote.copy.rss);
  assert.equal(wrote.region.pss, wrote.region.rss);
  assert.equal(wrote.region.anonymous, 0);
  assert.equal(wrote.sharedFrames, isRoot ? 0 : null);
  const read = j.phases.find((p) => p.name === 'sum copy');
  assert.equal(read?.copy?.privateDirty, 0);
  assert.equal(j.sumCopyAfterWrite, String(2n * EXPECTED));
  assert.equal(j.sumRegionAfterWrite, String(EXPECTED));
  assert.deepEqual(j.phases.map((p) => p.name), ['fill', 'map copy', 'sum region', 'sum copy', 'write copy', 'sum after write']);
  assert.equal(j.ok, true);
  assert.match(j.verdict, /Writing the copy copied the 1,024 pages written: its Private_Dirty and Anonymous are now 4 MiB and 4 MiB/);
  assert.match(j.verdict, /the region still sums to 549755289600: it is untouched/);
});

test('demo without --json: tables per phase, the verdict, the checks', () => {
  const name = uniqueName('demo-text');
  const r = demo(['--elements', '2^16', '--write', '--name', name]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'no progress bar when stderr is not a terminal');
  assert.match(r.stdout, new RegExp(`^cowshm demo: 65,536 int32 elements \\(256 KiB\\) in /dev/shm/${name}, PID \\d+`));
  for (const phase of ['fill', 'map copy', 'sum region', 'sum copy', 'write copy', 'sum after write'])
    assert.match(r.stdout, new RegExp(`\\n${phase} \\(\\d+\\.\\d{3} s\\): `));
  assert.match(r.stdout, /\n {2}copy +256 KiB +128 KiB +256 KiB +0 +0 +(64|n\/a)\n/, 'after reading the copy');
  assert.match(r.stdout, /Sums: expected 2147450880, region 2147450880, copy 2147450880; after writing: copy 4294901760, region 2147450880/);
  assert.match(r.stdout, /\nChecks:\n {2}ok/);
  assert.doesNotMatch(r.stdout, /FAILED/);
  assert.match(r.stdout, new RegExp(`/dev/shm/${name} is removed\\.\\n$`));
});

test('demo: bad arguments are usage errors', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--elements', '0'], /--elements must be a positive integer or 2\^K \(received '0'\)/],
    [['--elements', 'many'], /--elements must be a positive integer/],
    [['--elements', String(2 ** 31)], /at most 1073741824 elements/],
    [['--size', '6'], /--size must be a positive multiple of 4 bytes/],
    [['--size', '4 TB'], /--size must be a number of bytes/],
    [['--size', '4096', '--elements', '1024'], /give --elements or --size, not both/],
    [['--name', 'a/b', '--elements', '1024'], /"name" option must be a name without '\/'/],
    [['extra'], /unexpected argument 'extra'/],
  ];
  for (const [args, message] of cases) {
    const r = demo(args);
    assert.notEqual(r.status, 0, args.join(' '));
    assert.match(r.stderr, message, args.join(' '));
  }
});

test('demo refuses a run /dev/shm cannot hold, and names the --elements to use', { skip: !isRoot && 'needs root for a mount namespace' }, () => {
  // A private mount namespace with a 1 MiB /dev/shm: the real one is untouched.
  const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" "$@"`,
    process.execPath, BIN, 'demo', '--elements', String(N)], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^cowshm demo: not enough room for 1,048,576 elements: \/dev\/shm has 1 MiB free; the segment needs 4 MiB; try --elements 262144 \(1 MiB\)/);
  assert.equal(r.stdout, '');
});

async function interrupted(signal: NodeJS.Signals): Promise<void> {
  const name = uniqueName(`demo-${signal}`);
  const child = spawn(process.execPath, [BIN, 'demo', '--elements', String(N), '--name', name, '--hold'], { stdio: ['pipe', 'pipe', 'pipe'] });
  try {
    let err = '';
    child.stderr.setEncoding('utf8');
    child.stdout.resume();
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d: string) => {
        err += d;
        if (err.includes('press Enter to finish')) resolve();
      });
      child.on('exit', () => reject(new Error(`demo exited early: ${err}`)));
    });
    assert.equal(shmExists(name), true, 'the segment exists while the demo holds it');
    child.kill(signal);
    const [code, sig] = (await once(child, 'exit')) as [number | null, string | null];
    assert.equal(sig, signal, `dies of ${signal} (exit code ${code})`);
    assert.match(err, new RegExp(`cowshm demo: ${signal}: stopped; /dev/shm/${name} is removed`));
    assert.equal(shmExists(name), false, 'the segment is removed');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

test('demo removes its segment on SIGTERM', () => interrupted('SIGTERM'));
test('demo removes its segment on SIGINT (Ctrl-C)', () => interrupted('SIGINT'));

/** Whether process `pid` maps /dev/shm/NAME (false once it has exited). */
function mapsSegment(pid: number, name: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes(` /dev/shm/${name}\n`);
  } catch {
    return false;
  }
}

test('demo removes its segment on SIGTERM in the middle of a phase', async () => {
  const name = uniqueName('demo-midway');
  // Large enough that filling takes many chunks.
  const child = spawn(process.execPath, [BIN, 'demo', '--elements', String(2 ** 26), '--write', '--name', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  // Listened for from the start: a demo that fails at once exits before the loop below ends.
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  try {
    // In a phase: the demo has made its region and mapped it, and is filling it. The name alone
    // is not that: it is in /dev/shm from shm_open on, while the region is still being made.
    while (!mapsSegment(child.pid as number, name) && child.exitCode === null) await new Promise((r) => setTimeout(r, 2));
    assert.equal(child.exitCode, null, `the demo ended before it mapped its segment: ${err}`);
    child.kill('SIGTERM');
    const [code, sig] = await exited;
    assert.equal(sig, 'SIGTERM', `exit code ${code}: ${err}`);
    assert.match(err, new RegExp(`^cowshm demo: SIGTERM: stopped; /dev/shm/${name} is removed$`, 'm'));
    assert.equal(shmExists(name), false);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    // Whatever failed above, the segment is not left for another test's /dev/shm check to trip on.
    fs.rmSync(`/dev/shm/${name}`, { force: true });
  }
});

test('demo --hold: the mappings can be inspected while it waits, and Enter ends it', async () => {
  const name = uniqueName('demo-hold');
  const child = spawn(process.execPath, [BIN, 'demo', '--elements', String(N), '--name', name, '--hold', '--json'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: string) => {
      err += d;
      if (err.includes('press Enter')) resolve();
    });
    child.on('exit', () => reject(new Error(`demo exited early: ${err}`)));
  });
  const inspect = spawnSync(process.execPath, [BIN, 'inspect', String(child.pid), '--filter', name, '--json'], { encoding: 'utf8' });
  assert.equal(inspect.status, 0, inspect.stderr);
  const mappings = (JSON.parse(inspect.stdout) as { mappings: Array<{ mapping: { perms: string; rss: number; pss: number } }> }).mappings;
  assert.deepEqual(mappings.map((m) => m.mapping.perms).sort(), ['rw-p', 'rw-s']);
  for (const m of mappings) assert.equal(m.mapping.pss * 2, m.mapping.rss);
  child.stdin.write('\n');
  const [code] = (await once(child, 'exit')) as [number];
  assert.equal(code, 0, err);
  assert.equal((JSON.parse(out) as Report).ok, true);
  assert.equal(shmExists(name), false);
});

test('demo --write --svg: page maps before and after the write, totals from top and /proc/meminfo, and why the figures read as they do', () => {
  const name = uniqueName('demo-maps');
  const dir = tempDir('demo-svg');
  try {
    const file = `${dir}/demo.svg`;
    const r = demo(['--elements', String(N), '--write', '--name', name, '--svg', file]);
    assert.equal(r.status, 0, r.stderr);
    // The copy page by page: all shared after reading it, all copied after writing it.
    assert.match(r.stdout, /copy \(rw-p\), after reading the copy: 1,024 pages, one cell per 4 pages \(16 KiB\)[^\n]*\n +# shared 1,024 \(4 MiB\) {3}\* copied \(private\) 0 \(0\)[^\n]*\n(?: +[\d.]+(?: [KM]iB)? \|#{64}\|\n){4}/);
    assert.match(r.stdout, /copy \(rw-p\), after writing the copy: 1,024 pages[^\n]*\n +# shared 0 \(0\) {3}\* copied \(private\) 1,024 \(4 MiB\)[^\n]*\n(?: +[\d.]+(?: [KM]iB)? \|\*{64}\|\n){4}/);
    const svg = fs.readFileSync(file, 'utf8');
    const groups = [...svg.matchAll(/<g class="pagemap" data-pages="(\d+)"[^>]* data-shared="(\d+)" data-copied="(\d+)"/g)].map((m) => m.slice(1).map(Number));
    // The copy just mapped (nothing resident), then region and copy after reading, then after writing.
    assert.deepEqual(groups, [[PAGES, 0, 0], [PAGES, PAGES, 0], [PAGES, PAGES, 0], [PAGES, PAGES, 0], [PAGES, 0, PAGES]]);
    assert.match(r.stdout, /copy \(rw-p\), just mapped: 1,024 pages[^\n]*\n[^\n]*\. not resident 1,024 \(4 MiB\)\n(?: +[\d.]+(?: [KM]iB)? \|\.{64}\|\n){4}/);
    // Process totals next to the machine's Shmem, before and after.
    assert.match(r.stdout, /process: VmRSS [\d.]+ [KMG]iB \(RssShmem [\d.]+ [KMG]iB, RssAnon [\d.]+ [KMG]iB\); machine: Shmem [\d.]+ [KMG]iB \(\/proc\/meminfo\)/);
    assert.match(r.stdout, /What top, ps and free saw \(before the segment existed -> after the copy was read -> after it was written\):\n {2}VmRSS \(this process\) .*\n {2}RssShmem \(this process\) +0 -> +8 MiB -> +4 MiB\n/);
    assert.match(r.stdout, /RssShmem counts the segment's pages once per mapping that has them \(twice here\), Shmem counts each page of memory once/);
    assert.match(r.stdout, /both mappings map the same pages, so both show them as Shared_Dirty/);
    assert.match(r.stdout, new RegExp(`Page maps written to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.`));
  } finally {
    rmTemp(dir);
  }
  assert.equal(shmExists(name), false);
});

test('demo --hold with standard input at its end holds until a signal, and names npx cowshm inspect', async () => {
  const name = uniqueName('demo-hold-eof');
  const child = spawn(process.execPath, [BIN, 'demo', '--elements', String(N), '--name', name, '--hold'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let err = '';
  try {
    await new Promise<void>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        if (err.includes('Standard input is closed')) resolve();
      });
      child.on('exit', () => reject(new Error(`demo exited early: ${err}`)));
    });
    assert.match(err, new RegExp(`look at them with \`npx cowshm inspect ${child.pid} --filter ${name} --map\``));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(child.exitCode, null, 'still holding');
    assert.equal(shmExists(name), true);
    child.kill('SIGTERM');
    const [, sig] = await exited;
    assert.equal(sig, 'SIGTERM');
    assert.equal(shmExists(name), false);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

test('demo as an unprivileged user: the verdict says what was checked and that frames were not', { skip: !isRoot && 'needs root to run as uid 65534' }, () => {
  const r = runCli(['demo', '--elements', String(N), '--json', '--name', uniqueName('demo-nobody')], { uid: 65534, gid: 65534 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Report;
  assert.doesNotMatch(j.verdict, /both mappings use the same pages/);
  assert.match(j.verdict, /Reading the copy made no copy, as far as this user can check: Pss is half of Rss and the copy's Private_Dirty and Anonymous are 0/);
  assert.match(j.verdict, /Not checked: that the physical frames are the same \(the kernel shows physical frame numbers only to readers with CAP_SYS_ADMIN/);
});
