// Fly's client routing headers (spec section 3) over HTTP/1.1 and HTTP/2: force/prefer an
// instance, force/prefer a region; forced targets that cannot take the request get 503 PR09.

import t from 'tap';
import http2 from 'node:http2';
import { get, startOrigin, startPetrel } from './helpers/petrel.ts';

t.test('Fly-Force/Prefer-Instance-Id and Fly-Force/Prefer-Region', async (t) => {
  const a = await startOrigin(undefined, 'a');
  const b = await startOrigin(undefined, 'b');
  const app = `app = "web"
[http_service]
internal_port = 8080
[http_service.tls_options]
default_self_signed = true
[[machines]]
id = "m-a"
driver = "static"
address = "127.0.0.1:${a.port}"
[[machines]]
id = "m-b"
region = "ams"
driver = "static"
address = "127.0.0.1:${b.port}"
`;
  const p = await startPetrel({ apps: { web: app } });
  t.teardown(async () => {
    await p.stop();
    await a.close();
    await b.close();
  });
  const name = (r: { body: string }) => (JSON.parse(r.body) as { name: string }).name;
  const echo = (r: { body: string }) => (JSON.parse(r.body) as { headers: Record<string, string> }).headers;

  for (let i = 0; i < 4; i++) {
    t.equal(name(await get(p.httpPort, 'web.test', '/')), 'a', 'no header: the local region first');
  }
  for (let i = 0; i < 4; i++) {
    t.equal(name(await get(p.httpPort, 'web.test', '/', { headers: { 'fly-force-instance-id': 'm-b' } })), 'b', 'forced instance');
  }
  const none = await get(p.httpPort, 'web.test', '/', { headers: { 'fly-force-instance-id': 'm-zzz' } });
  t.equal(none.status, 503);
  t.match(none.body, /^PR09 /);

  const preferred = await get(p.httpPort, 'web.test', '/', { headers: { 'fly-prefer-instance-id': 'm-b' } });
  t.equal(name(preferred), 'b', 'preferred instance when it can take the request');
  t.equal(echo(preferred)['fly-preferred-instance-unavailable'], undefined);
  const fallback = await get(p.httpPort, 'web.test', '/', { headers: { 'fly-prefer-instance-id': 'm-gone' } });
  t.equal(fallback.status, 200, 'an unavailable preferred instance falls back');
  t.equal(echo(fallback)['fly-preferred-instance-unavailable'], 'm-gone', 'and the app is told');

  t.equal(name(await get(p.httpPort, 'web.test', '/', { headers: { 'fly-prefer-region': 'iad, ams' } })), 'b', 'first listed region with capacity');
  t.equal(name(await get(p.httpPort, 'web.test', '/', { headers: { 'fly-prefer-region': 'iad' } })), 'a', 'no Machine there: usual choice');
  t.equal(name(await get(p.httpPort, 'web.test', '/', { headers: { 'fly-force-region': 'AMS' } })), 'b', 'forced region');
  const noRegion = await get(p.httpPort, 'web.test', '/', { headers: { 'fly-force-region': 'syd' } });
  t.equal(noRegion.status, 503, 'forced region without Machines');
  t.match(noRegion.body, /^PR09 /);

  // HTTP/2 reads the same headers from the header block.
  const session = http2.connect(`https://127.0.0.1:${p.httpsPort}`, { servername: 'web.test', rejectUnauthorized: false });
  t.teardown(() => session.close());
  const h2 = await new Promise<string>((resolve, reject) => {
    const req = session.request({ ':path': '/', ':authority': 'web.test', 'fly-force-instance-id': 'm-b' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.end();
  });
  t.equal(name({ body: h2 }), 'b', 'HTTP/2: forced instance');
});
