// The machine-wide hugetlb test lock, shared by every run of the suite on the
// machine: a directory made with mkdir (atomic), holding its owner's pid.
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
  try {
    fs.mkdirSync(LOCK);
    fs.writeFileSync(OWNER, String(process.pid));
    return { taken: true };
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
  }
  let holder = NaN;
  try {
    holder = Number(fs.readFileSync(OWNER, 'utf8'));
  } catch {
    // Being written or removed: look again.
  }
  if (Number.isSafeInteger(holder) && holder > 0 && !alive(holder)) fs.rmSync(LOCK, { recursive: true, force: true });
  return { taken: false, holder };
}

function unlock() {
  fs.rmSync(LOCK, { recursive: true, force: true });
}

module.exports = { STATE, LOCK, alive, tryLock, unlock };
