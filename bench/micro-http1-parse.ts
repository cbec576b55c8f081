// Micro benchmark of the HTTP/1.1 codec hot path (src/proxy/http1).
//
//   node bench/micro-http1-parse.ts [--rounds 9] [--iters 200000]
//
// Reports ns/op as median [min..max] over rounds, after a warm-up. Besides the codec as shipped it
// times the alternatives the design chose against, so the choice can be re-checked on a new Node:
//   - "eager strings": parse, then make every field name and value a string (what a parser that
//     stores parallel string arrays would pay at least) vs. offsets with lazy strings;
//   - serializing by one string build + Buffer.from(latin1) (what serialize.ts does) vs. copying
//     byte runs into a pre-sized Buffer.
// Rows are run interleaved (round k of every row, then round k+1) so background load hits all
// rows alike; on a shared machine compare rows within one run rather than across runs.

import { E } from '../src/proxy/errors.ts';
import {
  ChunkedScanner,
  RequestHeadParser,
  ResponseHeadParser,
  buildRequestHead,
  buildResponseHead,
  forwardedFor,
  requestHeadString,
  type RequestHead,
  SLOTS,
  DROP,
} from '../src/proxy/http1/index.ts';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}
const ROUNDS = arg('--rounds', 9);
const ITERS = arg('--iters', 200_000);

// A typical browser sub-resource request (400 B, 11 fields) and an app response (150 B).
const REQ = Buffer.from(
  'GET /assets/app.js?v=3 HTTP/1.1\r\n' +
    'Host: example.fly.dev\r\n' +
    'Connection: keep-alive\r\n' +
    'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"\r\n' +
    'sec-ch-ua-mobile: ?0\r\n' +
    'User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 Safari/537.36\r\n' +
    'Accept: */*\r\n' +
    'Sec-Fetch-Site: same-origin\r\n' +
    'Sec-Fetch-Mode: no-cors\r\n' +
    'Referer: https://example.fly.dev/\r\n' +
    'Accept-Encoding: gzip, deflate, br\r\n' +
    'Accept-Language: en-US,en;q=0.9\r\n' +
    '\r\n',
  'latin1',
);
const RES = Buffer.from(
  'HTTP/1.1 200 OK\r\n' +
    'Content-Type: text/html; charset=utf-8\r\n' +
    'Content-Length: 1234\r\n' +
    'Date: Sat, 22 Nov 2025 01:03:00 GMT\r\n' +
    'Cache-Control: no-cache\r\n' +
    'Vary: *\r\n' +
    '\r\n',
  'latin1',
);
const EXTRA =
  'fly-client-ip: 203.0.113.7\r\nx-forwarded-proto: https\r\nx-forwarded-ssl: on\r\nx-forwarded-port: 443\r\n' +
  'fly-forwarded-port: 443\r\nfly-region: ams\r\nfly-request-id: 01JDB9Z6W3M2N5Q8R1T4V7X0YZ-ams\r\nvia: 1.1 petrel\r\n';
const RES_EXTRA = 'server: petrel\r\nvia: 1.1 petrel\r\nfly-request-id: 01JDB9Z6W3M2N5Q8R1T4V7X0YZ-ams\r\n';

const limits = { maxHeaderBytes: 16384, maxHeaderCount: 100, maxUriBytes: 8192 };
const reqParser = new RequestHeadParser(limits);
const resParser = new ResponseHeadParser(16384, 100);

let sink = 0;
const strings: string[] = new Array(256);

function parseReq(): RequestHead {
  const n = reqParser.feed(REQ, 0);
  if (n !== REQ.length) throw new Error(`request parse failed: ${n} ${reqParser.error?.code}`);
  return reqParser.head!;
}
function parseRes(): void {
  resParser.begin(false, false);
  const n = resParser.feed(RES, 0);
  if (n !== RES.length) throw new Error(`response parse failed: ${n}`);
}

// The alternative serializer: copy runs of kept lines with Buffer#copy into a pre-sized Buffer,
// generated lines with latin1Write (what serialize.ts did first).
interface Latin1Writer {
  latin1Write(s: string, off: number, len: number): number;
}
function buildRequestHeadCopy(h: RequestHead, peer: string, extra: string): Buffer {
  const o = h.offs;
  const b = h.buf;
  let tail = '';
  if (h.contentLength >= 0) tail += 'content-length: ' + h.contentLength + '\r\n';
  tail += 'connection: keep-alive\r\nx-forwarded-for: ' + forwardedFor(h, peer) + '\r\n' + extra + '\r\n';
  const line = h.method + ' ' + h.path + ' HTTP/1.1\r\n';
  let kept = 0;
  for (let i = 0; i < h.count; i++) if ((o[i * SLOTS + 4] & DROP) === 0) kept += h.lineEnd(i) - o[i * SLOTS];
  const out = Buffer.allocUnsafe(line.length + kept + tail.length);
  const w = out as unknown as Latin1Writer;
  let off = w.latin1Write(line, 0, line.length);
  let run = -1;
  for (let i = 0; i < h.count; i++) {
    if ((o[i * SLOTS + 4] & DROP) === 0) {
      if (run < 0) run = o[i * SLOTS];
    } else if (run >= 0) {
      off += b.copy(out, off, run, o[i * SLOTS]);
      run = -1;
    }
  }
  if (run >= 0) off += b.copy(out, off, run, h.end - 2);
  w.latin1Write(tail, off, tail.length);
  return out;
}

// A 16 KiB chunked body in 8 KiB chunks, arriving as 4 socket reads.
function chunkedBody(): Buffer[] {
  const data = Buffer.alloc(8192, 0x61);
  const body = Buffer.concat([Buffer.from('2000\r\n'), data, Buffer.from('\r\n2000\r\n'), data, Buffer.from('\r\n0\r\n\r\n')]);
  const q = Math.ceil(body.length / 4);
  return [body.subarray(0, q), body.subarray(q, 2 * q), body.subarray(2 * q, 3 * q), body.subarray(3 * q)];
}
const BODY = chunkedBody();
const scanner = new ChunkedScanner(E.BAD_CHUNK);

const preReq = (() => {
  const p = new RequestHeadParser(limits);
  p.feed(REQ, 0);
  return p.head!;
})();
const preRes = (() => {
  const p = new ResponseHeadParser(16384, 100);
  p.begin(false, false);
  p.feed(RES, 0);
  return p.head!;
})();

// Calibration: the cheapest possible pass over the request bytes, so numbers from machines of
// different speed can be compared (the parse costs a small multiple of this).
function baseline(b: Buffer): number {
  let n = 0;
  for (let i = 0; i < b.length; i++) if (b[i] === 10) n++;
  return n;
}

const cases: [string, () => void][] = [
  [`baseline: one JS loop over the ${REQ.length} request bytes`, () => {
    sink += baseline(REQ);
  }],
  [`request head parse (${REQ.length} B, 11 fields, offsets: as shipped)`, () => {
    sink += parseReq().count;
  }],
  ['request head parse + every name/value made a string (eager strings)', () => {
    const h = parseReq();
    for (let i = 0; i < h.count; i++) {
      strings[2 * i] = h.name(i);
      strings[2 * i + 1] = h.value(i);
    }
    sink += h.count;
  }],
  [`request head parse, fed byte by byte (slow path, ${REQ.length} feeds)`, () => {
    for (let i = 0; i < REQ.length; i++) reqParser.feed(REQ.subarray(i, i + 1), 0);
    sink += reqParser.head!.count;
  }],
  [`response head parse (${RES.length} B, 5 fields)`, () => {
    parseRes();
    sink += resParser.head!.count;
  }],
  ['requestHeadString: the head as one latin1 string (for socket.write(s, "latin1"))', () => {
    sink += requestHeadString(preReq, '203.0.113.7', EXTRA).length;
  }],
  ['buildRequestHead: one string + Buffer.from(latin1) (as shipped)', () => {
    sink += buildRequestHead(preReq, '203.0.113.7', EXTRA).length;
  }],
  ['buildRequestHead alternative: Buffer#copy of byte runs + latin1Write', () => {
    sink += buildRequestHeadCopy(preReq, '203.0.113.7', EXTRA).length;
  }],
  ['buildResponseHead (as shipped)', () => {
    sink += buildResponseHead(preRes, RES_EXTRA, true).length;
  }],
  ['chunked scan, 16 KiB body in 4 reads', () => {
    scanner.reset();
    for (let i = 0; i < BODY.length; i++) sink += scanner.scan(BODY[i], 0, BODY[i].length);
    if (!scanner.done) throw new Error('chunked scan did not finish');
  }],
];

function measure(fn: () => void, iters: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) fn();
  return Number(process.hrtime.bigint() - t0) / iters;
}

const iterations = (name: string): number => (name.includes('byte by byte') ? Math.max(1, Math.floor(ITERS / 50)) : ITERS);
console.log(`node ${process.version} ${process.arch}, ${ROUNDS} interleaved rounds x ${ITERS} iterations (byte-by-byte rows: /50)`);
for (const [name, fn] of cases) measure(fn, Math.max(1000, iterations(name) / 4)); // warm-up: let the JIT settle
const results: number[][] = cases.map(() => []);
for (let k = 0; k < ROUNDS; k++) {
  for (let c = 0; c < cases.length; c++) results[c].push(measure(cases[c][1], iterations(cases[c][0])));
}
for (let c = 0; c < cases.length; c++) {
  const r = results[c].sort((a, b) => a - b);
  const med = r[r.length >> 1];
  console.log(`${cases[c][0].padEnd(80)} ${med.toFixed(0).padStart(7)} ns/op  [${r[0].toFixed(0)}..${r[r.length - 1].toFixed(0)}]`);
}
if (sink === 0) console.log('');
