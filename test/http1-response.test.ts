// Response head parser: framing per RFC 9112 §6.3 given the request, interim responses, upgrade
// acceptance, and strictness (every fault is E.BAD_RESPONSE).

import t, { type Test } from 'tap';
import { E } from '../src/proxy/errors.ts';
import {
  BODY_CHUNKED,
  BODY_CLOSE,
  BODY_LENGTH,
  BODY_NONE,
  BODY_UPGRADE,
  ResponseHeadParser,
  type ResponseHead,
} from '../src/proxy/http1/index.ts';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

function describe(h: ResponseHead) {
  const headers: [string, string, boolean][] = [];
  for (let i = 0; i < h.count; i++) headers.push([h.name(i), h.value(i), h.dropped(i)]);
  return {
    status: h.status,
    reason: h.reason,
    versionMinor: h.versionMinor,
    bodyKind: h.bodyKind,
    contentLength: h.contentLength,
    chunked: h.chunked,
    keepAlive: h.keepAlive,
    interim: h.interim,
    upgrade: h.upgrade,
    connectionTokens: [...h.connectionTokens],
    dropCount: h.dropCount,
    headers,
  };
}

interface Ctx {
  head?: boolean;
  upgrade?: boolean;
}

function run(chunks: Buffer[], ctx: Ctx = {}) {
  const p = new ResponseHeadParser(4096, 20);
  p.begin(ctx.head ?? false, ctx.upgrade ?? false);
  let absorbed = 0;
  for (const c of chunks) {
    const n = p.feed(c, 0);
    if (n > 0) return { consumed: absorbed + n, error: null as string | null, head: describe(p.head!) };
    if (n < 0) return { consumed: -1, error: p.error!.code, head: null };
    absorbed += c.length;
  }
  return { consumed: 0, error: null, head: null };
}

const whole = (s: string, ctx?: Ctx) => run([bytes(s)], ctx);

function agree(t: Test, s: string, ctx?: Ctx) {
  const ref = whole(s, ctx);
  const b = bytes(s);
  let bad = 0;
  for (let i = 1; i < b.length; i++) {
    const o = run([Buffer.from(b.subarray(0, i)), Buffer.from(b.subarray(i))], ctx);
    if (JSON.stringify(o) !== JSON.stringify(ref) && bad++ === 0) t.same(o, ref, `split at ${i}`);
  }
  const single: Buffer[] = [];
  for (let i = 0; i < b.length; i++) single.push(Buffer.from(b.subarray(i, i + 1)));
  const o = run(single, ctx);
  if (JSON.stringify(o) !== JSON.stringify(ref) && bad++ === 0) t.same(o, ref, 'byte by byte');
  t.equal(bad, 0, 'every split agrees');
  return ref;
}

function bad(t: Test, s: string, msg: string, ctx?: Ctx): void {
  t.equal(whole(s, ctx).error, E.BAD_RESPONSE.code, msg);
}

t.test('200 with Content-Length', async (t) => {
  const head = 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nDate: x\r\n\r\n';
  const o = agree(t, head + 'hello');
  t.equal(o.consumed, head.length);
  t.match(o.head, { status: 200, reason: 'OK', bodyKind: BODY_LENGTH, contentLength: 5, keepAlive: true, interim: false, upgrade: null });
  t.same(o.head!.headers.map((h) => h[2]), [false, true, false], 'Content-Length re-emitted, not copied');
});

t.test('chunked', async (t) => {
  const o = agree(t, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
  t.match(o.head, { bodyKind: BODY_CHUNKED, chunked: true, contentLength: -1, keepAlive: true });
});

t.test('close-delimited (RFC 9112 §6.3 item 8)', async (t) => {
  const o = agree(t, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close');
  t.match(o.head, { bodyKind: BODY_CLOSE, keepAlive: false });
});

t.test('no body: HEAD, 204, 304 whatever the framing fields say', async (t) => {
  t.match(whole('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n', { head: true }).head, {
    bodyKind: BODY_NONE,
    contentLength: 1234,
    keepAlive: true,
  });
  t.match(whole('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', { head: true }).head, { bodyKind: BODY_NONE, chunked: true });
  t.match(whole('HTTP/1.1 200 OK\r\n\r\n', { head: true }).head, { bodyKind: BODY_NONE, keepAlive: true });
  t.match(whole('HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n').head, { bodyKind: BODY_NONE, keepAlive: true });
  t.match(whole('HTTP/1.1 204 No Content\r\n\r\n').head, { bodyKind: BODY_NONE, keepAlive: true });
  t.match(whole('HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: "x"\r\n\r\n').head, {
    bodyKind: BODY_NONE,
    contentLength: 99,
    keepAlive: true,
  });
  // Framing is still validated where there is no body.
  bad(t, 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n', '204 with repeated Content-Length');
  bad(t, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 'HEAD response with CL and TE', { head: true });
});

t.test('interim responses, then the final one from the same bytes', async (t) => {
  const c100 = 'HTTP/1.1 100 Continue\r\n\r\n';
  const c103 = 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n';
  const fin = 'HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n';
  const buf = bytes(c100 + c103 + fin + 'ok');
  const p = new ResponseHeadParser(4096, 20);
  p.begin(false, false);
  let off = 0;
  let n = p.feed(buf, off);
  t.equal(n, c100.length);
  t.match(describe(p.head!), { status: 100, interim: true, bodyKind: BODY_NONE });
  off += n;
  n = p.feed(buf, off);
  t.equal(n, c103.length);
  t.match(describe(p.head!), { status: 103, interim: true, reason: 'Early Hints' });
  t.equal(p.head!.get('link'), '</style.css>; rel=preload; as=style');
  off += n;
  n = p.feed(buf, off);
  t.equal(n, fin.length);
  t.match(describe(p.head!), { status: 201, interim: false, bodyKind: BODY_LENGTH, contentLength: 2 });
  t.equal(buf.subarray(off + n).toString(), 'ok');
  agree(t, c103);
});

t.test('101 Switching Protocols', async (t) => {
  const ws = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';
  const o = agree(t, ws + '\x81\x05hello', { upgrade: true });
  t.equal(o.consumed, ws.length);
  t.match(o.head, { status: 101, bodyKind: BODY_UPGRADE, upgrade: 'websocket', keepAlive: false, interim: false });
  t.same(o.head!.headers.map((h) => h[2]), [false, true, false], 'Upgrade kept, Connection re-emitted');
  bad(t, ws, '101 that nobody asked for (RFC 9110 §15.2.2)');
  bad(t, 'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n', '101 without Upgrade', { upgrade: true });
  // An upgrade request answered normally: a plain response, Upgrade stripped.
  t.match(whole('HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n', { upgrade: true }).head, {
    status: 200,
    upgrade: null,
    bodyKind: BODY_LENGTH,
    headers: [
      ['Upgrade', 'h2c', true],
      ['Connection', 'Upgrade', true],
      ['Content-Length', '0', true],
    ],
  });
});

t.test('connection persistence (RFC 9112 §9.3)', async (t) => {
  t.equal(whole('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n').head!.keepAlive, false);
  t.equal(whole('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n').head!.keepAlive, false);
  t.equal(whole('HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n').head!.keepAlive, true);
  t.equal(whole('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n').head!.keepAlive, false, 'close-delimited never persists');
});

t.test('hop-by-hop and Connection-named fields are flagged', async (t) => {
  const o = whole(
    'HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\nProxy-Connection: x\r\n' +
      'Trailer: X-T\r\nTE: x\r\nServer: app\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n',
  );
  t.same(
    o.head!.headers.map(([n, , d]) => [n, d]),
    [
      ['Connection', true],
      ['Keep-Alive', true],
      ['X-Internal', true],
      ['Proxy-Connection', true],
      ['Trailer', true],
      ['TE', true],
      ['Server', false],
      ['Set-Cookie', false],
      ['Set-Cookie', false],
      ['Content-Length', true],
    ],
  );
  t.same(o.head!.connectionTokens, ['keep-alive', 'x-internal']);
});

t.test('status lines', async (t) => {
  t.match(whole('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n').head, { status: 200, reason: '' }, 'no SP, no reason');
  t.match(whole('HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n').head, { status: 200, reason: '' }, 'empty reason');
  t.match(whole('HTTP/1.1 404 Not\tFound \xe9\r\nContent-Length: 0\r\n\r\n').head, { status: 404, reason: 'Not\tFound \xe9' });
  t.match(whole('HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n').head, { status: 599 });
  for (const l of [
    'HTTP/1.1 20 OK',
    'HTTP/1.1 2000 OK',
    'HTTP/1.1 600 X',
    'HTTP/1.1 099 X',
    'HTTP/1.1 2x0 X',
    'HTTP/1.1  200 OK',
    'HTTP/1.1 200 O\x01K',
    'HTTP/1.1 200 OK\x00',
    'HTTP/1.2 200 OK',
    'HTTP/2 200 OK',
    'HTTP/2.0 200 OK',
    'http/1.1 200 OK',
    'HTTP/1.1\t200 OK',
    'ICY 200 OK',
    'HTTP/1.1 200 OK\rX',
  ]) {
    bad(t, `${l}\r\nContent-Length: 0\r\n\r\n`, JSON.stringify(l));
  }
});

t.test('framing and field faults are all BAD_RESPONSE', async (t) => {
  const cases: [string, string][] = [
    ['bare LF', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n'],
    ['bare LF after field', 'HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n'],
    ['bare CR in value', 'HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n'],
    ['CL + TE', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['CL repeated', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n'],
    ['CL list', 'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n'],
    ['CL sign', 'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n'],
    ['CL huge', 'HTTP/1.1 200 OK\r\nContent-Length: 9007199254740992\r\n\r\n'],
    ['TE gzip, chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'],
    ['TE repeated', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['TE on HTTP/1.0', 'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['TE identity', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n'],
    ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n'],
    ['CTL in value', 'HTTP/1.1 200 OK\r\nX: a\x01\r\nContent-Length: 0\r\n\r\n'],
    ['NUL in value', 'HTTP/1.1 200 OK\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n'],
    ['bad name', 'HTTP/1.1 200 OK\r\nX Y: a\r\nContent-Length: 0\r\n\r\n'],
    ['Connection garbage', 'HTTP/1.1 200 OK\r\nConnection: a b\r\nContent-Length: 0\r\n\r\n'],
    ['leading CRLF', '\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['too many fields', `HTTP/1.1 200 OK\r\n${'X: 1\r\n'.repeat(21)}\r\n`],
    ['too large', `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(5000)}\r\n\r\n`],
  ];
  for (const [name, s] of cases) {
    bad(t, s, name);
    const single: Buffer[] = [];
    const b = bytes(s);
    for (let i = 0; i < b.length; i++) single.push(Buffer.from(b.subarray(i, i + 1)));
    t.equal(run(single).error, E.BAD_RESPONSE.code, `${name}, byte by byte`);
  }
  // Obs-text in values is accepted (both sides).
  t.equal(whole('HTTP/1.1 200 OK\r\nX: caf\xe9\r\nContent-Length: 0\r\n\r\n').head!.headers[0][1], 'caf\xe9');
  // Upstream lookalikes pass as ordinary fields (they cannot re-frame anything downstream).
  t.match(whole('HTTP/1.1 200 OK\r\nContent_Length: 5\r\nContent-Length: 0\r\n\r\n').head, { contentLength: 0 });
});

t.test('begin() resets a failed parser and sets the request context', async (t) => {
  const p = new ResponseHeadParser(4096, 20);
  p.begin(false, false);
  t.equal(p.feed(bytes('HTTP/1.1 2 OK\r\n\r\n'), 0), -1);
  t.equal(p.error, E.BAD_RESPONSE);
  t.equal(p.feed(bytes('HTTP/1.1 200 OK\r\n\r\n'), 0), -1, 'stays failed');
  p.begin(true, false);
  const r = 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n';
  t.equal(p.feed(bytes(r), 0), r.length);
  t.equal(p.head!.bodyKind, BODY_NONE);
  t.equal(p.buffered, 0);
});
