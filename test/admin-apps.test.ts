// The apps routes of the admin listener (issue 5) on a real in-process daemon with the embedded
// store: list and show answer from the app files, deploy and destroy are refused with 409 PA18
// because the files are the config; bodies, tokens, unknown apps and methods are checked the way
// the other /v1 routes are. The request plumbing is also checked against a recording backend,
// which is what the cluster store's backend plugs into.

import { readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { appFileError, handleAppRoute, type AppsBackend } from '../src/admin/appsApi.ts';
import { apiError } from '../src/admin/machinesApi.ts';
import { parseAppConfig, parseNodeConfig } from '../src/config/load.ts';
import { ConfigError } from '../src/config/types.ts';
import { adminRequest, get, startOrigin, startPetrel, staticApp } from './helpers/petrel.ts';

interface ErrorReply {
  error: { code: string; reason: string; file?: string; key?: string; line?: number };
}

t.test('apps routes with the embedded store', async (t) => {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const webText = staticApp('web', [{ id: 'web-1', port: origin.port }, { id: 'web-2', port: origin.port }], 'hostnames = ["www.example.com"]');
  const p = await startPetrel({
    apps: { web: webText, api: staticApp('api', [{ id: 'api-1', port: origin.port }]) },
    limits: 'shutdown_timeout = "5s"',
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const appsDir = path.join(p.dir, 'apps');
  const webFile = path.join(appsDir, 'web.toml');
  const errorOf = (r: { json: unknown }) => (r.json as ErrorReply).error;

  t.test('GET /v1/apps keeps its shape', async (t) => {
    const r = await adminRequest(p.adminPort, 'GET', '/v1/apps');
    t.equal(r.status, 200);
    const list = r.json as Record<string, unknown>[];
    t.same(list.map((a) => a['name']).sort(), ['api', 'web']);
    t.same(list.find((a) => a['name'] === 'web'), { name: 'web', hostnames: ['www.example.com', 'web.test'], machines: 2, connections: 0 });
  });

  t.test('GET /v1/apps/{app}: summary and the app file as on disk', async (t) => {
    const r = await adminRequest(p.adminPort, 'GET', '/v1/apps/web');
    t.equal(r.status, 200);
    t.match(r.headers['content-type'], /^application\/json/);
    t.same(r.json, {
      name: 'web',
      hostnames: ['www.example.com', 'web.test'],
      machines: 2,
      primary_region: 'tst',
      store: 'embedded',
      file: webFile,
      config: webText,
    });
    const head = await adminRequest(p.adminPort, 'HEAD', '/v1/apps/web');
    t.equal(head.status, 200, 'HEAD too');
    t.equal(head.text, '', 'without a body');
  });

  t.test('unknown app: 404 PA02 for show and destroy', async (t) => {
    for (const method of ['GET', 'DELETE']) {
      const r = await adminRequest(p.adminPort, method, '/v1/apps/nope');
      t.equal(r.status, 404, method);
      t.same(errorOf(r), { code: 'PA02', reason: 'no app nope' }, method);
    }
    const undecodable = await adminRequest(p.adminPort, 'GET', '/v1/apps/%E0%A4%A');
    t.equal(undecodable.status, 404, 'a name that does not decode is no app either');
  });

  t.test('deploy and destroy: 409 PA18 naming apps_dir, and nothing changes', async (t) => {
    const version = p.daemon.holder.current.version;
    const deploy = await adminRequest(p.adminPort, 'POST', '/v1/apps', 'test-token', JSON.stringify({ config: webText.replace('web-2', 'web-3') }));
    t.equal(deploy.status, 409);
    t.same(errorOf(deploy), { code: 'PA18', reason: `the embedded store reads app files from ${appsDir}: edit the file there and reload` });
    const named = await adminRequest(p.adminPort, 'POST', '/v1/apps', 'test-token', JSON.stringify({ name: 'new', config: 'app = "new"\n' }));
    t.equal(named.status, 409, 'a new app too');

    const destroy = await adminRequest(p.adminPort, 'DELETE', '/v1/apps/web');
    t.equal(destroy.status, 409);
    t.same(errorOf(destroy), { code: 'PA18', reason: `the embedded store reads app files from ${appsDir}: remove ${webFile} and reload` });

    t.equal(p.daemon.holder.current.version, version, 'no new snapshot');
    t.equal(readFileSync(webFile, 'utf8'), webText, 'the app file is untouched');
    t.same(((await adminRequest(p.adminPort, 'GET', '/v1/apps')).json as unknown[]).length, 2, 'both apps still listed');
    t.equal((await get(p.httpPort, 'web.test', '/')).status, 200, 'and web still serves');
  });

  t.test('deploy bodies: 400 PA08 for bad JSON and missing or wrong fields', async (t) => {
    const bodies: [string, RegExp][] = [
      ['{"config": ', /malformed JSON/],
      ['["app = \\"web\\""]', /JSON object/],
      ['', /config is required/],
      ['{"name": "web"}', /config is required/],
      ['{"config": 7}', /config is required/],
      ['{"config": "  "}', /config is required/],
      ['{"config": "app = \\"web\\"", "name": 3}', /name must be/],
      ['{"config": "app = \\"web\\"", "name": ""}', /name must be/],
    ];
    for (const [body, reason] of bodies) {
      const r = await adminRequest(p.adminPort, 'POST', '/v1/apps', 'test-token', body);
      t.equal(r.status, 400, body);
      t.equal(errorOf(r).code, 'PA08', body);
      t.match(errorOf(r).reason, reason, body);
    }
  });

  t.test('no or wrong token: 401 PA01 on every apps route', async (t) => {
    const routes: [string, string, string | undefined][] = [
      ['GET', '/v1/apps', undefined],
      ['POST', '/v1/apps', JSON.stringify({ config: webText })],
      ['GET', '/v1/apps/web', undefined],
      ['DELETE', '/v1/apps/web', undefined],
    ];
    for (const [method, route, body] of routes) {
      for (const token of [null, 'wrong']) {
        const r = await adminRequest(p.adminPort, method, route, token, body);
        t.equal(r.status, 401, `${method} ${route} with ${token ?? 'no token'}`);
        t.equal(errorOf(r).code, 'PA01');
      }
    }
  });

  t.test('wrong method: 405 PA05 with Allow', async (t) => {
    const cases: [string, string, string][] = [
      ['PUT', '/v1/apps', 'GET, HEAD, POST'],
      ['DELETE', '/v1/apps', 'GET, HEAD, POST'],
      ['POST', '/v1/apps/web', 'GET, HEAD, DELETE'],
      ['PATCH', '/v1/apps/web', 'GET, HEAD, DELETE'],
    ];
    for (const [method, route, allow] of cases) {
      const r = await adminRequest(p.adminPort, method, route);
      t.equal(r.status, 405, `${method} ${route}`);
      t.equal(r.headers['allow'], allow, `${method} ${route}: Allow`);
      t.equal(errorOf(r).code, 'PA05');
    }
  });

  t.test('the routes below an app still reach their own handlers', async (t) => {
    const ms = await adminRequest(p.adminPort, 'GET', '/v1/apps/web/machines');
    t.equal(ms.status, 200);
    t.same((ms.json as { id: string }[]).map((m) => m.id).sort(), ['web-1', 'web-2']);
    t.equal((await adminRequest(p.adminPort, 'GET', '/v1/apps/web/certificates')).status, 200);
  });

  // Last: it takes web's file away. The app keeps serving from the last reload; show says why
  // its text is missing instead of failing.
  t.test('show when the app file is gone since the last reload', async (t) => {
    renameSync(webFile, path.join(appsDir, 'web.toml.off'));
    const r = await adminRequest(p.adminPort, 'GET', '/v1/apps/web');
    t.equal(r.status, 200);
    t.match(r.json, { name: 'web', machines: 2, config: null, config_error: `cannot read ${webFile} (ENOENT)` });
  });
});

t.test('handleAppRoute hands deploy, show and destroy to the backend and passes its answers on', async (t) => {
  const calls: unknown[][] = [];
  const backend: AppsBackend = {
    apps: () => [{ name: 'web' }],
    deployApp: (text, name) => {
      calls.push(['deploy', text, name]);
      return Promise.resolve({ status: 201, body: { name: 'web', hostnames: ['web.test'], machines: 1 } });
    },
    showApp: (name) => {
      calls.push(['show', name]);
      return Promise.resolve({ status: 200, body: { name } });
    },
    destroyApp: (name) => {
      calls.push(['destroy', name]);
      return Promise.resolve(apiError(503, 'PA17', 'the cluster store is unavailable'));
    },
  };
  t.same(await handleAppRoute('GET', '/v1/apps', '', backend), { status: 200, body: [{ name: 'web' }] });
  t.same(await handleAppRoute('POST', '/v1/apps', JSON.stringify({ config: 'app = "web"\n' }), backend), {
    status: 201,
    body: { name: 'web', hostnames: ['web.test'], machines: 1 },
  });
  await handleAppRoute('POST', '/v1/apps', JSON.stringify({ name: 'web', config: 'app = "web"\n' }), backend);
  t.same(await handleAppRoute('GET', '/v1/apps/a%20b', '', backend), { status: 200, body: { name: 'a b' } }, 'the name is decoded');
  t.same(await handleAppRoute('DELETE', '/v1/apps/web', '', backend), apiError(503, 'PA17', 'the cluster store is unavailable'));
  t.same(calls, [
    ['deploy', 'app = "web"\n', undefined],
    ['deploy', 'app = "web"\n', 'web'],
    ['show', 'a b'],
    ['destroy', 'web'],
  ]);
});

t.test('appFileError: 422 PA19 locating the problem like a refused reload', async (t) => {
  const node = parseNodeConfig('', '/etc/petrel/petrel.toml', { env: {} });
  let err: unknown;
  try {
    parseAppConfig('app = "web"\n[http_service]\ninternal_port = 8080\nbogus = 1\n', '/srv/web.toml', node);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ConfigError);
  const reply = appFileError(err as ConfigError);
  t.equal(reply.status, 422);
  t.match(reply.body, {
    error: { code: 'PA19', file: '/srv/web.toml', key: 'http_service.bogus', line: 4, reason: /^\/srv\/web\.toml:4: http_service\.bogus: unknown key/ },
  });
});
