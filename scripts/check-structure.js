#!/usr/bin/env node
// Checks the shape of src/ that docs/architecture.md describes:
//   1. no import circle among the modules that run (the compiled dist/*.js);
//   2. every import points down the layers (region -> view/snapshot ->
//      checkpoint -> the base modules); the one exception is `import type`
//      of Region by view.ts and snapshot.ts, which their public `region`
//      property is declared with, and which compiles to nothing;
//   3. no module reaches a class through `.constructor`: a lower module is
//      handed what it needs as a parameter.
// Usage: node scripts/check-structure.js [package-root]   (exit 1 and a list on failure)
'use strict';
const fs = require('node:fs');
const path = require('node:path');

/** Layers, lowest first: a module may import from its own layer and the ones below. */
const LAYERS = [
  ['base', /^(errors|constants|native|validate|reserve|hugetlb|kernels|segments|locks|signals|file|atomics|xproc|coordination)\.ts$|^memory\//],
  ['checkpoint', /^checkpoint\//],
  ['view/snapshot', /^(view|snapshot)\.ts$/],
  ['region', /^(region|mutex|rwlock)\.ts$/],
  ['package', /^(index|doctor)\.ts$/],
  ['cli', /^cli\//],
];

/** Upward imports that are allowed, type-only: `view.region` and `snapshot.region` are Regions. */
const TYPE_ONLY_UPWARD = new Set(['view.ts -> region.ts', 'snapshot.ts -> region.ts']);

function files(dir, ext, base = dir) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(full, ext, base));
    else if (entry.name.endsWith(ext) && !entry.name.endsWith('.d.ts')) out.push(path.relative(base, full));
  }
  return out.sort();
}

/** Resolves a relative specifier from `from` (a path relative to the tree) to a module of `known`, or null. */
function resolve(from, spec, known, ext) {
  if (!spec.startsWith('.')) return null;
  const target = path.normalize(path.join(path.dirname(from), spec));
  for (const candidate of [target + ext, path.join(target, `index${ext}`), target]) {
    if (known.has(candidate)) return candidate;
  }
  return null;
}

/** Comments out of the way (strings that hold comment markers are rare enough in src/ not to matter). */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** The imports of a TypeScript source: [specifier, typeOnly]. */
function tsImports(text) {
  const out = [];
  const re = /^\s*(import|export)\s+(type\s+)?([\s\S]*?)\s+from\s+['"]([^'"]+)['"]/gm;
  for (let m; (m = re.exec(text)); ) {
    let typeOnly = m[2] !== undefined;
    const clause = m[3].trim();
    // `import { type A, type B } from`: type-only too.
    const braces = /^\{([\s\S]*)\}$/.exec(clause);
    if (!typeOnly && braces) {
      const names = braces[1].split(',').map((s) => s.trim()).filter(Boolean);
      typeOnly = names.length > 0 && names.every((n) => n.startsWith('type '));
    }
    out.push([m[4], typeOnly]);
  }
  for (const m of text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)) out.push([m[1], false]);
  return out;
}

function layerOf(file) {
  const i = LAYERS.findIndex(([, re]) => re.test(file));
  return i;
}

/** Import circles in a graph (Map of node -> Set of nodes), each as a path that returns to its start. */
function cycles(graph) {
  const found = [];
  const state = new Map(); // 1: on the stack, 2: done
  const stack = [];
  const visit = (node) => {
    state.set(node, 1);
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 1) found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 2);
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return found;
}

function check(root) {
  const problems = [];
  const srcDir = path.join(root, 'src');
  const distDir = path.join(root, 'dist');
  const sources = files(srcDir, '.ts');
  const known = new Set(sources);

  // 1. Circles among the modules that run: dist/*.js for every source (stale files ignored).
  const compiled = new Set(sources.map((f) => f.replace(/\.ts$/, '.js')).filter((f) => fs.existsSync(path.join(distDir, f))));
  if (compiled.size === 0) problems.push(`no compiled modules under ${distDir}: build first (npm run build:ts)`);
  const runtime = new Map();
  for (const file of compiled) {
    const text = fs.readFileSync(path.join(distDir, file), 'utf8');
    const deps = new Set();
    for (const m of text.matchAll(/\brequire\(\s*["'](\.[^"']*)["']\s*\)/g)) {
      const dep = resolve(file, m[1], compiled, '.js');
      if (dep !== null) deps.add(dep);
    }
    runtime.set(file, deps);
  }
  for (const c of cycles(runtime)) problems.push(`import circle (dist): ${c.join(' -> ')}`);

  // 2 and 3, on the sources.
  for (const file of sources) {
    const text = stripComments(fs.readFileSync(path.join(srcDir, file), 'utf8'));
    const layer = layerOf(file);
    if (layer === -1) {
      problems.push(`${file}: no layer: add it to LAYERS in scripts/check-structure.js and to docs/architecture.md`);
      continue;
    }
    for (const [spec, typeOnly] of tsImports(text)) {
      const dep = resolve(file, spec, known, '.ts');
      if (dep === null) continue;
      const depLayer = layerOf(dep);
      if (depLayer <= layer) continue;
      if (typeOnly && TYPE_ONLY_UPWARD.has(`${file} -> ${dep}`)) continue;
      problems.push(
        `${file} (layer ${LAYERS[layer][0]}) imports ${typeOnly ? 'the types of ' : ''}${dep} (layer ${LAYERS[depLayer][0]}), ` +
          'a module above it: pass what it needs as a parameter instead',
      );
    }
    const lines = text.split('\n');
    lines.forEach((line, i) => {
      // Reading a constructor's name (to describe a value) is fine; reaching the class is not.
      if (/\.constructor\b(?!\??\.name\b)/.test(line))
        problems.push(`${file}:${i + 1}: reaches a class through .constructor: ${line.trim()}`);
    });
  }
  return problems;
}

module.exports = { check, LAYERS };

if (require.main === module) {
  const root = path.resolve(process.argv[2] ?? path.join(__dirname, '..'));
  const problems = check(root);
  if (problems.length > 0) {
    console.error(`src/ structure: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log('src/ structure: no import circle, every import points down, no .constructor reach');
}
