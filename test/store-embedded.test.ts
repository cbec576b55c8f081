// The embedded store: the conformance suite with two handles on one hub (two nodes in one
// process), plus what only it promises.

import t from 'tap';
import { EmbeddedHub, EmbeddedStore } from '../src/store/embedded.ts';
import { openStore } from '../src/store/config.ts';
import { runStoreConformance } from './helpers/store-conformance.ts';

const silent = { info() {}, warn() {}, error() {} };

runStoreConformance(t, 'embedded', async () => {
  const hub = new EmbeddedHub();
  return [new EmbeddedStore({ hub, log: silent }), new EmbeddedStore({ hub, log: silent })] as const;
});

t.test('openStore gives an embedded store, on a shared hub when given one', async (t) => {
  const hub = new EmbeddedHub();
  const a = await openStore({ kind: 'embedded' }, silent, hub);
  const b = await openStore({ kind: 'embedded' }, silent, hub);
  t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
  t.equal(a.kind, 'embedded');
  await a.put('nodes', 'n1', { region: 'ams' });
  t.same((await b.get('nodes', 'n1'))?.value, { region: 'ams' }, 'one hub, two nodes');
  const c = await openStore({ kind: 'embedded' }, silent);
  t.teardown(() => c.close());
  t.equal(await c.get('nodes', 'n1'), null, 'a new hub without one');
});

t.test('a throwing listener is logged and does not stop delivery', async (t) => {
  const errors: unknown[] = [];
  const log = { ...silent, error: (o: object) => void errors.push(o) };
  const s = new EmbeddedStore({ log });
  t.teardown(() => s.close());
  const seen: string[] = [];
  s.watch('apps', (ev) => {
    seen.push(ev.type);
    if (ev.type === 'put') throw new Error('boom');
  });
  await s.put('apps', 'a', 1);
  await s.put('apps', 'b', 2);
  await new Promise((r) => setImmediate(r));
  t.same(seen, ['sync', 'put', 'put']);
  t.equal(errors.length, 2);
});
