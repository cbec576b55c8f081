// The admin listener of a real daemon: health and readiness, the Prometheus text on /metrics,
// bearer-token protection of /v1, reload (good and broken app files), the app and Machine
// listings, and HTTP semantics (404 unknown app, 405 wrong method).

import t from 'tap';
import type http from 'node:http';
import { waitFor } from './helpers/machines-fixtures.ts';
import { adminRequest, get, metricValue, scrapeMetrics, startOrigin, startPetrel, staticApp } from './helpers/petrel.ts';

const LIMITS = 'shutdown_timeout = "5s"';

interface ReloadReply {
  ok: boolean;
  version: number;
  error?: { file: string; key: string; line: number; reason: string };
}

interface ErrorReply {
  error: { code: string; reason: string };
}

t.test('/healthz, and /readyz turning 503 once shutdown began', async (t) => {
  const held: http.ServerResponse[] = [];
  const origin = await startOrigin((req, res) => {
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }]) }, limits: LIMITS });
  let shutdown: Promise<void> | null = null;
  t.teardown(async () => {
    for (const r of held.splice(0)) r.end('late');
    await (shutdown ?? p.stop());
    await origin.close();
  });

  const h = await adminRequest(p.adminPort, 'GET', '/healthz', null);
  t.equal(h.status, 200);
  t.equal(h.text, 'ok\n');
  const r = await adminRequest(p.adminPort, 'GET', '/readyz', null);
  t.equal(r.status, 200, 'ready while serving');

  // An in-flight request keeps the drain (and so the admin listener) open while we look.
  const inflight = get(p.httpPort, 'web.test', '/hold');
  await waitFor(() => held.length === 1, 20_000, 'the request to reach the Machine');
  shutdown = p.stop();
  await waitFor(() => p.daemon.ctx.draining, 20_000, 'the drain to begin');
  const nr = await adminRequest(p.adminPort, 'GET', '/readyz', null);
  t.equal(nr.status, 503, 'not ready once shutdown began');
  t.match(nr.text, /^not ready\nstore: embedded/, 'the verdict first, then what it depends on');
  const nh = await adminRequest(p.adminPort, 'GET', '/healthz', null);
  t.equal(nh.status, 200, 'still alive while draining');
  for (const res of held.splice(0)) res.end('finished');
  const done = await inflight;
  t.equal(done.status, 200, 'the in-flight request completes during the drain');
  t.equal(done.body, 'finished');
  await shutdown;
});

t.test('/metrics exposes the issue 2 metric families with their labels', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({
    apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }], '', 'type = "requests"\nsoft_limit = 5') },
    limits: LIMITS,
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  for (let i = 0; i < 3; i++) t.equal((await get(p.httpPort, 'web.test', '/')).status, 200);
  t.equal((await get(p.httpPort, 'nope.test', '/')).status, 404);

  const res = await adminRequest(p.adminPort, 'GET', '/metrics', null);
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
  const text = res.text;
  const types: [string, string][] = [
    ['petrel_http_responses_total', 'counter'],
    ['petrel_http_response_seconds', 'histogram'],
    ['petrel_connections_active', 'gauge'],
    ['petrel_machine_concurrency', 'gauge'],
    ['petrel_upstream_retries_total', 'counter'],
    ['petrel_queue_wait_seconds', 'histogram'],
    ['petrel_config_reloads_total', 'counter'],
    ['process_cpu_seconds_total', 'counter'],
  ];
  for (const [name, type] of types) t.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`);

  t.equal(metricValue(text, 'petrel_http_responses_total', { app: 'web', status_class: '2xx' }), 3);
  t.equal(metricValue(text, 'petrel_http_response_seconds_count', { app: 'web' }), 3);
  t.equal(metricValue(text, 'petrel_http_response_seconds_bucket', { app: 'web', le: '+Inf' }), 3);
  t.ok(metricValue(text, 'petrel_connections_active', { app: 'web' }) !== undefined, 'connections gauge per app');
  t.equal(metricValue(text, 'petrel_machine_concurrency', { app: 'web', machine: 'm1' }), 0, 'concurrency per Machine');
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'success' }), 0);
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'failure' }), 0);
  t.ok((metricValue(text, 'process_cpu_seconds_total') ?? -1) >= 0, 'Node process metrics');
  t.ok(metricValue(text, 'nodejs_eventloop_lag_seconds') !== undefined, 'Node runtime metrics');
  t.notMatch(text, /127\.0\.0\.1|nope\.test/, 'no addresses or raw hosts as label values');

  // After a retry and a queue wait the per-app series carry values.
  const { createServer } = await import('node:net');
  const dead = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
  p.writeApp(
    'web',
    staticApp('web', [{ id: 'm1', port: origin.port }, { id: 'dead', port: dead }], '', 'type = "requests"\nsoft_limit = 5'),
  );
  t.equal((await adminRequest(p.adminPort, 'POST', '/v1/reload')).status, 200);
  // Sequential requests pick at random among the two idle Machines: some hit the dead one first.
  for (let i = 0; i < 40; i++) {
    t.equal((await get(p.httpPort, 'web.test', '/')).status, 200);
    if (p.log.access().some((l) => (l['retries'] as number) > 0)) break;
  }
  const after = await scrapeMetrics(p.adminPort);
  const retried = p.log.access().reduce((n, l) => n + (l['retries'] as number), 0);
  t.ok(retried > 0, 'some request was retried');
  t.equal(metricValue(after, 'petrel_upstream_retries_total', { app: 'web' }), retried, 'retries counted per app, same as the access log');
});

t.test('per-app series exist at zero before their first event (Prometheus: avoid missing metrics)', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }]) }, limits: LIMITS });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  // https://prometheus.io/docs/practices/instrumentation/#avoid-missing-metrics: a series that
  // appears only on its first event breaks rate() and alerts such as `increase(x[5m]) > 0`.
  const text = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(text, 'petrel_upstream_retries_total', { app: 'web' }), 0, 'retries per app at 0');
  t.equal(metricValue(text, 'petrel_queue_wait_seconds_count', { app: 'web' }), 0, 'queue wait per app at 0');
  t.equal(metricValue(text, 'petrel_http_response_seconds_count', { app: 'web' }), 0, 'response time per app at 0');
  for (const c of ['2xx', '5xx']) t.equal(metricValue(text, 'petrel_http_responses_total', { app: 'web', status_class: c }), 0, `responses ${c} at 0`);
});

t.test('/v1 without or with a wrong token: 401 PA01 and nothing changes', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }]) }, limits: LIMITS });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  // A pending change that a reload would pick up.
  p.writeApp('web', staticApp('web', [{ id: 'm1', port: origin.port }], 'hostnames = ["new.example.com"]'));
  const version = p.daemon.holder.current.version;

  const attempts: [string, string, string | null][] = [
    ['POST', '/v1/reload', null],
    ['POST', '/v1/reload', 'wrong-token'],
    ['POST', '/v1/reload', 'test-token-and-more'],
    ['POST', '/v1/reload', ''],
    ['GET', '/v1/apps', null],
    ['GET', '/v1/apps', 'nope'],
    ['GET', '/v1/apps/web/machines', null],
    ['GET', '/v1/apps/web/machines', 'test-tokeN'],
  ];
  for (const [method, path, token] of attempts) {
    const r = await adminRequest(p.adminPort, method, path, token);
    const what = `${method} ${path} with ${token === null ? 'no token' : JSON.stringify(token)}`;
    t.equal(r.status, 401, `${what}: 401`);
    t.equal((r.json as ErrorReply | undefined)?.error.code, 'PA01', `${what}: PA01`);
    t.equal(r.headers['www-authenticate'], 'Bearer', `${what}: WWW-Authenticate`);
  }
  // Basic auth with the token as password is not a bearer token either.
  const basic = await new Promise<number>((resolve, reject) => {
    void import('node:http').then(({ request }) => {
      const req = request(
        { host: '127.0.0.1', port: p.adminPort, method: 'POST', path: '/v1/reload', agent: false, headers: { authorization: `Basic ${Buffer.from('x:test-token').toString('base64')}` } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
  });
  t.equal(basic, 401, 'Basic auth refused');

  t.equal(p.daemon.holder.current.version, version, 'no reload happened');
  t.equal((await get(p.httpPort, 'new.example.com', '/')).status, 404, 'the pending change is not live');
  const text = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'success' }), 0);
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'failure' }), 0);

  // The right token does it.
  const ok = await adminRequest(p.adminPort, 'POST', '/v1/reload', 'test-token');
  t.equal(ok.status, 200);
  t.equal((await get(p.httpPort, 'new.example.com', '/')).status, 200, 'the change is live after an authorized reload');
});

t.test('the auth scheme name is case-insensitive (RFC 9110 section 11.1)', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }]) }, limits: LIMITS });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const { request } = await import('node:http');
  const status = (authorization: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: p.adminPort, path: '/v1/apps', agent: false, headers: { authorization } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
  t.equal(await status('Bearer test-token'), 200);
  t.equal(await status('bearer test-token'), 200, 'lower-case scheme');
  t.equal(await status('BEARER test-token'), 200, 'upper-case scheme');
});

t.test('POST /v1/reload: a good change is applied, a broken file is refused with file, key and line', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'm1', port: origin.port }]) }, limits: LIMITS });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  t.equal((await get(p.httpPort, 'web.test', '/')).status, 200);
  const v0 = p.daemon.holder.current.version;

  p.writeApp('web', staticApp('web', [{ id: 'm1', port: origin.port }], 'hostnames = ["www.example.com"]'));
  const good = await adminRequest(p.adminPort, 'POST', '/v1/reload');
  t.equal(good.status, 200);
  const gj = good.json as ReloadReply;
  t.equal(gj.ok, true);
  t.equal(gj.version, v0 + 1, 'version increments');
  t.equal(p.daemon.holder.current.version, v0 + 1);
  t.equal((await get(p.httpPort, 'www.example.com', '/')).status, 200, 'the new hostname routes');

  // Line 5 holds an unknown key inside [http_service].
  const broken = [
    'app = "web"',
    'hostnames = ["broken.example.com"]',
    '[http_service]',
    `internal_port = ${origin.port}`,
    'bogus_key = 1',
    '[[machines]]',
    'id = "m1"',
    'driver = "static"',
    `address = "127.0.0.1:${origin.port}"`,
    '',
  ].join('\n');
  p.writeApp('web', broken);
  const bad = await adminRequest(p.adminPort, 'POST', '/v1/reload');
  t.equal(bad.status, 422, 'refused');
  const bj = bad.json as ReloadReply;
  t.equal(bj.ok, false);
  t.equal(bj.version, v0 + 1, 'version unchanged');
  t.match(bj.error?.file ?? '', /apps\/web\.toml$/, 'names the file');
  t.equal(bj.error?.key, 'http_service.bogus_key', 'names the key path');
  t.equal(bj.error?.line, 5, 'names the line');
  t.match(bj.error?.reason ?? '', /unknown key/, 'says why');

  t.equal(p.daemon.holder.current.version, v0 + 1, 'old snapshot still published');
  t.equal((await get(p.httpPort, 'web.test', '/')).status, 200, 'old config keeps serving');
  t.equal((await get(p.httpPort, 'www.example.com', '/')).status, 200, 'including the last good change');
  t.equal((await get(p.httpPort, 'broken.example.com', '/')).status, 404, 'nothing of the broken file is live');

  const text = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'success' }), 1);
  t.equal(metricValue(text, 'petrel_config_reloads_total', { outcome: 'failure' }), 1, 'failure counted');
  const logged = p.log.lines.find((l) => l['c'] === 'config' && typeof l['msg'] === 'string' && /reload refused/.test(l['msg']));
  t.ok(logged, 'the refusal is logged');

  // A broken node config file is refused the same way.
  const { readFileSync, writeFileSync } = await import('node:fs');
  const nodeText = readFileSync(p.configPath, 'utf8');
  writeFileSync(p.configPath, nodeText.replace('[limits]\n', '[limits]\nno_such_limit = 3\n'));
  const badNode = await adminRequest(p.adminPort, 'POST', '/v1/reload');
  t.equal(badNode.status, 422);
  const nj = badNode.json as ReloadReply;
  t.equal(nj.error?.file, p.configPath, 'names the node config file');
  t.equal(nj.error?.key, 'limits.no_such_limit');
  t.equal(nj.error?.line, nodeText.slice(0, nodeText.indexOf('[limits]\n')).split('\n').length + 1, 'and its line');
  writeFileSync(p.configPath, nodeText);

  // Fixing the file makes the next reload succeed.
  p.writeApp('web', staticApp('web', [{ id: 'm1', port: origin.port }]));
  const fixed = await adminRequest(p.adminPort, 'POST', '/v1/reload');
  t.equal(fixed.status, 200);
  t.equal((fixed.json as ReloadReply).version, v0 + 2);
  t.equal((await get(p.httpPort, 'www.example.com', '/')).status, 404, 'the removed hostname is gone');
});

t.test('GET /v1/apps and /v1/apps/<app>/machines shapes; unknown app 404; wrong method 405', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const p = await startPetrel({
    apps: {
      web: staticApp('web', [{ id: 'web-1', port: origin.port }, { id: 'web-2', port: origin.port }], 'hostnames = ["www.example.com"]'),
      api: staticApp('api', [{ id: 'api-1', port: origin.port }]),
    },
    limits: LIMITS,
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const apps = await adminRequest(p.adminPort, 'GET', '/v1/apps');
  t.equal(apps.status, 200);
  t.match(apps.headers['content-type'], /^application\/json/);
  const list = apps.json as { name: string; hostnames: string[]; machines: number; connections: number }[];
  t.same(list.map((a) => a.name).sort(), ['api', 'web']);
  const web = list.find((a) => a.name === 'web');
  t.same(web, { name: 'web', hostnames: ['www.example.com', 'web.test'], machines: 2, connections: 0 });

  const ms = await adminRequest(p.adminPort, 'GET', '/v1/apps/web/machines');
  t.equal(ms.status, 200);
  const machines = ms.json as Record<string, unknown>[];
  t.same(machines.map((m) => m['id']).sort(), ['web-1', 'web-2']);
  const m1 = machines.find((m) => m['id'] === 'web-1')!;
  t.match(m1, {
    id: 'web-1',
    region: 'tst',
    state: 'started',
    cordoned: false,
    driver: 'static',
    private_ip: '127.0.0.1',
    ports: { [String(origin.port)]: origin.port },
    checks: { [String(origin.port)]: { healthy: true, load: 0 } },
  });
  t.equal(m1['pid'], undefined, 'static Machines have no pid');
  const apiMachines = (await adminRequest(p.adminPort, 'GET', '/v1/apps/api/machines')).json as { id: string }[];
  t.same(apiMachines.map((m) => m.id), ['api-1'], 'only the app\'s own Machines');

  const unknown = await adminRequest(p.adminPort, 'GET', '/v1/apps/nope/machines');
  t.equal(unknown.status, 404);
  t.equal((unknown.json as ErrorReply).error.code, 'PA02');
  const noRoute = await adminRequest(p.adminPort, 'GET', '/v1/nothing-here');
  t.equal(noRoute.status, 404);
  const notAdmin = await adminRequest(p.adminPort, 'GET', '/nothing-here', null);
  t.equal(notAdmin.status, 404);

  // RFC 9110 section 15.5.6: a known resource with an unsupported method is 405 with Allow.
  const wrong: [string, string, string | null, string][] = [
    ['GET', '/v1/reload', 'test-token', 'POST'],
    ['PUT', '/v1/apps', 'test-token', 'GET'],
    ['DELETE', '/v1/apps/web/machines', 'test-token', 'GET'],
    ['POST', '/metrics', null, 'GET'],
    ['POST', '/healthz', null, 'GET'],
    ['POST', '/readyz', null, 'GET'],
  ];
  for (const [method, path, token, allow] of wrong) {
    const r = await adminRequest(p.adminPort, method, path, token);
    t.equal(r.status, 405, `${method} ${path}: 405`);
    t.match(r.headers['allow'] ?? '', new RegExp(`\\b${allow}\\b`), `${method} ${path}: Allow names ${allow}`);
  }
  t.equal((await get(p.httpPort, 'web.test', '/')).status, 200, 'the proxy is unaffected');
});
