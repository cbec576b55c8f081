// The certificate store on the cluster store: the shared conformance suite over the embedded store
// and over a real nats-server, then what only a shared store has to show: what one node writes,
// another node hears of (watch) and reads; challenge answers reach every node, also one that
// starts while they are pending; locks and the order log hold across nodes. A "node" is a
// ClusterStore handle: two EmbeddedStore handles on one hub, or two NATS connections.
//
// No timing is asserted: waits poll with a bound that only guards against hanging.
import t, { type Test } from 'tap';
import { openStore, type NatsStoreConfig } from '../src/store/config.ts';
import { EmbeddedHub, EmbeddedStore } from '../src/store/embedded.ts';
import type { ClusterStore } from '../src/store/types.ts';
import { ChallengeSync } from '../src/tls/acme/challengeSync.ts';
import { ChallengeBook } from '../src/tls/challenges.ts';
import { createSelfSigned } from '../src/tls/selfsigned.ts';
import type { CertStoreChange, IssuanceState } from '../src/tls/store/certStore.ts';
import {
  alpnKey,
  certKey,
  ClusterCertStore,
  http01Key,
  ordersKey,
  stateKey,
  type ClusterCertStoreWarning,
} from '../src/tls/store/clusterCertStore.ts';
import { inspectPair } from '../src/tls/store/inspect.ts';
import { runCertStoreConformance, storedCert } from './helpers/cert-store-conformance.ts';
import { requireBinary } from './helpers/deps.ts';
import { CuttableLink, startNats } from './helpers/nats.ts';

const DIRECTORY = 'https://acme.test/directory';
const WAIT_MS = 20_000;
const silent = { info() {}, warn() {}, error() {} };
const quiet = { warn() {} };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds; the bound only guards against hanging. */
async function eventually(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + WAIT_MS;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

const same = (a: CertStoreChange, b: CertStoreChange): boolean => JSON.stringify(a) === JSON.stringify(b);

function state(hostname: string, o: Partial<IssuanceState> = {}): IssuanceState {
  return { hostname, status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1_700_000_000_000, ...o };
}

/** Two handles on one backend (two nodes); closed at t's teardown. */
type OpenPair = (t: Test) => Promise<readonly [ClusterStore, ClusterStore]>;

/** A certificate store per node, closed (before its ClusterStore) at t's teardown. */
function certStores(t: Test, a: ClusterStore, b: ClusterStore, warnings: ClusterCertStoreWarning[] = []): [ClusterCertStore, ClusterCertStore] {
  const ca = new ClusterCertStore(a, { description: `${a.kind}:node-a`, onWarning: (w) => warnings.push(w) });
  const cb = new ClusterCertStore(b, { description: `${b.kind}:node-b`, onWarning: (w) => warnings.push(w) });
  t.teardown(async () => {
    await ca.close();
    await cb.close();
  });
  return [ca, cb];
}

function recorder(store: ClusterCertStore): { seen: CertStoreChange[]; stop: () => void } {
  const seen: CertStoreChange[] = [];
  const stop = store.watch((c) => seen.push(c));
  return { seen, stop };
}

function crossNode(t: Test, name: string, openPair: OpenPair): void {
  t.test(`${name}: a certificate put through node A reaches node B (event, then read)`, async (t) => {
    const [a, b] = await openPair(t);
    const [ca, cb] = certStores(t, a, b);
    const onB = recorder(cb);
    const pair = createSelfSigned(['a.example.com']);
    await ca.putCert(storedCert('a.example.com', 'acme', pair));
    const want: CertStoreChange = { kind: 'cert', hostname: 'a.example.com', source: 'acme' };
    await eventually(() => onB.seen.some((c) => same(c, want)), 'the cert event on B');
    const got = await cb.getCert('a.example.com', 'acme');
    t.equal(got?.chainPem, pair.certPem, 'B reads the chain');
    t.equal(got?.keyPem, pair.keyPem, 'and its key');
    t.equal(got?.meta.fingerprint256, inspectPair(pair.certPem, pair.keyPem).fingerprint256);
    t.same((await cb.listCerts()).map((c) => `${c.source}:${c.hostname}`), ['acme:a.example.com']);

    // States and deletes travel the same way.
    onB.seen.length = 0;
    await ca.putState(state('a.example.com', { status: 'active' }));
    await eventually(() => onB.seen.some((c) => same(c, { kind: 'state', hostname: 'a.example.com' })), 'the state event on B');
    t.equal((await cb.getState('a.example.com'))?.status, 'active');
    onB.seen.length = 0;
    t.equal(await ca.deleteCert('a.example.com', 'acme'), true);
    await eventually(() => onB.seen.some((c) => same(c, want)), 'the delete event on B');
    t.equal(await cb.getCert('a.example.com', 'acme'), null);
    onB.stop();
  });

  t.test(`${name}: a watcher does not hear of what was stored before it started`, async (t) => {
    const [a, b] = await openPair(t);
    const [ca, cb] = certStores(t, a, b);
    // Stored an hour ago (planted with that storedAt: the store dates what it writes itself).
    const hourAgo = Date.now() - 3600_000;
    const old = createSelfSigned(['old.example.com']);
    const meta = { ...inspectPair(old.certPem, old.keyPem), storedAt: hourAgo };
    await a.put('certs', certKey('custom', 'old.example.com'), { ...storedCert('old.example.com', 'custom', old), meta });
    await a.put('acme', stateKey('old.example.com'), { ...state('old.example.com'), storedAt: hourAgo });
    t.equal((await cb.getCert('old.example.com', 'custom'))?.meta.storedAt, hourAgo, 'a readable record');
    const onB = recorder(cb);
    // A later change is the barrier: events arrive in order per collection, so once this one is
    // seen, anything for the earlier ones would have been too.
    await ca.putCert(storedCert('new.example.com', 'custom', createSelfSigned(['new.example.com'])));
    await ca.putState(state('new.example.com'));
    await eventually(() => onB.seen.some((c) => c.kind === 'cert' && c.hostname === 'new.example.com'), 'the new cert');
    await eventually(() => onB.seen.some((c) => c.kind === 'state' && c.hostname === 'new.example.com'), 'the new state');
    t.same(onB.seen.filter((c) => 'hostname' in c && c.hostname === 'old.example.com'), [], 'no replay of stored certificates and states');
    onB.stop();
  });

  t.test(`${name}: challenge answers reach the other node, also one that starts while they are pending`, async (t) => {
    const [a, b] = await openPair(t);
    const [ca, cb] = certStores(t, a, b);
    const alpn = createSelfSigned(['v.example.com']);
    // Pending before node B follows the store at all.
    await ca.putChallenge('pending-tok', 'pending-tok.thumb');
    await ca.putAlpnChallenge({ hostname: 'v.example.com', certPem: alpn.certPem, keyPem: alpn.keyPem });

    const book = new ChallengeBook();
    const sync = new ChallengeSync(cb, book, quiet);
    sync.start();
    t.teardown(() => sync.stop());
    await eventually(() => book.http01('pending-tok') === 'pending-tok.thumb', 'B to learn the pending HTTP-01 answer');
    await eventually(() => book.alpnContext('v.example.com') !== undefined, 'B to learn the pending TLS-ALPN-01 certificate');

    // A second watcher on B, started after B's watch is synced, is told of them too.
    const late = recorder(cb);
    await eventually(() => late.seen.some((c) => same(c, { kind: 'challenge', token: 'pending-tok' })), 'the late watcher');
    await eventually(() => late.seen.some((c) => same(c, { kind: 'alpn-challenge', hostname: 'v.example.com' })), 'the late watcher (alpn)');
    late.stop();

    // Live changes from A.
    await ca.putChallenge('live-tok', 'live-tok.thumb');
    await eventually(() => book.http01('live-tok') === 'live-tok.thumb', 'a new answer');
    t.equal(await cb.getChallenge('live-tok'), 'live-tok.thumb');
    await ca.deleteChallenge('pending-tok');
    await ca.deleteAlpnChallenge('v.example.com');
    await eventually(() => book.http01('pending-tok') === undefined && !book.hasAlpn, 'deletes');
    t.equal(await cb.getAlpnChallenge('v.example.com'), null);
    t.equal(book.http01('live-tok'), 'live-tok.thumb', 'the other answer stays');
  });

  t.test(`${name}: issuance locks are exclusive across nodes`, async (t) => {
    const [a, b] = await openPair(t);
    const [ca, cb] = certStores(t, a, b);
    const hour = 3600_000;
    t.equal(await ca.tryLock('acme:x.example.com', 'node-a', hour), true);
    t.equal(await cb.tryLock('acme:x.example.com', 'node-b', hour), false, 'B cannot take what A holds');
    t.equal(await ca.tryLock('acme:x.example.com', 'node-a', hour), true, 'A renews');
    await cb.unlock('acme:x.example.com', 'node-b');
    t.equal(await cb.tryLock('acme:x.example.com', 'node-b', hour), false, "B's unlock changed nothing");
    await ca.unlock('acme:x.example.com', 'node-a');
    t.equal(await cb.tryLock('acme:x.example.com', 'node-b', hour), true, 'free once A unlocks');

    // Racing for free names: exactly one node wins each.
    for (let i = 0; i < 10; i++) {
      const lock = `acme:race${i}.example.com`;
      const won = await Promise.all([ca.tryLock(lock, 'node-a', hour), cb.tryLock(lock, 'node-b', hour)]);
      t.equal(won.filter(Boolean).length, 1, `${lock}: one winner (${won.join(', ')})`);
    }
  });

  t.test(`${name}: concurrent order records from both nodes are all counted`, async (t) => {
    const [a, b] = await openPair(t);
    const [ca, cb] = certStores(t, a, b);
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 10 }, (_, i) => [ca.recordOrder(DIRECTORY, t0 + i), cb.recordOrder(DIRECTORY, t0 + i)]).flat());
    t.equal(await ca.ordersSince(DIRECTORY, t0), 20, 'A counts both nodes');
    t.equal(await cb.ordersSince(DIRECTORY, t0), 20, 'B too');
    // Entries older than a day (relative to the order recorded) are pruned.
    await ca.recordOrder(DIRECTORY, t0 + 25 * 3600_000);
    t.equal(await cb.ordersSince(DIRECTORY, 0), 1, 'only the newest is left');
  });

  t.test(`${name}: records nobody should have written are refused on read and skipped in listings`, async (t) => {
    const [a, b] = await openPair(t);
    const warnings: ClusterCertStoreWarning[] = [];
    const [ca] = certStores(t, a, b, warnings);
    const good = createSelfSigned(['good.example.com']);
    await ca.putCert(storedCert('good.example.com', 'acme', good));
    await ca.putState(state('good.example.com'));
    // Written straight into the cluster store, as another version or an operator might.
    await a.put('certs', certKey('acme', 'bad.example.com'), { hostname: 'bad.example.com', source: 'acme', chainPem: 1, keyPem: 'k', meta: {} });
    await a.put('certs', certKey('custom', 'other.example.com'), { hostname: 'evil.example.com', source: 'custom', chainPem: good.certPem, keyPem: good.keyPem, meta: inspectPair(good.certPem, good.keyPem) });
    await a.put('certs', 'custom/../etc', { hostname: '../etc' });
    await a.put('acme', stateKey('bad.example.com'), { ...state('bad.example.com'), status: 'weird' });
    await a.put('acme', ordersKey(DIRECTORY), { directoryUrl: DIRECTORY, times: ['soon'] });
    await a.put('challenges', http01Key('tok'), 'just a string');
    await a.put('challenges', alpnKey('bad.example.com'), { hostname: 'bad.example.com', certPem: null });

    await t.rejects(ca.getCert('bad.example.com', 'acme'), { name: 'CertStoreRecordError', key: 'certs/acme/bad.example.com', message: /chainPem and keyPem/ });
    await t.rejects(ca.getCert('other.example.com', 'custom'), { name: 'CertStoreRecordError', message: /evil\.example\.com/ });
    await t.rejects(ca.getState('bad.example.com'), { name: 'CertStoreRecordError', key: 'acme/state/bad.example.com', message: /status must be/ });
    await t.rejects(ca.ordersSince(DIRECTORY, 0), { name: 'CertStoreRecordError' });
    await t.rejects(ca.recordOrder(DIRECTORY, Date.now()), { name: 'CertStoreRecordError' }, 'a corrupt order log is not overwritten');
    await t.rejects(ca.getChallenge('tok'), { name: 'CertStoreRecordError' });
    await t.rejects(ca.getAlpnChallenge('bad.example.com'), { name: 'CertStoreRecordError' });

    t.same((await ca.listCerts()).map((c) => c.hostname), ['good.example.com']);
    t.same((await ca.listStates()).map((s) => s.hostname), ['good.example.com']);
    t.same(warnings.map((w) => w.key).sort(), ['acme/state/bad.example.com', 'certs/acme/bad.example.com', 'certs/custom/../etc', 'certs/custom/other.example.com']);
    t.ok(warnings.every((w) => w.message.endsWith('skipped')));
  });

  t.test(`${name}: a throwing watcher neither fails the write nor silences the others`, async (t) => {
    const [a, b] = await openPair(t);
    const warnings: ClusterCertStoreWarning[] = [];
    const [ca] = certStores(t, a, b, warnings);
    ca.watch(() => {
      throw new Error('boom');
    });
    const other = recorder(ca);
    await ca.putState(state('w.example.com'));
    await eventually(() => other.seen.some((c) => same(c, { kind: 'state', hostname: 'w.example.com' })), 'the other watcher');
    t.ok(await ca.getState('w.example.com'));
    t.match(warnings, [{ message: /watcher threw: boom/ }]);
    other.stop();
  });

  t.test(`${name}: close leaves the cluster store open unless the certificate store owns it`, async (t) => {
    const [a, b] = await openPair(t);
    const shared = new ClusterCertStore(a, { description: 'shared' });
    const seen: CertStoreChange[] = [];
    shared.watch((c) => seen.push(c));
    await shared.close();
    await t.rejects(shared.getCert('a.example.com', 'acme'), { name: 'StoreError', code: 'closed', message: /certificate store shared is closed/ });
    t.throws(() => shared.watch(() => {}), { code: 'closed' });
    t.ok((await a.put('apps', 'still-open', 1)) > 0, 'the ClusterStore is still usable');
    // Barrier: a watcher on the same handle that sees the put has had its turn, so a watch the
    // certificate store had left open would have had its turn too.
    let barrier = false;
    const off = a.watch('certs', (ev) => {
      if (ev.type === 'put') barrier = true;
    });
    await a.put('certs', certKey('acme', 'z.example.com'), {});
    await eventually(() => barrier, 'the barrier watcher');
    off();
    t.same(seen, [], 'its watches were stopped');

    const owning = new ClusterCertStore(b, { description: 'owning', ownsStore: true });
    await owning.close();
    await t.rejects(b.get('apps', 'still-open'), { code: 'closed' }, 'an owned ClusterStore is closed with it');
  });
}

// ---- embedded

runCertStoreConformance(t, 'cluster (embedded)', async () => {
  const store = new EmbeddedStore();
  return { store: new ClusterCertStore(store, { description: 'embedded', ownsStore: true }), cleanup: async () => {} };
});

crossNode(t, 'embedded', async (t) => {
  const hub = new EmbeddedHub();
  const a = new EmbeddedStore({ hub });
  const b = new EmbeddedStore({ hub });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return [a, b] as const;
});

// ---- NATS

t.test('nats', async (t) => {
  const bin = requireBinary(t, 'nats-server', 'nats-server');
  if (bin === null) return;
  const srv = await startNats(t, bin);
  let prefixes = 0;
  // A fresh bucket prefix per store (or pair): each test starts from empty buckets.
  const cfg = (prefix: string, o: Partial<NatsStoreConfig> = {}): NatsStoreConfig => ({ kind: 'nats', servers: [srv.url], bucketPrefix: prefix, replicas: 1, ...o });

  runCertStoreConformance(t, 'cluster (nats)', async () => {
    const store = await openStore(cfg(`cc${++prefixes}`), silent);
    return { store: new ClusterCertStore(store, { description: `nats:cc${prefixes}` }), cleanup: () => store.close() };
  });

  crossNode(t, 'nats', async (t) => {
    const prefix = `cx${++prefixes}`;
    const a = await openStore(cfg(prefix, { name: 'node-a' }), silent);
    const b = await openStore(cfg(prefix, { name: 'node-b' }), silent);
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    return [a, b] as const;
  });

  t.test("nats: changes another node made while this node's first listing was delayed are still reported", async (t) => {
    // A watch's first listing normally follows watch() within milliseconds; holding B's connection
    // cut makes the gap as wide as the test needs: whatever A writes in it is in B's listing, not
    // in an event, and must still be reported.
    const link = await CuttableLink.open(t, srv.port);
    const prefix = `cw${++prefixes}`;
    const a = await openStore(cfg(prefix, { name: 'node-a' }), silent);
    const b = await openStore(cfg(prefix, { name: 'node-b', servers: [link.url] }), silent);
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const [ca, cb] = certStores(t, a, b);
    await link.cut();
    await eventually(() => !b.connected(), 'B to notice the cut');
    const onB = recorder(cb);
    await ca.putCert(storedCert('gap.example.com', 'acme', createSelfSigned(['gap.example.com'])));
    await ca.putState(state('gap.example.com'));
    await ca.putChallenge('gap-tok', 'gap-tok.thumb');
    await link.restore();
    const want: CertStoreChange[] = [
      { kind: 'cert', hostname: 'gap.example.com', source: 'acme' },
      { kind: 'state', hostname: 'gap.example.com' },
      { kind: 'challenge', token: 'gap-tok' },
    ];
    await eventually(() => want.every((w) => onB.seen.some((c) => same(c, w))), 'every change made during the gap');
    t.pass('all reported');
    onB.stop();
  });

  t.test('nats: an unreachable cluster store is a StoreError `unavailable` that names the certificate store', async (t) => {
    const link = await CuttableLink.open(t, srv.port);
    const prefix = `cu${++prefixes}`;
    const store = await openStore(cfg(prefix, { servers: [link.url] }), silent);
    t.teardown(() => store.close());
    const cs = new ClusterCertStore(store, { description: 'nats:outage' });
    t.teardown(() => cs.close());
    const pair = createSelfSigned(['u.example.com']);
    await cs.putCert(storedCert('u.example.com', 'acme', pair));

    await link.cut();
    await eventually(() => !store.connected(), 'the client to notice the cut');
    const calls: [string, () => Promise<unknown>][] = [
      ['getCert', () => cs.getCert('u.example.com', 'acme')],
      ['putCert', () => cs.putCert(storedCert('u.example.com', 'acme', pair))],
      ['putChallenge', () => cs.putChallenge('tok', 'tok.x')],
      ['tryLock', () => cs.tryLock('acme:u.example.com', 'n', 60_000)],
    ];
    for (const [what, call] of calls) {
      await t.rejects(call(), { name: 'StoreError', code: 'unavailable', message: /^certificate store nats:outage: .*the cluster store is unreachable/ }, what);
    }
    const err = await cs.listCerts().catch((e: unknown) => e);
    t.match(err, { code: 'unavailable' });
    t.equal((err as { status?: number }).status, 503, 'what the admin API answers with');

    await link.restore();
    await eventually(() => store.connected(), 'the client to reconnect');
    t.equal((await cs.getCert('u.example.com', 'acme'))?.keyPem, pair.keyPem, 'usable again');
  });
});
