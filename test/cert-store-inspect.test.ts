import t, { type Test } from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import { createSelfSigned } from '../src/tls/selfsigned.ts';
import { CertRejected, describePair, inspectPair, namesCover } from '../src/tls/store/inspect.ts';
import { checkHostname, checkToken } from '../src/tls/store/validate.ts';

const DAY = 24 * 3600_000;

interface Made {
  readonly certPem: string;
  readonly keyPem: string;
  readonly cert: forge.pki.Certificate;
  readonly key: forge.pki.rsa.PrivateKey;
}

// forge signs with RSA only, which is fine for fixtures; the key comes from node's faster keygen.
function make(o: { subject: forge.pki.CertificateField[]; sans?: string[]; ca?: boolean; issuer?: Made; serial: string }): Made {
  const pem = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
  const key = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  const c = forge.pki.createCertificate();
  c.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  c.serialNumber = o.serial;
  c.validity.notBefore = new Date(Date.now() - DAY);
  c.validity.notAfter = new Date(Date.now() + 30 * DAY);
  c.setSubject(o.subject);
  c.setIssuer(o.issuer === undefined ? o.subject : o.issuer.cert.subject.attributes);
  const exts: object[] = [{ name: 'basicConstraints', cA: o.ca === true }];
  if (o.sans !== undefined) exts.push({ name: 'subjectAltName', altNames: o.sans.map((value) => ({ type: 2, value })) });
  c.setExtensions(exts);
  c.sign(o.issuer === undefined ? key : o.issuer.key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(c), keyPem: pem, cert: c, key };
}

const rejects = (t: Test, fn: () => unknown, reason: string, message: RegExp): void => {
  t.throws(fn, { name: 'CertRejected', reason, message });
};

t.test('a chain: leaf, then its issuer', async (t) => {
  const ca = make({ subject: [{ name: 'organizationName', value: 'Test Org' }, { name: 'commonName', value: 'Test CA' }], ca: true, serial: '01' });
  const leaf = make({ subject: [{ name: 'commonName', value: 'a.example.com' }], sans: ['a.example.com', 'B.Example.com'], issuer: ca, serial: '02' });
  const meta = inspectPair(leaf.certPem + ca.certPem, leaf.keyPem, { hostname: 'b.example.com' });
  t.same(meta.names, ['a.example.com', 'b.example.com'], 'lower-cased');
  t.equal(meta.issuer, 'Test CA', 'issuer CN');
  t.ok(meta.notAfter > Date.now());

  rejects(t, () => inspectPair(ca.certPem + leaf.certPem, leaf.keyPem), 'bad-chain', /did not issue/);
  const stranger = make({ subject: [{ name: 'commonName', value: 'Other CA' }], ca: true, serial: '03' });
  rejects(t, () => inspectPair(leaf.certPem + stranger.certPem, leaf.keyPem), 'bad-chain', /Other CA/);

  // Text between the blocks (openssl pkcs12 output) is not an error.
  t.ok(inspectPair(`Bag Attributes\n${leaf.certPem}subject=CA\n${ca.certPem}`, leaf.keyPem));
});

t.test('issuer: CN, else O, else the whole name', async (t) => {
  const orgOnly = make({ subject: [{ name: 'countryName', value: 'NL' }, { name: 'organizationName', value: 'Only Org' }], ca: true, serial: '04' });
  const leaf1 = make({ subject: [{ name: 'commonName', value: 'x' }], sans: ['x.example.com'], issuer: orgOnly, serial: '05' });
  t.equal(inspectPair(leaf1.certPem, leaf1.keyPem).issuer, 'Only Org');
  const bare = make({ subject: [{ name: 'countryName', value: 'NL' }, { name: 'localityName', value: 'Delft' }], ca: true, serial: '06' });
  const leaf2 = make({ subject: [{ name: 'commonName', value: 'x' }], sans: ['x.example.com'], issuer: bare, serial: '07' });
  t.equal(inspectPair(leaf2.certPem, leaf2.keyPem).issuer, 'C=NL, L=Delft');
});

t.test('every reason, with a message naming the host name or the date', async (t) => {
  const a = createSelfSigned(['a.example.com']);
  const b = createSelfSigned(['b.example.com']);
  const now = Date.now();
  rejects(t, () => inspectPair('garbage', a.keyPem), 'unreadable-cert', /no PEM certificate/);
  rejects(t, () => inspectPair('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', a.keyPem), 'unreadable-cert', /certificate 1 of the chain/);
  rejects(t, () => inspectPair(a.certPem, 'garbage'), 'unreadable-key', /not a readable/);
  rejects(t, () => inspectPair(a.certPem, a.certPem), 'unreadable-key', /not a readable/);
  rejects(t, () => inspectPair(a.certPem, b.keyPem), 'key-mismatch', /does not match/);
  rejects(t, () => inspectPair(a.certPem, a.keyPem, { hostname: 'b.example.com' }), 'hostname-not-covered', /does not cover b\.example\.com: its names are a\.example\.com/);
  rejects(t, () => inspectPair(a.certPem, a.keyPem, { hostname: 'a.example.com', now: now + 400 * DAY }), 'expired', /for a\.example\.com expired on \d{4}-\d\d-\d\dT/);
  rejects(t, () => inspectPair(a.certPem, a.keyPem, { now: now - 2 * DAY }), 'not-yet-valid', /for a\.example\.com is not valid before \d{4}-/);
  const noSan = make({ subject: [{ name: 'commonName', value: 'a.example.com' }], serial: '08' });
  rejects(t, () => inspectPair(noSan.certPem, noSan.keyPem), 'no-dns-names', /no DNS names/);

  const err = (() => {
    try {
      inspectPair(a.certPem, b.keyPem);
    } catch (e) {
      return e;
    }
  })();
  t.ok(err instanceof CertRejected);
  t.ok(err instanceof Error);

  // describePair checks only what is wrong whatever the date: stored pairs are read back as they are.
  t.equal(describePair(a.certPem, a.keyPem, 42).storedAt, 42);
  const old = createSelfSigned(['x.test'], new Date(now - 400 * DAY));
  t.ok(describePair(old.certPem, old.keyPem, 0).notAfter < now, 'an expired pair is described');
  rejects(t, () => describePair(a.certPem, b.keyPem, 0), 'key-mismatch', /does not match/);
});

t.test('namesCover follows RFC 6125 §6.4.3', async (t) => {
  t.ok(namesCover(['a.example.com'], 'a.example.com'));
  t.ok(namesCover(['*.example.com'], 'a.example.com'));
  t.notOk(namesCover(['*.example.com'], 'a.b.example.com'), 'one label only');
  t.notOk(namesCover(['*.example.com'], 'example.com'), 'not the apex');
  t.ok(namesCover(['*.example.com'], '*.example.com'));
  t.notOk(namesCover(['a.example.com'], '*.example.com'), 'a wildcard needs a wildcard');
  t.notOk(namesCover(['f*.example.com'], 'foo.example.com'), 'no partial wildcards');
  t.notOk(namesCover(['*.com'], 'localhost'));
});

t.test('store keys', async (t) => {
  for (const ok of ['a.example.com', '*.example.com', 'localhost', 'xn--bcher-kva.example', 'a-b.c0.example']) t.equal(checkHostname(ok), ok);
  for (const bad of ['', 'A.b', 'a..b', '../x', 'a/b', '*.', '*', '*.*.a', 'a.', '.a', '-a', 'a-', 'a_b', '::1', '10.0.0.1', 'é.example', 7]) {
    t.throws(() => checkHostname(bad), { name: 'StoreInputError', code: 'bad-hostname' }, JSON.stringify(bad));
  }
  t.equal(checkToken('abc-DEF_123'), 'abc-DEF_123');
  for (const bad of ['', 'a.b', 'a/b', 'a=', 'x'.repeat(513), null]) t.throws(() => checkToken(bad), { code: 'bad-token' });
});
