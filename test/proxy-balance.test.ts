// Concurrency balancing through a real daemon (spec section 3, issue 2 acceptance): soft limit
// spreads concurrent requests, hard limit queues and then answers 503 PR05, a full queue answers
// 503 PR04 at once, queued requests are served when capacity comes back, queue waits show in
// metrics and the access log; `connections` concurrency counts and pins per client connection.

import t, { type Test } from 'tap';
import type http from 'node:http';
import { waitFor } from './helpers/machines-fixtures.ts';
import { KeepAliveConn, get, metricValue, scrapeMetrics, startOrigin, startPetrel, staticApp, type Origin, type Petrel } from './helpers/petrel.ts';

const LIMITS = 'shutdown_timeout = "2s"';

/** Requests parked by a "holding" origin until the test lets them go. */
class Held {
  readonly res: http.ServerResponse[] = [];
  releaseAll(): void {
    for (const r of this.res.splice(0)) r.end('held-done');
  }
}

/**
 * One Machine (soft = hard = 1, requests) whose origin holds every `/hold` request until
 * released and answers the rest with `answer(url)`; `limits` are extra `[limits]` lines.
 */
async function oneHeldMachine(t: Test, limits: string, answer: (url: string) => string): Promise<{ held: Held; origin: Origin; p: Petrel }> {
  const held = new Held();
  const origin = await startOrigin((req, res) => {
    if (req.url === '/hold') held.res.push(res);
    else res.end(answer(req.url ?? ''));
  });
  const p = await startPetrel({
    apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }], '', 'type = "requests"\nsoft_limit = 1\nhard_limit = 1') },
    limits: `${LIMITS}\n${limits}`,
  });
  t.teardown(async () => {
    held.releaseAll();
    await p.stop();
    await origin.close();
  });
  return { held, origin, p };
}

function queueOf(p: Petrel, app: string, port = 80) {
  const route = p.daemon.holder.current.apps.get(app)?.byPort.get(port);
  if (route === undefined) throw new Error(`no route for ${app}:${port}`);
  return route.live.queue;
}

t.test('soft_limit = 1, type = "requests": two concurrent slow requests land on different Machines', async (t) => {
  // Both origins answer only once two requests have arrived in total (or after 5 s, so a bug
  // that queues the second request cannot hang the test): the first one is still in flight
  // when the second is balanced.
  const parked: (() => void)[] = [];
  const gated = (name: string): http.RequestListener => (_req, res) => {
    let done = false;
    const answer = () => {
      if (done) return;
      done = true;
      res.end(name);
    };
    parked.push(answer);
    if (parked.length >= 2) for (const a of parked.splice(0)) a();
    else setTimeout(answer, 5000).unref();
  };
  const o1 = await startOrigin(gated('m1'), 'm1');
  const o2 = await startOrigin(gated('m2'), 'm2');
  const p = await startPetrel({
    apps: {
      web: staticApp(
        'web',
        [
          { id: 'm1', port: o1.port },
          { id: 'm2', port: o2.port },
        ],
        '',
        'type = "requests"\nsoft_limit = 1',
      ),
    },
    limits: LIMITS,
  });
  t.teardown(async () => {
    for (const a of parked.splice(0)) a();
    await p.stop();
    await o1.close();
    await o2.close();
  });

  // Random tie-breaking alone would split a pair half the time; five rounds in a row rule luck out.
  for (let round = 0; round < 5; round++) {
    parked.length = 0;
    const [a, b] = await Promise.all([get(p.httpPort, 'web.test', '/slow'), get(p.httpPort, 'web.test', '/slow')]);
    t.equal(a.status, 200);
    t.equal(b.status, 200);
    t.not(a.body, b.body, `round ${round}: different Machines (${a.body}, ${b.body})`);
  }
  t.equal(o1.requests.length, 5, 'm1 got one request per round');
  t.equal(o2.requests.length, 5, 'm2 got one request per round');
  const lines = p.log.access().filter((l) => l['app'] === 'web');
  t.equal(lines.length, 10);
  t.same(new Set(lines.map((l) => l['machine'])), new Set(['m1', 'm2']), 'access log names the Machine');
});

t.test('hard_limit = 1: a queued request gets 503 PR05 after queue_timeout while the first is still busy', async (t) => {
  const { held, origin, p } = await oneHeldMachine(t, `queue_timeout = "300ms"`, () => 'fast');

  const first = get(p.httpPort, 'web.test', '/hold');
  await waitFor(() => held.res.length === 1, 20_000, 'the first request to reach the Machine');
  const second = await get(p.httpPort, 'web.test', '/second');
  t.equal(second.status, 503);
  t.match(second.body, /^PR05 /, 'body starts with the code');
  t.equal(second.headers['x-petrel-error'], 'PR05');
  t.equal(held.res.length, 1, 'the first request was still in flight when the second timed out');
  t.equal(origin.requests.length, 1, 'the timed-out request never reached the Machine');

  held.releaseAll();
  const r1 = await first;
  t.equal(r1.status, 200);
  t.equal(r1.body, 'held-done');

  // Capacity is back: a new request goes straight through.
  const third = await get(p.httpPort, 'web.test', '/third');
  t.equal(third.status, 200);

  const line = p.log.access().find((l) => l['path'] === '/second');
  t.ok(line, 'access line for the queued request');
  t.equal(line?.['code'], 'PR05');
  t.equal(line?.['status'], 503);
  t.ok((line?.['queue_ms'] as number) >= 300, `queue_ms ${String(line?.['queue_ms'])} covers the whole queue timeout`);

  const text = await scrapeMetrics(p.adminPort);
  t.ok((metricValue(text, 'petrel_queue_wait_seconds_count', { app: 'web' }) ?? 0) >= 1, 'queue wait observed');
  t.ok((metricValue(text, 'petrel_queue_wait_seconds_sum', { app: 'web' }) ?? 0) >= 0.3, 'queue wait sum covers the timeout');
  t.equal(metricValue(text, 'petrel_proxy_errors_total', { app: 'web', code: 'PR05' }), 1);
  t.equal(metricValue(text, 'petrel_http_responses_total', { app: 'web', status_class: '5xx' }), 1);
  t.equal(metricValue(text, 'petrel_http_responses_total', { app: 'web', status_class: '2xx' }), 2);
});

t.test('queue_length = 0: the overflow gets 503 PR04 at once', async (t) => {
  // A long queue timeout: an answer while the first request is held cannot be a timeout.
  const { held, origin, p } = await oneHeldMachine(t, `queue_length = 0\nqueue_timeout = "60s"`, () => 'fast');
  const first = get(p.httpPort, 'web.test', '/hold');
  await waitFor(() => held.res.length === 1, 20_000, 'the first request to reach the Machine');
  const second = await get(p.httpPort, 'web.test', '/second');
  t.equal(second.status, 503);
  t.match(second.body, /^PR04 /);
  t.equal(second.headers['x-petrel-error'], 'PR04');
  t.equal(held.res.length, 1, 'answered while the first request is still held: no waiting');
  held.releaseAll();
  t.equal((await first).status, 200);
  t.equal(p.log.access().find((l) => l['path'] === '/second')?.['code'], 'PR04');
});

t.test('queue_length = 1 with 3 concurrent: the third gets PR04, the queued one is served once the first finishes', async (t) => {
  const { held, origin, p } = await oneHeldMachine(t, `queue_length = 1\nqueue_timeout = "60s"`, (url) => `served ${url}`);
  const first = get(p.httpPort, 'web.test', '/hold');
  await waitFor(() => held.res.length === 1, 20_000, 'the first request to reach the Machine');
  const second = get(p.httpPort, 'web.test', '/queued');
  await waitFor(() => queueOf(p, 'web').length === 1, 20_000, 'the second request to be queued');
  const third = await get(p.httpPort, 'web.test', '/overflow');
  t.equal(third.status, 503);
  t.match(third.body, /^PR04 /, 'queue full');
  t.equal(origin.requests.length, 1, 'only the first request reached the Machine so far');

  held.releaseAll();
  const r1 = await first;
  const r2 = await second;
  t.equal(r1.status, 200);
  t.equal(r2.status, 200, 'the queued request is served when capacity comes back');
  t.equal(r2.body, 'served /queued');
  t.equal(queueOf(p, 'web').length, 0, 'queue empty again');

  const line = p.log.access().find((l) => l['path'] === '/queued');
  t.equal(line?.['status'], 200);
  t.equal(line?.['code'], '');
  t.ok((line?.['queue_ms'] as number) > 0, `queue_ms ${String(line?.['queue_ms'])} records the wait`);
  const text = await scrapeMetrics(p.adminPort);
  t.ok((metricValue(text, 'petrel_queue_wait_seconds_count', { app: 'web' }) ?? 0) >= 1, 'queue wait observed');
  t.ok((metricValue(text, 'petrel_queue_wait_seconds_sum', { app: 'web' }) ?? 0) > 0, 'queue wait sum > 0');
  t.equal(metricValue(text, 'petrel_machine_concurrency', { app: 'web', machine: 'm1' }), 0, 'every slot given back');
});

t.test('type = "connections": load counts per client connection; requests on one connection stick to its Machine', async (t) => {
  const o1 = await startOrigin((_req, res) => res.end('m1'), 'm1');
  const o2 = await startOrigin((_req, res) => res.end('m2'), 'm2');
  const p = await startPetrel({
    apps: {
      web: staticApp(
        'web',
        [
          { id: 'm1', port: o1.port },
          { id: 'm2', port: o2.port },
        ],
        '',
        'type = "connections"\nsoft_limit = 1',
      ),
    },
    limits: LIMITS,
  });
  const conns: KeepAliveConn[] = [];
  t.teardown(async () => {
    for (const c of conns) c.close();
    await p.stop();
    await o1.close();
    await o2.close();
  });
  const a = await KeepAliveConn.open(p.httpPort);
  const b = await KeepAliveConn.open(p.httpPort);
  conns.push(a, b);
  const ra = await a.request('web.test', '/a0');
  const rb = await b.request('web.test', '/b0');
  t.equal(ra.status, 200);
  t.equal(rb.status, 200);
  t.not(ra.body, rb.body, `the second connection goes to the other Machine (${ra.body}, ${rb.body})`);
  // Sequential requests: per-request counting would see load 0 everywhere and pick at random.
  for (let i = 1; i <= 6; i++) {
    t.equal((await a.request('web.test', `/a${i}`)).body, ra.body, `connection A request ${i} on ${ra.body}`);
    t.equal((await b.request('web.test', `/b${i}`)).body, rb.body, `connection B request ${i} on ${rb.body}`);
  }
  t.notOk(a.closed || b.closed, 'both connections stayed open (keep-alive)');

  let text = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(text, 'petrel_machine_concurrency', { app: 'web', machine: 'm1' }), 1, 'm1 holds one connection');
  t.equal(metricValue(text, 'petrel_machine_concurrency', { app: 'web', machine: 'm2' }), 1, 'm2 holds one connection');
  t.equal(metricValue(text, 'petrel_connections_active', { app: 'web' }), 2);

  // Closing A gives its Machine's capacity back: a new connection lands there.
  a.close();
  const freed = ra.body;
  await waitFor(() => p.daemon.manager.get(freed)!.slots.get(o1.port)!.load === 0, 20_000, `${freed} load back to 0`);
  const c = await KeepAliveConn.open(p.httpPort);
  conns.push(c);
  t.equal((await c.request('web.test', '/c0')).body, freed, 'a new connection goes to the Machine under soft');
  text = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(text, 'petrel_machine_concurrency', { app: 'web', machine: freed }), 1);
});

t.test('a client that gives up while queued leaks no capacity', async (t) => {
  const { held, origin, p } = await oneHeldMachine(t, `queue_length = 1\nqueue_timeout = "60s"`, (url) => `served ${url}`);
  const first = get(p.httpPort, 'web.test', '/hold');
  await waitFor(() => held.res.length === 1, 20_000, 'the first request to reach the Machine');
  const quitter = await KeepAliveConn.open(p.httpPort);
  const gaveUp = quitter.request('web.test', '/quitter').catch((e: Error) => e);
  await waitFor(() => queueOf(p, 'web').length === 1, 20_000, 'the second request to be queued');
  quitter.close();
  t.ok((await gaveUp) instanceof Error, 'the quitter got no response');
  // petrel must notice the departure while the request is queued (not only when it finally
  // writes a response), or a queue of departed clients fills up and their requests still reach
  // the Machine once capacity frees.
  const noticed = await waitFor(() => p.log.access().some((l) => l['path'] === '/quitter'), 10_000, 'the access line of the quitter').then(
    () => true,
    () => false,
  );
  t.ok(noticed, 'the departure of a queued client is noticed while it is queued');

  held.releaseAll();
  t.equal((await first).status, 200);
  // The slot the dead waiter was handed goes back; the next two requests go straight through.
  t.equal((await get(p.httpPort, 'web.test', '/after1')).status, 200);
  t.equal((await get(p.httpPort, 'web.test', '/after2')).status, 200);
  t.equal(origin.requests.filter((r) => r.url === '/quitter').length, 0, 'the abandoned request never reached the Machine');
  const line = p.log.access().find((l) => l['path'] === '/quitter');
  t.equal(line?.['code'], 'PH13', 'logged as client closed');
  t.equal(line?.['status'], 499);
  t.equal(p.daemon.manager.get('m1')!.slots.get(origin.port)!.load, 0, 'no load leaked');
});

t.test('type = "connections" with hard_limit = 1: a second connection queues until the first closes', async (t) => {
  const origin = await startOrigin((req, res) => res.end(`served ${req.url}`));
  const p = await startPetrel({
    apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }], '', 'type = "connections"\nsoft_limit = 1\nhard_limit = 1') },
    limits: `${LIMITS}\nqueue_timeout = "60s"`,
  });
  const conns: KeepAliveConn[] = [];
  t.teardown(async () => {
    for (const c of conns) c.close();
    await p.stop();
    await origin.close();
  });
  const a = await KeepAliveConn.open(p.httpPort);
  const b = await KeepAliveConn.open(p.httpPort);
  conns.push(a, b);
  t.equal((await a.request('web.test', '/a0')).status, 200);
  // A is idle between requests but still holds the Machine's only connection slot.
  const waiting = b.request('web.test', '/b0');
  await waitFor(() => queueOf(p, 'web').length === 1, 20_000, 'B to be queued');
  t.equal((await a.request('web.test', '/a1')).body, 'served /a1', 'A keeps being served on its own slot');
  a.close();
  const rb = await waiting;
  t.equal(rb.status, 200, 'B is served once A closed');
  t.equal(rb.body, 'served /b0');
  t.equal((await b.request('web.test', '/b1')).status, 200);
  t.ok((p.log.access().find((l) => l['path'] === '/b0')?.['queue_ms'] as number) > 0, 'B\'s wait is in the access log');
});
