// The NATS store against a real nats-server: the conformance suite (each pair of handles on its
// own bucket prefix), plus NATS-only behaviour and the propagation time the issue cares about
// (printed, not asserted: the 2-core test machine is noisy).

import t from 'tap';
import { openStore, type NatsStoreConfig } from '../src/store/config.ts';
import { NatsStore } from '../src/store/nats.ts';
import { requireBinary } from './helpers/deps.ts';
import { startNats } from './helpers/nats.ts';
import { propagation, runStoreConformance, summary } from './helpers/store-conformance.ts';

const bin = requireBinary(t, 'nats-server', 'nats-server');
if (bin !== null) {
  const silent = { info() {}, warn() {}, error() {} };
  const srv = await startNats(t, bin);
  let pairs = 0;
  const cfg = (prefix: string, o: Partial<NatsStoreConfig> = {}): NatsStoreConfig => ({
    kind: 'nats',
    servers: [srv.url],
    bucketPrefix: prefix,
    replicas: 1,
    ...o,
  });

  runStoreConformance(t, 'nats', async () => {
    const prefix = `c${++pairs}`;
    const a = await openStore(cfg(prefix, { name: 'a' }), silent);
    const b = await openStore(cfg(prefix, { name: 'b' }), silent);
    return [a, b] as const;
  });

  t.test('nats: creates its buckets and reports an unreachable server as unavailable', async (t) => {
    const s = await openStore(cfg('buckets'), silent);
    t.teardown(() => s.close());
    t.equal(s.kind, 'nats');
    t.ok(s instanceof NatsStore);
    const started = Date.now();
    await t.rejects(openStore(cfg('x', { servers: ['127.0.0.1:1'], connectTimeoutMs: 2000 }), silent), { code: 'unavailable' });
    t.comment(`unreachable server refused in ${Date.now() - started} ms`);
    await t.rejects(openStore(cfg('bad prefix'), silent), { code: 'invalid' });
    await t.rejects(openStore(cfg('x', { replicas: 2 }), silent), { code: 'invalid' });
    await t.rejects(openStore(cfg('x', { servers: [] }), silent), { code: 'invalid' });
    await t.rejects(openStore(cfg('x', { credsFile: '/nonexistent.creds' }), silent), { code: 'invalid' });
  });

  t.test('nats: a bucket opened with other replicas keeps its own and says so', async (t) => {
    const warnings: string[] = [];
    const log = { ...silent, warn: (_o: object, msg: string) => void warnings.push(msg) };
    const s = await openStore(cfg('repl'), silent);
    await s.close();
    // One server cannot hold 3 replicas, but the existing bucket is opened, not re-created.
    const again = await openStore(cfg('repl', { replicas: 3 }), log);
    t.teardown(() => again.close());
    t.ok(warnings.some((w) => /replica/.test(w)), 'warned');
    t.ok((await again.put('apps', 'a', 1)) > 0, 'usable');
  });

  t.test('nats: a put on one node reaches a watcher on another (propagation time)', async (t) => {
    const a = await openStore(cfg('lat', { name: 'a' }), silent);
    const b = await openStore(cfg('lat', { name: 'b' }), silent);
    t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
    const samples = await propagation(a, b, 50);
    t.equal(samples.length, 50);
    t.comment(`put on A -> watcher on B: ${summary(samples)}`);
  });
}
