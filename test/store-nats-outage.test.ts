// The NATS store when NATS goes away: a killed and restarted server, a partition between one node
// and a server that stays up, a hung server, and a 3-server cluster losing its stream leader,
// then all of its servers.
// What must hold: connected() and one status event per transition (not one per reconnect
// attempt), writes refused with `unavailable` (never queued to land later), reads of watched
// collections served from the last known state, and after reconnecting the watchers converge
// to what changed meanwhile, without a restart. Durations are printed, never asserted.

import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import t, { type Test } from 'tap';
import { openStore, type NatsStoreConfig } from '../src/store/config.ts';
import { StoreError } from '../src/store/errors.ts';
import type { ClusterStore, StoreStatus } from '../src/store/types.ts';
import { requireBinary } from './helpers/deps.ts';
import { CuttableLink, startNats, startNatsCluster } from './helpers/nats.ts';
import { propagation, record, sleep, summary, waitFor } from './helpers/store-conformance.ts';

const WAIT = 60_000;

interface Captured {
  readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void };
  readonly lines: string[];
}

function capture(): Captured {
  const lines: string[] = [];
  const push = (_o: object, m: string): void => void lines.push(m);
  return { log: { info: push, warn: push, error: push }, lines };
}

function statuses(s: ClusterStore): StoreStatus[] {
  const seen: StoreStatus[] = [];
  s.onStatus((st) => void seen.push(st));
  return seen;
}

/** `fn` once it stops failing with `unavailable` (JetStream recovering, leader elections). */
async function until<T>(fn: () => Promise<T>, what: string): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  for (;;) {
    try {
      return { value: await fn(), ms: Date.now() - start };
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'unavailable') || Date.now() - start > WAIT) {
        throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      }
      await sleep(100);
    }
  }
}

async function rejectsWith(t: Test, p: Promise<unknown>, code: StoreError['code'], what: string): Promise<number> {
  const start = performance.now();
  await t.rejects(p, { code }, what);
  return performance.now() - start;
}

const bin = requireBinary(t, 'nats-server', 'nats-server');
if (bin !== null) {
  const base = (servers: string[], prefix: string, name: string, o: Partial<NatsStoreConfig> = {}): NatsStoreConfig => ({
    kind: 'nats',
    servers,
    bucketPrefix: prefix,
    replicas: 1,
    name,
    // Short pauses keep the test quick; the behaviour is the same with the defaults.
    reconnectMinMs: 50,
    reconnectMaxMs: 500,
    opTimeoutMs: 2000,
    ...o,
  });

  t.test('server killed and restarted on the same port and data directory', async (t) => {
    const srv = await startNats(t, bin);
    const { log, lines } = capture();
    const a = await openStore(base([srv.url], 'kill', 'a'), log);
    const b = await openStore(base([srv.url], 'kill', 'b'), capture().log);
    t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
    const st = statuses(a);
    const w = record(a, 'apps');
    await b.put('apps', 'x', 1);
    await b.put('apps', 'gone', 1);
    await a.put('nodes', 'n1', { region: 'ams' });
    await waitFor(() => w.state.has('gone'), WAIT, 'the watcher');

    await srv.kill();
    await waitFor(() => !a.connected() && !b.connected(), WAIT, 'both to notice');
    // Let the client go through several failed reconnect attempts: still one event.
    await sleep(1500);
    t.equal(st.length, 1, 'one status event for the outage');
    t.match(st[0], { connected: false });
    t.equal(lines.filter((l) => /disconnected/.test(l)).length, 1, 'logged once');

    const ms = await rejectsWith(t, a.put('apps', 'refused', 1), 'unavailable', 'a put is refused');
    t.comment(`write refused in ${ms.toFixed(1)} ms while disconnected`);
    await rejectsWith(t, a.create('apps', 'refused2', 1), 'unavailable', 'create');
    await rejectsWith(t, a.update('apps', 'x', 2, 1), 'unavailable', 'update');
    await rejectsWith(t, a.delete('apps', 'x'), 'unavailable', 'delete');
    await rejectsWith(t, a.tryLock('l', 'a', 1000), 'unavailable', 'tryLock (locks are not watched here)');
    t.throws(() => a.publish('load.m1', 1), { code: 'unavailable' }, 'publish throws instead of dropping silently');
    await rejectsWith(t, a.request('cmd.b', 1), 'unavailable', 'request');
    t.same((await a.get('apps', 'x'))?.value, 1, 'a watched collection is served from the last known state');
    t.same(await a.keys('apps'), ['gone', 'x'], 'keys too');
    t.same([...(await a.list('apps')).keys()], ['gone', 'x'], 'list too');
    await rejectsWith(t, a.get('nodes', 'n1'), 'unavailable', 'an unwatched collection is unavailable');

    await srv.start();
    await waitFor(() => a.connected() && b.connected(), WAIT, 'reconnect');
    t.equal(st.length, 2, 'one status event for the recovery');
    t.match(st[1], { connected: true });

    // Changes by another node after the restart reach a's watcher, whichever way: live or resync.
    const { ms: recovered } = await until(() => b.put('apps', 'x', 2), 'put after restart');
    t.comment(`first write accepted ${recovered} ms after reconnecting`);
    await b.put('apps', 'y', 1);
    await b.delete('apps', 'gone');
    await waitFor(() => w.state.get('x')?.value === 2 && w.state.has('y') && !w.state.has('gone'), WAIT, 'the watcher to converge');
    t.same([...w.state.keys()].sort(), ['x', 'y']);
    t.equal(await a.get('apps', 'refused'), null, 'the refused write never landed');
    t.equal(await a.get('apps', 'refused2'), null, 'nor the refused create');
    t.ok((await a.put('apps', 'z', 1)) > 0, 'a writes again');
    t.same((await a.get('nodes', 'n1'))?.value, { region: 'ams' }, 'data survived the restart');
  });

  t.test('a partition: the cut-off node resynchronises to what changed meanwhile', async (t) => {
    const srv = await startNats(t, bin);
    const link = await CuttableLink.open(t, srv.port);
    const a = await openStore(base([link.url], 'part', 'a'), capture().log);
    const b = await openStore(base([srv.url], 'part', 'b'), capture().log);
    t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
    const st = statuses(a);
    const w = record(a, 'machines');
    for (const m of ['m1', 'm2', 'm3']) await b.put('machines', m, { v: 1 });
    await waitFor(() => w.state.size === 3, WAIT, 'the watcher');
    const heard: unknown[] = [];
    a.subscribe('load.>', (d) => void heard.push(d));

    await link.cut();
    await waitFor(() => !a.connected(), WAIT, 'a to notice');
    t.ok(b.connected(), 'b is unaffected');
    const mark = w.events.length;
    await b.put('machines', 'm1', { v: 2 });
    await b.delete('machines', 'm2');
    await b.put('machines', 'm4', { v: 1 });
    t.same((await a.get('machines', 'm1'))?.value, { v: 1 }, 'a serves its last known state');
    await rejectsWith(t, a.put('machines', 'm5', 1), 'unavailable', 'and refuses writes');

    await link.restore();
    await waitFor(() => a.connected(), WAIT, 'a to reconnect');
    await waitFor(
      () => (w.state.get('m1')?.value as { v: number } | undefined)?.v === 2 && w.state.has('m4') && !w.state.has('m2'),
      WAIT,
      'the watcher to converge',
    );
    const changes = w.events
      .slice(mark)
      .map((e) => (e.type === 'sync' ? 'sync' : e.type === 'put' ? `put ${e.entry.key}` : `delete ${e.key}`))
      .sort();
    t.same(changes, ['delete m2', 'put m1', 'put m4'], 'only the differences, as ordinary events (m3 unchanged)');
    t.same(
      st.map((s) => s.connected),
      [false, true],
      'one event each way',
    );
    // Subscriptions come back by themselves.
    await waitFor(
      () => {
        b.publish('load.m1', { inflight: 1 });
        return heard.length > 0;
      },
      WAIT,
      'a message after the partition',
    );
    t.same(heard[0], { inflight: 1 });
  });

  t.test('a server that hangs: pings notice, a pending write fails as unknown, recovery', async (t) => {
    const srv = await startNats(t, bin);
    // A long operation timeout, so only the lost connection can end the pending put quickly.
    const a = await openStore(base([srv.url], 'hang', 'a', { pingIntervalMs: 300, maxPingOut: 2, opTimeoutMs: 30_000 }), capture().log);
    t.teardown(() => a.close());
    const st = statuses(a);
    const w = record(a, 'apps');
    await a.put('apps', 'x', 1);
    await waitFor(() => w.state.has('x'), WAIT, 'the watcher');

    await srv.pause();
    t.teardown(() => srv.resume());
    const started = Date.now();
    const pending = a.put('apps', 'inflight', 1).catch((e: unknown) => e);
    await waitFor(() => !a.connected(), WAIT, 'the pings to notice');
    t.match(await pending, { code: 'unavailable', message: /outcome is unknown/ }, 'the pending put fails at the disconnect');
    t.comment(`hung server noticed after ${Date.now() - started} ms (ping interval 300 ms, 2 missed)`);
    t.same((await a.get('apps', 'x'))?.value, 1, 'served from the last known state');

    srv.resume();
    await waitFor(() => a.connected(), WAIT, 'reconnect');
    await until(() => a.put('apps', 'y', 1), 'a put after resume');
    await waitFor(() => w.state.has('y'), WAIT, 'the watcher after resume');
    t.same(
      st.map((s) => s.connected),
      [false, true],
      'one event each way',
    );
  });

  t.test('3-server cluster, replicas 3: lose the stream leader, lose all, recover', async (t) => {
    const c = await startNatsCluster(t, bin, 3);
    const setup = await openStore(base(c.urls, 'clu', 'setup', { replicas: 3 }), capture().log);
    await setup.close();
    // The worst single loss: the server leading the bucket b watches, with both clients on the
    // other two (they stay connected, so only the store can notice its watch went quiet).
    const leader = await streamLeader(c.urls, 'KV_clu_apps');
    const li = c.servers.findIndex((s) => s.name === leader);
    t.ok(li >= 0, `the leader (${leader}) is one of ours`);
    const rest = c.servers.filter((_, i) => i !== li).map((s) => s.url);
    const { log, lines } = capture();
    const bLog = capture();
    const a = await openStore(base([rest[0]!], 'clu', 'a', { replicas: 3 }), log);
    const b = await openStore(base([rest[1]!], 'clu', 'b', { replicas: 3 }), bLog.log);
    t.teardown(() => Promise.all([a.close(), b.close()]).then(() => {}));
    const stA = statuses(a);
    const w = record(b, 'apps');
    await a.put('apps', 'k0', 0);
    await waitFor(() => w.state.has('k0'), WAIT, 'the watcher');
    t.comment(`put on A -> watcher on B, via two servers of the cluster: ${summary(await propagation(a, b, 50))}`);

    const t0 = Date.now();
    await c.kill(li);
    const { ms: oneDown } = await until(() => a.put('apps', 'k1', 1), 'a put with the leader down');
    t.comment(`leader down: first write accepted after ${oneDown} ms (stream leader election)`);
    t.same((await a.get('apps', 'k1'))?.value, 1, 'reads work with one server down (read your write)');
    // b watches apps: if its read cannot reach the new leader yet, it is answered from b's last
    // known state, which may not have k1 yet. Eventually it does.
    await waitFor(async () => (await b.get('apps', 'k1').catch(() => null))?.value === 1, WAIT, "b's read");
    await waitFor(() => w.state.has('k1'), WAIT, "b's watcher follows");
    t.comment(`leader down: b's watcher had the write ${Date.now() - t0} ms after the kill` +
      (bLog.lines.some((l) => /stalled/.test(l)) ? ' (restarted by the stall watchdog)' : ''));
    // However many times the watchdog restarted the watch: one line when it stalled, one when it
    // delivers again.
    const stalls = bLog.lines.filter((l) => /watch stalled|watch listing stalled/.test(l)).length;
    t.ok(stalls <= 1, `the stall is logged once (${stalls})`);
    if (stalls === 1) await waitFor(() => bLog.lines.includes('cluster store: watch delivering again'), WAIT, 'the recovery line');
    t.same(stA, [], 'a never lost its server');

    await Promise.all(c.servers.map((_, i) => c.kill(i)));
    await waitFor(() => !a.connected() && !b.connected(), WAIT, 'both to notice');
    await rejectsWith(t, a.put('apps', 'k2', 2), 'unavailable', 'all down: writes are unavailable');
    t.same((await b.get('apps', 'k1'))?.value, 1, "b's watched collection still answers");

    const t1 = Date.now();
    await c.startAll();
    const healthy = Date.now() - t1;
    const { ms: allBack } = await until(() => a.put('apps', 'k3', 3), 'a put after recovery');
    t.comment(`all servers restarted: healthy after ${healthy} ms, first write ${allBack} ms later`);
    await waitFor(() => a.connected() && b.connected(), WAIT, 'both reconnected');
    await waitFor(() => w.state.get('k3')?.value === 3, WAIT, "b's watcher converges");
    t.same([...w.state.keys()].sort(), ['k0', 'k1', 'k3'], 'nothing lost, the refused write absent');
    t.same(
      stA.map((s) => s.connected),
      [false, true],
      'one event each way',
    );
    t.comment(`a logged ${lines.length} lines`);
  });
}

/** Which server leads `stream` (asked with a plain client, outside the store). */
async function streamLeader(servers: string[], stream: string): Promise<string> {
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(stream)).cluster?.leader ?? '';
  } finally {
    await nc.close();
  }
}
