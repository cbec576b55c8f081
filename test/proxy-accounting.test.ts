// Capacity and connection accounting survives every way a request can end: completed, client
// gone mid-request-body, mid-response, while queued, upstream reset, timeouts. Afterwards every
// Machine's load, the app's connection count and the queue are back to zero, and there is one
// access line per request that reached routing.

import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { startOrigin, startPetrel } from './helpers/petrel.ts';
import { waitFor } from './helpers/machines-fixtures.ts';

t.test('load, connections and queue return to zero after a storm of aborted exchanges', async (t) => {
  const origin = await startOrigin((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/slow') {
      const timer = setTimeout(() => res.end('slow'), Number(u.searchParams.get('ms') ?? 200));
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (u.pathname === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 120);
      let left = 64;
      const pump = () => {
        while (left-- > 0) if (!res.write(chunk)) return void res.once('drain', pump);
        res.end();
      };
      return pump();
    }
    if (u.pathname === '/reset') return void req.socket.destroy();
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  const app = `app = "acct"
[http_service]
internal_port = 8080
[http_service.concurrency]
type = "requests"
soft_limit = 2
hard_limit = 4
[[machines]]
id = "acct-1"
driver = "static"
address = "127.0.0.1:${origin.port}"
[[machines]]
id = "acct-2"
driver = "static"
address = "127.0.0.1:${origin.port}"
`;
  const p = await startPetrel({ apps: { acct: app }, limits: 'queue_timeout = "300ms"\nqueue_length = 4\nupstream_response_timeout = "500ms"' });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const raw = (req: string, abortAfterMs: number) =>
    new Promise<void>((resolve) => {
      const s = net.connect(p.httpPort, '127.0.0.1');
      s.on('error', () => undefined);
      s.on('close', () => resolve());
      s.write(req);
      setTimeout(() => s.destroy(), abortAfterMs);
    });
  const full = (path: string) =>
    new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: p.httpPort, path, headers: { host: 'acct.test' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      });
      req.on('error', () => resolve());
    });

  const jobs: Promise<void>[] = [];
  for (let i = 0; i < 6; i++) {
    jobs.push(full('/'));
    jobs.push(full('/slow?ms=100'));
    jobs.push(full('/reset'));
    jobs.push(full('/slow?ms=2000')); // response timeout (504) or queue timeout (503)
    // Client gone while its request is held (slow Machine or queued).
    jobs.push(raw('GET /slow?ms=400 HTTP/1.1\r\nHost: acct.test\r\n\r\n', 50));
    // Client gone half-way through its request body.
    jobs.push(raw('POST / HTTP/1.1\r\nHost: acct.test\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(1000), 30));
    // Client gone in the middle of a 4 MiB response.
    jobs.push(raw('GET /big HTTP/1.1\r\nHost: acct.test\r\n\r\n', 20));
  }
  await Promise.all(jobs);

  const routes = [...p.daemon.holder.current.apps.get('acct')!.byPort.values()];
  const slots = routes[0]!.slots;
  await waitFor(() => slots.every((s) => s.load === 0), 10_000, 'every Machine back to zero load');
  t.same(
    slots.map((s) => s.load),
    [0, 0],
    'Machine load back to zero',
  );
  await waitFor(() => p.daemon.holder.current.apps.get('acct')!.live.connections === 0, 10_000, 'no connections counted');
  t.equal(p.daemon.holder.current.apps.get('acct')!.live.connections, 0, 'app connection count back to zero');
  t.equal(routes[0]!.live.queue.filter((w) => w.resolve !== null).length, 0, 'nobody left in the queue');
  const codes = new Set(p.log.access().map((l) => l['code']));
  t.ok(codes.has(''), 'some requests completed');
  t.ok(codes.has('PH13') || codes.has('PC07') || codes.has('PC06'), `aborts were logged with codes (${[...codes].join(',')})`);

  // And the app still serves normally afterwards.
  await full('/');
  t.equal(p.log.access().at(-1)?.['status'], 200);
});

t.test('HTTP/2: a stream reset while queued frees its place and logs 499', async (t) => {
  const { default: http2 } = await import('node:http2');
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  const origin = await startOrigin((req, res) => {
    if (req.url === '/hold') return void held.then(() => res.end('held'));
    res.end('ok');
  });
  const app = `app = "q2"
[http_service]
internal_port = 8080
[http_service.concurrency]
type = "requests"
soft_limit = 1
hard_limit = 1
[http_service.tls_options]
default_self_signed = true
[[machines]]
id = "q2-1"
driver = "static"
address = "127.0.0.1:${origin.port}"
`;
  const p = await startPetrel({ apps: { q2: app }, limits: 'queue_timeout = "10s"' });
  t.teardown(async () => {
    release();
    await p.stop();
    await origin.close();
  });
  const session = http2.connect(`https://127.0.0.1:${p.httpsPort}`, { servername: 'q2.test', rejectUnauthorized: false });
  t.teardown(() => session.destroy());
  const first = session.request({ ':path': '/hold', ':authority': 'q2.test' });
  first.on('error', () => undefined);
  first.resume();
  const route = [...p.daemon.holder.current.apps.get('q2')!.byPort.values()][0]!;
  await waitFor(() => route.slots[0]!.load === 1, 5000, 'first request holds the Machine');
  const second = session.request({ ':path': '/queued', ':authority': 'q2.test' });
  second.on('error', () => undefined);
  await waitFor(() => route.live.queue.some((w) => w.resolve !== null), 5000, 'second request queued');
  second.close(http2.constants.NGHTTP2_CANCEL);
  await waitFor(() => route.live.queue.every((w) => w.resolve === null), 5000, 'place freed');
  await waitFor(() => p.log.access().some((l) => l['status'] === 499), 5000, 'a 499 line');
  t.pass('queue place freed at once and the exchange logged as 499');
  release();
  await waitFor(() => route.slots[0]!.load === 0, 5000, 'load back to zero');
  t.equal(route.slots[0]!.load, 0);
});

t.test('HTTP/2 on a `connections` service: a session is pinned to one Machine and counted once', async (t) => {
  const { default: http2 } = await import('node:http2');
  const a = await startOrigin(undefined, 'a');
  const b = await startOrigin(undefined, 'b');
  const app = `app = "pin"
[http_service]
internal_port = 8080
[http_service.concurrency]
type = "connections"
soft_limit = 1
[http_service.tls_options]
default_self_signed = true
[[machines]]
id = "pin-a"
driver = "static"
address = "127.0.0.1:${a.port}"
[[machines]]
id = "pin-b"
driver = "static"
address = "127.0.0.1:${b.port}"
`;
  const p = await startPetrel({ apps: { pin: app } });
  t.teardown(async () => {
    await p.stop();
    await a.close();
    await b.close();
  });
  const route = [...p.daemon.holder.current.apps.get('pin')!.byPort.values()][0]!;
  const names = async (session: import('node:http2').ClientHttp2Session, n: number) => {
    const got = await Promise.all(
      Array.from(
        { length: n },
        () =>
          new Promise<string>((resolve, reject) => {
            const req = session.request({ ':path': '/', ':authority': 'pin.test' });
            let body = '';
            req.setEncoding('utf8');
            req.on('data', (c: string) => (body += c));
            req.on('end', () => resolve((JSON.parse(body) as { name: string }).name));
            req.on('error', reject);
            req.end();
          }),
      ),
    );
    return new Set(got);
  };
  const s1 = http2.connect(`https://127.0.0.1:${p.httpsPort}`, { servername: 'pin.test', rejectUnauthorized: false });
  const s2 = http2.connect(`https://127.0.0.1:${p.httpsPort}`, { servername: 'pin.test', rejectUnauthorized: false });
  const first = await names(s1, 1);
  const n1 = await names(s1, 6);
  const n2 = await names(s2, 6);
  t.equal(n1.size, 1, 'every stream of a session goes to one Machine');
  t.same([...n1], [...first], 'the same one across requests');
  t.equal(n2.size, 1);
  t.not([...n1][0], [...n2][0], 'the second session (soft_limit 1) goes to the other Machine');
  t.same(
    route.slots.map((s) => s.load),
    [1, 1],
    'each session counted once, whatever its number of streams',
  );
  s1.close();
  s2.close();
  await waitFor(() => route.slots.every((s) => s.load === 0), 5000, 'load released when the sessions close');
  t.pass('load back to zero');
});
