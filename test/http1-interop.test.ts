// Interop: what the serializer sends upstream, followed by the original body bytes (forwarded
// unchanged, delimited by the parser/scanner), is read by a real, strict HTTP/1.1 server (Node's
// llhttp via node:http on loopback) as the same requests, in sync, pipelined on one connection.

import t from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { E } from '../src/proxy/errors.ts';
import { ChunkedScanner, RequestHeadParser, buildRequestHead } from '../src/proxy/http1/index.ts';

interface Seen {
  method: string;
  url: string;
  host: string | undefined;
  xff: string | undefined;
  te: string | undefined;
  cl: string | undefined;
  body: string;
  raw: string[];
}

function startServer(): Promise<{ port: number; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method!,
        url: req.url!,
        host: req.headers.host,
        xff: req.headers['x-forwarded-for'] as string | undefined,
        te: req.headers['transfer-encoding'],
        cl: req.headers['content-length'],
        body: Buffer.concat(parts).toString('latin1'),
        raw: req.rawHeaders,
      });
      res.setHeader('content-length', '2');
      res.end('ok');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ port, seen, close: () => new Promise<void>((r) => server.close(() => r())) });
    });
  });
}

/** What the proxy would send upstream for a downstream byte stream of pipelined requests. */
function proxyBytes(input: Buffer): Buffer[] {
  const parser = new RequestHeadParser({ maxHeaderBytes: 8192, maxHeaderCount: 50, maxUriBytes: 2048 });
  const scanner = new ChunkedScanner(E.BAD_CHUNK);
  const out: Buffer[] = [];
  let off = 0;
  while (off < input.length) {
    const n = parser.feed(input, off);
    if (n <= 0) throw new Error(`parse: ${n} ${parser.error?.code}`);
    off += n;
    const h = parser.head!;
    out.push(buildRequestHead(h, '203.0.113.9', 'fly-client-ip: 203.0.113.9\r\n'));
    if (h.chunked) {
      scanner.reset();
      const m = scanner.scan(input, off, input.length);
      if (m < 0 || !scanner.done) throw new Error('chunked body');
      out.push(input.subarray(off, off + m));
      off += m;
    } else if (h.contentLength > 0) {
      out.push(input.subarray(off, off + h.contentLength));
      off += h.contentLength;
    }
  }
  return out;
}

function send(port: number, chunks: Buffer[], responses: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.split('HTTP/1.1 ').length - 1 >= responses && got.endsWith('ok')) sock.end();
    });
    sock.on('close', () => resolve(got));
    sock.on('error', reject);
    sock.write(Buffer.concat(chunks));
  });
}

t.test('pipelined requests reach a strict server intact and in sync', async (t) => {
  const srv = await startServer();
  t.teardown(srv.close);
  const downstream = Buffer.from(
    'POST /a?x=1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\nhello' +
      'PUT /b HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: Chunked\r\nFly-Client-IP: 6.6.6.6\r\n\r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n' +
      '\r\nGET http://app.example:8080/c HTTP/1.1\r\nHost: ignored.example\r\nX-Obs: caf\xe9\r\n\r\n' +
      'GET /d HTTP/1.0\r\nHost: app.example\r\n\r\n' +
      'OPTIONS * HTTP/1.1\r\nHost: app.example\r\n\r\n',
    'latin1',
  );
  const got = await send(srv.port, proxyBytes(downstream), 5);
  t.equal(got.split('HTTP/1.1 200').length - 1, 5, 'five responses, no 400 from the server');
  t.match(srv.seen, [
    { method: 'POST', url: '/a?x=1', host: 'app.example', xff: '10.0.0.1, 203.0.113.9', cl: '5', body: 'hello' },
    { method: 'PUT', url: '/b', host: 'app.example', te: 'chunked', body: 'world' },
    { method: 'GET', url: '/c', host: 'app.example:8080', body: '' },
    { method: 'GET', url: '/d', host: 'app.example', body: '' },
    { method: 'OPTIONS', url: '*', host: 'app.example' },
  ]);
  const raw0 = srv.seen[0].raw.map((x) => x.toLowerCase());
  t.notOk(raw0.includes('x-hop'), 'Connection-named field stripped');
  const raw1 = srv.seen[1].raw;
  t.equal(raw1.filter((x) => x.toLowerCase() === 'fly-client-ip').length, 1, 'one fly-client-ip');
  t.equal(raw1[raw1.findIndex((x) => x.toLowerCase() === 'fly-client-ip') + 1], '203.0.113.9', 'ours, not the client one');
  t.equal(srv.seen[2].raw[srv.seen[2].raw.indexOf('X-Obs') + 1], Buffer.from('caf\xe9', 'latin1').toString('latin1'));
});
