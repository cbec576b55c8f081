// The architecture's one direction (docs/architecture.md): the data plane (proxy, balance,
// snapshot) reads published snapshots and never reaches into the control plane, never parses
// config, never does I/O to decide a route. This test reads every data-plane source file's
// imports and fails on any edge into the control plane, so the rule holds without review.
// Type-only imports count too: a data-plane module that needs a control-plane type should get it
// from a shared types module (src/config/types.ts, snapshot types), not from the implementation.

import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const root = join(import.meta.dirname, '..');

const DATA_PLANE = ['src/proxy', 'src/balance', 'src/snapshot'];

// Prefixes of repo-relative paths (no extension needed: `src/config/load` covers load.ts,
// loader.ts, load/...). src/config/types.ts is deliberately not here: it is the typed, frozen
// shape both planes share.
const FORBIDDEN_PATHS = [
  'src/config/load',
  'src/config/toml',
  'src/store/',
  'src/machines/drivers/',
  'src/machines/manager',
  'src/tls/acme',
  'src/tls/store/',
  'src/tls/certificates',
  'src/cluster/',
  'src/mesh/wg',
  'src/admin/',
];

// Packages that only the control plane has a reason to load: config parsing, ACME, the cluster
// store client.
const FORBIDDEN_PACKAGES = ['smol-toml', '@iarna/toml', 'toml', 'acme-client', 'nats', '@nats-io/'];

export interface ImportRef {
  readonly specifier: string;
  readonly typeOnly: boolean;
  readonly line: number;
}

/** Blanks out comments (keeping newlines, so line numbers stay right) and leaves strings alone.
 *  An import statement written inside a string literal still counts: a false alarm there is
 *  cheap, a tokenizer is not. */
function stripComments(src: string): string {
  let out = '';
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    const n = src[i + 1];
    if (c === '/' && n === '/') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '/' && n === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end === -1 ? src.length : end + 2;
      out += src.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
    } else if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Static imports and re-exports (`import x from`, `import type`, `export * from`,
 *  side-effect `import 'x'`) and dynamic `import('x')`. */
export function parseImports(src: string): ImportRef[] {
  const code = stripComments(src);
  const refs: ImportRef[] = [];
  const lineAt = (index: number): number => code.slice(0, index).split('\n').length;
  const statement = /\b(import|export)\s+(type\s+)?(?:[\w*${}\s,]*?\s+from\s+)?(['"])([^'"]+)\3/g;
  for (const m of code.matchAll(statement)) {
    // `export const x = 'a'` would not match (no `from`), but `import 'x'` (side effect) must.
    refs.push({ specifier: m[4]!, typeOnly: m[2] !== undefined, line: lineAt(m.index) });
  }
  for (const m of code.matchAll(/\bimport\s*\(\s*(['"])([^'"]+)\1/g)) {
    refs.push({ specifier: m[2]!, typeOnly: false, line: lineAt(m.index) });
  }
  return refs;
}

/** Why `specifier` (imported by repo-relative `file`) crosses the layer boundary, or null. */
export function violation(file: string, specifier: string): string | null {
  if (specifier.startsWith('.') || specifier.startsWith('/')) {
    const target = relative(root, resolve(root, dirname(file), specifier)).split(sep).join('/');
    const hit = FORBIDDEN_PATHS.find((p) => target.startsWith(p));
    return hit ? `${target} (control plane: ${hit}*)` : null;
  }
  const pkg = FORBIDDEN_PACKAGES.find((p) => (p.endsWith('/') ? specifier.startsWith(p) : specifier === p || specifier.startsWith(`${p}/`)));
  return pkg ? `package ${specifier} (control-plane dependency)` : null;
}

function sourceFiles(dir: string): string[] {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.(ts|mts|cts|js|mjs|cjs)$/.test(f) && !f.endsWith('.d.ts'))
    .map((f) => `${dir}/${f.split(sep).join('/')}`)
    .sort();
}

t.test('the import parser sees every import form', async (t) => {
  const src = [
    `import { a } from '../config/load.ts';`,
    `import type { B } from "../store/types.ts";`,
    `import {`,
    `  c,`,
    `  type D,`,
    `} from '../admin/server.ts';`,
    `export * from '../machines/drivers/static.ts';`,
    `import '../tls/acme.ts';`,
    `const m = await import('../mesh/wg.ts');`,
    `// import { x } from '../admin/commented.ts';`,
    `/* import { y } from '../admin/block.ts'; */`,
  ].join('\n');
  const refs = parseImports(src);
  t.same(
    refs.map((r) => [r.specifier, r.typeOnly, r.line]),
    [
      ['../config/load.ts', false, 1],
      ['../store/types.ts', true, 2],
      ['../admin/server.ts', false, 3],
      ['../machines/drivers/static.ts', false, 7],
      ['../tls/acme.ts', false, 8],
      ['../mesh/wg.ts', false, 9],
    ],
  );
  t.equal(violation('src/proxy/http.ts', '../config/types.ts'), null, 'config/types.ts is shared');
  t.equal(violation('src/proxy/http.ts', '../snapshot/snapshot.ts'), null);
  t.equal(violation('src/proxy/http.ts', 'node:net'), null);
  t.match(violation('src/proxy/h1/parse.ts', '../../config/load.ts'), /src\/config\/load\.ts/);
  t.match(violation('src/balance/select.ts', '../machines/manager.ts'), /control plane/);
  t.match(violation('src/snapshot/build.ts', 'acme-client'), /package acme-client/);
  t.match(violation('src/snapshot/build.ts', '@nats-io/kv'), /package/);
  t.equal(violation('src/snapshot/build.ts', 'tomlish'), null, 'only exact package names');
});

t.test('data plane imports nothing from the control plane', async (t) => {
  const files = DATA_PLANE.flatMap(sourceFiles);
  const problems: string[] = [];
  for (const file of files) {
    for (const ref of parseImports(readFileSync(join(root, file), 'utf8'))) {
      const why = violation(file, ref.specifier);
      if (why) problems.push(`${file}:${ref.line} imports ${ref.typeOnly ? 'type from ' : ''}${why}`);
    }
  }
  t.same(problems, [], `${files.length} data-plane files checked`);
});
