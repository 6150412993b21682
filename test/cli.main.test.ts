import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCli, packageRoot } from './helpers';

const version = (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;

test('--help, -h and no arguments print the command list, exit 0', () => {
  for (const args of [['--help'], ['-h'], []]) {
    const r = runCli(args);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^cowshm: /);
    assert.match(r.stdout, /Usage: cowshm COMMAND \[options\]/);
    assert.match(r.stdout, /\n {2}ls +list shared memory segments/);
    assert.match(r.stdout, /\n {2}rm +remove shared memory segments/);
    assert.match(r.stdout, /--version, -v/);
  }
});

test('--version and -v print the package version', () => {
  for (const flag of ['--version', '-v']) {
    const r = runCli([flag]);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${version}\n`);
  }
});

test('COMMAND --help and help COMMAND print that command\'s usage', () => {
  for (const args of [['ls', '--help'], ['help', 'ls'], ['ls', '-h']]) {
    const r = runCli(args);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: cowshm ls \[--json\]/);
  }
  const r = runCli(['rm', '--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^Usage: cowshm rm NAME\.\.\./);
  assert.match(r.stdout, /--orphans/);
});

test('an unknown command: exit 2, the error and one line on where help is', () => {
  const r = runCli(['frobnicate']);
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, "cowshm: unknown command 'frobnicate'\nRun 'cowshm --help' for the list of commands.\n");
});

test('an unknown option: exit 2, the error and one line on where help is, not the whole usage', () => {
  const r = runCli(['ls', '--bogus']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr, "cowshm ls: unknown option --bogus\nRun 'cowshm ls --help' for its usage.\n");
  const short = runCli(['inspect', '-x', '1']);
  assert.equal(short.status, 2);
  assert.equal(short.stderr, "cowshm inspect: unknown option -x\nRun 'cowshm inspect --help' for its usage.\n");
  const missing = runCli(['demo', '--name']);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /^cowshm demo: --name needs a value\n/);
  const extra = runCli(['ls', 'stray']);
  assert.equal(extra.status, 2);
  assert.match(extra.stderr, /unexpected argument 'stray'/);
  const flagValue = runCli(['ls', '--json=yes']);
  assert.equal(flagValue.status, 2);
  assert.match(flagValue.stderr, /--json takes no value/);
});
