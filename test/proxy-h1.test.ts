// HTTP/1.1 through petrel against real origins on loopback: routing, request and response
// headers, bodies both ways, keep-alive, pipelining, errors with codes.

import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { get, rawExchange, startOrigin, startPetrel, staticApp } from './helpers/petrel.ts';

t.test('routes by Host, sets the spec request headers, strips spoofed ones', async (t) => {
  const origin = await startOrigin();
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'web-1', port: origin.port }], 'hostnames = ["www.example.com"]') } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const r = await get(p.httpPort, 'web.test', '/hello?x=1', {
    headers: {
      'fly-client-ip': '6.6.6.6',
      'x-forwarded-for': '10.1.1.1',
      'x-forwarded-proto': 'https',
      'fly-region': 'evil',
      via: '1.0 spoof',
      connection: 'keep-alive, x-secret',
      'x-secret': 'hop',
      'keep-alive': 'timeout=5',
    },
  });
  t.equal(r.status, 200);
  const echo = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
  t.equal(echo.url, '/hello?x=1');
  const h = echo.headers;
  t.equal(h['fly-client-ip'], '127.0.0.1');
  t.equal(h['x-forwarded-for'], '10.1.1.1, 127.0.0.1', 'client XFF kept and real peer appended');
  t.equal(h['x-forwarded-proto'], 'http');
  t.equal(h['x-forwarded-ssl'], 'off');
  t.equal(h['x-forwarded-port'], '80');
  t.equal(h['fly-forwarded-port'], '80');
  t.equal(h['fly-region'], 'tst');
  t.equal(h['via'], '1.1 petrel');
  t.match(h['fly-request-id'], /^[0-9A-HJKMNP-TV-Z]{26}-tst$/);
  t.equal(h['x-secret'], undefined, 'header named in Connection is stripped');
  t.equal(h['keep-alive'], undefined);
  t.equal(h['host'], 'web.test');
  t.equal(r.headers['server'], 'petrel');
  t.equal(r.headers['via'], '1.1 petrel');
  t.equal(r.headers['fly-request-id'], h['fly-request-id']);
  t.equal(r.headers['x-origin'], 'origin');

  const custom = await get(p.httpPort, 'WWW.Example.COM.', '/');
  t.equal(custom.status, 200, 'custom hostname, case and trailing dot normalised');

  const unknown = await get(p.httpPort, 'nope.test', '/');
  t.equal(unknown.status, 404);
  t.match(unknown.body, /^PR02 /);
  t.equal(unknown.headers['x-petrel-error'], 'PR02');

  const access = p.log.access();
  const line = access.find((l) => l['status'] === 404);
  t.ok(line, 'access line for the 404');
  t.equal(line?.['code'], 'PR02');
  const ok = access.find((l) => l['status'] === 200 && l['path'] === '/hello?x=1');
  t.equal(ok?.['app'], 'web');
  t.equal(ok?.['machine'], 'web-1');
});

t.test('keep-alive reuses the client connection; bodies stream both ways', async (t) => {
  const origin = await startOrigin((req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 97);
      let left = 16;
      const pump = () => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(`got ${n} ${req.headers['transfer-encoding'] ?? 'cl'}`));
  });
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'web-1', port: origin.port }]) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const a = await get(p.httpPort, 'web.test', '/', { agent, method: 'POST', body: 'x'.repeat(100_000), headers: { 'content-type': 'text/plain' } });
  t.equal(a.body, 'got 100000 cl');
  const big = await get(p.httpPort, 'web.test', '/big', { agent });
  t.equal(big.body.length, 16 * 64 * 1024);
  // chunked request body
  const chunked = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: p.httpPort, method: 'POST', path: '/', headers: { host: 'web.test' }, agent }, (res) => {
      let b = '';
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.write('abc');
    setTimeout(() => req.end('defg'), 20);
  });
  t.equal(chunked, 'got 7 chunked');
  const access = p.log.access();
  t.equal(access.length, 3);
});

t.test('pipelined requests are answered in order', async (t) => {
  const origin = await startOrigin((req, res) => res.end(`path=${req.url}`));
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'web-1', port: origin.port }]) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const req = (path: string) => `GET ${path} HTTP/1.1\r\nHost: web.test\r\n\r\n`;
  const r = await rawExchange(p.httpPort, req('/a') + req('/b') + `GET /c HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n`);
  const bodies = [...r.text.matchAll(/path=\/(\w)/g)].map((m) => m[1]);
  t.same(bodies, ['a', 'b', 'c']);
  t.ok(r.closed, 'connection: close honoured');
});

t.test('framing attacks get 400 and a closed connection, daemon keeps serving', async (t) => {
  const origin = await startOrigin();
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'web-1', port: origin.port }]) }, limits: 'max_header_bytes = 2048\nheader_read_timeout = "300ms"' });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const cases: [string, string, RegExp][] = [
    ['CL+TE', 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400 [^]*PH06/],
    ['two CL', 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde', /^HTTP\/1\.1 400 [^]*PH07/],
    ['same CL twice', 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd', /^HTTP\/1\.1 400 [^]*PH07/],
    ['bad CL', 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: +4\r\n\r\nabcd', /^HTTP\/1\.1 400 [^]*PH07/],
    ['obfuscated TE', 'POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: xchunked\r\n\r\n', /^HTTP\/1\.1 400 [^]*PH08/],
    ['TE space before colon', 'POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding : chunked\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['bare LF', 'GET / HTTP/1.1\nHost: web.test\n\n', /^HTTP\/1\.1 400 [^]*PH09/],
    ['bare CR', 'GET / HTTP/1.1\r\nHost: web.test\rX: y\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['no Host', 'GET / HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 [^]*PH10/],
    ['oversized header', `GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: ${'a'.repeat(4000)}\r\n\r\n`, /^HTTP\/1\.1 431 [^]*PH02/],
    ['bad chunk', 'POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n', /HTTP\/1\.1 400 [^]*PH12/],
    ['HTTP/2 preface in cleartext', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /^HTTP\/1\.1 505 /],
  ];
  for (const [name, req, want] of cases) {
    const r = await rawExchange(p.httpPort, req);
    t.match(r.text, want, name);
    t.ok(r.closed, `${name}: connection closed`);
  }
  // slowloris: headers never complete
  const slow = await new Promise<{ text: string; ms: number }>((resolve) => {
    const s = net.connect(p.httpPort, '127.0.0.1');
    const t0 = Date.now();
    let text = '';
    s.write('GET / HTTP/1.1\r\nHost: web.test\r\n');
    s.on('data', (c) => (text += c.toString()));
    s.on('close', () => resolve({ text, ms: Date.now() - t0 }));
  });
  t.match(slow.text, /^HTTP\/1\.1 408 [^]*PH05/, 'slow headers get 408');
  const after = await get(p.httpPort, 'web.test', '/');
  t.equal(after.status, 200, 'still serving');
  // The bad-chunk request is refused before its head is flushed upstream, so only the last one arrives.
  t.equal(origin.requests.length, 1, 'rejected requests never reach the Machine');
});

t.test('upstream failures map to 502/504 with codes; connect failures retry on another Machine', async (t) => {
  const origin = await startOrigin();
  // A port with nothing listening.
  const dead = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
  const hang = await startOrigin(() => undefined);
  const p = await startPetrel({
    apps: {
      both: staticApp('both', [
        { id: 'dead-1', port: dead },
        { id: 'live-1', port: origin.port },
      ]),
      gone: staticApp('gone', [{ id: 'gone-1', port: dead }]),
      slow: staticApp('slow', [{ id: 'slow-1', port: hang.port }]),
    },
    limits: 'upstream_response_timeout = "300ms"',
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
    await hang.close();
  });
  // Ties between the two Machines are broken at random: go on until one request has picked the
  // dead Machine first (1 in 2 each; six tries alone missed it 1.6% of the time).
  const retriedNow = () => p.log.access().filter((l) => l['app'] === 'both' && (l['retries'] as number) > 0);
  const statuses: number[] = [];
  for (let i = 0; i < 60 && (i < 6 || retriedNow().length === 0); i++) statuses.push((await get(p.httpPort, 'both.test', '/')).status);
  t.ok(statuses.every((s) => s === 200), `all ${statuses.length} requests succeed despite a dead Machine`);
  t.ok(retriedNow().length > 0, 'some requests were retried');
  const gone = await get(p.httpPort, 'gone.test', '/');
  t.equal(gone.status, 502);
  t.match(gone.body, /^PC01 /);
  const slow = await get(p.httpPort, 'slow.test', '/');
  t.equal(slow.status, 504);
  t.match(slow.body, /^PC04 /);
});
