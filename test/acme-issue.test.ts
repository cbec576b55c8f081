// ACME issuance against a real pebble (lab.md): both challenge types through the same calls the
// listeners make, chains checked by a real TLS client against pebble's root, the account made
// once, restarts that order nothing, on-demand requests for unknown names, the hourly cap, EAB.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { requireBinary } from './helpers/deps.ts';
import { handshakeWith, startAcmeLab, waitFor } from './helpers/pebble.ts';
import type { ChallengePublisher, OrderOutcome } from '../src/tls/acme/client.ts';
import type { AcmeManager } from '../src/tls/acme/manager.ts';

if (requireBinary(t, 'pebble', 'pebble') && requireBinary(t, 'pebble-challtestsrv', 'pebble')) {
  // Active and the order over: the status turns active before the order has persisted its
  // state, told its callbacks and let go of its lock.
  const activeAll = (m: AcmeManager, names: string[]) =>
    waitFor(`${names.join(', ')} active`, () =>
      names.every((n) => m.status(n)?.status === 'active' && !m.status(n)!.ordering) ? true : undefined,
    );

  t.test('TLS-ALPN-01 by default: issued, chain verifies against the CA root, answers removed', async (t) => {
    const lab = await startAcmeLab(t);
    const outcomes: OrderOutcome[] = [];
    const stored: string[] = [];
    const m = lab.manager({
      // Wildcards need DNS-01: not ours. Case and a trailing dot are normalised.
      hostnames: () => ['app1.petrel.test', '*.wild.petrel.test', 'App2.Petrel.Test.'],
      onOrder: (o) => outcomes.push(o),
      onCertificate: (h) => stored.push(h),
    });
    await m.start();
    await activeAll(m, ['app1.petrel.test', 'app2.petrel.test']);

    t.same(m.statusAll().map((s) => s.hostname), ['app1.petrel.test', 'app2.petrel.test'], 'wildcard not scheduled');
    t.equal(m.status('*.wild.petrel.test'), null);
    const root = await lab.pebble.root();
    for (const name of ['app1.petrel.test', 'app2.petrel.test']) {
      const st = m.status(name)!;
      t.equal(st.source, 'acme');
      t.match(st.issuer, /Pebble Intermediate CA/);
      t.equal(st.lastError, null);
      t.ok(st.notAfter! > Date.now() && st.nextAttemptAt! > Date.now() && st.nextAttemptAt! < st.notAfter!, 'renewal planned before expiry');
      const cert = await lab.store.getCert(name, 'acme');
      t.ok(cert, `${name} stored`);
      const hs = await handshakeWith(cert!.chainPem, cert!.keyPem, name, root);
      t.same({ authorized: hs.authorized, error: hs.error }, { authorized: true, error: null }, `${name}: chain and name verify against pebble's root`);
      const state = await lab.store.getState(name);
      t.same([state?.status, state?.nextAttemptAt], ['active', st.nextAttemptAt], 'schedule on disk');
      t.equal(m.requestOnDemand(name), 'active');
    }
    t.ok(lab.responder.served.tlsAlpn01 > 0, 'validated over acme-tls/1');
    t.equal(lab.responder.served.http01, 0);
    t.notOk(lab.book.hasAlpn, 'challenge certificates removed from the book');
    t.same(outcomes, ['valid', 'valid']);
    t.same(stored.sort(), ['app1.petrel.test', 'app2.petrel.test']);
    t.same(lab.pebble.counts(), { accounts: 1, orders: 2, issued: 2 });
    t.equal(lab.log.at('info').filter((l) => l.msg === 'acme certificate issued').length, 2, 'one line per order');
    t.same(lab.log.at('warn').concat(lab.log.at('error')), []);
  });

  t.test('HTTP-01 when preferred', async (t) => {
    const lab = await startAcmeLab(t);
    const m = lab.manager({ settings: lab.settings({ challenges: ['http-01', 'tls-alpn-01'] }), hostnames: () => ['web.petrel.test'] });
    await m.start();
    await activeAll(m, ['web.petrel.test']);
    t.ok(lab.responder.served.http01 > 0, 'validated over HTTP');
    t.equal(lab.responder.served.tlsAlpn01, 0);
    const cert = await lab.store.getCert('web.petrel.test', 'acme');
    const hs = await handshakeWith(cert!.chainPem, cert!.keyPem, 'web.petrel.test', await lab.pebble.root());
    t.ok(hs.authorized, `verifies (${hs.error})`);
  });

  t.test('the account is made once; a restart orders nothing and keeps the schedule', async (t) => {
    const lab = await startAcmeLab(t);
    const first = lab.manager({ hostnames: () => ['a.petrel.test'] });
    await first.start();
    await activeAll(first, ['a.petrel.test']);
    const account = await lab.store.getAccount(lab.pebble.directoryUrl);
    t.ok(account?.accountUrl, 'account URL persisted');
    const planned = first.status('a.petrel.test')!.nextAttemptAt;
    await first.stop();

    const outcomes: OrderOutcome[] = [];
    const second = lab.manager({ hostnames: () => ['a.petrel.test', 'b.petrel.test'], onOrder: (o) => outcomes.push(o) });
    await second.start();
    const a = second.status('a.petrel.test')!;
    t.same([a.status, a.source, a.nextAttemptAt, a.ordering], ['active', 'acme', planned, false], 'known certificate, same renewal time from disk');
    await activeAll(second, ['b.petrel.test']);
    t.same(outcomes, ['valid'], 'only the new name was ordered');
    t.same(lab.pebble.counts(), { accounts: 1, orders: 2, issued: 2 }, 'no second account, no second order for a');
    t.same(await lab.store.getAccount(lab.pebble.directoryUrl), account, 'account record unchanged');
  });

  t.test('on demand: unknown names never reach the CA and never wait', async (t) => {
    const lab = await startAcmeLab(t);
    const outcomes: OrderOutcome[] = [];
    const m = lab.manager({ hostnames: () => ['known.petrel.test'], onOrder: (o) => outcomes.push(o) });
    await m.start();
    await activeAll(m, ['known.petrel.test']);
    const before = lab.pebble.counts();

    const results = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const name = `${Math.random().toString(36).slice(2)}.random${i % 7}.test`;
      const r = m.requestOnDemand(name);
      results.set(r, (results.get(r) ?? 0) + 1);
    }
    for (const odd of ['', '127.0.0.1', '*.petrel.test', 'UNKNOWN.petrel.test.', 'a..b', 'x'.repeat(300)]) {
      const r = m.requestOnDemand(odd);
      results.set(r, (results.get(r) ?? 0) + 1);
    }
    t.same([...results], [['not-configured', 1006]], 'every unknown name refused, synchronously');
    t.equal(m.requestOnDemand('KNOWN.petrel.test.'), 'active');
    // Anything queued would start on the next turn of the event loop; give it a few.
    await new Promise((r) => setTimeout(r, 300));
    t.same(lab.pebble.counts(), before, 'no order, no account');
    t.same(outcomes, ['valid']);
    t.equal(m.statusAll().length, 1);
  });

  t.test('hourly cap: the second name waits and says why', async (t) => {
    const lab = await startAcmeLab(t);
    const outcomes: OrderOutcome[] = [];
    // Two at once: both attempts read the order count together, and still only one may go.
    const m = lab.manager({
      settings: lab.settings({ ordersPerHour: 1, concurrency: 2 }),
      hostnames: () => ['c1.petrel.test', 'c2.petrel.test'],
      onOrder: (o) => outcomes.push(o),
    });
    await m.start();
    const [done, waiting] = await waitFor('one active, one waiting', () => {
      const all = m.statusAll();
      const act = all.find((s) => s.status === 'active');
      const wait = all.find((s) => s.waitingFor !== null);
      return act && wait && !wait.ordering ? [act, wait] : undefined;
    });
    t.not(done.hostname, waiting.hostname);
    t.equal(waiting.status, 'pending');
    t.match(waiting.waitingFor, /hourly order cap reached: 1 of 1 orders/);
    t.ok(waiting.nextAttemptAt! > Date.now(), 'next check planned');
    t.equal(m.requestOnDemand(waiting.hostname), 'rate-limited');

    // The admin API's "order now" still respects the cap.
    const planned = waiting.nextAttemptAt!;
    t.equal(m.requestIssuance(waiting.hostname), 'queued');
    const again = await waitFor('forced attempt done', () => {
      const s = m.status(waiting.hostname)!;
      return !s.ordering && s.nextAttemptAt! > planned ? s : undefined;
    });
    t.match(again.waitingFor, /hourly order cap/);
    t.same(lab.pebble.counts().orders, 1, 'one order reached the CA');
    t.same(outcomes.sort(), ['rate-limited', 'valid'], 'the wait is reported once');
    t.equal(lab.log.at('warn').filter((l) => l.msg === 'acme order waits for the hourly cap').length, 1, 'and logged once');
    t.equal(await lab.store.ordersSince(lab.pebble.directoryUrl, Date.now() - 3_600_000), 1);
  });

  t.test('external account binding', async (t) => {
    const hmacKey = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W';
    const lab = await startAcmeLab(t, { eab: { 'kid-1': hmacKey } });

    const unbound = lab.manager({ hostnames: () => ['noeab.petrel.test'] });
    await unbound.start();
    const failed = await waitFor('refusal without EAB', () => {
      const s = unbound.status('noeab.petrel.test')!;
      return s.status === 'failed' ? s : undefined;
    });
    t.match(failed.lastError, /^account: .*externalAccountBinding/, 'the CA says what is missing');
    await unbound.stop();

    const bound = lab.manager({ settings: lab.settings({ eab: { kid: 'kid-1', hmacKey } }), hostnames: () => ['eab.petrel.test'] });
    await bound.start();
    await activeAll(bound, ['eab.petrel.test']);
    t.equal(lab.pebble.counts().accounts, 1);
  });

  t.test('stop() mid-order abandons it cleanly: answers removed, no failure recorded', async (t) => {
    const lab = await startAcmeLab(t);
    let stopping: Promise<void> | null = null;
    // Stops the manager right after the challenge answer is published, i.e. mid-validation.
    const publisher: ChallengePublisher = {
      putHttp01: (token, ka) => lab.sync.putHttp01(token, ka),
      deleteHttp01: (token) => lab.sync.deleteHttp01(token),
      putAlpn: async (host, cert, key) => {
        await lab.sync.putAlpn(host, cert, key);
        stopping = m.stop();
      },
      deleteAlpn: (host) => lab.sync.deleteAlpn(host),
    };
    const m = lab.manager({ challenges: publisher, hostnames: () => ['stop.petrel.test'] });
    await m.start();
    // (A boolean: waitFor awaits what the probe returns, and stop() resolves to undefined.)
    await waitFor('stop called', () => (stopping !== null ? true : undefined));
    await stopping;
    t.notOk(lab.book.hasAlpn, 'challenge answer removed');
    t.equal(await lab.store.getAlpnChallenge('stop.petrel.test'), null, 'from the store too');
    t.equal(await lab.store.getState('stop.petrel.test'), null, 'no failure persisted: the next start orders at once');
    t.same(lab.log.at('warn'), []);
    t.ok(lab.log.lines.some((l) => l.msg === 'acme order abandoned: stopping'));
    t.equal(m.requestIssuance('stop.petrel.test'), 'not-configured', 'a stopped manager takes no requests');
  });

  t.test('an account the CA forgot (a restarted pebble) is registered again with the same key', async (t) => {
    const lab = await startAcmeLab(t);
    const keyPem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const stale = lab.pebble.directoryUrl.replace(/\/dir$/, '/my-account/0000000000000000');
    await lab.store.putAccount({ directoryUrl: lab.pebble.directoryUrl, accountKeyPem: keyPem, accountUrl: stale, email: null, createdAt: 1 });
    const m = lab.manager({ hostnames: () => ['forgot.petrel.test'] });
    await m.start();
    await activeAll(m, ['forgot.petrel.test']);
    const account = await lab.store.getAccount(lab.pebble.directoryUrl);
    t.equal(account?.accountKeyPem, keyPem, 'same key');
    t.not(account?.accountUrl, stale, 'new account URL saved');
    t.equal(account?.createdAt, 1, 'same record');
    t.same(lab.pebble.counts(), { accounts: 1, orders: 1, issued: 1 }, 'within the one order');
    t.same(lab.log.at('warn'), []);
  });
}
