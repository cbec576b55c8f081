// TLS-first public port (443, bound on loopback port 0) against real origins: SNI certificate
// choice, SNI/Host routing, TLS versions, ALPN (h2 and http/1.1), HTTP/2 error answers,
// force_https, the handshake deadline, and certificates added by a reload.

import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { createSelfSigned, type KeyPairPem } from '../src/tls/selfsigned.ts';
import { get, metricValue, pollUntil, scrapeMetrics, startOrigin, startPetrel, writeCert, type SimpleResponse } from './helpers/petrel.ts';

const fp = (pair: KeyPairPem): string => new X509Certificate(pair.certPem).fingerprint256;

/** An app with [http_service] on one static Machine; `tlsLines` go under [http_service.tls_options]. */
function app(name: string, port: number, o: { hostnames?: string[]; tlsLines?: string; serviceLines?: string } = {}): string {
  return `app = "${name}"
${o.hostnames ? `hostnames = ${JSON.stringify(o.hostnames)}` : ''}

[http_service]
internal_port = ${port}
${o.serviceLines ?? ''}
${o.tlsLines ? `[http_service.tls_options]\n${o.tlsLines}\n` : ''}
[[machines]]
id = "${name}-1"
driver = "static"
address = "127.0.0.1:${port}"
`;
}

interface Probe {
  readonly ok: boolean;
  readonly error: (Error & { code?: string }) | null;
  readonly fingerprint: string;
  readonly protocol: string | null;
  readonly alpn: string | false | null;
}

/** One TLS handshake; resolves with what was negotiated or with the error, never rejects. */
function probe(port: number, opts: tls.ConnectionOptions): Promise<Probe> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    let done = false;
    const finish = (p: Probe) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(p);
    };
    s.once('secureConnect', () =>
      finish({ ok: true, error: null, fingerprint: s.getPeerCertificate().fingerprint256 ?? '', protocol: s.getProtocol(), alpn: s.alpnProtocol ?? null }),
    );
    s.once('error', (error: Error & { code?: string }) => finish({ ok: false, error, fingerprint: '', protocol: null, alpn: null }));
    s.once('close', () => finish({ ok: false, error: new Error('closed before the handshake finished'), fingerprint: '', protocol: null, alpn: null }));
  });
}

interface HttpsResponse extends SimpleResponse {
  readonly alpn: string | false | null;
  readonly reused: boolean;
}

/** One HTTPS/1.1 request to 127.0.0.1:port with the given SNI and Host. */
function httpsGet(
  port: number,
  servername: string,
  host: string,
  pathName: string,
  opts: https.RequestOptions & { ALPNProtocols?: string[] } = {},
): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername, path: pathName, headers: { host }, agent: false, ...opts }, (res) => {
      let body = '';
      // Read now: a keep-alive agent takes the socket back before 'end'.
      const alpn = (res.socket as tls.TLSSocket).alpnProtocol ?? null;
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, alpn, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

interface H2Response {
  readonly headers: http2.IncomingHttpHeaders;
  readonly body: string;
}

function h2Request(session: http2.ClientHttp2Session, authority: string, pathName: string): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':authority': authority, ':path': pathName, ':scheme': 'https' });
    let headers: http2.IncomingHttpHeaders = {};
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (h) => (headers = h));
    req.on('data', (c: string) => (body += c));
    req.on('end', () => resolve({ headers, body }));
    req.on('error', reject);
    req.end();
  });
}

function h2Connect(port: number, opts: http2.SecureClientSessionOptions): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, opts);
    session.once('connect', () => {
      session.off('error', reject);
      resolve(session);
    });
    session.once('error', reject);
  });
}

async function tlsErrors(adminPort: number, code: string): Promise<number> {
  return metricValue(await scrapeMetrics(adminPort), 'petrel_tls_handshake_errors_total', { code }) ?? 0;
}

t.test('HTTPS with SNI reaches the Machine with the https forwarding headers', async (t) => {
  const origin = await startOrigin();
  const webCert = createSelfSigned(['web.test']);
  const p = await startPetrel({
    apps: {
      web: app('web', origin.port),
      dev: app('dev', origin.port, { tlsLines: 'default_self_signed = true' }),
    },
    certs: { web: webCert },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const r = await httpsGet(p.httpsPort, 'web.test', 'web.test', '/secure?q=1', { ca: webCert.certPem });
  t.equal(r.status, 200, 'certificate verified against the SNI name, request answered');
  const h = (JSON.parse(r.body) as { headers: Record<string, string>; url: string }).headers;
  t.equal(h['x-forwarded-proto'], 'https');
  t.equal(h['x-forwarded-ssl'], 'on');
  t.equal(h['x-forwarded-port'], '443', 'the public port, not the bound one');
  t.equal(h['fly-forwarded-port'], '443');
  t.equal(h['via'], '1.1 petrel');
  t.equal(h['fly-client-ip'], '127.0.0.1');
  t.equal(h['host'], 'web.test');
  t.equal(r.headers['server'], 'petrel');
  t.match(r.headers['fly-request-id'], /-tst$/);

  // An app with default_self_signed and no cert of its own gets petrel's self-signed one.
  const selfSigned = readFileSync(path.join(p.dir, 'certs', '_self-signed', 'cert.pem'), 'utf8');
  const dev = await httpsGet(p.httpsPort, 'dev.test', 'dev.test', '/', { ca: selfSigned });
  t.equal(dev.status, 200, 'self-signed default verifies for the app name');
  // No SNI at all (an IP literal): the port's default certificate, routing by Host alone.
  const noSni = await probe(p.httpsPort, { servername: '' });
  t.ok(noSni.ok, 'a client without SNI gets the default certificate');
  t.equal(noSni.fingerprint, new X509Certificate(selfSigned).fingerprint256);
  const byHost = await httpsGet(p.httpsPort, '', 'web.test', '/no-sni', { rejectUnauthorized: false });
  t.equal(byHost.status, 200, 'without SNI the request is routed by Host');
  const line = p.log.access().find((l) => l['app'] === 'web');
  t.equal(line?.['status'], 200);
  t.equal(line?.['path'], '/secure?q=1');
});

t.test('SNI: exact cert beats wildcard, wildcard covers one label; unknown SNI fails the handshake (PT05); SNI/Host mismatch is 421', async (t) => {
  const origin = await startOrigin();
  const exact = createSelfSigned(['a.wild.test']);
  const star = createSelfSigned(['*.wild.test']);
  const p = await startPetrel({
    apps: { wild: app('wild', origin.port, { hostnames: ['*.wild.test'] }) },
    certs: { 'a-exact': exact, star },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const ca = [exact.certPem, star.certPem];

  const a = await probe(p.httpsPort, { servername: 'a.wild.test', ca, rejectUnauthorized: true });
  t.ok(a.ok, 'a.wild.test handshake');
  t.equal(a.fingerprint, fp(exact), 'exact certificate for a.wild.test');
  const b = await probe(p.httpsPort, { servername: 'b.wild.test', ca, rejectUnauthorized: true });
  t.ok(b.ok, 'b.wild.test handshake');
  t.equal(b.fingerprint, fp(star), 'wildcard certificate for b.wild.test');
  const upper = await probe(p.httpsPort, { servername: 'B.WILD.TEST', checkServerIdentity: () => undefined });
  t.equal(upper.fingerprint, fp(star), 'SNI is case-insensitive');

  const before = await tlsErrors(p.adminPort, 'PT05');
  const deep = await probe(p.httpsPort, { servername: 'x.b.wild.test' });
  t.notOk(deep.ok, 'a wildcard does not cover two labels: no cert, handshake refused');
  const unknown = await probe(p.httpsPort, { servername: 'nobody.example' });
  t.notOk(unknown.ok, 'unknown SNI without a default cert: handshake refused');
  await pollUntil(async () => (await tlsErrors(p.adminPort, 'PT05')) >= before + 2, 'PT05 handshake errors on /metrics');
  t.equal(await tlsErrors(p.adminPort, 'PT05'), before + 2, 'petrel_tls_handshake_errors_total{code="PT05"} counts both');

  const ok = await httpsGet(p.httpsPort, 'b.wild.test', 'b.wild.test', '/', { ca });
  t.equal(ok.status, 200, 'wildcard hostname routes to the app');
  const mis = await httpsGet(p.httpsPort, 'a.wild.test', 'b.wild.test', '/', { ca });
  t.equal(mis.status, 421, 'Host differs from SNI: misdirected');
  t.equal(mis.headers['x-petrel-error'], 'PR03');
  t.match(mis.body, /^PR03 /);
  const hostWithPort = await httpsGet(p.httpsPort, 'a.wild.test', `a.wild.test:${p.httpsPort}`, '/', { ca });
  t.equal(hostWithPort.status, 200, 'a port in Host does not make it a mismatch');
  t.equal(origin.requests.length, 2, 'the 421 never reached the Machine');
});

t.test('TLS versions: 1.1 refused, a TLS 1.3-only app refuses a TLS 1.2-max client', async (t) => {
  const origin = await startOrigin();
  const certs = { web: createSelfSigned(['web.test']), modern: createSelfSigned(['modern.test']) };
  const shared = await startPetrel({
    apps: {
      web: app('web', origin.port),
      modern: app('modern', origin.port, { tlsLines: 'versions = ["TLSv1.3"]' }),
    },
    certs,
  });
  const only13 = await startPetrel({ apps: { modern: app('modern', origin.port, { tlsLines: 'versions = ["TLSv1.3"]' }) }, certs });
  t.teardown(async () => {
    await shared.stop();
    await only13.stop();
    await origin.close();
  });
  // OpenSSL 3 refuses TLS < 1.2 below security level 0 on the client side already; lower it so
  // the refusal we see is the server's.
  const legacy = { ciphers: 'DEFAULT:@SECLEVEL=0', minVersion: 'TLSv1' as const };
  const v11 = await probe(shared.httpsPort, { servername: 'web.test', ...legacy, maxVersion: 'TLSv1.1' });
  t.notOk(v11.ok, 'TLS 1.1 refused');
  const v12legacy = await probe(shared.httpsPort, { servername: 'web.test', ...legacy, maxVersion: 'TLSv1.2' });
  t.ok(v12legacy.ok, 'the same client allowed TLS 1.2 gets through (so the refusal was the version)');
  t.equal(v12legacy.protocol, 'TLSv1.2');

  const web12 = await probe(shared.httpsPort, { servername: 'web.test', maxVersion: 'TLSv1.2' });
  t.equal(web12.protocol, 'TLSv1.2', 'an app allowing both versions takes TLS 1.2');
  const modern12 = await probe(shared.httpsPort, { servername: 'modern.test', maxVersion: 'TLSv1.2' });
  t.notOk(modern12.ok, 'TLS 1.3-only app on a shared port refuses a TLS 1.2-max client');
  const modern13 = await probe(shared.httpsPort, { servername: 'modern.test' });
  t.equal(modern13.protocol, 'TLSv1.3', 'and accepts TLS 1.3');

  const alone12 = await probe(only13.httpsPort, { servername: 'modern.test', maxVersion: 'TLSv1.2' });
  t.notOk(alone12.ok, 'port whose only app is TLS 1.3-only refuses TLS 1.2');
  const r = await httpsGet(only13.httpsPort, 'modern.test', 'modern.test', '/', { ca: certs.modern.certPem, minVersion: 'TLSv1.3' });
  t.equal(r.status, 200);
});

t.test('ALPN: h2 for clients offering it, http/1.1 otherwise; HTTP/2 answers and errors', async (t) => {
  const origin = await startOrigin();
  const webCert = createSelfSigned(['web.test']);
  const p = await startPetrel({
    apps: { web: app('web', origin.port, { tlsLines: 'default_self_signed = true' }) },
    certs: { web: webCert },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const both = await probe(p.httpsPort, { servername: 'web.test', ALPNProtocols: ['http/1.1', 'h2'] });
  t.equal(both.alpn, 'h2', 'server preference: h2');
  const h1only = await probe(p.httpsPort, { servername: 'web.test', ALPNProtocols: ['http/1.1'] });
  t.equal(h1only.alpn, 'http/1.1', 'client offering only http/1.1 gets http/1.1');
  const none = await probe(p.httpsPort, { servername: 'web.test' });
  t.equal(none.alpn, false, 'no ALPN offered, none selected');

  // HTTP/1.1 over a connection that negotiated http/1.1.
  const h1 = await httpsGet(p.httpsPort, 'web.test', 'web.test', '/h1', { ca: webCert.certPem, ALPNProtocols: ['http/1.1'] });
  t.equal(h1.alpn, 'http/1.1');
  t.equal(h1.status, 200);
  t.equal((JSON.parse(h1.body) as { headers: Record<string, string> }).headers['via'], '1.1 petrel');

  const session = await h2Connect(p.httpsPort, { servername: 'web.test', ca: webCert.certPem });
  t.teardown(() => session.destroy());
  t.equal(session.alpnProtocol, 'h2');
  const r = await h2Request(session, 'web.test', '/h2?x=1');
  t.equal(r.headers[':status'], 200);
  const echo = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
  t.equal(echo.url, '/h2?x=1');
  t.equal(echo.headers['via'], '2 petrel', 'the Machine sees via: 2 petrel');
  t.equal(echo.headers['x-forwarded-proto'], 'https');
  t.equal(echo.headers['x-forwarded-port'], '443');
  t.equal(echo.headers['host'], 'web.test');
  t.equal(r.headers['server'], 'petrel');
  t.equal(r.headers['via'], '2 petrel');
  t.match(r.headers['fly-request-id'], /-tst$/);
  t.equal(r.headers['fly-request-id'], echo.headers['fly-request-id']);
  t.equal(r.headers['x-origin'], 'origin', "the Machine's own headers come through");

  // Several streams on the one connection.
  const many = await Promise.all([1, 2, 3, 4].map((i) => h2Request(session, 'web.test', `/s${i}`)));
  t.same(
    many.map((m) => (JSON.parse(m.body) as { url: string }).url),
    ['/s1', '/s2', '/s3', '/s4'],
    'concurrent streams each get their own answer',
  );

  const mis = await h2Request(session, 'other.test', '/');
  t.equal(mis.headers[':status'], 421, ':authority other than the SNI is misdirected');
  t.equal(mis.headers['x-petrel-error'], 'PR03');

  // Unknown :authority matching its SNI (served the self-signed default): 404 PR02.
  const stray = await h2Connect(p.httpsPort, { servername: 'nope.test', rejectUnauthorized: false });
  t.teardown(() => stray.destroy());
  const nf = await h2Request(stray, 'nope.test', '/');
  t.equal(nf.headers[':status'], 404);
  t.equal(nf.headers['x-petrel-error'], 'PR02');
  t.match(nf.body, /^PR02 /);
  t.equal(nf.headers['server'], 'petrel');
  t.ok(nf.headers['fly-request-id'], 'error answers carry a request id');

  const h2lines = p.log.access().filter((l) => l['proto'] === 'h2');
  t.ok(h2lines.some((l) => l['status'] === 404 && l['code'] === 'PR02'), 'access line for the h2 404');
  t.ok(h2lines.some((l) => l['status'] === 200 && l['path'] === '/h2?x=1' && l['machine'] === 'web-1'), 'access line for the h2 200');
});

t.test('force_https: 301 to the TLS port on plaintext, served over TLS', async (t) => {
  const origin = await startOrigin();
  const cert = createSelfSigned(['secure.test']);
  const p = await startPetrel({
    apps: {
      secure: app('secure', origin.port, { serviceLines: 'force_https = true' }),
      plain: app('plain', origin.port),
    },
    certs: { secure: cert },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const r = await get(p.httpPort, 'secure.test', '/some/path?q=1');
  t.equal(r.status, 301);
  t.equal(r.headers['location'], `https://secure.test:${p.httpsPort}/some/path?q=1`, 'Location names the bound TLS port');
  t.equal(r.headers['server'], 'petrel');
  const s = await httpsGet(p.httpsPort, 'secure.test', 'secure.test', '/some/path?q=1', { ca: cert.certPem });
  t.equal(s.status, 200, 'the same request over TLS is served');
  const other = await get(p.httpPort, 'plain.test', '/');
  t.equal(other.status, 200, 'an app without force_https is served over plaintext');
  t.equal(origin.requests.length, 2, 'the redirect never reached the Machine');
});

t.test('a client that sends nothing is closed after tls_handshake_timeout', async (t) => {
  const origin = await startOrigin();
  const p = await startPetrel({
    apps: { web: app('web', origin.port, { tlsLines: 'default_self_signed = true' }) },
    limits: 'tls_handshake_timeout = "300ms"',
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const before = await tlsErrors(p.adminPort, 'PT02');
  const silent = (first: Buffer | null) =>
    new Promise<boolean>((resolve) => {
      const s = net.connect(p.httpsPort, '127.0.0.1');
      if (first !== null) s.write(first);
      s.on('data', () => undefined);
      s.on('error', () => undefined);
      s.once('close', () => resolve(true));
    });
  t.ok(await silent(null), 'silent client: closed by petrel');
  // A TLS record header announcing a ClientHello that never comes.
  t.ok(await silent(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])), 'stalled ClientHello: closed by petrel');
  await pollUntil(async () => (await tlsErrors(p.adminPort, 'PT02')) >= before + 2, 'PT02 handshake timeouts on /metrics');
  t.pass('both counted as petrel_tls_handshake_errors_total{code="PT02"}');
});

t.test('a reload that adds a certificate directory serves the new cert without restart', async (t) => {
  const origin = await startOrigin();
  const webCert = createSelfSigned(['web.test']);
  const p = await startPetrel({
    apps: {
      web: app('web', origin.port),
      late: app('late', origin.port, { hostnames: ['late.example'] }),
    },
    certs: { web: webCert },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const before = await probe(p.httpsPort, { servername: 'late.example' });
  t.notOk(before.ok, 'no certificate for late.example yet');

  // A keep-alive TLS connection opened before the reload carries on after it.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: webCert.certPem });
  t.teardown(() => agent.destroy());
  const first = await httpsGet(p.httpsPort, 'web.test', 'web.test', '/before', { agent });
  t.equal(first.status, 200);

  const lateCert = createSelfSigned(['late.example']);
  writeCert(p.dir, 'late', lateCert);
  const outcome = await p.daemon.reload();
  t.ok(outcome.ok, 'reload accepted');

  const after = await probe(p.httpsPort, { servername: 'late.example', ca: lateCert.certPem, rejectUnauthorized: true });
  t.ok(after.ok, 'handshake succeeds after the reload');
  t.equal(after.fingerprint, fp(lateCert), 'the new certificate is served');
  const r = await httpsGet(p.httpsPort, 'late.example', 'late.example', '/', { ca: lateCert.certPem });
  t.equal(r.status, 200);
  const again = await httpsGet(p.httpsPort, 'web.test', 'web.test', '/after', { agent });
  t.equal(again.status, 200);
  t.ok(again.reused, 'the pre-reload connection was reused');
  const web = await probe(p.httpsPort, { servername: 'web.test' });
  t.equal(web.fingerprint, fp(webCert), 'existing certificates still served');
});

t.test('an IP literal sent as SNI (wrk, scripts) is treated as no SNI: default cert, routed by Host', async (t) => {
  const { spawn, spawnSync } = await import('node:child_process');
  if (spawnSync('openssl', ['version']).status !== 0) {
    t.plan(0, 'needs the openssl command (Debian package openssl)');
    return;
  }
  const origin = await startOrigin();
  const p = await startPetrel({ apps: { web: app('web', origin.port, { tlsLines: 'default_self_signed = true' }) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  // Node's TLS client refuses to send an IP as SNI; openssl sends what it is told. Spawned
  // asynchronously: petrel runs in this process and must keep serving meanwhile.
  const child = spawn('openssl', ['s_client', '-quiet', '-ign_eof', '-connect', `127.0.0.1:${p.httpsPort}`, '-servername', '127.0.0.1']);
  let stdout = '';
  child.stdout.setEncoding('latin1');
  child.stdout.on('data', (c: string) => (stdout += c));
  child.stderr.resume();
  child.stdin.end('GET /ip-sni HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n');
  const killer = setTimeout(() => child.kill(), 10_000);
  await new Promise((r) => child.once('close', r));
  clearTimeout(killer);
  const r = { stdout };
  t.match(r.stdout, /^HTTP\/1\.1 200 /, 'handshake with the default certificate, then routed by Host');
  t.notMatch(r.stdout, /PR03/, 'no SNI/Host mismatch for an IP literal');
});
