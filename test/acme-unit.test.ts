// The ACME pieces that need no CA: the data plane's challenge book and path helper, the schedule
// arithmetic, settings validation. Real sockets where the book meets TLS.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import pino from 'pino';
import { ChallengeSync } from '../src/tls/acme/challengeSync.ts';
import { AcmeConfigError, resolveAcmeSettings } from '../src/tls/acme/config.ts';
import type { AcmeLogger } from '../src/tls/acme/manager.ts';
import { FileCertStore } from '../src/tls/store/fileStore.ts';
import { backoffDelay, renewalAt, TokenBucket } from '../src/tls/acme/schedule.ts';
import { ACME_TLS_ALPN, ChallengeBook, isAcmeChallengePath } from '../src/tls/challenges.ts';
import { createSelfSigned } from '../src/tls/selfsigned.ts';

const TOKEN = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0';

t.test('isAcmeChallengePath: the token of a well-known path, base64url only', async (t) => {
  t.equal(isAcmeChallengePath(`/.well-known/acme-challenge/${TOKEN}`), TOKEN);
  t.equal(isAcmeChallengePath(`/.well-known/acme-challenge/${TOKEN}?x=1`), TOKEN, 'query string ignored');
  t.equal(isAcmeChallengePath('/.well-known/acme-challenge/a_b-C9'), 'a_b-C9');
  for (const bad of [
    '/',
    '/.well-known/acme-challenge/',
    '/.well-known/acme-challenge/?x',
    '/.well-known/acme-challenge/../etc/passwd',
    '/.well-known/acme-challenge/a/b',
    '/.well-known/acme-challenge/a%2Fb',
    '/.well-known/acme-challenge/abc=',
    '/.well-known/acme-challenge/a b',
    '/.WELL-KNOWN/acme-challenge/abc',
    `/.well-known/acme-challenge/${'a'.repeat(257)}`,
  ]) {
    t.equal(isAcmeChallengePath(bad), null, bad.slice(0, 60));
  }
});

t.test('ChallengeBook: HTTP-01 answers', async (t) => {
  const book = new ChallengeBook();
  t.equal(book.http01(TOKEN), undefined);
  book.setHttp01(TOKEN, `${TOKEN}.thumb`);
  t.equal(book.http01(TOKEN), `${TOKEN}.thumb`);
  book.deleteHttp01(TOKEN);
  t.equal(book.http01(TOKEN), undefined);
});

t.test('ChallengeBook: a TLS-ALPN-01 certificate only for handshakes that offer acme-tls/1', async (t) => {
  const book = new ChallengeBook();
  const challenge = createSelfSigned(['app.petrel.test']);
  const normal = createSelfSigned(['app.petrel.test']);
  const normalCtx = tls.createSecureContext({ cert: normal.certPem, key: normal.keyPem });
  t.notOk(book.hasAlpn);
  book.setAlpn('App.Petrel.Test.', challenge.certPem, challenge.keyPem);
  t.ok(book.hasAlpn);
  t.ok(book.alpnContext('app.petrel.test'), 'case and trailing dot do not matter');
  t.equal(book.alpnContext('other.petrel.test'), undefined);

  // The listener recipe from challenges.ts, on a real TLS server.
  const server = tls.createServer({
    ALPNCallback(this: tls.TLSSocket, { servername, protocols }) {
      if (book.claimAlpnHandshake(this, servername, protocols)) return ACME_TLS_ALPN;
      return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
    },
    SNICallback(this: tls.TLSSocket, _name, cb) {
      cb(null, book.claimedContext(this) ?? normalCtx);
    },
  });
  server.on('secureConnection', (s: tls.TLSSocket) => s.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const leafOf = (alpn: string[]): Promise<{ fp: string; alpn: string | false | null }> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername: 'app.petrel.test', ALPNProtocols: alpn, rejectUnauthorized: false }, () => {
        resolve({ fp: s.getPeerCertificate().fingerprint256, alpn: s.alpnProtocol });
        s.destroy();
      });
      s.on('error', reject);
    });
  const fpOf = (pem: string) => new X509Certificate(pem).fingerprint256;

  const acme = await leafOf([ACME_TLS_ALPN]);
  t.equal(acme.alpn, ACME_TLS_ALPN);
  t.equal(acme.fp, fpOf(challenge.certPem), 'validation handshake gets the challenge certificate');
  const browser = await leafOf(['h2', 'http/1.1']);
  t.equal(browser.fp, fpOf(normal.certPem), 'an ordinary client of the same name keeps the real certificate');
  book.deleteAlpn('app.petrel.test');
  t.notOk(book.hasAlpn);
  const after = await leafOf([ACME_TLS_ALPN, 'http/1.1']);
  t.equal(after.fp, fpOf(normal.certPem), 'no challenge left: acme-tls/1 is not claimed');
  t.equal(after.alpn, 'http/1.1');
});

t.test('challenges.ts stays data-plane safe (node built-ins only)', async (t) => {
  const src = readFileSync(join(import.meta.dirname, '../src/tls/challenges.ts'), 'utf8');
  const specs = [...src.matchAll(/^\s*import\s[^'"]*['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  t.same(specs, ['node:tls']);
});

t.test('renewalAt: two thirds of the lifetime, jitter bounded by 5 % of it', async (t) => {
  const nb = 1_000_000;
  const day = 86_400_000;
  t.equal(renewalAt(nb, nb + 90 * day, 2 / 3, 3_600_000, () => 0.5), nb + 60 * day);
  t.equal(renewalAt(nb, nb + 90 * day, 2 / 3, 3_600_000, () => 0), nb + 60 * day - 3_600_000);
  // A 30 s certificate: an hour of jitter would overshoot its life; 5 % of 30 s is 1.5 s.
  t.equal(renewalAt(nb, nb + 30_000, 2 / 3, 3_600_000, () => 0.999_999), nb + 20_000 + 1_500);
  t.equal(renewalAt(nb, nb + 30_000, 2 / 3, 3_600_000, () => 0), nb + 20_000 - 1_500);
});

t.test('backoffDelay: exponential, capped, never above the cap', async (t) => {
  const hi = () => 0; // no shortening
  t.same([1, 2, 3, 4, 5, 6].map((f) => backoffDelay(f, 1_000, 10_000, hi)), [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
  t.equal(backoffDelay(1, 1_000, 10_000, () => 0.999), 800, 'shortened by at most 20 %');
  t.equal(backoffDelay(10_000, 1_000, 10_000, hi), 10_000, 'huge failure counts stay finite');
  for (let f = 1; f < 4; f++) {
    t.ok(backoffDelay(f + 1, 1_000, 1e9, () => 0.999) > backoffDelay(f, 1_000, 1e9, hi), `step ${f + 1} always longer than step ${f}`);
  }
});

t.test('TokenBucket: burst, then the rate', async (t) => {
  const b = new TokenBucket(60, 3, 0); // one per second
  t.same([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
  t.equal(b.take(500), false);
  t.equal(b.take(1_000), true);
  t.equal(b.take(1_000), false);
  t.same([b.take(100_000), b.take(100_000), b.take(100_000), b.take(100_000)], [true, true, true, false], 'refill capped at the burst');
});

t.test('resolveAcmeSettings: defaults and clear refusals', async (t) => {
  const ok = resolveAcmeSettings({ directoryUrl: 'https://acme.example/dir', termsAgreed: true, email: undefined });
  t.same(ok.challenges, ['tls-alpn-01', 'http-01'], 'TLS-ALPN-01 first by default');
  t.equal(ok.renewFraction, 2 / 3);
  t.equal(ok.email, null, 'an undefined key takes the default');
  t.ok(Object.isFrozen(ok));

  const refused = (input: Parameters<typeof resolveAcmeSettings>[0], key: string, re: RegExp) => {
    let caught: unknown = null;
    try {
      resolveAcmeSettings(input);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof AcmeConfigError, `${key} refused`);
    t.equal((caught as AcmeConfigError).key, key);
    t.match((caught as Error).message, re);
  };
  const base = { directoryUrl: 'https://acme.example/dir', termsAgreed: true };
  refused({ ...base, directoryUrl: 'acme.example/dir' }, 'directoryUrl', /not a URL/);
  refused({ ...base, directoryUrl: 'http://acme.example/dir' }, 'directoryUrl', /https/);
  refused({ directoryUrl: 'https://acme.example/dir' }, 'termsAgreed', /terms of service/);
  refused({ ...base, termsAgreed: false }, 'termsAgreed', /terms of service/);
  refused({ ...base, email: 'not an email' }, 'email', /not an email/);
  refused({ ...base, challenges: ['dns-01' as never] }, 'challenges', /DNS-01 is not/);
  refused({ ...base, challenges: [] }, 'challenges', /at least one/);
  refused({ ...base, renewFraction: 1 }, 'renewFraction', /between 0 and 1/);
  refused({ ...base, backoffMinMs: 10, backoffMaxMs: 5 }, 'backoffMaxMs', /below/);
  refused({ ...base, ordersPerHour: 0 }, 'ordersPerHour', /positive integer/);
  refused({ ...base, eab: { kid: '', hmacKey: 'abc' } }, 'eab.kid', /non-empty/);
  refused({ ...base, eab: { kid: 'k', hmacKey: 'not base64!' } }, 'eab.hmacKey', /base64url/);
});

t.test('ChallengeSync: answers written to the store by anyone reach the book', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-acme-sync-'));
  const store = await FileCertStore.open(dir);
  const book = new ChallengeBook();
  // The daemon passes its pino component logger: the ACME code's logger shape must accept it.
  const log: AcmeLogger = pino({ level: 'silent' });
  const sync = new ChallengeSync(store, book, log);
  sync.start();
  t.teardown(async () => {
    await sync.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  // Another writer (another node, with the cluster store): only the watch brings it here.
  await store.putChallenge(TOKEN, `${TOKEN}.k`);
  await sync.stop(); // waits for the refresh the event started
  t.equal(book.http01(TOKEN), `${TOKEN}.k`);
  sync.start();
  await store.deleteChallenge(TOKEN);
  await sync.stop();
  t.equal(book.http01(TOKEN), undefined);
  sync.start();

  const pair = createSelfSigned(['alpn.petrel.test']);
  await sync.putAlpn('alpn.petrel.test', pair.certPem, pair.keyPem);
  t.ok(book.alpnContext('alpn.petrel.test'), 'published: in the book when putAlpn resolves');
  await sync.deleteAlpn('alpn.petrel.test');
  t.notOk(book.hasAlpn);
  await sync.putHttp01(TOKEN, 'x');
  t.equal(book.http01(TOKEN), 'x');
  await sync.deleteHttp01(TOKEN);
  t.equal(book.http01(TOKEN), undefined);
});
