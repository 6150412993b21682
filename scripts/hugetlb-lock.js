// The machine-wide hugetlb test lock, shared by every run of the suite on the
// machine: a directory holding its owner's pid, renamed into place (atomic).
// Tests hold it while they count or use the pool's pages (hugeLock() in
// test/hugetlb-helpers.ts); scripts/test.js holds it while it changes the
// pool. A holder that died (kill -9) leaves it behind: it is taken over.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

/** Where scripts/test.js keeps its per-run pool records, and the lock. */
const STATE = fs.existsSync('/run') ? '/run/cowshm-test-hugetlb' : '/tmp/cowshm-test-hugetlb';
const LOCK = path.join(STATE, 'tests');
const OWNER = path.join(LOCK, 'pid');

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
};

/**
 * One try at the lock: { taken: true }, or { taken: false, holder } with the
 * holder's pid (NaN while it is being written or removed). Call again to wait.
 */
function tryLock() {
  fs.mkdirSync(STATE, { recursive: true, mode: 0o700 });
  // The lock appears with its owner's pid already in it: made aside, then
  // renamed into place (rename onto an existing directory fails), so a holder
  // killed at any moment never leaves a lock without a pid.
  const aside = fs.mkdtempSync(path.join(STATE, 'new-'));
  try {
    fs.writeFileSync(path.join(aside, 'pid'), String(process.pid));
    fs.renameSync(aside, LOCK);
    return { taken: true };
  } catch (err) {
    fs.rmSync(aside, { recursive: true, force: true });
    if (err.code !== 'EEXIST' && err.code !== 'ENOTEMPTY') throw err;
  }
  const owner = () => {
    try {
      return Number(fs.readFileSync(OWNER, 'utf8'));
    } catch {
      return NaN; // being removed: look again
    }
  };
  const holder = owner();
  // A dead holder's lock is taken over; read the pid again just before, so a
  // lock another waiter took over meanwhile (a new pid) is left alone.
  if (Number.isSafeInteger(holder) && holder > 0 && !alive(holder) && owner() === holder)
    fs.rmSync(LOCK, { recursive: true, force: true });
  return { taken: false, holder };
}

function unlock() {
  fs.rmSync(LOCK, { recursive: true, force: true });
}

module.exports = { STATE, LOCK, alive, tryLock, unlock };
