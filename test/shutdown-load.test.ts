// Acceptance (issue 2): "SIGTERM under load: in-flight requests complete, new connections are
// refused, exit 0", and graceful shutdown stops the Machines petrel started. petrel runs as a
// real process; requests are "in flight" because the origin holds them (/gate) until the test
// releases them, so nothing here depends on timing.

import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import t from 'tap';
import { requireBinary } from './helpers/deps.ts';
import {
  DEMO_MACHINE,
  TOKEN,
  makeNodeDir,
  pidAlive,
  request,
  startOrigin,
  startPetrelProcess,
  startWrk,
  tryConnect,
  until,
  webApp,
  type Reply,
} from './helpers/spawn-petrel.ts';


function httpsGet(port: number, host: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path, servername: host, headers: { host }, rejectUnauthorized: false, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function h2Get(port: number, host: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { servername: host, rejectUnauthorized: false });
    session.on('error', reject);
    const req = session.request({ ':path': path, ':authority': host });
    let status = 0;
    let headers: http.IncomingHttpHeaders = {};
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (h) => {
      status = Number(h[':status']);
      headers = h as http.IncomingHttpHeaders;
    });
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      session.close();
      resolve({ status, headers, body });
    });
    req.on('error', (err) => {
      session.destroy();
      reject(err);
    });
    req.end();
  });
}

/** Settles a promise into a value either way, so one failure does not hide the others. */
function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (err: Error) => ({ ok: false as const, error: `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` }),
  );
}

t.test('SIGTERM with requests in flight: they complete, new connections are refused, exit 0', async (t) => {
  const origin = await startOrigin(t, 'web-origin');
  const nd = makeNodeDir(t, { apps: { web: webApp(origin.port) } });
  const p = await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });
  t.equal((await request(p.httpPort, { host: 'web.test' })).status, 200, 'serving');

  // In flight: 4 HTTP/1.1, 2 HTTPS/1.1, 2 HTTP/2 streams, all held at the origin.
  const inflight = [
    ...[0, 1, 2, 3].map((i) => settle(request(p.httpPort, { host: 'web.test', path: `/gate?h1=${i}` }))),
    ...[0, 1].map((i) => settle(httpsGet(p.httpsPort, 'web.test', `/gate?tls=${i}`))),
    ...[0, 1].map((i) => settle(h2Get(p.httpsPort, 'web.test', `/gate?h2=${i}`))),
  ];
  t.ok(await until(() => origin.held === inflight.length, 15_000), `all ${inflight.length} requests reached the origin and wait there`);

  p.signal('SIGTERM');

  // New connections are refused once the listeners are closed; the held requests are still open.
  let accepted = 0;
  const refused80 = await until(async () => {
    const r = await tryConnect(p.httpPort);
    if (r === null) accepted++;
    return r === 'ECONNREFUSED';
  }, 15_000, 10);
  t.ok(refused80, `new connections to the http port are refused (ECONNREFUSED) after SIGTERM`);
  t.equal(await tryConnect(p.httpsPort), 'ECONNREFUSED', 'new connections to the https port are refused too');
  t.comment(`connect attempts accepted between SIGTERM and the listener close: ${accepted}`);
  t.equal(origin.held, inflight.length, 'the in-flight requests were still held when the refusals were seen');
  t.ok(p.running, 'petrel is still draining');

  // Not ready any more while draining (load balancers / anycast withdraw on this).
  const ready = await settle(request(p.adminPort, { path: '/readyz' }));
  t.ok(ready.ok && ready.value.status === 503, `/readyz answers 503 while draining (${ready.ok ? ready.value.status : ready.error})`);

  origin.release();
  const results = await Promise.all(inflight);
  const statuses = results.map((r) => (r.ok ? r.value.status : r.error));
  t.same(statuses, inflight.map(() => 200), 'every in-flight request completed with 200');
  for (const r of results.slice(0, 6)) {
    if (r.ok) t.equal(r.value.headers['connection'], 'close', 'HTTP/1.1 responses during the drain say connection: close');
  }
  for (const r of results) if (r.ok) t.match(r.value.body, /"name":"web-origin"/, 'full body from the origin');

  const exit = await p.waitExit(40_000);
  t.same(exit, { code: 0, signal: null }, 'exit code 0');
  t.match(p.stdout.join('\n'), /petrel stopped/, 'logs petrel stopped');
});

t.test('SIGTERM while wrk runs: exit 0, no non-2xx, only connect errors after the close', async (t) => {
  const wrk = requireBinary(t, 'wrk', 'wrk');
  if (!wrk) return;
  const origin = await startOrigin(t, 'web-origin');
  const nd = makeNodeDir(t, { apps: { web: webApp(origin.port) } });
  const p = await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });

  // wrk runs until well after petrel is gone (SIGINT: summary, exit 0), however slow a loaded
  // machine is; -d is only a backstop.
  const run = startWrk(t, wrk, ['-t1', '-c8', '-d120s', '-H', 'Host: web.test', `http://127.0.0.1:${p.httpPort}/`]);
  t.ok(await until(() => origin.received >= 200, 15_000), 'load is flowing');
  const atSigterm = origin.received;
  p.signal('SIGTERM');
  const exit = await p.waitExit(40_000);
  t.same(exit, { code: 0, signal: null }, 'exit code 0 under load');
  await new Promise((r) => setTimeout(r, 300)); // wrk tries to reconnect to the closed listener
  run.child.kill('SIGINT');
  const res = await run.done;
  t.comment(`wrk: ${res.requests} requests (${atSigterm} served before SIGTERM); socket errors ${JSON.stringify(res.socketErrors)}`);
  t.ok(res.requests > 0);
  // What is asserted, and why:
  // - every response wrk got was a 2xx (no "Non-2xx or 3xx responses" line);
  // - read errors 0: wrk counts a read error when a connection it wrote a request on ends
  //   without the response (n == 0 before the message is complete), i.e. a request cut by the
  //   drain. After a response that says `connection: close` wrk reconnects instead, no error;
  // - timeouts 0: nothing was left hanging.
  // Not asserted: write and connect errors. After the drain closes its connections, wrk
  // reconnects to a listener that is gone until -d ends. For plain http wrk's connect hook is a
  // no-op and a refused non-blocking connect only shows up as EPOLLERR on the writable handler,
  // so each refused reconnect counts as a *write* error (tens of thousands of them); none of
  // them carried a request. The in-process client test below classifies each failure exactly.
  t.notOk(res.non2xxLine, `no "Non-2xx or 3xx responses"\n${res.output}`);
  t.equal(res.socketErrors.read, 0, `no read errors (a request cut by the drain)\n${res.output}`);
  t.equal(res.socketErrors.timeout, 0, 'no timeouts');
  t.ok(res.socketErrors.connect + res.socketErrors.write > 0, 'refused reconnects after the listener closed (reported by wrk as connect or write errors)');
});

t.test('graceful shutdown stops the process Machines petrel started', async (t) => {
  const nd = makeNodeDir(t, {
    apps: {
      hello: `app = "hello"

[http_service]
internal_port = 8080

[[machines]]
id = "hello-p1"
driver = "process"
cmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]
`,
    },
  });
  const p = await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });
  const list = await request(p.adminPort, { path: '/v1/apps/hello/machines', headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(list.status, 200);
  const machines = JSON.parse(list.body) as { id: string; pid?: number; state: string }[];
  const pid = machines.find((m) => m.id === 'hello-p1')?.pid;
  t.type(pid, 'number', `the Machine has a pid: ${list.body}`);
  if (typeof pid !== 'number') return;
  // Our recorded pid: killed on teardown if petrel left it behind (the bug this test looks for).
  t.teardown(() => {
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  });
  t.ok(pidAlive(pid), 'the Machine process runs');

  // The demo binds its port right after spawn: retry until it answers through petrel.
  let last: Reply | null = null;
  await until(async () => {
    last = await request(p.httpPort, { host: 'hello.test' }).catch(() => null);
    return last?.status === 200;
  }, 15_000, 50);
  t.equal(last!.status, 200, 'reachable through petrel');
  t.match(last!.body, /"machine": "hello-p1"/, 'answered by the Machine');

  p.signal('SIGTERM');
  const exit = await p.waitExit(40_000);
  t.same(exit, { code: 0, signal: null }, 'exit 0');
  t.notOk(pidAlive(pid), `the Machine process ${pid} is gone after petrel exits`);
  t.match(p.stdout.join('\n'), /Machine stopped/, 'logs the Machine stop');
});
