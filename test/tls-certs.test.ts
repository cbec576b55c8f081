import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import type { Config } from '../src/config/types.ts';
import { buildCertTable, CertTable, type CertSource } from '../src/tls/certTable.ts';
import { loadCertTable, selfSignedHostnames } from '../src/tls/load.ts';
import { normalizeHostname, subjectAltNames } from '../src/tls/names.ts';
import { createSelfSigned, type KeyPairPem } from '../src/tls/selfsigned.ts';
import { makeSniCallback } from '../src/tls/sni.ts';

const DAY = 24 * 3600_000;

async function putPair(dir: string, name: string, pair: Partial<KeyPairPem>): Promise<void> {
  await mkdir(join(dir, name), { recursive: true });
  if (pair.certPem !== undefined) await writeFile(join(dir, name, 'cert.pem'), pair.certPem);
  if (pair.keyPem !== undefined) await writeFile(join(dir, name, 'key.pem'), pair.keyPem);
}

const fp = (pair: KeyPairPem): string => new X509Certificate(pair.certPem).fingerprint256;

t.test('normalizeHostname', async (t) => {
  t.equal(normalizeHostname('A.Example.COM.'), 'a.example.com');
  t.equal(normalizeHostname('a.example.com'), 'a.example.com');
  t.equal(normalizeHostname(''), '');
});

t.test('subjectAltNames copes with quoted values (CVE-2021-44532 format)', async (t) => {
  // forge signs with RSA only, which is fine for a fixture; its key comes from node's keygen.
  const keys = forge.pki.rsa.generateKeyPair({ bits: 1024 });
  const c = forge.pki.createCertificate();
  c.publicKey = keys.publicKey;
  c.serialNumber = '01';
  c.validity.notAfter = new Date(Date.now() + DAY);
  c.setSubject([{ name: 'commonName', value: 'x' }]);
  c.setIssuer(c.subject.attributes);
  c.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 2, value: 'a,b.example' }, { type: 2, value: 'C.example' }] }]);
  c.sign(keys.privateKey);
  const x = new X509Certificate(forge.pki.certificateToPem(c));
  t.same(subjectAltNames(x).dns, ['a,b.example', 'c.example']);
});

t.test('a certs directory: lookup order, warnings, skips', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-certs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const now = new Date();
  const exact = createSelfSigned(['a.example.com']);
  const wild = createSelfSigned(['*.example.com']);
  const apex = createSelfSigned(['Example.com']);
  const other = createSelfSigned(['other.test']);
  await putPair(dir, 'exact', exact);
  await putPair(dir, 'wild', wild);
  await putPair(dir, 'apex-elsewhere', { certPem: apex.certPem, keyPem: apex.keyPem });
  await putPair(dir, 'expired', createSelfSigned(['expired.test'], new Date(now.getTime() - 400 * DAY)));
  await putPair(dir, 'future', createSelfSigned(['future.test'], new Date(now.getTime() + 10 * DAY)));
  await putPair(dir, 'mismatch', { certPem: other.certPem, keyPem: exact.keyPem });
  await putPair(dir, 'no-key', { certPem: other.certPem });
  await putPair(dir, 'garbage', { certPem: 'not a cert', keyPem: 'not a key' });
  await putPair(dir, '.hidden', other);
  await putPair(dir, '_reserved', other);
  await writeFile(join(dir, 'stray-file.pem'), other.certPem);
  const elsewhere = await mkdtemp(join(tmpdir(), 'petrel-linked-'));
  t.teardown(() => rm(elsewhere, { recursive: true, force: true }));
  await putPair(elsewhere, 'x', other);
  await symlink(join(elsewhere, 'x'), join(dir, 'linked'));

  const { table, warnings, selfSignedGenerated } = await loadCertTable(dir, null, [], now);
  t.notOk(selfSignedGenerated);
  t.equal(table.defaultEntry, null, 'no default without self-signed host names');
  t.same(table.entries.map((e) => e.label).sort(), ['apex-elsewhere', 'exact', 'linked', 'wild']);

  t.equal(table.lookup('a.example.com')?.label, 'exact', 'exact beats wildcard');
  t.equal(table.lookup('b.example.com')?.label, 'wild', 'wildcard one label deep');
  t.equal(table.lookup('x.b.example.com'), null, 'wildcard not two labels deep');
  t.equal(table.lookup('example.com')?.label, 'apex-elsewhere', 'apex only from its own cert, by SAN not dir name');
  t.equal(table.lookup(normalizeHostname('OTHER.test.'))?.label, 'linked', 'symlinked directory');
  t.equal(table.lookup('nothing.test'), null);
  t.equal(table.lookup('com'), null);
  t.equal(table.lookup(''), null);
  t.equal(table.lookup('.example.com'), null, 'empty first label is not a wildcard match');
  t.equal(table.lookup('expired.test'), null);

  const byLabel = new Map(warnings.map((w) => [w.label, w.message]));
  t.match(byLabel.get('mismatch'), /key\.pem does not match/);
  t.match(byLabel.get('expired'), /expired/);
  t.match(byLabel.get('future'), /not valid before/);
  t.match(byLabel.get('no-key'), /cannot read key\.pem: ENOENT/);
  t.match(byLabel.get('garbage'), /not a readable PEM certificate/);
  t.equal(warnings.length, 5, 'nothing about hidden, reserved or stray files');

  const e = table.lookup('a.example.com')!;
  t.equal(e.fingerprint256, fp(exact));
  t.same(e.names, ['a.example.com']);
  t.ok(e.notAfter > now.getTime() + 364 * DAY);
  t.ok(Object.isFrozen(table) && Object.isFrozen(table.entries) && Object.isFrozen(e), 'immutable');
  t.equal(table.contextFor(e, ['TLSv1.3']), e.context, 'one context per entry, whatever the versions');
});

t.test('the self-signed default is never matched by name', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-certs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = await loadCertTable(dir, ['localhost', 'hello.localhost']);
  t.ok(first.selfSignedGenerated);
  t.ok(first.table.defaultEntry);
  t.equal(first.table.defaultEntry?.origin, 'self-signed');
  t.equal(first.table.lookup('hello.localhost'), null);
  t.equal(first.table.defaultPem?.certPem.startsWith('-----BEGIN CERTIFICATE-----'), true);
  t.equal(first.table.noSniContext(true), first.table.defaultEntry?.context);
  t.equal(first.table.noSniContext(false), null);
  const second = await loadCertTable(dir, ['hello.localhost']);
  t.notOk(second.selfSignedGenerated, 'reused on reload');
  t.equal(second.table.defaultEntry?.fingerprint256, first.table.defaultEntry?.fingerprint256);
});

t.test('a certs dir we cannot write to still gets an in-memory default', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-certs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A file where the directory should be fails for root too, unlike a chmod.
  await writeFile(join(dir, '_self-signed'), 'in the way');
  const res = await loadCertTable(dir, ['localhost']);
  t.ok(res.table.defaultEntry);
  t.ok(res.selfSignedGenerated);
  t.match(res.warnings, [{ label: '_self-signed', message: /in memory/ }]);
});

t.test('conflicts: custom beats acme, then the later expiry, with one warning per pair', async (t) => {
  const now = Date.now();
  const older = createSelfSigned(['a.test', 'b.test'], new Date(now - 100 * DAY));
  const newer = createSelfSigned(['a.test', 'b.test'], new Date(now - DAY));
  const acme = createSelfSigned(['a.test', 'c.test']);
  const src = (label: string, pair: KeyPairPem, origin: CertSource['origin'] = 'custom'): CertSource => ({ label, origin, ...pair });
  const { table, warnings } = buildCertTable([src('acme-a', acme, 'acme'), src('new', newer), src('old', older)], null, now);
  t.equal(table.lookup('a.test')?.label, 'new', 'custom over a fresher ACME cert, later expiry among custom');
  t.equal(table.lookup('b.test')?.label, 'new');
  t.equal(table.lookup('c.test')?.label, 'acme-a');
  t.same(warnings, [{ label: 'old', message: 'a.test, b.test served from new instead (it expires later or sorts first)' }]);
});

t.test('selfSignedHostnames from config', async (t) => {
  const port = (defaultSelfSigned: boolean) => ({ tls: { alpn: [], versions: ['TLSv1.2', 'TLSv1.3'], defaultSelfSigned } });
  const config = (dss: boolean) =>
    ({
      node: { defaultDomain: 'localhost' },
      apps: new Map([
        ['hello', { hostnames: ['hello.localhost', 'www.example.test'], services: [{ ports: [port(false), port(dss)] }] }],
      ]),
    }) as unknown as Config;
  t.equal(selfSignedHostnames(config(false)), null, 'no port asks for it');
  t.same(selfSignedHostnames(config(true)), ['localhost', '*.localhost', 'hello.localhost', 'www.example.test']);
});

t.test('per-handshake cost: lookups only', async (t) => {
  const sources: CertSource[] = [];
  for (let i = 0; i < 200; i++) sources.push({ label: `c${i}`, origin: 'custom', ...createSelfSigned([`h${i}.example.com`, `*.w${i}.example.com`]) });
  const { table } = buildCertTable(sources, createSelfSigned(['localhost']));
  const names = ['h7.example.com', 'x.w9.example.com', 'nope.example.com', 'H150.Example.Com.'];
  const n = 200_000;
  let hits = 0;
  let s = performance.now();
  for (let i = 0; i < n; i++) if (table.lookup(names[i & 3]) !== null) hits++;
  const lookupNs = ((performance.now() - s) * 1e6) / n;
  const policy = { versions: ['TLSv1.2', 'TLSv1.3'] as const, defaultSelfSigned: true };
  const sni = makeSniCallback(() => table, () => policy);
  const cb = (err: Error | null) => {
    if (err !== null) throw err;
  };
  s = performance.now();
  for (let i = 0; i < n; i++) sni(names[i & 3], cb);
  const sniNs = ((performance.now() - s) * 1e6) / n;
  t.comment(`200 entries: lookup ${lookupNs.toFixed(0)} ns, whole SNICallback ${sniNs.toFixed(0)} ns per call`);
  t.equal(hits, n / 2);
  t.ok(sniNs < 20_000, 'microseconds at most, against ~1 ms for the handshake itself');
});

t.test('CertTable.EMPTY', async (t) => {
  t.equal(CertTable.EMPTY.lookup('a.test'), null);
  t.equal(CertTable.EMPTY.defaultEntry, null);
});
