// Request head parser: the downstream security boundary. Every valid shape must parse the same
// whichever way the bytes are split; every smuggling vector must be refused with its exact code.

import t, { type Test } from 'tap';
import { E, type ProxyErrorDef } from '../src/proxy/errors.ts';
import {
  FORM_ABSOLUTE,
  FORM_ASTERISK,
  FORM_ORIGIN,
  H_HOST,
  H_OTHER,
  H_UPGRADE,
  H_X_FORWARDED_FOR,
  RequestHeadParser,
  type RequestHead,
  type RequestLimits,
} from '../src/proxy/http1/index.ts';

const LIMITS: RequestLimits = { maxHeaderBytes: 8192, maxHeaderCount: 50, maxUriBytes: 2048 };

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

interface Outcome {
  consumed: number;
  error: string | null;
  head: ReturnType<typeof describe> | null;
}

function describe(h: RequestHead) {
  const headers: [string, string, number, boolean][] = [];
  for (let i = 0; i < h.count; i++) headers.push([h.name(i), h.value(i), h.kind(i), h.dropped(i)]);
  return {
    method: h.method,
    target: h.target,
    form: h.form,
    path: h.path,
    authority: h.authority,
    host: h.host,
    hostIndex: h.hostIndex,
    versionMinor: h.versionMinor,
    contentLength: h.contentLength,
    chunked: h.chunked,
    keepAlive: h.keepAlive,
    upgrade: h.upgrade,
    expectContinue: h.expectContinue,
    connectionTokens: [...h.connectionTokens],
    dropCount: h.dropCount,
    headers,
    raw: h.toString(),
  };
}

/** Feeds the chunks in order (each a separate Buffer) until a head completes or fails. */
function run(chunks: Buffer[], limits: RequestLimits = LIMITS, parser = new RequestHeadParser(limits)): Outcome {
  let absorbed = 0;
  for (const c of chunks) {
    const n = parser.feed(c, 0);
    if (n > 0) return { consumed: absorbed + n, error: null, head: describe(parser.head!) };
    if (n < 0) return { consumed: -1, error: parser.error!.code, head: null };
    absorbed += c.length;
  }
  return { consumed: 0, error: null, head: null };
}

const whole = (s: string, limits?: RequestLimits): Outcome => run([bytes(s)], limits);

function splits(s: string): Buffer[][] {
  const b = bytes(s);
  const out: Buffer[][] = [];
  for (let i = 1; i < b.length; i++) out.push([Buffer.from(b.subarray(0, i)), Buffer.from(b.subarray(i))]);
  const single: Buffer[] = [];
  for (let i = 0; i < b.length; i++) single.push(Buffer.from(b.subarray(i, i + 1)));
  out.push(single);
  return out;
}

/** Parses s whole, split at every byte and byte by byte: all must agree. Returns the whole-parse. */
function agree(t: Test, s: string, limits?: RequestLimits): Outcome {
  const ref = whole(s, limits);
  let bad = 0;
  for (const chunks of splits(s)) {
    const o = run(chunks, limits);
    if (JSON.stringify(o) !== JSON.stringify(ref)) {
      if (bad++ === 0) t.same(o, ref, `split ${chunks.length === 2 ? `at ${chunks[0].length}` : 'byte by byte'} agrees`);
    }
  }
  t.equal(bad, 0, 'every split gives the same outcome');
  return ref;
}

function reject(t: Test, s: string, def: ProxyErrorDef, msg: string, limits?: RequestLimits): void {
  const o = whole(s, limits);
  t.equal(o.error, def.code, `${msg}: ${def.code} (${def.reason})`);
  // The split/byte-by-byte path must refuse it as well (same code for single-fault messages).
  const b = run(splits(s).at(-1)!, limits);
  t.equal(b.error, def.code, `${msg}: byte by byte gives ${def.code}`);
}

const GET = 'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n';

t.test('simple GET, whole and split everywhere', async (t) => {
  const o = agree(t, GET);
  t.equal(o.consumed, GET.length);
  t.match(o.head, {
    method: 'GET',
    target: '/',
    form: FORM_ORIGIN,
    path: '/',
    authority: null,
    host: 'example.com',
    hostIndex: 0,
    versionMinor: 1,
    contentLength: -1,
    chunked: false,
    keepAlive: true,
    upgrade: null,
    expectContinue: false,
    connectionTokens: [],
    dropCount: 0,
  });
  t.same(o.head!.headers, [['Host', 'example.com', H_HOST, false]]);
});

const BROWSER =
  'GET /assets/app.js?v=3&x=%20y HTTP/1.1\r\n' +
  'Host: example.fly.dev\r\n' +
  'Connection: keep-alive\r\n' +
  'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"\r\n' +
  'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n' +
  'Accept: */*\r\n' +
  'Accept-Encoding: gzip, deflate, br\r\n' +
  'Accept-Language: en-US,en;q=0.9\r\n' +
  'X-Empty:\r\n' +
  'X-Spaces: \t padded value \t \r\n' +
  'X-Obs: caf\xe9 \xff\r\n' +
  '\r\n';

t.test('browser request: values trimmed, obs-text kept, split everywhere', async (t) => {
  const o = agree(t, BROWSER);
  t.equal(o.consumed, BROWSER.length);
  const h = o.head!;
  t.equal(h.target, '/assets/app.js?v=3&x=%20y');
  t.equal(h.path, h.target);
  t.equal(h.headers.length, 10);
  t.same(h.headers[7], ['X-Empty', '', H_OTHER, false]);
  t.same(h.headers[8], ['X-Spaces', 'padded value', H_OTHER, false]);
  t.same(h.headers[9], ['X-Obs', 'caf\xe9 \xff', H_OTHER, false]);
  t.same(h.connectionTokens, ['keep-alive']);
  t.equal(h.headers[1][3], true, 'Connection is dropped');
  t.equal(h.dropCount, 1);
});

t.test('POST with Content-Length: consumed stops at the body', async (t) => {
  const head = 'POST /submit HTTP/1.1\r\nHost: a.example\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n';
  const o = agree(t, head + 'hello world');
  t.equal(o.consumed, head.length);
  t.equal(o.head!.contentLength, 11);
  t.equal(o.head!.chunked, false);
  t.equal(o.head!.headers[1][3], true, 'Content-Length is re-emitted, not copied');
});

t.test('chunked POST', async (t) => {
  const head = 'POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n';
  const o = agree(t, head + '5\r\nhello\r\n0\r\n\r\n');
  t.equal(o.consumed, head.length);
  t.equal(o.head!.chunked, true);
  t.equal(o.head!.contentLength, -1);
  for (const v of ['CHUNKED', 'Chunked', '\tchunked\t', ' chunked ']) {
    const r = whole(`POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:${v}\r\n\r\n`);
    t.equal(r.head?.chunked, true, `TE ${JSON.stringify(v)} is chunked`);
  }
});

t.test('Content-Length values that are valid', async (t) => {
  for (const [v, n] of [
    ['0', 0],
    ['5 ', 5],
    ['\t5\t', 5],
    ['0005', 5],
    ['9007199254740991', 9007199254740991],
    ['00000000000000000000000000042', 42],
  ] as const) {
    const o = whole(`POST / HTTP/1.1\r\nHost: a\r\nContent-Length:${v}\r\n\r\n`);
    t.equal(o.head?.contentLength, n, `Content-Length ${JSON.stringify(v)} = ${n}`);
  }
});

t.test('HTTP/1.0', async (t) => {
  const o = agree(t, 'GET /x HTTP/1.0\r\nUser-Agent: old\r\n\r\n');
  t.match(o.head, { versionMinor: 0, host: null, hostIndex: -1, keepAlive: false });
  t.equal(whole('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').head?.keepAlive, true);
  t.equal(whole('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n').head?.keepAlive, true);
  t.equal(whole('GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n').head?.keepAlive, false);
  // RFC 9110 §10.1.1 / §7.8: Expect and Upgrade are ignored for HTTP/1.0.
  const x = whole('POST / HTTP/1.0\r\nExpect: 100-continue\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n');
  t.match(x.head, { expectContinue: false, upgrade: null });
  t.equal(x.head!.headers[2][3], true, 'Upgrade dropped when not honoured');
});

t.test('Connection: close, options and hop-by-hop stripping', async (t) => {
  const o = agree(
    t,
    'GET / HTTP/1.1\r\nHost: a\r\nConnection: Close, X-Secret,, ,\r\nX-Secret: 1\r\nx-secret: 2\r\nKeep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: 1\r\nProxy-Authorization: Basic x\r\n\r\n',
  );
  const h = o.head!;
  t.equal(h.keepAlive, false);
  t.same(h.connectionTokens, ['close', 'x-secret']);
  t.same(
    h.headers.map(([n, , , d]) => [n, d]),
    [
      ['Host', false],
      ['Connection', true],
      ['X-Secret', true],
      ['x-secret', true],
      ['Keep-Alive', true],
      ['Proxy-Connection', true],
      ['TE', true],
      ['Trailer', true],
      ['Upgrade', true],
      ['X-Kept', false],
      ['Proxy-Authorization', false],
    ],
  );
  t.equal(h.dropCount, 8);
  t.equal(h.upgrade, null, 'Upgrade without the connection option is not an upgrade');
});

t.test('Connection cannot strip Host or framing', async (t) => {
  const o = whole('POST / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length, transfer-encoding, x-a\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n');
  const h = o.head!;
  t.equal(h.headers[0][3], false, 'Host kept');
  t.equal(h.contentLength, 3, 'framing still known');
  t.equal(h.headers[3][3], true, 'X-A dropped');
});

t.test('headers petrel sets itself are dropped from the client', async (t) => {
  const names = [
    'Fly-Client-IP',
    'X-Forwarded-Proto',
    'X-Forwarded-SSL',
    'X-Forwarded-Port',
    'Fly-Forwarded-Port',
    'Fly-Region',
    'Fly-Request-Id',
    'Via',
    'X-Forwarded-For',
  ];
  const o = whole(`GET / HTTP/1.1\r\nHost: a\r\n${names.map((n) => `${n}: spoof\r\n`).join('')}X-Forwarded-Host: kept\r\n\r\n`);
  const h = o.head!;
  t.same(
    h.headers.slice(1).map(([n, , , d]) => [n, d]),
    [...names.map((n) => [n, true]), ['X-Forwarded-Host', false]],
  );
  t.equal(h.headers[9][2], H_X_FORWARDED_FOR);
});

t.test('upgrade requests', async (t) => {
  const ws =
    'GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
  const o = agree(t, ws);
  t.equal(o.head!.upgrade, 'websocket');
  t.same(o.head!.headers[1], ['Upgrade', 'WebSocket', H_UPGRADE, false], 'Upgrade kept for the app');
  t.equal(o.head!.headers[2][3], true, 'Connection dropped (re-emitted)');
  const two = whole('GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\nUpgrade: WebSocket\r\n\r\n');
  t.equal(two.head!.upgrade, 'h2c, websocket');
  t.equal(whole('GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n').head!.upgrade, null);
});

t.test('Expect: 100-continue', async (t) => {
  t.equal(whole('PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n').head!.expectContinue, true);
  t.equal(whole('PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 3\r\n\r\n').head!.expectContinue, false);
});

t.test('absolute-form takes precedence over Host (RFC 9112 §3.2.2)', async (t) => {
  const o = agree(t, 'GET http://Other.Example:8080/p/a?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n');
  t.match(o.head, {
    form: FORM_ABSOLUTE,
    target: 'http://Other.Example:8080/p/a?q=1',
    authority: 'Other.Example:8080',
    host: 'Other.Example:8080',
    path: '/p/a?q=1',
  });
  t.equal(o.head!.headers[0][3], true, 'Host replaced by the authority');
  t.equal(whole('GET HTTPS://a.example?x HTTP/1.1\r\nHost: b\r\n\r\n').head!.path, '/?x');
  t.equal(whole('GET http://a.example HTTP/1.1\r\nHost: b\r\n\r\n').head!.path, '/');
  t.equal(whole('OPTIONS http://a.example HTTP/1.1\r\nHost: b\r\n\r\n').head!.path, '*', 'RFC 9112 §3.2.4');
  t.equal(whole('GET http://[::1]:80/ HTTP/1.1\r\nHost: b\r\n\r\n').head!.authority, '[::1]:80');
  t.equal(whole('GET http://a/ HTTP/1.0\r\n\r\n').head!.host, 'a', 'HTTP/1.0 absolute-form needs no Host');
  reject(t, 'GET http://a/ HTTP/1.1\r\n\r\n', E.MISSING_HOST, 'HTTP/1.1 absolute-form still needs Host');
});

t.test('asterisk-form only for OPTIONS', async (t) => {
  const o = agree(t, 'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n');
  t.match(o.head, { form: FORM_ASTERISK, target: '*', path: '*' });
  reject(t, 'GET * HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'GET *');
});

t.test('Host values', async (t) => {
  for (const h of ['a', 'example.com:443', 'EXAMPLE.com.', '[::1]', '[2001:db8::1]:8080', 'xn--bcher-kva.example', 'a_b.example']) {
    t.equal(whole(`GET / HTTP/1.1\r\nHost: ${h}\r\n\r\n`).head?.host, h, `Host ${h}`);
  }
  for (const h of ['a b', 'a/b', 'a,b', 'a;b', 'a@b', 'a:', 'a:123456', 'a:8o', ':80', '[::1', '[]', '[x]', 'a%2eb', 'caf\xe9']) {
    reject(t, `GET / HTTP/1.1\r\nHost: ${h}\r\n\r\n`, E.BAD_REQUEST, `Host ${JSON.stringify(h)}`);
  }
  reject(t, 'GET / HTTP/1.1\r\nHost:\r\n\r\n', E.MISSING_HOST, 'empty Host');
  reject(t, 'GET / HTTP/1.1\r\nHost: \t \r\n\r\n', E.MISSING_HOST, 'blank Host');
  reject(t, 'GET / HTTP/1.1\r\n\r\n', E.MISSING_HOST, 'no Host');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n', E.MISSING_HOST, 'two Host (same value)');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n', E.MISSING_HOST, 'two Host');
  reject(t, 'GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n', E.MISSING_HOST, 'two Host on HTTP/1.0');
});

t.test('methods', async (t) => {
  for (const m of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'M-SEARCH', 'get']) {
    t.equal(whole(`${m} / HTTP/1.1\r\nHost: a\r\n\r\n`).head?.method, m, m);
  }
  reject(t, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', E.BAD_METHOD, 'CONNECT');
  reject(t, 'CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_METHOD, 'CONNECT origin-form');
  reject(t, 'G(T / HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_METHOD, 'non-token method');
  reject(t, 'G\xe9T / HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_METHOD, 'obs-text in method');
  reject(t, ' / HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_METHOD, 'empty method');
  reject(t, 'GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_METHOD, 'HTAB after method');
  reject(t, 'GET\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'method alone');
});

t.test('request-line shape', async (t) => {
  reject(t, 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'two SP after method');
  reject(t, 'GET /a b HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'SP inside target');
  reject(t, 'GET / HTTP/1.1 \r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'SP after version');
  reject(t, 'GET /\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'HTTP/0.9 style');
  reject(t, 'GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'CTL in target');
  reject(t, 'GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'DEL in target');
  reject(t, 'GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'HTAB in target');
  reject(t, 'GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'NUL in target');
  reject(t, 'GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'authority-form for GET');
  reject(t, 'GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'ftp scheme');
  reject(t, 'GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'empty authority');
  reject(t, 'GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'userinfo');
  reject(t, 'GET http:/a/ HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'malformed absolute-form');
  reject(t, 'GET ?x HTTP/1.1\r\nHost: a\r\n\r\n', E.BAD_REQUEST, 'query without path');
  t.equal(whole('GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n').head?.target, '/caf\xe9', 'raw UTF-8 bytes in a path pass');
  t.equal(whole('GET //x/../y#f HTTP/1.1\r\nHost: a\r\n\r\n').head?.path, '//x/../y#f', 'path forwarded verbatim');
});

t.test('versions', async (t) => {
  for (const v of ['HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.10', 'HTTP/1.', 'HTTP/1', 'http/1.1', 'HTTPS/1.1', 'HTTP/3.0', 'HTTP/1.1x']) {
    reject(t, `GET / ${v}\r\nHost: a\r\n\r\n`, E.BAD_VERSION, v);
  }
  reject(t, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', E.BAD_VERSION, 'HTTP/2 prior-knowledge preface');
});

t.test('leading empty lines (RFC 9112 §2.2)', async (t) => {
  const o = agree(t, '\r\n\r\n' + GET);
  t.equal(o.consumed, GET.length + 4);
  t.equal(o.head!.raw, GET, 'head excludes the empty lines');
  t.equal(whole('\r\n'.repeat(4) + GET).consumed, GET.length + 8);
  reject(t, '\r\n'.repeat(5) + GET, E.BAD_REQUEST, 'five empty lines');
  reject(t, '\n' + GET, E.BARE_CR_LF, 'bare LF empty line');
});

t.test('bare CR and bare LF (RFC 9112 §2.2)', async (t) => {
  reject(t, 'GET / HTTP/1.1\nHost: a\n\n', E.BARE_CR_LF, 'LF-only head');
  reject(t, 'GET / HTTP/1.1\nHost: a\r\n\r\n', E.BARE_CR_LF, 'LF after request line');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\n\r\n', E.BARE_CR_LF, 'LF after field');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n', E.BARE_CR_LF, 'LF before the blank line');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n', E.BARE_CR_LF, 'LF hiding a field');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n', E.BARE_CR_LF, 'CR in value');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n', E.BARE_CR_LF, 'CR CR LF');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX\r: a\r\n\r\n', E.BARE_CR_LF, 'CR in name');
  reject(t, 'GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n', E.BARE_CR_LF, 'CR in target');
  reject(t, 'GET / HTTP/1.1\rHost: a\r\n\r\n', E.BARE_CR_LF, 'CR after version');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n', E.BARE_CR_LF, 'CR CR LF as blank line');
});

t.test('field syntax', async (t) => {
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n', E.BAD_REQUEST, 'SP before colon (RFC 9112 §5.1)');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n', E.BAD_REQUEST, 'HTAB before colon');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n', E.BAD_REQUEST, 'obs-fold SP');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n', E.BAD_REQUEST, 'obs-fold HTAB');
  reject(t, 'GET / HTTP/1.1\r\n Host: a\r\n\r\n', E.BAD_REQUEST, 'whitespace before the first field');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n', E.BAD_REQUEST, 'empty name');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n', E.BAD_REQUEST, 'no colon');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n', E.BAD_REQUEST, 'separator in name');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\n"X": b\r\n\r\n', E.BAD_REQUEST, 'quote in name');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX\xe9: b\r\n\r\n', E.BAD_REQUEST, 'obs-text in name');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n', E.BAD_REQUEST, 'CTL in value');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n', E.BAD_REQUEST, 'VT in value');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n', E.BAD_REQUEST, 'DEL in value');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n', E.BAD_REQUEST, 'NUL in value');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nX\x00: b\r\n\r\n', E.BAD_REQUEST, 'NUL in name');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n', E.BAD_REQUEST, 'NUL in Host');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close x\r\n\r\n', E.BAD_REQUEST, 'Connection not a token list');
  reject(t, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close;x\r\n\r\n', E.BAD_REQUEST, 'Connection with parameters');
  const opts = (n: number): string => Array.from({ length: n }, (_, i) => `o${i}`).join(', ');
  t.equal(whole(`GET / HTTP/1.1\r\nHost: a\r\nConnection: ${opts(32)}\r\n\r\n`).head?.connectionTokens.length, 32);
  reject(t, `GET / HTTP/1.1\r\nHost: a\r\nConnection: ${opts(33)}\r\n\r\n`, E.BAD_REQUEST, 'more than 32 Connection options');
});

t.test('limits', async (t) => {
  const small: RequestLimits = { maxHeaderBytes: 200, maxHeaderCount: 5, maxUriBytes: 40 };
  const fill = (n: number): string => 'x'.repeat(n);
  // Exactly at the head limit passes; one byte more is 431.
  const base = 'GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n';
  const exact = `GET / HTTP/1.1\r\nHost: a\r\nX: ${fill(200 - base.length)}\r\n\r\n`;
  t.equal(exact.length, 200);
  t.equal(agree(t, exact, small).consumed, 200);
  const over = `GET / HTTP/1.1\r\nHost: a\r\nX: ${fill(201 - base.length)}\r\n\r\n`;
  reject(t, over, E.HEADERS_TOO_LARGE, 'one byte over', small);
  reject(t, `GET / HTTP/1.1\r\nHost: a\r\nX: ${fill(5000)}`, E.HEADERS_TOO_LARGE, 'never-ending field', small);
  reject(t, `GET / HTTP/1.1\r\nHost: a\r\nX: ${fill(5000)}\r\n\r\n`, E.HEADERS_TOO_LARGE, 'large field in one chunk', small);
  // Field count.
  const fields = (n: number): string => Array.from({ length: n }, (_, i) => `X-${i}: ${i}\r\n`).join('');
  t.equal(whole(`GET / HTTP/1.1\r\nHost: a\r\n${fields(4)}\r\n`, small).head?.headers.length, 5);
  reject(t, `GET / HTTP/1.1\r\nHost: a\r\n${fields(5)}\r\n`, E.TOO_MANY_HEADERS, 'six fields', small);
  reject(t, `GET / HTTP/1.1\r\nHost: a\r\n${fields(30)}`, E.TOO_MANY_HEADERS, 'field flood without end', {
    ...small,
    maxHeaderBytes: 8192,
  });
  // Target length.
  t.equal(whole(`GET /${fill(39)} HTTP/1.1\r\nHost: a\r\n\r\n`, small).head?.target.length, 40);
  reject(t, `GET /${fill(40)} HTTP/1.1\r\nHost: a\r\n\r\n`, E.URI_TOO_LONG, 'target one over', small);
  reject(t, `GET /${fill(1000)} HTTP/1.1\r\nHost: a\r\n\r\n`, E.URI_TOO_LONG, 'target beyond the head limit', small);
  reject(t, `GET /${fill(1000)}`, E.URI_TOO_LONG, 'never-ending target', small);
  reject(t, `GET /${fill(10)} HTTP/1.1\r\nHost: a\r\nX: ${fill(1000)}`, E.HEADERS_TOO_LARGE, 'short target, long fields', small);
});

t.test('Content-Length rejections (RFC 9112 §6.3, RFC 9110 §8.6)', async (t) => {
  const cl = (v: string): string => `POST / HTTP/1.1\r\nHost: a\r\nContent-Length:${v}\r\n\r\n`;
  for (const v of [' +5', ' -5', ' 0x5', ' 5 5', ' 5, 5', ' 5,5', ' 5,', ' ,5', ' 5.0', ' 5e1', ' ', '', ' a', ' \xb5', ' 9007199254740992', ' 99999999999999999999']) {
    reject(t, cl(v), E.BAD_CONTENT_LENGTH, `Content-Length:${JSON.stringify(v)}`);
  }
  reject(t, cl(' 5\x0b'), E.BAD_CONTENT_LENGTH, 'VT after Content-Length');
  reject(t, cl(' 5\x01'), E.BAD_CONTENT_LENGTH, 'CTL after Content-Length');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n', E.BAD_CONTENT_LENGTH, 'repeated, same value');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n', E.BAD_CONTENT_LENGTH, 'repeated, different');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n', E.BAD_CONTENT_LENGTH, 'underscore look-alike');
});

t.test('Transfer-Encoding rejections (RFC 9112 §6.1)', async (t) => {
  const te = (v: string): string => `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:${v}\r\n\r\n`;
  for (const v of [' chunked, chunked', ' gzip, chunked', ' chunked, gzip', ' xchunked', ' chunkedx', ' chunk', ' identity', '', ' ', ' "chunked"', ' chunked;q=1', ' chunked,', ' ,chunked', ' ch unked', ' chunked\xa0']) {
    reject(t, te(v), E.BAD_TRANSFER_ENCODING, `Transfer-Encoding:${JSON.stringify(v)}`);
  }
  reject(t, te(' chunked\x0b'), E.BAD_TRANSFER_ENCODING, 'chunked + VT');
  reject(t, te(' \x0cchunked'), E.BAD_TRANSFER_ENCODING, 'FF + chunked');
  reject(t, te(' chunked\x00'), E.BAD_REQUEST, 'NUL is always BAD_REQUEST');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', E.BAD_TRANSFER_ENCODING, 'repeated');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n', E.BAD_TRANSFER_ENCODING, 'TE.TE');
  reject(t, 'POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', E.BAD_TRANSFER_ENCODING, 'TE on HTTP/1.0');
  reject(t, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n', E.BAD_TRANSFER_ENCODING, 'underscore look-alike');
});

t.test('smuggling corpus', async (t) => {
  const cases: [string, string, ProxyErrorDef][] = [
    ['CL.TE', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED', E.AMBIGUOUS_LENGTH],
    ['TE.CL', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n', E.AMBIGUOUS_LENGTH],
    ['CL + bad TE', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n', E.AMBIGUOUS_LENGTH],
    ['CL + TE on HTTP/1.0', 'POST / HTTP/1.0\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n', E.AMBIGUOUS_LENGTH],
    ['TE.TE space before colon', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n', E.BAD_REQUEST],
    ['TE.TE HTAB before colon', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n', E.BAD_REQUEST],
    ['TE.TE folded', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n', E.BAD_REQUEST],
    ['TE.TE leading space', 'POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n', E.BAD_REQUEST],
    ['TE.TE duplicate', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n', E.BAD_TRANSFER_ENCODING],
    ['TE.TE list', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n', E.BAD_TRANSFER_ENCODING],
    ['TE.TE VT', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n', E.BAD_TRANSFER_ENCODING],
    ['TE.TE bare LF', 'POST / HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n', E.BARE_CR_LF],
    ['TE.TE bare CR', 'POST / HTTP/1.1\r\nHost: a\r\nX: y\rTransfer-Encoding: chunked\r\n\r\n', E.BARE_CR_LF],
    ['CL plus sign', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n', E.BAD_CONTENT_LENGTH],
    ['CL hex', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n', E.BAD_CONTENT_LENGTH],
    ['CL.CL', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', E.BAD_CONTENT_LENGTH],
    ['CL space before colon', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n', E.BAD_REQUEST],
    ['CL HTAB before colon', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n', E.BAD_REQUEST],
    ['CL NUL', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\x00\r\n\r\n', E.BAD_REQUEST],
    ['request line bare LF', 'GET / HTTP/1.1\nHost: a\r\nContent-Length: 5\r\n\r\n', E.BARE_CR_LF],
    ['HTTP/0.9 inside pipelining', 'GET /\r\n\r\n', E.BAD_REQUEST],
  ];
  for (const [name, s, def] of cases) reject(t, s, def, name);

  // Whitespace that RFC 9112 §5.1 says to trim is trimmed by everyone: not a vector, just parse.
  t.equal(whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\n\r\n').head?.contentLength, 5);
  t.equal(whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t5\r\n\r\n').head?.contentLength, 5);
  t.equal(whole('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n').head?.chunked, true);
});

t.test('pipelined requests in one chunk', async (t) => {
  const a = 'POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n';
  const b = 'GET /b HTTP/1.1\r\nHost: a\r\n\r\n';
  const c = '\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n';
  const buf = bytes(a + 'xyz' + b + c + 'GET /d');
  const p = new RequestHeadParser(LIMITS);
  let off = 0;
  let n = p.feed(buf, off);
  t.equal(n, a.length);
  t.equal(p.head!.path, '/a');
  const first = p.head!;
  off += n + p.head!.contentLength;
  n = p.feed(buf, off);
  t.equal(n, b.length);
  t.equal(p.head!.path, '/b');
  off += n;
  n = p.feed(buf, off);
  t.equal(n, c.length, 'leading CRLF between requests counted');
  t.equal(p.head!.path, '/c');
  t.equal(p.head!.keepAlive, false);
  off += n;
  t.equal(p.feed(buf, off), 0, 'partial fourth head buffered');
  t.equal(p.buffered, 6);
  t.equal(p.feed(bytes(' HTTP/1.1\r\nHost: a\r\n\r\n'), 0), 22);
  t.equal(p.head!.path, '/d');
  t.equal(p.buffered, 0);
  t.equal(first.path, '/a', 'earlier heads stay valid');
  t.equal(first.get('host'), 'a');
});

t.test('the parser stays failed until reset()', async (t) => {
  const p = new RequestHeadParser(LIMITS);
  t.equal(p.feed(bytes('GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n'), 0), -1);
  t.equal(p.error, E.BAD_REQUEST);
  t.equal(p.feed(bytes(GET), 0), -1);
  p.reset();
  t.equal(p.error, null);
  t.equal(p.feed(bytes(GET), 0), GET.length);
});

t.test('zero-copy heads reference the chunk; detach() gives them their own bytes', async (t) => {
  const chunk = bytes(BROWSER + 'GET');
  const p = new RequestHeadParser(LIMITS);
  t.equal(p.feed(chunk, 0), BROWSER.length);
  const h = p.head!;
  t.equal(h.buf, chunk, 'parsed in place');
  const before = describe(h);
  h.detach();
  chunk.fill(0x41);
  t.not(h.buf, chunk);
  t.same(describe(h), before, 'same head after detach and clobbering the chunk');
  // A head assembled from several chunks owns its buffer already.
  const p2 = new RequestHeadParser(LIMITS);
  const a = bytes(GET.slice(0, 10));
  t.equal(p2.feed(a, 0), 0);
  t.equal(p2.feed(bytes(GET.slice(10)), 0), GET.length - 10);
  t.not(p2.head!.buf, a);
  t.equal(p2.head!.toString(), GET);
});

t.test('feed with an offset', async (t) => {
  const buf = bytes('garbage' + GET);
  const p = new RequestHeadParser(LIMITS);
  t.equal(p.feed(buf, 7), GET.length);
  t.equal(p.head!.host, 'example.com');
  t.equal(p.feed(buf, buf.length), 0, 'nothing to feed');
});

t.test('get/getAll', async (t) => {
  const h = whole('GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\r\n').head!;
  t.same(h.headers.slice(1).map((x) => x[1]), ['1.1.1.1', '2.2.2.2, 3.3.3.3']);
  const p = new RequestHeadParser(LIMITS);
  p.feed(bytes('GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\r\n'), 0);
  t.equal(p.head!.get('x-forwarded-for'), '1.1.1.1');
  t.same(p.head!.getAll('x-forwarded-for'), ['1.1.1.1', '2.2.2.2, 3.3.3.3']);
  t.equal(p.head!.get('missing'), null);
});

t.test('mutation fuzz: whole and byte-by-byte parsing agree on accept/reject', async (t) => {
  // Deterministic PRNG so failures reproduce.
  let seed = 0x9e3779b9;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const seeds = [BROWSER, GET, 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: a\r\n\r\n'];
  const alphabet = [0x0d, 0x0a, 0x20, 0x09, 0x00, 0x3a, 0x2c, 0x0b, 0x7f, 0x80, 0x41, 0x2d];
  let disagreements = 0;
  let accepted = 0;
  for (let i = 0; i < 1500; i++) {
    const src = bytes(seeds[rnd(seeds.length)]);
    const m = Buffer.from(src);
    const edits = 1 + rnd(3);
    for (let k = 0; k < edits; k++) m[rnd(m.length)] = alphabet[rnd(alphabet.length)];
    const one = run([m]);
    const cover: Buffer[] = [];
    for (let j = 0; j < m.length; ) {
      const len = 1 + rnd(9);
      cover.push(Buffer.from(m.subarray(j, j + len)));
      j += len;
    }
    const split = run(cover);
    if ((one.error === null) !== (split.error === null) || (one.head && JSON.stringify(one) !== JSON.stringify(split))) {
      if (disagreements++ < 3) t.fail(`disagreement on ${JSON.stringify(m.toString('latin1'))}: ${JSON.stringify(one)} vs ${JSON.stringify(split)}`);
    }
    if (one.head) {
      accepted++;
      // Whatever is accepted is clean: no CTL other than HTAB in any kept name/value.
      for (const [n, v] of one.head.headers) {
        if (/[\x00-\x08\x0a-\x1f\x7f]/.test(n + v)) t.fail(`accepted a control character: ${JSON.stringify([n, v])}`);
      }
    }
  }
  t.equal(disagreements, 0);
  t.ok(accepted > 0, `${accepted} mutants accepted`);
});

t.test('raw line offsets', async (t) => {
  const s = 'POST / HTTP/1.1\r\nHost: a\r\nX-A:  1 \r\nContent-Length: 2\r\n\r\n';
  const p = new RequestHeadParser(LIMITS);
  p.feed(bytes(s), 0);
  const h = p.head!;
  t.same(
    Array.from({ length: h.count }, (_, i) => h.buf.toString('latin1', h.lineStart(i), h.lineEnd(i))),
    ['Host: a\r\n', 'X-A:  1 \r\n', 'Content-Length: 2\r\n'],
  );
  t.equal(h.hasBody, true);
  p.feed(bytes(GET), 0);
  t.equal(p.head!.hasBody, false);
});
