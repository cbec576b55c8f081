// Chunked body scanner: exact body boundaries at every split, strict framing, limits.

import t, { type Test } from 'tap';
import { E, type ProxyErrorDef } from '../src/proxy/errors.ts';
import { ChunkedScanner } from '../src/proxy/http1/index.ts';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

interface Result {
  consumed: number;
  done: boolean;
  error: string | null;
  payloadBytes: number;
}

/** Scans the chunks in order until done or error; consumed counts body bytes across chunks. */
function scan(chunks: Buffer[], s = new ChunkedScanner(E.BAD_CHUNK)): Result {
  let consumed = 0;
  for (const c of chunks) {
    const n = s.scan(c, 0, c.length);
    if (n < 0) return { consumed: -1, done: false, error: s.error!.code, payloadBytes: s.payloadBytes };
    consumed += n;
    if (s.done) break;
    if (n !== c.length) return { consumed: -2, done: false, error: 'stopped early without done', payloadBytes: 0 };
  }
  return { consumed, done: s.done, error: null, payloadBytes: s.payloadBytes };
}

/** Decodes with decode(), collecting the payload. */
function decode(chunks: Buffer[]): { payload: string; done: boolean; consumed: number; error: string | null } {
  const s = new ChunkedScanner(E.BAD_CHUNK);
  let payload = '';
  let consumed = 0;
  for (const c of chunks) {
    let off = 0;
    while (off < c.length && !s.done) {
      const n = s.decode(c, off, c.length);
      if (n < 0) return { payload, done: false, consumed: -1, error: s.error!.code };
      if (s.dataStart >= 0) payload += c.toString('latin1', s.dataStart, s.dataEnd);
      off += n;
      consumed += n;
    }
    if (s.done) break;
  }
  return { payload, done: s.done, consumed, error: null };
}

function allSplits(s: string): Buffer[][] {
  const b = bytes(s);
  const out: Buffer[][] = [[b]];
  for (let i = 1; i < b.length; i++) out.push([Buffer.from(b.subarray(0, i)), Buffer.from(b.subarray(i))]);
  for (let i = 1; i < b.length - 1; i += 3) {
    for (let j = i + 1; j < b.length; j += 5) out.push([b.subarray(0, i), b.subarray(i, j), b.subarray(j)]);
  }
  const single: Buffer[] = [];
  for (let i = 0; i < b.length; i++) single.push(b.subarray(i, i + 1));
  out.push(single);
  return out;
}

function valid(t: Test, body: string, payload: string, after = 'GET /next HTTP/1.1\r\n'): void {
  const input = body + after;
  const ref = { consumed: body.length, done: true, error: null, payloadBytes: payload.length };
  let bad = 0;
  for (const chunks of allSplits(input)) {
    const r = scan(chunks);
    if (JSON.stringify(r) !== JSON.stringify(ref) && bad++ === 0) t.same(r, ref, `scan split ${chunks.map((c) => c.length).join('+')}`);
    const d = decode(chunks);
    if ((d.payload !== payload || !d.done || d.consumed !== body.length) && bad++ === 0) {
      t.same(d, { payload, done: true, consumed: body.length, error: null }, `decode split ${chunks.map((c) => c.length).join('+')}`);
    }
  }
  t.equal(bad, 0, `${JSON.stringify(body.slice(0, 40))}: every split agrees`);
}

function invalid(t: Test, body: string, msg: string, def: ProxyErrorDef = E.BAD_CHUNK): void {
  const mk = (): ChunkedScanner => new ChunkedScanner(def);
  const one = scan([bytes(body)], mk());
  t.equal(one.error, def.code, msg);
  const b = bytes(body);
  const single: Buffer[] = [];
  for (let i = 0; i < b.length; i++) single.push(b.subarray(i, i + 1));
  t.equal(scan(single, mk()).error, def.code, `${msg} (byte by byte)`);
}

t.test('valid bodies, split at every byte boundary', async (t) => {
  valid(t, '0\r\n\r\n', '');
  valid(t, '5\r\nhello\r\n0\r\n\r\n', 'hello');
  valid(t, '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n', 'hello world');
  valid(t, 'A\r\n0123456789\r\n0\r\n\r\n', '0123456789');
  valid(t, 'a\r\n0123456789\r\n000\r\n\r\n', '0123456789');
  valid(t, '0005\r\nhello\r\n0\r\n\r\n', 'hello');
  valid(t, '5;name=value\r\nhello\r\n0;last\r\n\r\n', 'hello');
  valid(t, '5 ;a\r\nhello\r\n0\t; b="q \\" s"\r\n\r\n', 'hello');
  valid(t, '5;ext=\xe9\r\nhello\r\n0\r\n\r\n', 'hello');
  valid(t, '3\r\n\r\n\r\r\n0\r\n\r\n', '\r\n\r', 'payload bytes are not framing');
  valid(t, '5\r\nhello\r\n0\r\nExpires: never\r\nX-Checksum: abc\t \r\n\r\n', 'hello');
  valid(t, '0\r\nX-Empty:\r\n\r\n', '');
});

t.test('body end is exact and the scanner stops there', async (t) => {
  const s = new ChunkedScanner(E.BAD_CHUNK);
  const b = bytes('5\r\nhello\r\n0\r\n\r\nPOST /x HTTP/1.1\r\n');
  t.equal(s.scan(b, 0, b.length), 15);
  t.equal(s.done, true);
  t.equal(s.payloadBytes, 5);
  t.equal(s.scan(b, 15, b.length), 0, 'nothing more after done');
  s.reset();
  t.equal(s.done, false);
  t.equal(s.scan(b, 0, 6), 6, 'partial');
  t.equal(s.inData, true);
  t.equal(s.scan(b, 6, b.length), 9);
  t.equal(s.done, true);
});

t.test('large chunk sizes', async (t) => {
  const s = new ChunkedScanner(E.BAD_CHUNK);
  const size = 'fffffffffffff'; // 2^52 - 1: valid, larger than any body we will see
  t.equal(s.scan(bytes(`${size}\r\nabc`), 0, size.length + 5), size.length + 5);
  t.equal(s.inData, true);
  s.reset();
  t.equal(s.scan(bytes('1fffffffffffff\r\n'), 0, 16), 16, '2^53 - 1 accepted');
  invalid(t, '20000000000000\r\n', 'size 2^53');
  invalid(t, 'ffffffffffffffffff\r\n', 'size beyond 64 bits');
  invalid(t, '00000000000000005\r\nhello\r\n0\r\n\r\n', 'more than 16 digits, even as leading zeros');
});

t.test('malformed framing', async (t) => {
  const cases: [string, string][] = [
    ['g\r\n', 'non-hex size'],
    ['\r\n', 'empty size'],
    [';x\r\n', 'extension without size'],
    ['-5\r\n', 'negative size'],
    ['+5\r\n', 'signed size'],
    ['0x5\r\nhello\r\n0\r\n\r\n', '0x prefix'],
    [' 5\r\nhello\r\n', 'leading space'],
    ['5 \r\nhello\r\n0\r\n\r\n', 'trailing space without extension'],
    ['5\t\r\nhello\r\n0\r\n\r\n', 'trailing tab without extension'],
    ['5 x\r\nhello\r\n', 'junk after BWS'],
    ['5\nhello\r\n0\r\n\r\n', 'bare LF after size'],
    ['5\rhello\r\n', 'bare CR after size'],
    ['5\r\nhelloX\r\n0\r\n\r\n', 'missing CRLF after data'],
    ['5\r\nhello\n0\r\n\r\n', 'bare LF after data'],
    ['5\r\nhello\rX0\r\n\r\n', 'CR without LF after data'],
    ['5\r\nhello\r\n\r\n', 'missing last-chunk'],
    ['5;a\nb\r\nhello\r\n', 'LF inside extension'],
    ['5;a\rb\r\nhello\r\n', 'CR inside extension'],
    ['5;a\x00\r\nhello\r\n', 'NUL in extension'],
    ['5;a\x01\r\nhello\r\n', 'CTL in extension'],
    ['5;a\x7f\r\nhello\r\n', 'DEL in extension'],
    ['0\r\n\n', 'bare LF ending the body'],
    ['0\r\n\rX', 'CR not followed by LF at the end'],
    ['0\r\nX: y\n\r\n', 'bare LF in trailer'],
    ['0\r\nX: y\rz\r\n\r\n', 'bare CR in trailer'],
    ['0\r\n X: y\r\n\r\n', 'trailer starting with SP'],
    ['0\r\nX: y\r\n\tz\r\n\r\n', 'obs-fold in trailers'],
    ['0\r\nX : y\r\n\r\n', 'space before colon in trailer'],
    ['0\r\n: y\r\n\r\n', 'empty trailer name'],
    ['0\r\nX y\r\n\r\n', 'trailer without colon'],
    ['0\r\nX: a\x01\r\n\r\n', 'CTL in trailer value'],
    ['0\r\nContent-Length: 5\r\n\r\n', 'Content-Length trailer'],
    ['0\r\ntransfer-encoding: chunked\r\n\r\n', 'Transfer-Encoding trailer'],
    ['0\r\nHOST: evil\r\n\r\n', 'Host trailer'],
  ];
  for (const [body, msg] of cases) invalid(t, body, msg);
  invalid(t, '5\nhello', 'response side uses BAD_RESPONSE', E.BAD_RESPONSE);
});

t.test('extension and trailer limits', async (t) => {
  const s = (max: number, tr: number): ChunkedScanner => new ChunkedScanner(E.BAD_CHUNK, max, tr);
  const ext = ';' + 'e'.repeat(99);
  t.equal(scan([bytes(`5${ext}\r\nhello\r\n0\r\n\r\n`)], s(100, 100)).done, true, 'extension at the limit');
  t.equal(scan([bytes(`5${ext}e\r\nhello\r\n0\r\n\r\n`)], s(100, 100)).error, E.BAD_CHUNK.code, 'one over');
  t.equal(scan([bytes(`5 ${' '.repeat(200)};\r\n`)], s(100, 100)).error, E.BAD_CHUNK.code, 'BWS counts too');
  // The limit is per chunk line, not cumulative.
  const many = Array.from({ length: 50 }, () => `1${ext}\r\nx\r\n`).join('') + '0\r\n\r\n';
  t.equal(scan([bytes(many)], s(100, 100)).done, true);
  // Trailer section: the whole thing, final CRLF included.
  const tr = 'X: ' + 'v'.repeat(93) + '\r\n\r\n'; // 100 bytes
  t.equal(tr.length, 100);
  t.equal(scan([bytes('0\r\n' + tr)], s(100, 100)).done, true, 'trailers at the limit');
  t.equal(scan([bytes('0\r\nX' + tr)], s(100, 100)).error, E.BAD_CHUNK.code, 'trailers one over');
  // Defaults: 4 KiB extension.
  t.equal(scan([bytes(`5;${'e'.repeat(5000)}\r\nhello\r\n`)]).error, E.BAD_CHUNK.code, 'default extension limit');
});

t.test('reset() makes the scanner reusable after an error', async (t) => {
  const s = new ChunkedScanner(E.BAD_CHUNK);
  t.equal(s.scan(bytes('x'), 0, 1), -1);
  t.equal(s.scan(bytes('0\r\n\r\n'), 0, 5), -1, 'stays failed');
  s.reset();
  t.equal(s.error, null);
  t.equal(s.scan(bytes('0\r\n\r\n'), 0, 5), 5);
  t.equal(s.done, true);
});

t.test('scan honours start and end', async (t) => {
  const s = new ChunkedScanner(E.BAD_CHUNK);
  const b = bytes('XXXX5\r\nhello\r\n0\r\n\r\nYYYY');
  t.equal(s.scan(b, 4, 10), 6);
  t.equal(s.scan(b, 10, b.length - 4), 9);
  t.equal(s.done, true);
  t.equal(s.payloadBytes, 5);
});

t.test('fuzz: random splits of random valid bodies', async (t) => {
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let failures = 0;
  for (let k = 0; k < 300; k++) {
    let body = '';
    let payload = '';
    const chunks = rnd(5);
    for (let c = 0; c < chunks; c++) {
      const len = 1 + rnd(40);
      const data = Array.from({ length: len }, () => String.fromCharCode(rnd(256))).join('');
      payload += data;
      body += len.toString(rnd(2) ? 16 : 16).toUpperCase() + (rnd(3) === 0 ? ';x=y' : '') + '\r\n' + data + '\r\n';
    }
    body += '0\r\n' + (rnd(2) ? 'T: v\r\n' : '') + '\r\n';
    const b = bytes(body + 'NEXT');
    const pieces: Buffer[] = [];
    for (let i = 0; i < b.length; ) {
      const n = 1 + rnd(12);
      pieces.push(b.subarray(i, i + n));
      i += n;
    }
    const r = scan(pieces);
    const d = decode(pieces);
    if (r.consumed !== body.length || !r.done || d.payload !== payload) {
      if (failures++ < 3) t.fail(`mismatch for ${JSON.stringify(body)}: ${JSON.stringify(r)}`);
    }
  }
  t.equal(failures, 0);
});
