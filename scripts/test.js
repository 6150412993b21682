#!/usr/bin/env node
// Runs the whole suite with node:test, then checks that nothing was left
// behind in /dev/shm. As root it reserves a small hugetlb pool for the run
// and gives it back however the run ends. Usage: node scripts/test.js [file-filter...]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const root = path.join(__dirname, '..');
const built = path.join(root, 'test', 'build');
const filters = process.argv.slice(2);

function testFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...testFiles(full));
    else if (entry.name.endsWith('.test.js')) out.push(full);
  }
  return out.sort();
}

const listShm = () => new Set(fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm') : []);

const files = testFiles(built).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error(`no test files under ${built}${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  process.exit(1);
}
// The hugetlb pool the tests use. Runs as root only; on a machine where
// several runs of the suite go on at once each adds its own pages and takes
// exactly those away again, so a run that ends never shrinks another's pool.
// A record per run (its pid and pages) lets the next run give back the pages
// of one that was killed before it could.
const { STATE: POOL_STATE, LOCK, alive, tryLock, unlock } = require('./hugetlb-lock');
const POOL_PAGES = { 2097152: 64, 1073741824: 1 };
const poolFile = (size) => `/sys/kernel/mm/hugepages/hugepages-${size / 1024}kB/nr_hugepages`;

/**
 * Runs fn() holding the machine-wide hugetlb test lock (scripts/hugetlb-lock.js),
 * the one the tests hold while they count or use the pool's pages: changing
 * the pool under it would change the free and total counts a test of another
 * run is comparing.
 */
function withPoolLock(fn) {
  let said = 0;
  for (let r = tryLock(); !r.taken; r = tryLock()) {
    if (Number.isSafeInteger(r.holder) && Date.now() - said > 30_000) {
      said = Date.now();
      console.error(`scripts/test.js: waiting for the hugetlb test lock (${LOCK}), held by pid ${r.holder}, to change the pool`);
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  try {
    return fn();
  } finally {
    unlock();
  }
}

function addPages(size, delta) {
  const file = poolFile(size);
  const now = Number(fs.readFileSync(file, 'utf8'));
  fs.writeFileSync(file, String(Math.max(0, now + delta)));
  return Number(fs.readFileSync(file, 'utf8')) - now;
}

/** Reserves the pool for this run; returns what each page size got (and why not), for COWSHM_TEST_HUGETLB. */
function reservePool() {
  const got = {};
  if (process.env.COWSHM_TEST_HUGETLB !== undefined) return null; // a nested run: the outer one owns the pool
  if (process.geteuid?.() !== 0) {
    for (const size of Object.keys(POOL_PAGES))
      got[size] = { pages: 0, reason: 'not root: only root can reserve a hugetlb pool (/proc/sys/vm/nr_hugepages)' };
    return got;
  }
  withPoolLock(() => {
    for (const entry of fs.readdirSync(POOL_STATE)) {
      if (!/^\d+$/.test(entry) || alive(Number(entry))) continue;
      const record = JSON.parse(fs.readFileSync(path.join(POOL_STATE, entry), 'utf8'));
      for (const [size, pages] of Object.entries(record)) if (pages > 0) addPages(Number(size), -pages);
      fs.rmSync(path.join(POOL_STATE, entry));
    }
    const record = {};
    for (const [size, want] of Object.entries(POOL_PAGES)) {
      if (!fs.existsSync(poolFile(size))) {
        got[size] = { pages: 0, reason: `this kernel has no pool of ${size}-byte pages` };
        continue;
      }
      const pages = addPages(Number(size), want);
      record[size] = pages;
      got[size] = pages >= want
        ? { pages, reason: null }
        : { pages, reason: `the kernel found only ${pages} of ${want} free ${size}-byte pages to add to the pool (memory too fragmented)` };
      if (pages < want && pages > 0) {
        addPages(Number(size), -pages);
        record[size] = got[size].pages = 0;
      }
    }
    fs.writeFileSync(path.join(POOL_STATE, String(process.pid)), JSON.stringify(record));
  });
  return got;
}

let poolReleased = false;
function releasePool() {
  if (poolReleased) return;
  poolReleased = true;
  const file = path.join(POOL_STATE, String(process.pid));
  if (!fs.existsSync(file)) return;
  withPoolLock(() => {
    const record = JSON.parse(fs.readFileSync(file, 'utf8'));
    for (const [size, pages] of Object.entries(record)) if (pages > 0) addPages(Number(size), -pages);
    fs.rmSync(file);
  });
}

const before = listShm();
// Coordination files of cross-process snapshots are named by their region's
// device and inode, not by this run's prefix: one that appeared during the run
// and that no process holds a lock on any more (its participants all gone
// without removing it) was left behind by a test. Files of a concurrent run
// are held while it lives.
function orphanCoordination() {
  let list;
  try {
    list = require(path.join(root, 'dist', 'coordination.js')).listCoordination;
  } catch {
    return []; // not built: nothing of ours can have made one
  }
  return list().filter((c) => !before.has(c.name) && c.orphan).map((c) => `${c.name} (coordination file, no holder)`);
}
// Names made by test/helpers.ts uniqueName() in this run start with this
// prefix; other programs (other runs of the suite among them) may create and
// remove segments meanwhile.
const run = `${process.pid}r${Date.now().toString(36)}`;
const prefix = `cowshm-test-${run}-`;
const pool = reservePool();
// However the run ends: normally, by an exception here, or by a signal
// (forwarded to the tests, whose end then releases the pool).
process.on('exit', releasePool);
const child = spawn(process.execPath, ['--expose-gc', '--test', ...files], {
  stdio: 'inherit',
  cwd: root,
  env: { ...process.env, COWSHM_TEST_RUN: run, ...(pool ? { COWSHM_TEST_HUGETLB: JSON.stringify(pool) } : {}) },
});
let caught = null;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    caught = sig;
    child.kill(sig);
  });
}
child.on('exit', (code, signal) => {
  releasePool();
  const left = [...listShm()].filter((name) => !before.has(name) && name.startsWith(prefix));
  left.push(...orphanCoordination());
  let status = code ?? 1;
  if (left.length > 0) {
    console.error(`\n/dev/shm check: the suite left ${left.length} segment(s) behind:\n  ${left.join('\n  ')}`);
    status = status || 1;
  } else {
    console.log('\n/dev/shm check: nothing left behind');
  }
  if (caught !== null || signal !== null) {
    process.removeAllListeners(caught ?? signal);
    process.kill(process.pid, caught ?? signal);
  }
  process.exit(status);
});
