// The package as a user gets it: `npm pack` of a clean copy of the sources
// (prepack builds the addon and puts it in prebuilds/), installed from the
// tarball into brand-new projects with `npm install --offline` (the package
// has no dependencies, so nothing comes from the registry).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { packageRoot, tempDir, rmTemp, uniqueName, shmExists } from './helpers';

const PREBUILD = path.join('prebuilds', `${process.platform}-${process.arch}`, 'node.napi.glibc.node');

/** npm's own CLI script: the one running this suite under `npm test`, or the one beside this Node. */
function npmCli(): string {
  const candidates = [
    process.env['npm_execpath'] ?? '', // read before cleanEnv() drops it
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
  ];
  const found = candidates.find((f) => f.endsWith('.js') && fs.existsSync(f));
  if (!found) throw new Error(`npm's npm-cli.js not found (tried ${candidates.filter(Boolean).join(', ')})`);
  return found;
}

/**
 * This process's environment without what an outer npm (`npm test`) exports
 * to its scripts: npm_config_local_prefix and the like would make the npm
 * run here act on this checkout instead of the project it runs in.
 */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  return { ...env, ...extra };
}

function run(cmd: string, args: string[], options: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300_000, env: cleanEnv(), ...options });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${String(r.stdout)}\n${String(r.stderr)}`);
  return String(r.stdout);
}

const npm = (args: string[], options: SpawnSyncOptions = {}): string =>
  run(process.execPath, [npmCli(), '--no-audit', '--no-fund', '--no-update-notifier', ...args], options);

const checkoutAddon = path.join(packageRoot, 'build', 'Release', 'cowshm.node');
const checkoutState = (): string =>
  `${fs.statSync(checkoutAddon).mtimeMs} prebuilds/:${fs.existsSync(path.join(packageRoot, 'prebuilds'))} ${fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')}`;
let checkoutBefore = '';
let work = '';
let tarball = '';
let packedFiles: string[] = [];

before(() => {
  checkoutBefore = checkoutState();
  work = tempDir('pack');
  // What a clean clone has: the sources, no build output and no prebuilds.
  const src = path.join(work, 'src');
  const skip = new Set(['node_modules', 'build', 'dist', 'test', 'bench', '.git', '.cache', 'prebuilds']);
  fs.cpSync(packageRoot, src, { recursive: true, filter: (f) => !skip.has(path.relative(packageRoot, f)) });
  // The dev dependencies (the compiler for `prepare`), without installing them again.
  fs.symlinkSync(path.join(packageRoot, 'node_modules'), path.join(src, 'node_modules'));
  const out = npm(['pack', '--json', '--pack-destination', work], { cwd: src });
  // The build's own output comes first on stdout; the JSON report starts at a line "[".
  const info = (JSON.parse(out.slice(out.search(/^\[$/m))) as Array<{ filename: string; files: Array<{ path: string }> }>)[0];
  assert.ok(info);
  tarball = path.join(work, info.filename);
  packedFiles = info.files.map((f) => f.path);
  assert.equal(fs.existsSync(path.join(src, 'prebuilds')), false, 'postpack removes prebuilds/ from the checkout');
});

after(() => {
  if (work) rmTemp(work);
});

/** A new project with `package.json` only. */
function project(name: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  return dir;
}

/** A PATH with node and sh only: no cc, gcc, g++, make or python. */
function compilerlessPath(): string {
  const bin = path.join(work, 'bin-no-compiler');
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  }
  return bin;
}

/** Which cowshm addon file a fresh process of `dir` maps after require('cowshm'). */
function loadedAddon(dir: string, env: NodeJS.ProcessEnv = cleanEnv()): string {
  const code =
    "const c = require('cowshm'); const r = c.Region.create({ size: c.pageSize });" +
    'const a = new Int32Array(r.map().buffer); c.iota(a, 0, 1); const s = c.sum(a); r.close();' +
    "const line = require('fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => /\\.node$/.test(l) && l.includes('cowshm'));" +
    "console.log(JSON.stringify({ sum: String(s), file: line ? line.split(/\\s+/).pop() : '' }));";
  const out = JSON.parse(run(process.execPath, ['-e', code], { cwd: dir, env })) as { sum: string; file: string };
  const n = 4096 / 4;
  assert.equal(out.sum, String((n * (n - 1)) / 2));
  return path.relative(path.join(dir, 'node_modules', 'cowshm'), fs.realpathSync(out.file));
}

test('the tarball has the prebuilt binary, LICENSE, the sources its source maps name and the examples its docs link', () => {
  for (const f of [PREBUILD, 'LICENSE', 'README.md', 'scripts/install.js', 'binding.gyp', 'native/addon.c', 'lib/index.mjs', 'lib/index.d.mts',
    'dist/index.js', 'dist/index.d.ts', 'bin/cowshm.js', 'src/index.ts', 'examples/c/shm_peek.c', 'examples/python/shm_attach.py']) {
    assert.ok(packedFiles.includes(f), `${f} is in the tarball`);
  }
  for (const f of packedFiles) assert.doesNotMatch(f, /^(build|test|bench|\.ci)\//, `${f} is not shipped`);
  assert.match(fs.readFileSync(path.join(packageRoot, 'LICENSE'), 'utf8'), /^MIT License/);

  const dir = path.join(work, 'unpacked');
  fs.mkdirSync(dir);
  run('tar', ['-xzf', tarball, '-C', dir]);
  const pkg = path.join(dir, 'package');
  // Every source map names sources that ship beside it.
  const maps = packedFiles.filter((f) => f.endsWith('.js.map'));
  assert.ok(maps.length > 10);
  for (const m of maps) {
    const map = JSON.parse(fs.readFileSync(path.join(pkg, m), 'utf8')) as { sources: string[]; sourceRoot?: string };
    for (const s of map.sources) {
      const target = path.join(pkg, path.dirname(m), map.sourceRoot ?? '', s);
      assert.ok(fs.existsSync(target), `${m} names ${s}, which is not in the tarball`);
    }
  }
  // Every relative link of the shipped Markdown leads to a shipped file.
  const docs = packedFiles.filter((f) => f.endsWith('.md'));
  for (const d of docs) {
    const text = fs.readFileSync(path.join(pkg, d), 'utf8');
    for (const [, link] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
      if (/^[a-z]+:/i.test(link as string)) continue;
      const target = path.join(pkg, path.dirname(d), link as string);
      assert.ok(fs.existsSync(target), `${d} links ${link}, which is not in the tarball`);
    }
  }
});

test('installed with no compiler on PATH, the package uses its prebuilt binary and works', () => {
  const dir = project('no-compiler');
  const bin = compilerlessPath();
  const env = cleanEnv({ PATH: bin });
  const probe = spawnSync('/bin/sh', ['-c', 'for c in cc gcc g++ c++ make python3 python; do command -v $c; done; true'], { env, encoding: 'utf8' });
  assert.equal(probe.stdout, '', 'no compiler, make or python on the PATH given to npm');
  npm(['install', '--offline', '--foreground-scripts', tarball], { cwd: dir, env });
  const installed = path.join(dir, 'node_modules', 'cowshm');
  assert.equal(fs.existsSync(path.join(installed, 'build')), false, 'nothing was built');
  assert.equal(loadedAddon(dir, env), PREBUILD);
  // The command works from the installed package too.
  const version = run(path.join(bin, 'node'), [path.join(dir, 'node_modules', '.bin', 'cowshm'), '--version'], { env });
  assert.equal(version.trim(), (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version);
});

test('npm install --build-from-source compiles the addon, and the package loads that build', () => {
  const dir = project('from-source');
  npm(['install', '--offline', '--foreground-scripts', '--build-from-source', tarball], { cwd: dir });
  assert.ok(fs.existsSync(path.join(dir, 'node_modules', 'cowshm', 'build', 'Release', 'cowshm.node')));
  assert.equal(loadedAddon(dir), path.join('build', 'Release', 'cowshm.node'));
});

test('a prebuilt binary that does not load here makes the install step build from source', () => {
  const dir = project('unfit-prebuild');
  npm(['install', '--offline', '--ignore-scripts', tarball], { cwd: dir });
  const installed = path.join(dir, 'node_modules', 'cowshm');
  // What a binary for another libc or a newer glibc looks like to dlopen: it does not load.
  fs.writeFileSync(path.join(installed, PREBUILD), 'not an ELF file');
  // npm rebuild runs the package's install step again, as npm install does.
  const r = spawnSync(process.execPath, [npmCli(), 'rebuild', 'cowshm', '--foreground-scripts', '--offline'], { cwd: dir, encoding: 'utf8', timeout: 300_000, env: cleanEnv() });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /cowshm: building the native addon from source \(node\.napi\.glibc\.node: .*(invalid ELF header|file too short)/);
  assert.equal(loadedAddon(dir), path.join('build', 'Release', 'cowshm.node'));
});

test('the prebuilt binary needs the glibc README.md names, and no newer one', () => {
  const { glibcVersions } = require(path.join(packageRoot, 'scripts', 'prebuild.js')) as { glibcVersions(file: string): string[] };
  const dir = path.join(work, 'unpacked', 'package');
  const versions = glibcVersions(path.join(dir, PREBUILD));
  const newest = versions[versions.length - 1];
  assert.ok(newest, 'the binary references versioned glibc symbols');
  const readme = fs.readFileSync(path.join(packageRoot, 'README.md'), 'utf8');
  const stated = /needs glibc (\d+\.\d+) or newer/.exec(readme);
  assert.ok(stated, 'README.md says which glibc the prebuilt binary needs');
  assert.equal(newest, `GLIBC_${stated[1]}`);
});

test('a strict TypeScript project (nodenext, skipLibCheck false) compiles against the tarball as CommonJS and as ESM', () => {
  const dir = project('types');
  npm(['install', '--offline', '--ignore-scripts', tarball], { cwd: dir });
  // The installed package's own prebuilt binary, for running the compiled consumers.
  const env = cleanEnv({ COWSHM_NATIVE_PATH: path.join(dir, 'node_modules', 'cowshm', PREBUILD) });
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: false,
        exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, outDir: 'out', types: ['node'],
        typeRoots: [path.join(packageRoot, 'node_modules', '@types')],
      },
      files: ['cjs.cts', 'esm.mts'],
    }),
  );
  const name = uniqueName('types');
  const body = (n: string): string => `
const r: Region = Region.create({ name: ${JSON.stringify(n)}, size: pageSize });
try {
  const v: View = r.map();
  iota(new Int32Array(v.buffer), 0, 1);
  const total: bigint = sum(new Int32Array(v.buffer));
  const s: Snapshot = r.snapshot();
  const e: memory.SmapsEntry = memory.usage(v);
  s.release();
  console.log(String(total), e.size);
} finally {
  r.unlink();
  r.close();
}
`;
  fs.writeFileSync(path.join(dir, 'cjs.cts'),
    `import cowshm = require('cowshm');\nimport { Region, sum, iota, pageSize, memory, type View, type Snapshot } from 'cowshm';\n` +
    `const same: typeof Region = cowshm.Region;\nvoid same;\n${body(`${name}-cjs`)}`);
  fs.writeFileSync(path.join(dir, 'esm.mts'),
    `import cowshm, { Region, sum, iota, pageSize, memory, type View, type Snapshot } from 'cowshm';\n` +
    `import * as ns from 'cowshm';\nconst same: typeof Region = cowshm.Region;\nconst also: typeof Region = ns.Region;\nvoid [same, also];\n${body(`${name}-esm`)}`);
  const tsc = path.join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  run(process.execPath, [tsc, '-p', dir], { cwd: dir });
  const n = 4096 / 4;
  const expected = `${(n * (n - 1)) / 2} 4096\n`;
  assert.equal(run(process.execPath, [path.join(dir, 'out', 'cjs.cjs')], { cwd: dir, env }), expected);
  assert.equal(run(process.execPath, [path.join(dir, 'out', 'esm.mjs')], { cwd: dir, env }), expected);
  assert.equal(shmExists(`${name}-cjs`) || shmExists(`${name}-esm`), false);

  // A misuse is still an error for such a project: the check can fail.
  fs.writeFileSync(path.join(dir, 'esm.mts'), `import { Region } from 'cowshm';\nRegion.create({ size: '4096' });\n`);
  const bad = spawnSync(process.execPath, [tsc, '-p', dir], { cwd: dir, encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stdout, /esm\.mts.*TS2322/);
});

test('arethetypeswrong and publint find no problem in the tarball', () => {
  const attw = path.join(packageRoot, 'node_modules', '@arethetypeswrong', 'cli', 'dist', 'index.js');
  const report = spawnSync(process.execPath, [attw, tarball, '--format', 'json'], { encoding: 'utf8', timeout: 120_000 });
  const parsed = JSON.parse(report.stdout) as { analysis: { problems: unknown[] } };
  assert.deepEqual(parsed.analysis.problems, [], report.stdout);
  assert.equal(report.status, 0, report.stderr);

  const publint = path.join(packageRoot, 'node_modules', 'publint', 'src', 'cli.js');
  const lint = spawnSync(process.execPath, [publint, 'run', tarball, '--level', 'suggestion', '--strict'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  assert.doesNotMatch(lint.stdout, /Suggestions|Warnings|Errors/, lint.stdout);
});

test('in a git checkout the install step builds from source even beside a prebuilt binary', () => {
  const dir = project('checkout');
  npm(['install', '--offline', '--ignore-scripts', tarball], { cwd: dir });
  fs.mkdirSync(path.join(dir, 'node_modules', 'cowshm', '.git'));
  const r = spawnSync(process.execPath, [npmCli(), 'rebuild', 'cowshm', '--foreground-scripts', '--offline'], { cwd: dir, encoding: 'utf8', timeout: 300_000, env: cleanEnv() });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /cowshm: building the native addon from source \(a git checkout\)/);
  assert.equal(loadedAddon(dir), path.join('build', 'Release', 'cowshm.node'));
});

test('packing and installing left this checkout alone: its addon, package.json and no prebuilds/', () => {
  assert.equal(checkoutState(), checkoutBefore);
});
