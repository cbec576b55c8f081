// HTTP/1.x corners: HTTP/1.0 clients and chunked responses (de-chunked, then close),
// Expect: 100-continue relayed, pipelined requests with bodies, HEAD and 204/304 framing, and
// HTTP/2 requests with bodies.

import t from 'tap';
import http2 from 'node:http2';
import { rawExchange, startOrigin, startPetrel, staticApp } from './helpers/petrel.ts';

t.test('HTTP/1.x framing corners', async (t) => {
  const origin = await startOrigin((req, res) => {
    const u = req.url ?? '/';
    if (u === '/chunked') {
      // No Content-Length: node:http sends chunked to HTTP/1.1 peers (petrel talks 1.1 upstream).
      res.write('hello ');
      setTimeout(() => res.end('world'), 10);
      return;
    }
    if (u === '/204') {
      res.writeHead(204);
      return void res.end();
    }
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(`${req.method} ${u} ${n}`));
  });
  const p = await startPetrel({ apps: { web: staticApp('web', [{ id: 'web-1', port: origin.port }], 'hostnames = ["web.example"]\n[http_service.tls_options]\ndefault_self_signed = true') } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });

  const old = await rawExchange(p.httpPort, 'GET /chunked HTTP/1.0\r\nHost: web.test\r\n\r\n');
  t.match(old.text, /^HTTP\/1\.1 200 /, 'answered');
  t.notMatch(old.text, /transfer-encoding/i, 'no Transfer-Encoding to an HTTP/1.0 client (RFC 9112 §6.1)');
  t.match(old.text, /\r\n\r\nhello world$/, 'body de-chunked');
  t.ok(old.closed, 'and the end of the body is the close');

  const eleven = await rawExchange(p.httpPort, 'GET /chunked HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n');
  t.match(eleven.text, /transfer-encoding: chunked/i, 'HTTP/1.1 client gets the chunked body as is');
  t.match(eleven.text, /6\r\nhello \r\n/, 'chunks forwarded unchanged');

  const head = await rawExchange(p.httpPort, 'HEAD / HTTP/1.1\r\nHost: web.test\r\n\r\nGET /after-head HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n');
  t.match(head.text, /^HTTP\/1\.1 200 [^]*\r\n\r\nHTTP\/1\.1 200 [^]*GET \/after-head 0$/, 'HEAD has no body; the next response follows directly');

  const nc = await rawExchange(p.httpPort, 'GET /204 HTTP/1.1\r\nHost: web.test\r\n\r\nGET /after-204 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n');
  t.match(nc.text, /^HTTP\/1\.1 204 [^]*\r\n\r\nHTTP\/1\.1 200 [^]*GET \/after-204 0$/, '204 has no body');

  const piped = await rawExchange(
    p.httpPort,
    'POST /a HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nabcde' +
      'POST /b HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n' +
      'GET /c HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n',
  );
  t.match(piped.text, /POST \/a 5[^]*POST \/b 3[^]*GET \/c 0$/, 'pipelined requests with bodies, in order');

  // Expect: 100-continue: the interim response is relayed before the client sends its body.
  const cont = await new Promise<string>((resolve) => {
    import('node:net').then(({ default: net }) => {
      const s = net.connect(p.httpPort, '127.0.0.1');
      let text = '';
      let sent = false;
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (!sent && text.includes('100 Continue')) {
          sent = true;
          s.write('0123456789');
        }
      });
      s.on('close', () => resolve(text));
      s.write('POST /expect HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    });
  });
  t.match(cont, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 [^]*POST \/expect 10$/, '100 Continue relayed, then the final response');

  // HTTP/2 with a request body.
  const session = http2.connect(`https://127.0.0.1:${p.httpsPort}`, { servername: 'web.test', rejectUnauthorized: false });
  t.teardown(() => session.close());
  const h2 = await new Promise<string>((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/h2', ':authority': 'web.test' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.write('x'.repeat(70_000));
    req.end('y');
  });
  t.equal(h2, 'POST /h2 70001', 'HTTP/2 request body forwarded whole');
});
