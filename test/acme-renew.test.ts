// Renewal and failure against a real pebble: a short-lived certificate renewed before it
// expires while the old one keeps serving, a CA that goes away (failed status, growing backoff,
// one log line per attempt, the certificate kept), a backoff that survives a restart, and
// directory settings that cannot work.
import t from 'tap';
import { join } from 'node:path';
import { requireBinary } from './helpers/deps.ts';
import { freePort } from './helpers/prometheus.ts';
import { handshakeWith, startAcmeLab, waitFor } from './helpers/pebble.ts';
import type { OrderOutcome } from '../src/tls/acme/client.ts';

if (requireBinary(t, 'pebble', 'pebble') && requireBinary(t, 'pebble-challtestsrv', 'pebble')) {
  t.test('a short-lived certificate is renewed before it expires; the old one serves meanwhile', async (t) => {
    // 20 s of validity: renewal at two thirds, about 13 s after issuance (± 1 s of jitter).
    const lab = await startAcmeLab(t, { certificateValidityPeriod: 20 });
    const outcomes: OrderOutcome[] = [];
    const stored: number[] = [];
    const m = lab.manager({ hostnames: () => ['short.petrel.test'], onOrder: (o) => outcomes.push(o), onCertificate: () => stored.push(Date.now()) });
    await m.start();
    const first = await waitFor('first certificate', () => lab.store.getCert('short.petrel.test', 'acme').then((c) => c ?? undefined));
    const life = first.meta.notAfter - first.meta.notBefore;
    t.ok(life > 10_000 && life <= 21_000, `short lifetime (${life} ms)`);
    const planned = m.status('short.petrel.test')!.nextAttemptAt!;
    t.comment(`lifetime ${life} ms, renewal planned ${planned - first.meta.notBefore} ms after notBefore`);
    t.ok(planned > first.meta.notBefore && planned < first.meta.notAfter, 'renewal planned inside the lifetime');

    // Until the new pair is in place the store must always hold one: it is replaced, never removed.
    let gaps = 0;
    const second = await waitFor(
      'renewed certificate',
      async () => {
        const c = await lab.store.getCert('short.petrel.test', 'acme');
        if (c === null) gaps++;
        return c !== null && c.meta.fingerprint256 !== first.meta.fingerprint256 ? c : undefined;
      },
      60_000,
    );
    t.equal(gaps, 0, 'never without a certificate');
    t.ok(second.meta.storedAt < first.meta.notAfter, 'renewed before the old one expired');
    t.ok(second.meta.notAfter > first.meta.notAfter);
    const hs = await handshakeWith(second.chainPem, second.keyPem, 'short.petrel.test', await lab.pebble.root());
    t.ok(hs.authorized, `renewed chain verifies (${hs.error})`);
    const st = m.status('short.petrel.test')!;
    t.same([st.status, st.failures, st.lastError], ['active', 0, null]);
    t.ok(st.nextAttemptAt! > second.meta.notBefore && st.nextAttemptAt! < second.meta.notAfter, 'next renewal planned');
    t.same(outcomes.slice(0, 2), ['valid', 'valid']);
    t.equal(stored.length >= 2, true, 'the cert table was told both times');
  });

  t.test('the CA goes away: failed with the error, growing backoff, certificate kept, no flood', async (t) => {
    const lab = await startAcmeLab(t);
    const outcomes: OrderOutcome[] = [];
    const m = lab.manager({
      settings: lab.settings({ backoffMinMs: 300, backoffMaxMs: 5_000 }),
      hostnames: () => ['keep.petrel.test'],
      onOrder: (o) => outcomes.push(o),
    });
    await m.start();
    // Active and the order finished: the status turns active before the order has let go of its
    // lock, and a request meanwhile is answered 'running' (no new order).
    await waitFor('issued', () => {
      const s = m.status('keep.petrel.test');
      return s?.status === 'active' && !s.ordering ? true : undefined;
    });
    const kept = m.status('keep.petrel.test')!;

    await lab.pebble.stop();
    t.equal(m.requestIssuance('keep.petrel.test'), 'queued', 'the admin API forces a renewal');
    const st = await waitFor('three failures', () => {
      const s = m.status('keep.petrel.test')!;
      return s.failures >= 3 && !s.ordering ? s : undefined;
    });
    t.equal(st.status, 'failed');
    t.comment(`lastError: ${st.lastError}`);
    t.match(st.lastError, /ECONNREFUSED|ECONNRESET|socket hang up/, `the network error is in the status: ${st.lastError}`);
    t.ok(st.nextAttemptAt! > Date.now() - 1_000, 'a next attempt is planned');
    t.same([st.source, st.notAfter, st.issuer], [kept.source, kept.notAfter, kept.issuer], 'the existing certificate still serves');
    t.ok(await lab.store.getCert('keep.petrel.test', 'acme'), 'and is still stored');

    const failures = lab.log.at('warn').filter((l) => l.msg === 'acme order failed');
    const delays = failures.map((l) => l.obj.retryInMs as number);
    t.ok(delays.length >= 3);
    t.ok(delays[1]! > delays[0]! && delays[2]! > delays[1]!, `backoff grows: ${delays.join(', ')} ms`);
    t.ok(delays.every((d) => d <= 5_000), 'and stays under its cap');
    t.equal(failures.length, outcomes.filter((o) => o === 'error').length, 'exactly one log line per failed attempt');
    t.same(lab.log.at('error'), [], 'no error-level lines');
    const saved = await lab.store.getState('keep.petrel.test');
    t.equal(saved?.status, 'failed', 'failure persisted');
  });

  t.test('a restart honours the saved backoff instead of ordering at once', async (t) => {
    const lab = await startAcmeLab(t);
    // Nothing listens there: every attempt fails at connect.
    const dead = `https://127.0.0.1:${await freePort()}/dir`;
    const settings = lab.settings({ directoryUrl: dead, backoffMinMs: 60_000, backoffMaxMs: 600_000 });
    const first = lab.manager({ settings, hostnames: () => ['later.petrel.test'] });
    await first.start();
    const failed = await waitFor('first failure', () => {
      const s = first.status('later.petrel.test')!;
      return s.status === 'failed' && !s.ordering ? s : undefined;
    });
    t.comment(`lastError: ${failed.lastError}`);
    t.match(failed.lastError, /^account: .*ECONNREFUSED/, 'says which step failed and why');
    t.ok(failed.nextAttemptAt! - Date.now() > 30_000, 'backed off by about a minute');
    t.equal(first.requestOnDemand('later.petrel.test'), 'backoff', 'a handshake does not cut the backoff short');
    await first.stop();

    const second = lab.manager({ settings, hostnames: () => ['later.petrel.test'] });
    await second.start();
    const s = second.status('later.petrel.test')!;
    t.same([s.status, s.failures, s.nextAttemptAt, s.lastError], ['failed', 1, failed.nextAttemptAt, failed.lastError], 'schedule from disk');
    await new Promise((r) => setTimeout(r, 300));
    t.equal(lab.log.at('warn').filter((l) => l.msg === 'acme order failed').length, 1, 'no new attempt after the restart');
  });

  t.test('directory settings that cannot work fail clearly', async (t) => {
    const lab = await startAcmeLab(t);
    // pebble's listener certificate is not in Node's roots.
    const untrusted = lab.manager({ settings: lab.settings({ caFile: null }), hostnames: () => ['trust.petrel.test'] });
    await untrusted.start();
    const s = await waitFor('TLS refusal', () => {
      const v = untrusted.status('trust.petrel.test')!;
      return v.status === 'failed' ? v : undefined;
    });
    t.comment(`lastError: ${s.lastError}`);
    t.match(s.lastError, /not trusted: set the ACME CA bundle, ca_file/);

    const missing = lab.manager({ settings: lab.settings({ caFile: join(lab.storeDir, 'nope.pem') }), hostnames: () => ['x.petrel.test'] });
    await t.rejects(missing.start(), /acme caFile .*nope\.pem: ENOENT/);
  });
}
