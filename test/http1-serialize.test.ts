// Head serializers: exact bytes sent upstream and downstream.

import t from 'tap';
import {
  H_FLY_REQUEST_ID,
  H_SERVER,
  RequestHeadParser,
  ResponseHeadParser,
  buildRequestHead,
  buildResponseHead,
  forwardedFor,
  type RequestHead,
  type ResponseHead,
} from '../src/proxy/http1/index.ts';

const LIMITS = { maxHeaderBytes: 8192, maxHeaderCount: 50, maxUriBytes: 2048 };
const EXTRA = 'fly-client-ip: 203.0.113.7\r\nvia: 1.1 petrel\r\n';

function req(s: string): RequestHead {
  const p = new RequestHeadParser(LIMITS);
  const n = p.feed(Buffer.from(s, 'latin1'), 0);
  if (n <= 0) throw new Error(`parse failed: ${p.error?.code}`);
  return p.head!;
}

function res(s: string, head = false, upgrade = false): ResponseHead {
  const p = new ResponseHeadParser(8192, 50);
  p.begin(head, upgrade);
  const n = p.feed(Buffer.from(s, 'latin1'), 0);
  if (n <= 0) throw new Error(`parse failed: ${p.error?.code}`);
  return p.head!;
}

const out = (b: Buffer): string => b.toString('latin1');

t.test('plain GET', async (t) => {
  const h = req('GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n');
  t.equal(
    out(buildRequestHead(h, '203.0.113.7', EXTRA)),
    'GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: x\r\n' +
      'connection: keep-alive\r\nx-forwarded-for: 203.0.113.7\r\n' +
      EXTRA +
      '\r\n',
  );
  t.equal(
    out(buildRequestHead(h, '203.0.113.7', '', false)),
    'GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: x\r\nconnection: close\r\nx-forwarded-for: 203.0.113.7\r\n\r\n',
  );
});

t.test('spoofed and hop-by-hop fields stripped, framing canonical, X-Forwarded-For combined', async (t) => {
  const h = req(
    'POST /submit HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: example.com\r\nFly-Client-IP: 6.6.6.6\r\nContent-Length:  0011 \r\n' +
      'Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 300\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-For:\r\n' +
      'Via: 1.1 spoof\r\nCookie: a=b\r\nTE: trailers\r\n\r\n',
  );
  t.equal(forwardedFor(h, '203.0.113.7'), '10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.7');
  t.equal(
    out(buildRequestHead(h, '203.0.113.7', EXTRA)),
    'POST /submit HTTP/1.1\r\nHost: example.com\r\nCookie: a=b\r\n' +
      'content-length: 11\r\nconnection: keep-alive\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.7\r\n' +
      EXTRA +
      '\r\n',
  );
});

t.test('chunked request', async (t) => {
  const h = req('POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\nX-A: 1\r\n\r\n');
  t.equal(
    out(buildRequestHead(h, '::1', '')),
    'POST /up HTTP/1.1\r\nHost: a\r\nX-A: 1\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\nx-forwarded-for: ::1\r\n\r\n',
  );
});

t.test('upgrade request keeps Upgrade and says connection: upgrade', async (t) => {
  const h = req('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n');
  t.equal(
    out(buildRequestHead(h, '1.2.3.4', '')),
    'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n' +
      'connection: upgrade\r\nx-forwarded-for: 1.2.3.4\r\n\r\n',
  );
});

t.test('absolute-form: origin-form target upstream, Host from the authority', async (t) => {
  const h = req('GET http://app.example:8080/p?q HTTP/1.1\r\nHost: other\r\nAccept: x\r\n\r\n');
  t.equal(
    out(buildRequestHead(h, '1.2.3.4', '')),
    'GET /p?q HTTP/1.1\r\nAccept: x\r\nhost: app.example:8080\r\nconnection: keep-alive\r\nx-forwarded-for: 1.2.3.4\r\n\r\n',
  );
});

t.test('HTTP/1.0 is forwarded as HTTP/1.1 (RFC 9110 §6.2); obs-text bytes survive', async (t) => {
  const h = req('GET /caf\xe9 HTTP/1.0\r\nX-N: \xe9\xff\r\n\r\n');
  const b = buildRequestHead(h, '1.2.3.4', 'host: fallback\r\n');
  t.equal(out(b), 'GET /caf\xe9 HTTP/1.1\r\nX-N: \xe9\xff\r\nconnection: keep-alive\r\nx-forwarded-for: 1.2.3.4\r\nhost: fallback\r\n\r\n');
  t.equal(b[b.indexOf('X-N: ') + 5], 0xe9, 'raw byte, not UTF-8');
});

t.test('request without fields', async (t) => {
  const h = req('GET / HTTP/1.0\r\n\r\n');
  t.equal(out(buildRequestHead(h, 'p', '')), 'GET / HTTP/1.1\r\nconnection: keep-alive\r\nx-forwarded-for: p\r\n\r\n');
});

t.test('every field dropped', async (t) => {
  const h = req('GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\nX-A: 1\r\n\r\n');
  t.equal(
    out(buildRequestHead(h, 'p', '')),
    'GET / HTTP/1.1\r\nHost: a\r\nconnection: keep-alive\r\nx-forwarded-for: p\r\n\r\n',
  );
});

t.test('serialized request heads parse back to the same request', async (t) => {
  const srcs = [
    'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Forwarded-For: 1.1.1.1\r\nConnection: close\r\n\r\n',
    'PUT /y HTTP/1.1\r\nHost: b:80\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n',
    'GET http://c/z HTTP/1.1\r\nHost: d\r\n\r\n',
    'OPTIONS * HTTP/1.1\r\nHost: e\r\n\r\n',
  ];
  for (const s of srcs) {
    const a = req(s);
    const b = req(out(buildRequestHead(a, '9.9.9.9', 'fly-client-ip: 9.9.9.9\r\n')));
    t.equal(b.method, a.method);
    t.equal(b.target, a.path);
    t.equal(b.host, a.host);
    t.equal(b.contentLength, a.contentLength);
    t.equal(b.chunked, a.chunked);
    t.equal(b.expectContinue, a.expectContinue);
    t.equal(b.keepAlive, true);
    t.equal(b.get('fly-client-ip'), '9.9.9.9');
  }
});

t.test('response with Content-Length', async (t) => {
  const h = res('HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a\r\n\r\n');
  t.equal(
    out(buildResponseHead(h, 'server: petrel\r\n', true)),
    'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: a\r\ncontent-length: 5\r\nconnection: keep-alive\r\nserver: petrel\r\n\r\n',
  );
  t.equal(
    out(buildResponseHead(h, '', false)),
    'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\n',
  );
});

t.test('dropMask replaces fields petrel sets itself', async (t) => {
  const h = res('HTTP/1.1 404 Not Found\r\nServer: gunicorn\r\nFly-Request-Id: spoof\r\nVia: 1.1 app\r\nContent-Length: 0\r\n\r\n');
  t.equal(
    out(buildResponseHead(h, 'server: petrel\r\nfly-request-id: r-1\r\nvia: 1.1 petrel\r\n', true, (1 << H_SERVER) | (1 << H_FLY_REQUEST_ID))),
    'HTTP/1.1 404 Not Found\r\nVia: 1.1 app\r\ncontent-length: 0\r\nconnection: keep-alive\r\nserver: petrel\r\nfly-request-id: r-1\r\nvia: 1.1 petrel\r\n\r\n',
  );
  t.equal(
    out(buildResponseHead(h, '', true)),
    'HTTP/1.1 404 Not Found\r\nServer: gunicorn\r\nFly-Request-Id: spoof\r\nVia: 1.1 app\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n',
    'pristine: nothing replaced',
  );
});

t.test('chunked and close-delimited responses', async (t) => {
  t.equal(
    out(buildResponseHead(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n'), '', true)),
    'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n',
  );
  t.equal(
    out(buildResponseHead(res('HTTP/1.0 200 OK\r\nContent-Type: a\r\n\r\n'), '', true)),
    'HTTP/1.1 200 OK\r\nContent-Type: a\r\nconnection: close\r\n\r\n',
    'only the close can end a close-delimited body',
  );
});

t.test('HTTP/1.0 client: no chunked coding, close instead', async (t) => {
  const chunked = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n');
  t.equal(out(buildResponseHead(chunked, '', true, 0, true)), 'HTTP/1.1 200 OK\r\nX: 1\r\nconnection: close\r\n\r\n');
  const cl = res('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n');
  t.equal(out(buildResponseHead(cl, '', true, 0, true)), 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n');
  const head = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', true);
  t.equal(out(buildResponseHead(head, '', true, 0, true)), 'HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n', 'HEAD: no body to delimit');
});

t.test('no-body responses', async (t) => {
  t.equal(
    out(buildResponseHead(res('HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n'), '', true)),
    'HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n',
    '204 never carries Content-Length (RFC 9110 §8.6)',
  );
  t.equal(
    out(buildResponseHead(res('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 99\r\n\r\n'), '', true)),
    'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\ncontent-length: 99\r\nconnection: keep-alive\r\n\r\n',
  );
  t.equal(
    out(buildResponseHead(res('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n', true), '', true)),
    'HTTP/1.1 200 OK\r\ncontent-length: 1234\r\nconnection: keep-alive\r\n\r\n',
    'HEAD keeps the representation length',
  );
});

t.test('interim and 101 responses', async (t) => {
  t.equal(
    out(buildResponseHead(res('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n'), 'x-a: 1\r\n', true)),
    'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nx-a: 1\r\n\r\n',
  );
  t.equal(out(buildResponseHead(res('HTTP/1.1 100 Continue\r\n\r\n'), '', true)), 'HTTP/1.1 100 Continue\r\n\r\n');
  t.equal(
    out(
      buildResponseHead(
        res('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n', false, true),
        '',
        true,
      ),
    ),
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nconnection: upgrade\r\n\r\n',
  );
});

t.test('status line: empty reason and obs-text reason', async (t) => {
  t.equal(out(buildResponseHead(res('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n'), '', true)), 'HTTP/1.1 200 \r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n');
  const b = buildResponseHead(res('HTTP/1.1 200 D\xe9j\xe0\r\nContent-Length: 0\r\n\r\n'), '', true);
  t.same([...b.subarray(13, 17)], [0x44, 0xe9, 0x6a, 0xe0], 'reason bytes unchanged');
});

t.test('serialized responses parse back', async (t) => {
  const a = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\nConnection: close\r\n\r\n');
  const p = new ResponseHeadParser(8192, 50);
  p.begin(false, false);
  const b = buildResponseHead(a, 'server: petrel\r\n', true);
  t.equal(p.feed(b, 0), b.length);
  t.match(p.head, { status: 200, chunked: true, keepAlive: true });
  t.equal(p.head!.get('server'), 'petrel');
});
