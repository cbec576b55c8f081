// Issue 2 acceptance: "A real Prometheus (Debian package) scrapes the admin listener in an
// integration test". petrel runs in-process, a real Prometheus scrapes its admin /metrics every
// second, and PromQL must see the requests we sent.

import t from 'tap';
import { requireBinary } from './helpers/deps.ts';
import { get, startOrigin, startPetrel, staticApp } from './helpers/petrel.ts';
import { startPrometheus } from './helpers/prometheus.ts';

t.test('a real Prometheus scrapes petrel\'s admin listener', async (t) => {
  const bin = requireBinary(t, 'prometheus', 'prometheus');
  if (!bin) return;

  const origin = await startOrigin((req, res) => {
    if (req.url === '/fail') res.writeHead(500);
    res.end('ok');
  });
  const p = await startPetrel({ apps: { scraped: staticApp('scraped', [{ id: 'm1', port: origin.port }]) }, limits: 'shutdown_timeout = "2s"' });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const prom = await startPrometheus({ target: `127.0.0.1:${p.adminPort}`, binary: bin });
  t.teardown(() => prom.stop());

  for (let i = 0; i < 7; i++) t.equal((await get(p.httpPort, 'scraped.test', `/r${i}`)).status, 200);
  for (let i = 0; i < 2; i++) t.equal((await get(p.httpPort, 'scraped.test', '/fail')).status, 500);

  const up = await prom.waitFor('up{job="target"}', (s) => s.length === 1 && s[0]!.value === 1, 30_000);
  t.equal(up[0]!.metric['instance'], `127.0.0.1:${p.adminPort}`, 'scrapes the admin listener');
  t.equal(up[0]!.value, 1, 'up == 1');

  const ok = await prom.waitFor('petrel_http_responses_total{app="scraped",status_class="2xx"}', (s) => s.length === 1 && s[0]!.value === 7, 30_000);
  t.equal(ok[0]!.value, 7, '2xx responses as sent');
  t.equal(ok[0]!.metric['job'], 'target');
  const bad = await prom.waitFor('petrel_http_responses_total{app="scraped",status_class="5xx"}', (s) => s.length === 1 && s[0]!.value === 2, 30_000);
  t.equal(bad[0]!.value, 2, '5xx responses as sent');

  const total = await prom.waitFor('sum(petrel_http_responses_total{app="scraped"})', (s) => s.length === 1 && s[0]!.value === 9, 30_000);
  t.equal(total[0]!.value, 9);
  const hist = await prom.waitFor('petrel_http_response_seconds_count{app="scraped"}', (s) => s.length === 1 && s[0]!.value === 9, 30_000);
  t.equal(hist[0]!.value, 9, 'the response time histogram is scraped');
  const q = await prom.query('histogram_quantile(0.5, sum by (le) (petrel_http_response_seconds_bucket{app="scraped"}))');
  t.equal(q.length, 1, 'histogram_quantile works on the buckets');
  t.ok(Number.isFinite(q[0]!.value) && q[0]!.value > 0, `median ${q[0]!.value} s`);
  const cpu = await prom.waitFor('process_cpu_seconds_total{job="target"}', (s) => s.length === 1, 30_000);
  t.ok(cpu[0]!.value > 0, 'Node process metrics are scraped');
  const reloads = await prom.query('petrel_config_reloads_total');
  t.same(reloads.map((s) => s.metric['outcome']).sort(), ['failure', 'success'], 'reload outcomes present');

  // Later requests show up in a later scrape.
  for (let i = 0; i < 3; i++) await get(p.httpPort, 'scraped.test', '/more');
  const more = await prom.waitFor('petrel_http_responses_total{app="scraped",status_class="2xx"}', (s) => s.length === 1 && s[0]!.value === 10, 30_000);
  t.equal(more[0]!.value, 10, 'the counter keeps up');
});
