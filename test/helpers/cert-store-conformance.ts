// One conformance suite every CertStore passes (architecture habit 10): the file store now, the
// cluster (NATS) store later. Each subtest opens a fresh, empty store.
//
// What it pins beyond the interface's types: putCert refuses pairs with CertRejected (`reason`
// from inspect.ts) and bad keys with StoreInputError (`code` from validate.ts); the stored meta is
// recomputed from the pair with `storedAt` set at the put; watch events may arrive late (a
// cluster store learns of its own writes through its watch) but arrive.
import type { Test } from 'tap';
import type { AlpnChallenge, CertStore, CertStoreChange, IssuanceState, StoredCert, StoredCertSource } from '../../src/tls/store/certStore.ts';
import { inspectPair } from '../../src/tls/store/inspect.ts';
import { createSelfSigned, type KeyPairPem } from '../../src/tls/selfsigned.ts';

export interface OpenedCertStore {
  readonly store: CertStore;
  /** Removes what the store left (temp dir, bucket); the suite closes the store first. */
  cleanup(): Promise<void>;
}

const DAY = 24 * 3600_000;
const DIR_A = 'https://acme-a.test/directory';
const DIR_B = 'https://acme-b.test/directory';

/** Pairs made once per process: key generation is cheap, but not free. */
interface Pairs {
  readonly a: KeyPairPem;
  readonly aRenewed: KeyPairPem;
  readonly b: KeyPairPem;
  readonly wild: KeyPairPem;
  readonly expired: KeyPairPem;
  readonly future: KeyPairPem;
}
let pairs: Pairs | null = null;
function fixtures(): Pairs {
  const now = Date.now();
  pairs ??= {
    a: createSelfSigned(['a.example.com']),
    aRenewed: createSelfSigned(['a.example.com']),
    b: createSelfSigned(['b.example.com']),
    wild: createSelfSigned(['*.example.com']),
    expired: createSelfSigned(['a.example.com'], new Date(now - 400 * DAY)),
    future: createSelfSigned(['a.example.com'], new Date(now + 10 * DAY)),
  };
  return pairs;
}

/** A StoredCert as a caller would make it; meta is the caller's guess, the store recomputes. */
export function storedCert(hostname: string, source: StoredCertSource, pair: KeyPairPem): StoredCert {
  let meta;
  try {
    meta = inspectPair(pair.certPem, pair.keyPem);
  } catch {
    meta = { names: [], issuer: '', notBefore: 0, notAfter: 0, fingerprint256: '', storedAt: 0 };
  }
  return { hostname, source, chainPem: pair.certPem, keyPem: pair.keyPem, meta };
}

function state(hostname: string, o: Partial<IssuanceState> = {}): IssuanceState {
  return { hostname, status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1_700_000_000_000, ...o };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds; the bound is only against hanging, never a performance threshold. */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !cond(); waited += 10) {
    if (waited > 10_000) throw new Error(`gave up waiting for ${what}`);
    await sleep(10);
  }
}

const sameChange = (a: CertStoreChange, b: CertStoreChange): boolean => JSON.stringify(a) === JSON.stringify(b);

// Each is refused by every method that takes a host name; most would escape a directory or a
// KV key if they were used as one.
const BAD_HOSTNAMES = [
  '',
  '.',
  '..',
  '../evil',
  'a/../../evil',
  'a/b',
  'a\\b',
  'x\0y',
  'a..example.com',
  '.example.com',
  'example.com.',
  'A.example.com',
  '*',
  '*.',
  'a.*.example.com',
  'f*.example.com',
  '-a.example.com',
  'a_b.example.com',
  '1.2.3.4',
  'a b.example.com',
  'x'.repeat(64) + '.example.com',
];

export function runCertStoreConformance(t: Test, name: string, open: () => Promise<OpenedCertStore>): void {
  async function fresh(t: Test): Promise<CertStore> {
    const { store, cleanup } = await open();
    t.teardown(async () => {
      await store.close();
      await cleanup();
    });
    return store;
  }

  t.test(`${name}: description`, async (t) => {
    const store = await fresh(t);
    t.type(store.description, 'string');
    t.ok(store.description.length > 0);
  });

  t.test(`${name}: ACME accounts, one per directory URL`, async (t) => {
    const store = await fresh(t);
    t.equal(await store.getAccount(DIR_A), null, 'none yet');
    const keyA = createSelfSigned(['x']).keyPem;
    const keyB = createSelfSigned(['y']).keyPem;
    await store.putAccount({ directoryUrl: DIR_A, accountKeyPem: keyA, accountUrl: null, email: 'ops@example.com', createdAt: 1 });
    await store.putAccount({ directoryUrl: DIR_B, accountKeyPem: keyB, accountUrl: 'https://acme-b.test/acct/1', email: null, createdAt: 2 });
    t.same(await store.getAccount(DIR_A), { directoryUrl: DIR_A, accountKeyPem: keyA, accountUrl: null, email: 'ops@example.com', createdAt: 1 });
    t.same(await store.getAccount(DIR_B), { directoryUrl: DIR_B, accountKeyPem: keyB, accountUrl: 'https://acme-b.test/acct/1', email: null, createdAt: 2 });
    // Registration fills in the kid later.
    await store.putAccount({ directoryUrl: DIR_A, accountKeyPem: keyA, accountUrl: 'https://acme-a.test/acct/7', email: 'ops@example.com', createdAt: 1 });
    t.equal((await store.getAccount(DIR_A))?.accountUrl, 'https://acme-a.test/acct/7');
    t.equal(await store.getAccount('https://other.test/directory'), null);
  });

  t.test(`${name}: a certificate round trip, meta recomputed`, async (t) => {
    const store = await fresh(t);
    const { a, aRenewed } = fixtures();
    t.equal(await store.getCert('a.example.com', 'custom'), null, 'none yet');
    const before = Date.now();
    await store.putCert({ ...storedCert('a.example.com', 'custom', a), meta: { names: ['lies.test'], issuer: 'lies', notBefore: 0, notAfter: 1, fingerprint256: 'XX', storedAt: 5 } });
    const after = Date.now();
    const got = await store.getCert('a.example.com', 'custom');
    t.ok(got !== null);
    if (got === null) return;
    t.equal(got.hostname, 'a.example.com');
    t.equal(got.source, 'custom');
    t.equal(got.chainPem, a.certPem, 'chain byte for byte');
    t.equal(got.keyPem, a.keyPem, 'key byte for byte');
    const want = inspectPair(a.certPem, a.keyPem);
    t.same(got.meta.names, want.names);
    t.equal(got.meta.issuer, 'a.example.com', 'issuer CN');
    t.equal(got.meta.notBefore, want.notBefore);
    t.equal(got.meta.notAfter, want.notAfter);
    t.equal(got.meta.fingerprint256, want.fingerprint256);
    t.ok(got.meta.storedAt >= before && got.meta.storedAt <= after, 'storedAt is the time of the put');

    await store.putCert(storedCert('a.example.com', 'custom', aRenewed));
    const renewed = await store.getCert('a.example.com', 'custom');
    t.equal(renewed?.chainPem, aRenewed.certPem, 'a put replaces the pair');
    t.equal(renewed?.keyPem, aRenewed.keyPem);
    t.equal(renewed?.meta.fingerprint256, inspectPair(aRenewed.certPem, aRenewed.keyPem).fingerprint256);
  });

  t.test(`${name}: wildcards`, async (t) => {
    const store = await fresh(t);
    const { wild } = fixtures();
    await store.putCert(storedCert('*.example.com', 'custom', wild));
    const got = await store.getCert('*.example.com', 'custom');
    t.equal(got?.hostname, '*.example.com');
    t.same(got?.meta.names, ['*.example.com']);
    t.equal(await store.getCert('a.example.com', 'custom'), null, 'the store is keyed by host name, not matched like SNI');
    // RFC 6125 §6.4.3: a wildcard covers one label, so it may be stored for such a name.
    await store.putCert(storedCert('c.example.com', 'custom', wild));
    t.equal((await store.getCert('c.example.com', 'custom'))?.chainPem, wild.certPem);
    await t.rejects(store.putCert(storedCert('a.b.example.com', 'custom', wild)), { name: 'CertRejected', reason: 'hostname-not-covered' }, 'not two labels');
    await t.rejects(store.putCert(storedCert('example.com', 'custom', wild)), { name: 'CertRejected', reason: 'hostname-not-covered' }, 'not the apex');
  });

  t.test(`${name}: custom and acme side by side for one host name`, async (t) => {
    const store = await fresh(t);
    const { a, aRenewed } = fixtures();
    await store.putCert(storedCert('a.example.com', 'custom', a));
    await store.putCert(storedCert('a.example.com', 'acme', aRenewed));
    t.equal((await store.getCert('a.example.com', 'custom'))?.chainPem, a.certPem);
    t.equal((await store.getCert('a.example.com', 'acme'))?.chainPem, aRenewed.certPem);
    t.equal((await store.getCert('a.example.com', 'acme'))?.source, 'acme');
    const listed = (await store.listCerts()).map((c) => `${c.source}:${c.hostname}:${c.meta.fingerprint256}`).sort();
    t.same(listed, [
      `acme:a.example.com:${inspectPair(aRenewed.certPem, aRenewed.keyPem).fingerprint256}`,
      `custom:a.example.com:${inspectPair(a.certPem, a.keyPem).fingerprint256}`,
    ]);
    t.equal(await store.deleteCert('a.example.com', 'custom'), true);
    t.equal(await store.getCert('a.example.com', 'custom'), null);
    t.equal((await store.getCert('a.example.com', 'acme'))?.keyPem, aRenewed.keyPem, 'the other source is untouched');
  });

  t.test(`${name}: listing and delete semantics`, async (t) => {
    const store = await fresh(t);
    const { a, b, wild } = fixtures();
    t.same(await store.listCerts(), [], 'empty');
    await store.putCert(storedCert('a.example.com', 'acme', a));
    await store.putCert(storedCert('b.example.com', 'custom', b));
    await store.putCert(storedCert('*.example.com', 'custom', wild));
    const key = (c: StoredCert): string => `${c.source}:${c.hostname}`;
    const listed = await store.listCerts();
    t.same(listed.map(key).sort(), ['acme:a.example.com', 'custom:*.example.com', 'custom:b.example.com']);
    const bListed = listed.find((c) => c.hostname === 'b.example.com');
    t.equal(bListed?.chainPem, b.certPem, 'listed entries are whole');
    t.equal(bListed?.keyPem, b.keyPem);

    t.equal(await store.deleteCert('b.example.com', 'acme'), false, 'wrong source: nothing deleted');
    t.equal(await store.deleteCert('nothing.example.com', 'custom'), false, 'missing: false');
    t.equal(await store.deleteCert('b.example.com', 'custom'), true);
    t.equal(await store.deleteCert('b.example.com', 'custom'), false, 'twice: false');
    t.equal(await store.deleteCert('*.example.com', 'custom'), true);
    t.same((await store.listCerts()).map(key), ['acme:a.example.com']);
    // A deleted name can be stored again.
    await store.putCert(storedCert('b.example.com', 'custom', b));
    t.equal((await store.getCert('b.example.com', 'custom'))?.keyPem, b.keyPem);
  });

  t.test(`${name}: issuance states`, async (t) => {
    const store = await fresh(t);
    t.equal(await store.getState('a.example.com'), null);
    t.same(await store.listStates(), []);
    const s1 = state('a.example.com');
    await store.putState(s1);
    t.same(await store.getState('a.example.com'), s1);
    const s2 = state('a.example.com', { status: 'failed', lastError: 'urn:ietf:params:acme:error:rateLimited', failures: 3, nextAttemptAt: 1_700_000_600_000, updatedAt: 1_700_000_000_500 });
    await store.putState(s2);
    t.same(await store.getState('a.example.com'), s2, 'replaced');
    const s3 = state('b.example.com', { status: 'active', nextAttemptAt: 1_800_000_000_000 });
    await store.putState(s3);
    t.same((await store.listStates()).sort((x, y) => x.hostname.localeCompare(y.hostname)), [s2, s3]);
    t.equal(await store.deleteState('a.example.com'), true);
    t.equal(await store.deleteState('a.example.com'), false);
    t.equal(await store.getState('a.example.com'), null);
    t.same(await store.listStates(), [s3]);
    for (const bad of [{ status: 'done' }, { failures: -1 }, { failures: 1.5 }, { updatedAt: Number.NaN }, { lastError: 3 }, { nextAttemptAt: 'soon' }]) {
      await t.rejects(store.putState({ ...s3, ...bad } as unknown as IssuanceState), { code: 'bad-input' }, `refused: ${JSON.stringify(bad)}`);
    }
    t.same(await store.getState('b.example.com'), s3, 'a refused state changes nothing');
  });

  t.test(`${name}: order log counts per directory URL since a time`, async (t) => {
    const store = await fresh(t);
    const t0 = Date.now();
    t.equal(await store.ordersSince(DIR_A, 0), 0);
    await store.recordOrder(DIR_A, t0 - 2 * 3600_000);
    await store.recordOrder(DIR_A, t0 - 30 * 60_000);
    await store.recordOrder(DIR_A, t0 - 1000);
    await store.recordOrder(DIR_A, t0);
    await store.recordOrder(DIR_B, t0);
    t.equal(await store.ordersSince(DIR_A, t0 - 3600_000), 3, 'the last hour');
    t.equal(await store.ordersSince(DIR_A, t0 - 1000), 2, 'since is inclusive');
    t.equal(await store.ordersSince(DIR_A, t0 + 1), 0);
    t.equal(await store.ordersSince(DIR_B, t0 - 3600_000), 1, 'per directory URL');
    t.equal(await store.ordersSince('https://other.test/directory', 0), 0);
    // Concurrent records are all counted (no lost read-modify-write).
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.recordOrder(DIR_B, t0 + i)));
    t.equal(await store.ordersSince(DIR_B, t0), 11);
  });

  t.test(`${name}: HTTP-01 challenges`, async (t) => {
    const store = await fresh(t);
    t.equal(await store.getChallenge('tok-1_A'), null);
    await store.putChallenge('tok-1_A', 'tok-1_A.thumbprint');
    await store.putChallenge('tok2', 'tok2.thumbprint');
    t.equal(await store.getChallenge('tok-1_A'), 'tok-1_A.thumbprint');
    t.equal(await store.getChallenge('tok2'), 'tok2.thumbprint');
    await store.deleteChallenge('tok-1_A');
    t.equal(await store.getChallenge('tok-1_A'), null);
    t.equal(await store.getChallenge('tok2'), 'tok2.thumbprint', 'only that one');
    await store.deleteChallenge('never-put'); // no error
    for (const bad of ['', '../x', 'a/b', 'a.b', 'a b', 'x\0']) {
      await t.rejects(store.putChallenge(bad, 'k'), { code: 'bad-token' }, `token ${JSON.stringify(bad)}`);
      await t.rejects(store.getChallenge(bad), { code: 'bad-token' });
    }
  });

  t.test(`${name}: TLS-ALPN-01 challenges`, async (t) => {
    const store = await fresh(t);
    const { a, b } = fixtures();
    const ch: AlpnChallenge = { hostname: 'a.example.com', certPem: a.certPem, keyPem: a.keyPem };
    t.equal(await store.getAlpnChallenge('a.example.com'), null);
    await store.putAlpnChallenge(ch);
    t.same(await store.getAlpnChallenge('a.example.com'), ch);
    t.equal(await store.getAlpnChallenge('b.example.com'), null);
    await t.rejects(store.putAlpnChallenge({ hostname: 'a.example.com', certPem: a.certPem, keyPem: b.keyPem }), { name: 'CertRejected', reason: 'key-mismatch' });
    await t.rejects(store.putAlpnChallenge({ hostname: 'b.example.com', certPem: a.certPem, keyPem: a.keyPem }), { name: 'CertRejected', reason: 'hostname-not-covered' });
    await t.rejects(store.putAlpnChallenge({ hostname: '../x', certPem: a.certPem, keyPem: a.keyPem }), { code: 'bad-hostname' });
    t.same(await store.getAlpnChallenge('a.example.com'), ch, 'refusals change nothing');
    await store.deleteAlpnChallenge('a.example.com');
    t.equal(await store.getAlpnChallenge('a.example.com'), null);
    await store.deleteAlpnChallenge('a.example.com'); // no error
  });

  t.test(`${name}: issuance locks`, async (t) => {
    const store = await fresh(t);
    const hour = 3600_000;
    t.equal(await store.tryLock('issue:a.example.com', 'node-1', hour), true, 'free: taken');
    t.equal(await store.tryLock('issue:a.example.com', 'node-2', hour), false, 'held by another');
    t.equal(await store.tryLock('issue:a.example.com', 'node-1', hour), true, 're-entrant for its owner');
    t.equal(await store.tryLock('issue:b.example.com', 'node-2', hour), true, 'locks are per name');
    await store.unlock('issue:a.example.com', 'node-2');
    t.equal(await store.tryLock('issue:a.example.com', 'node-2', hour), false, 'unlock by a non-owner is a no-op');
    await store.unlock('issue:a.example.com', 'node-1');
    t.equal(await store.tryLock('issue:a.example.com', 'node-2', hour), true, 'free after its owner unlocks');
    await store.unlock('never-locked', 'node-1'); // no error

    // A crashed holder never unlocks: expiry frees the name. Waiting past the ttl is not a
    // timing threshold: the lock can only be more expired the longer we wait.
    t.equal(await store.tryLock('issue:c.example.com', 'crashed', 50), true);
    await sleep(200);
    t.equal(await store.tryLock('issue:c.example.com', 'node-2', hour), true, 'expired: taken by another');
    t.equal(await store.tryLock('issue:c.example.com', 'crashed', hour), false, 'and the old holder lost it');
  });

  t.test(`${name}: watch reports changes made through the store`, async (t) => {
    const store = await fresh(t);
    const { a } = fixtures();
    const seen: CertStoreChange[] = [];
    const stop = store.watch((c) => seen.push(c));
    await store.putCert(storedCert('a.example.com', 'acme', a));
    await store.putState(state('a.example.com'));
    await store.putChallenge('tok', 'tok.x');
    await store.putAlpnChallenge({ hostname: 'a.example.com', certPem: a.certPem, keyPem: a.keyPem });
    const expected: CertStoreChange[] = [
      { kind: 'cert', hostname: 'a.example.com', source: 'acme' },
      { kind: 'state', hostname: 'a.example.com' },
      { kind: 'challenge', token: 'tok' },
      { kind: 'alpn-challenge', hostname: 'a.example.com' },
    ];
    await eventually(() => expected.every((e) => seen.some((s) => sameChange(s, e))), 'a change event for every put');

    seen.length = 0;
    await store.deleteCert('a.example.com', 'acme');
    await store.deleteState('a.example.com');
    await store.deleteChallenge('tok');
    await store.deleteAlpnChallenge('a.example.com');
    await eventually(() => expected.every((e) => seen.some((s) => sameChange(s, e))), 'a change event for every delete');

    // After unsubscribing, nothing more arrives. A second watcher sees a later change, so any
    // event for the earlier one has been delivered by then.
    stop();
    seen.length = 0;
    await store.putState(state('b.example.com'));
    const later: CertStoreChange[] = [];
    const stop2 = store.watch((c) => later.push(c));
    await store.putState(state('c.example.com'));
    await eventually(() => later.some((c) => sameChange(c, { kind: 'state', hostname: 'c.example.com' })), 'the second watcher');
    stop2();
    t.same(seen, [], 'no events after unsubscribe');
  });

  t.test(`${name}: bad host names are refused everywhere`, async (t) => {
    const store = await fresh(t);
    const { a } = fixtures();
    for (const bad of BAD_HOSTNAMES) {
      const what = JSON.stringify(bad);
      await t.rejects(store.putCert(storedCert(bad, 'custom', a)), { code: 'bad-hostname' }, `putCert ${what}`);
      await t.rejects(store.getCert(bad, 'acme'), { code: 'bad-hostname' }, `getCert ${what}`);
      await t.rejects(store.deleteCert(bad, 'custom'), { code: 'bad-hostname' }, `deleteCert ${what}`);
      await t.rejects(store.putState(state(bad)), { code: 'bad-hostname' }, `putState ${what}`);
      await t.rejects(store.getState(bad), { code: 'bad-hostname' }, `getState ${what}`);
      await t.rejects(store.deleteState(bad), { code: 'bad-hostname' }, `deleteState ${what}`);
      await t.rejects(store.getAlpnChallenge(bad), { code: 'bad-hostname' }, `getAlpnChallenge ${what}`);
    }
    await t.rejects(store.putCert({ ...storedCert('a.example.com', 'custom', a), source: 'other' as StoredCertSource }), { code: 'bad-input' }, 'unknown source');
    t.same(await store.listCerts(), [], 'nothing was stored');
    t.same(await store.listStates(), []);
  });

  t.test(`${name}: putCert refuses unusable pairs and keeps the previous one`, async (t) => {
    const store = await fresh(t);
    const { a, b, expired, future } = fixtures();
    await store.putCert(storedCert('a.example.com', 'custom', a));
    const cases: [string, KeyPairPem, string][] = [
      ['mismatched key', { certPem: a.certPem, keyPem: b.keyPem }, 'key-mismatch'],
      ['expired', expired, 'expired'],
      ['not yet valid', future, 'not-yet-valid'],
      ['another host name', b, 'hostname-not-covered'],
      ['garbage chain', { certPem: 'not a certificate', keyPem: a.keyPem }, 'unreadable-cert'],
      ['truncated chain', { certPem: a.certPem.slice(0, 200) + '\n-----END CERTIFICATE-----\n', keyPem: a.keyPem }, 'unreadable-cert'],
      ['garbage key', { certPem: a.certPem, keyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }, 'unreadable-key'],
      ['empty', { certPem: '', keyPem: '' }, 'unreadable-cert'],
    ];
    for (const [what, pair, reason] of cases) {
      for (const source of ['custom', 'acme'] as const) {
        await t.rejects(store.putCert(storedCert('a.example.com', source, pair)), { name: 'CertRejected', reason }, `${what} (${source})`);
      }
    }
    const kept = await store.getCert('a.example.com', 'custom');
    t.equal(kept?.chainPem, a.certPem, 'the previous pair is intact');
    t.equal(kept?.keyPem, a.keyPem);
    t.equal(await store.getCert('a.example.com', 'acme'), null, 'no refused pair was stored');
    t.equal((await store.listCerts()).length, 1);
  });

  t.test(`${name}: concurrent puts of one host name leave one whole pair`, async (t) => {
    const store = await fresh(t);
    const { a, aRenewed } = fixtures();
    await Promise.all([
      store.putCert(storedCert('a.example.com', 'acme', a)),
      store.putCert(storedCert('a.example.com', 'acme', aRenewed)),
      store.getCert('a.example.com', 'acme'),
      store.putCert(storedCert('a.example.com', 'acme', a)),
    ]);
    const got = await store.getCert('a.example.com', 'acme');
    t.ok(got !== null);
    if (got === null) return;
    t.ok(
      (got.chainPem === a.certPem && got.keyPem === a.keyPem) || (got.chainPem === aRenewed.certPem && got.keyPem === aRenewed.keyPem),
      'chain and key belong together',
    );
    t.equal((await store.listCerts()).length, 1);
  });
}
