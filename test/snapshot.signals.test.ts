// An application's process.on('SIGBUS') / process.on('SIGSEGV') replaces the
// process's handler for that signal (libuv installs its own), and removing the
// last listener resets it to the default action. Snapshot write faults arrive
// as SIGBUS (userfaultfd) or SIGSEGV (mprotect): cowshm must keep resolving
// them through both, neither spinning on a fault nobody resolves nor dying by
// the default action.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { packageRoot } from './helpers';

/** Runs `body` in a child with a snapshot-ready region; returns what it pushed to `out`, after checking it was neither killed nor failed. */
function childOut(body: string): unknown[] {
  const code = `
    const { Region, pageSize } = require(${JSON.stringify(packageRoot)});
    const region = Region.create({ size: 8 * pageSize });
    const view = region.map({ access: 'write' });
    const bytes = new Uint8Array(view.buffer);
    bytes.fill(1);
    const exactAfterWrite = (s) => {
      bytes[3 * pageSize] = 9;
      const ok = s.exact && new Uint8Array(s.buffer)[3 * pageSize] === 1 && bytes[3 * pageSize] === 9;
      bytes.fill(1);
      return ok;
    };
    const out = [];
    const noop = () => {};
    (async () => {
      ${body}
      view.close();
      region.close();
      console.log(JSON.stringify(out));
    })().catch((err) => { console.error(err); process.exit(1); });
  `;
  // A handler that does not resolve the fault makes the write spin forever: the timeout catches it.
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
  assert.equal(r.signal, null, `the child was killed (${r.signal}): ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as unknown[];
}

for (const sig of ['SIGBUS', 'SIGSEGV'] as const) {
  test(`process.on('${sig}') after cowshm loaded: snapshot writes still resolve, with the listener and after it is removed`, () => {
    const out = childOut(`
      const a = region.snapshot();            // protection armed before the listener exists
      process.on('${sig}', noop);
      out.push(exactAfterWrite(a));
      a.release();
      const b = region.snapshot();            // taken while the listener is there
      out.push(exactAfterWrite(b));
      process.off('${sig}', noop);            // the signal is reset to its default action
      out.push(exactAfterWrite(b));
      b.release();
      const c = region.snapshot();
      out.push(exactAfterWrite(c));
      c.release();
    `);
    assert.deepEqual(out, [true, true, true, true]);
  });

  test(`a ${sig} handler installed behind cowshm's back is found again at the next snapshot()`, () => {
    // process.on() itself tells cowshm; a listener added before a 'newListener'
    // hook could see it (or a native addon's sigaction) is found by the check
    // snapshot() makes.
    const out = childOut(`
      const hooks = process.listeners('newListener').filter((l) => l.name === 'cowshmSignalListenerAdded');
      if (hooks.length !== 1) throw new Error('cowshm has no newListener hook');
      for (const l of hooks) process.off('newListener', l);
      process.on('${sig}', noop);
      for (const l of hooks) process.on('newListener', l);
      const a = region.snapshot();
      out.push(exactAfterWrite(a));
      a.release();
      const unhooks = process.listeners('removeListener').filter((l) => l.name === 'cowshmSignalListenerRemoved');
      for (const l of unhooks) process.off('removeListener', l);
      process.off('${sig}', noop);
      for (const l of unhooks) process.on('removeListener', l);
      const b = region.snapshot();
      out.push(exactAfterWrite(b));
      b.release();
    `);
    assert.deepEqual(out, [true, true]);
  });
}

test('the application listener still hears a SIGBUS sent with kill(2) while cowshm handles the faults', () => {
  const out = childOut(`
    let heard = 0;
    process.on('SIGBUS', () => { heard++; });
    const s = region.snapshot();
    out.push(exactAfterWrite(s));
    process.kill(process.pid, 'SIGBUS');
    const until = Date.now() + 5000;
    while (heard === 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    out.push(exactAfterWrite(s), heard);
    s.release();
  `);
  assert.deepEqual(out, [true, true, 1]);
});
