// petrel as a long-running process: a storm of malformed, oversized and half-open connections
// does not take it down (it keeps serving, its admin /healthz answers, its counters come back
// to zero), SIGINT shuts it down as cleanly as SIGTERM, and its start-up log line reaches stdout
// while it runs.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import {
  TOKEN,
  makeNodeDir,
  request,
  startOrigin,
  startPetrelProcess,
  tryConnect,
  until,
  webApp,
  type Origin,
  type PetrelProcess,
} from './helpers/spawn-petrel.ts';


async function setup(t: Test, limits = ''): Promise<{ origin: Origin; p: PetrelProcess }> {
  const origin = await startOrigin(t, 'web-origin');
  const nd = makeNodeDir(t, { apps: { web: webApp(origin.port) }, limits });
  const p = await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });
  return { origin, p };
}

interface Outcome {
  readonly text: string;
  /** The server ended or reset the connection (as opposed to our safety timer). */
  readonly closed: boolean;
  readonly error: string | null;
}

/**
 * Connects, writes `data` (optionally half-closing after it), and collects the answer until the
 * server closes. `safetyMs` only keeps a broken server from hanging the test.
 */
function exchange(port: number, data: Buffer | string, opts: { end?: boolean; safetyMs?: number; socket?: net.Socket } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = opts.socket ?? net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let error: string | null = null;
    const timer = setTimeout(() => finish(false), opts.safetyMs ?? 20_000);
    let done = false;
    function finish(closed: boolean): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, error });
    }
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    s.on('close', () => finish(true));
    s.on('end', () => finish(true));
    if (data.length > 0) s.write(data);
    if (opts.end) s.end();
  });
}

function statusOf(text: string): number {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
  return m ? Number(m[1]) : 0;
}

async function connectionsOf(adminPort: number, app: string): Promise<number> {
  const r = await request(adminPort, { path: '/v1/apps', headers: { authorization: `Bearer ${TOKEN}` } });
  const apps = JSON.parse(r.body) as { name: string; connections: number }[];
  return apps.find((a) => a.name === app)?.connections ?? -1;
}

t.test('a storm of malformed, oversized and half-open connections: petrel keeps serving', async (t) => {
  const { p } = await setup(t, 'header_read_timeout = "2s"');
  const port = p.httpPort;
  const big = 'a'.repeat(1 << 20);
  const manyHeaders = Array.from({ length: 300 }, (_, i) => `x-h${i}: v\r\n`).join('');

  // Each kind: what to send, and the statuses that are a correct answer (0 = closed with no
  // response, which is right for garbage that never formed a request or when the client's
  // own write was cut by the close).
  const kinds: { name: string; data: () => Buffer | string; end?: boolean; ok: number[] }[] = [
    { name: 'random bytes', data: () => randomBytes(4096), ok: [400, 0] },
    { name: 'garbage request line', data: () => 'HELLO THERE\r\n\r\n', ok: [400] },
    { name: 'NUL in a header', data: () => 'GET / HTTP/1.1\r\nHost: web.test\r\nX-A: a\0b\r\n\r\n', ok: [400] },
    { name: 'bare LF', data: () => 'GET / HTTP/1.1\nHost: web.test\n\n', ok: [400] },
    { name: 'CL + TE', data: () => 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', ok: [400] },
    { name: 'two Content-Length', data: () => 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', ok: [400] },
    { name: 'bad chunk size', data: () => 'POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', ok: [400] },
    { name: '1 MiB header', data: () => `GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: ${big}\r\n\r\n`, ok: [431, 0] },
    { name: '300 headers', data: () => `GET / HTTP/1.1\r\nHost: web.test\r\n${manyHeaders}\r\n`, ok: [431] },
    { name: 'huge URI', data: () => `GET /${big.slice(0, 64 * 1024)} HTTP/1.1\r\nHost: web.test\r\n\r\n`, ok: [414, 431, 0] },
    { name: 'HTTP/9.9', data: () => 'GET / HTTP/9.9\r\nHost: web.test\r\n\r\n', ok: [400, 505] },
    // Half-open: a whole request then FIN. petrel answers when the request already went to a
    // pooled Machine connection, and gives the request up (499, no answer) when the FIN arrives
    // while it still waits for a connection or capacity (h1.ts onEnd, by design, like nginx).
    { name: 'request then half-close', data: () => 'GET / HTTP/1.1\r\nHost: web.test\r\n\r\n', end: true, ok: [200, 0] },
    // Half-open with nothing sent: closed quietly.
    { name: 'connect then half-close', data: () => '', end: true, ok: [0] },
    // Half a head and then silence: the header read timeout answers 408.
    { name: 'partial head, then silence', data: () => 'GET / HTTP/1.1\r\nHost: web.te', ok: [408] },
  ];

  const REPEAT = 15;
  const runs: Promise<{ kind: string; status: number; closed: boolean; ok: boolean; error: string | null }>[] = [];
  for (let i = 0; i < REPEAT; i++) {
    for (const k of kinds) {
      runs.push(
        exchange(port, k.data(), { end: k.end }).then((o) => {
          const status = statusOf(o.text);
          return { kind: k.name, status, closed: o.closed, ok: k.ok.includes(status), error: o.error };
        }),
      );
    }
  }
  // Idle connections that never send a byte, and TLS-port abuse, alongside.
  const idle = Array.from({ length: 20 }, () => net.connect(port, '127.0.0.1'));
  for (const s of idle) s.on('error', () => undefined);
  const tlsGarbage = Array.from({ length: 10 }, () => exchange(p.httpsPort, randomBytes(2048)));
  const tlsAborted = Array.from({ length: 10 }, () =>
    new Promise<void>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: p.httpsPort, servername: 'web.test', rejectUnauthorized: false });
      s.on('error', () => resolve());
      s.on('secureConnect', () => {
        s.write('GET / HTTP/1.1\r\nHost: web.te');
        s.destroy();
        resolve();
      });
    }),
  );

  const results = await Promise.all(runs);
  const bad = results.filter((r) => !r.ok || !r.closed);
  t.same(bad, [], `every malformed connection got an allowed answer and was closed (${results.length} connections)`);
  const byKind = new Map<string, Set<number>>();
  for (const r of results) (byKind.get(r.kind) ?? byKind.set(r.kind, new Set()).get(r.kind)!).add(r.status);
  t.comment(`statuses seen: ${[...byKind].map(([k, v]) => `${k}: ${[...v].join('/')}`).join('; ')}`);
  const tlsOut = await Promise.all(tlsGarbage);
  t.ok(tlsOut.every((o) => o.closed), 'garbage on the TLS port: connections closed');
  await Promise.all(tlsAborted);

  // Still alive and serving, with the idle connections still open.
  t.ok(p.running, 'petrel is still running');
  const health = await request(p.adminPort, { path: '/healthz' });
  t.equal(health.status, 200, 'admin /healthz 200');
  const ok = await request(port, { host: 'web.test' });
  t.equal(ok.status, 200, 'a good request is proxied');
  t.match(ok.body, /web-origin/);

  for (const s of idle) s.destroy();
  // Every error path gave back its connection count.
  t.ok(await until(async () => (await connectionsOf(p.adminPort, 'web')) === 0, 15_000), 'app connection count back to 0');
  t.same(p.stderr.filter((l) => /uncaught|unhandled|Error:/i.test(l)), [], 'nothing alarming on stderr');
  t.notMatch(p.stdout.join('\n'), /uncaught exception|unhandled rejection/, 'no uncaught exceptions logged');

  const exit = (p.signal('SIGTERM'), await p.waitExit(40_000));
  t.same(exit, { code: 0, signal: null }, 'clean exit after the storm');
});

t.test('a client that half-closes in the middle of a request body: the exchange is aborted at once', async (t) => {
  // idle_timeout (the request-body stall limit) is set far beyond the test's 20 s safety net: a
  // connection only counts as closed here if petrel ends it because the body can never complete
  // (the client sent FIN), not because the body timer ran out.
  const { p } = await setup(t, 'idle_timeout = "10m"');
  // Warm the upstream pool with overlapping requests (several pooled Machine connections), so
  // that both paths run: a pooled connection (head and body bytes forwarded at once, FIN seen
  // while forwarding the body) and a fresh connect (FIN seen while connecting).
  const warm = await Promise.all(Array.from({ length: 6 }, () => request(p.httpPort, { host: 'web.test', path: '/slow?ms=200' })));
  t.same(warm.map((r) => r.status), warm.map(() => 200), 'pool warmed');
  const outcomes = await Promise.all(
    Array.from({ length: 12 }, () => exchange(p.httpPort, 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100\r\n\r\nabc', { end: true, safetyMs: 10_000 })),
  );
  const held = outcomes.filter((o) => !o.closed).length;
  t.equal(held, 0, `petrel closed every truncated-body connection itself (${held} of ${outcomes.length} were still open after 10 s, with idle_timeout 10m)`);
  for (const o of outcomes) {
    const st = statusOf(o.text);
    t.ok(st === 0 || st === 400, `no response or 400 for a body that cannot complete (got ${st || 'none'})`);
  }
  t.ok(await until(async () => (await connectionsOf(p.adminPort, 'web')) === 0, 5_000), 'app connection count back to 0');
  t.equal((await request(p.httpPort, { host: 'web.test' })).status, 200, 'still serving');
});

t.test('SIGINT shuts down cleanly: in-flight request completes, idle keep-alive closed, exit 0', async (t) => {
  const { origin, p } = await setup(t);
  // An idle keep-alive connection, kept by an agent after one request.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const first = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: p.httpPort, path: '/', headers: { host: 'web.test' }, agent }, resolve);
    req.on('error', reject);
  });
  first.resume();
  const idleSocket = first.socket;
  await new Promise((r) => first.on('end', r));
  const idleClosed = new Promise<void>((resolve) => idleSocket.once('close', () => resolve()));

  const inflight = request(p.httpPort, { host: 'web.test', path: '/gate' });
  t.ok(await until(() => origin.held === 1, 15_000), 'request held at the origin');

  p.signal('SIGINT');
  t.ok(await until(async () => (await tryConnect(p.httpPort)) === 'ECONNREFUSED', 15_000, 10), 'new connections refused after SIGINT');
  await idleClosed;
  t.pass('the idle keep-alive connection was closed by the drain');
  origin.release();
  const r = await inflight;
  t.equal(r.status, 200, 'in-flight request completed');
  t.equal(r.headers['connection'], 'close');
  const exit = await p.waitExit(40_000);
  t.same(exit, { code: 0, signal: null }, 'SIGINT: exit code 0');
  t.match(p.stdout.join('\n'), /petrel stopped/);
});

t.test('a second SIGTERM during the drain exits at once with code 1', async (t) => {
  const { origin, p } = await setup(t);
  const inflight = request(p.httpPort, { host: 'web.test', path: '/gate' }).catch((e: Error) => e);
  t.ok(await until(() => origin.held === 1, 15_000));
  p.signal('SIGTERM');
  t.ok(await until(async () => (await tryConnect(p.httpPort)) === 'ECONNREFUSED', 15_000, 10), 'draining');
  p.signal('SIGTERM');
  const exit = await p.waitExit(20_000);
  t.same(exit, { code: 1, signal: null }, 'exit 1 on the second signal');
  t.ok(p.stderr.some((l) => /SIGTERM again/.test(l)), 'says why');
  t.type(await inflight, Error, 'the held request was cut');
});

t.test('the "petrel started" JSON line reaches stdout while petrel runs', async (t) => {
  const { p } = await setup(t);
  // petrel buffers stdout (sonic-boom minLength 4 KiB) with no timed flush, so on a quiet node
  // the start-up line waits in the buffer until 4 KiB of logs pile up or the process exits.
  // Log shippers (journald, docker logs, kubectl logs) and this test want it promptly; 5 s here
  // is a safety net for "ever, while running", not a latency requirement.
  const line = await p.waitForLog('petrel started', 5_000).catch(() => null);
  t.ok(line !== null, `"petrel started" on stdout while running\n${p.output()}`);
  if (line !== null) {
    t.type(line['ports'], 'object');
    t.match(String(line['admin']), /^127\.0\.0\.1:\d+$/);
  }
});
