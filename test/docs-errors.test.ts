// docs/errors.md lists every error code of the registry with its status: operators read it.

import t from 'tap';
import { readFileSync } from 'node:fs';
import { E } from '../src/proxy/errors.ts';

t.test('docs/errors.md lists every code with its status and reason', async (t) => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  for (const d of Object.values(E)) {
    t.ok(doc.includes(`| ${d.code} | ${d.status} | ${d.retryable ? 'yes' : 'no'} | ${d.reason} |`), `${d.code} documented`);
  }
});
