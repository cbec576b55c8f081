// Proves test/helpers/prometheus.ts against a real Prometheus before any petrel test relies on
// it: a tiny node:http server exposes one metric, Prometheus scrapes it, PromQL sees it.
import t from 'tap';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { requireBinary } from './helpers/deps.ts';
import { startPrometheus } from './helpers/prometheus.ts';

t.test('a real Prometheus scrapes a target and answers PromQL', async (t) => {
  const bin = requireBinary(t, 'prometheus', 'prometheus');
  if (!bin) return;

  let hits = 0;
  const target = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    hits++;
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(`# HELP helper_selftest_hits Scrapes served.\n# TYPE helper_selftest_hits counter\nhelper_selftest_hits{side="origin"} ${hits}\n`);
  });
  target.listen(0, '127.0.0.1');
  await once(target, 'listening');
  t.teardown(() => target.close());
  const { port } = target.address() as AddressInfo;

  const prom = await startPrometheus({ target: `127.0.0.1:${port}`, binary: bin });
  t.teardown(() => prom.stop());

  const up = await prom.waitFor('up', (s) => s.length === 1 && s[0]!.value === 1, 20_000);
  t.equal(up[0]!.metric.instance, `127.0.0.1:${port}`, 'scrapes the given target');

  const first = await prom.waitFor('helper_selftest_hits', (s) => s.length === 1, 10_000);
  t.equal(first[0]!.metric.side, 'origin', 'labels come through');
  // Scraped every second: a later sample must show more scrapes.
  const later = await prom.waitFor('helper_selftest_hits', (s) => s.length === 1 && s[0]!.value > first[0]!.value, 10_000);
  t.ok(later[0]!.value > first[0]!.value, 'keeps scraping at the 1 s interval');

  await t.rejects(prom.query('sum(('), /failed/, 'a bad expression fails fast');
});

t.test('a missing binary fails start with a clear error', async (t) => {
  await t.rejects(
    startPrometheus({ target: '127.0.0.1:1', binary: '/nonexistent/prometheus', readyTimeoutMs: 2_000 }),
    /prometheus/,
  );
});
