import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Region } from 'cowshm';
import { uniqueName, isRoot, runNode } from './helpers';

// Region.open reads the effective uid in the same native call as shm_open and
// fstat. It must be read on every open, not remembered: a process that
// changes its effective uid gets the owner check at the new uid.
test('the owner check uses the effective uid at each open, after seteuid too', (t) => {
  if (!isRoot) {
    t.skip('needs root to change the effective uid');
    return;
  }
  const name = uniqueName('euid');
  // Readable and writable by anyone, so only the owner check can refuse it.
  const a = Region.create({ name, size: 4096, mode: 0o666 });
  try {
    // In a child: seteuid changes every thread of the process, and the
    // test runner's own uid must stay as it is.
    const code = `
      const { Region } = require('cowshm');
      const name = ${JSON.stringify(name)};
      const attempt = () => {
        try { const r = Region.open(name); r.map().close(); r.close(); return 'opened'; }
        catch (e) { return e.code + ': ' + e.message; }
      };
      const out = [attempt()];
      process.seteuid(65534);
      out.push(attempt());
      process.seteuid(0);
      out.push(attempt());
      console.log(JSON.stringify(out));`;
    const r = runNode(code);
    assert.equal(r.status, 0, r.stderr);
    const [asRoot, asNobody, asRootAgain] = JSON.parse(r.stdout) as string[];
    assert.equal(asRoot, 'opened');
    assert.match(asNobody ?? '', /^ERR_COWSHM_FOREIGN_OWNER: /);
    assert.match(asNobody ?? '', /is owned by uid 0, not by this process \(uid 65534\)/);
    assert.equal(asRootAgain, 'opened');
  } finally {
    a.unlink();
    a.close();
  }
});
