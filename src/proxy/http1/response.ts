// Upstream response head parser. Same shape and strictness as the request side: an app (or
// something pretending to be one) must not be able to desynchronise the pooled upstream
// connection or split the response we relay downstream. Every failure is E.BAD_RESPONSE (502).
//
// Usage, per request sent on an upstream connection:
//
//   parser.begin(req.method === 'HEAD', req.upgrade !== null);
//   const n = parser.feed(chunk, off);          // > 0 head done, 0 need more, -1 parser.error
//   if (n > 0 && parser.head!.interim) { forward or skip; off += n; feed again }

import { E, type ProxyErrorDef } from '../errors.ts';
import { HeadAccumulator } from './accumulator.ts';
import {
  CR,
  FIELD_VCHAR,
  H_CONNECTION,
  H_CONTENT_LENGTH,
  H_KEEP_ALIVE,
  H_OTHER,
  H_PROXY_CONNECTION,
  H_TE,
  H_TRAILER,
  H_TRANSFER_ENCODING,
  H_UPGRADE,
  LF,
  SP,
  bytesEqLower,
  latin1,
} from './chars.ts';
import { CONN_CLOSE, CONN_INVALID, CONN_KEEP_ALIVE, DROP, MessageHead, SCRATCH, SLOTS, namedByConnection, parseConnection, parseLength, scanFields } from './head.ts';

/** How the response body is delimited (RFC 9112 §6.3). */
export const BODY_NONE = 0;
export const BODY_LENGTH = 1;
export const BODY_CHUNKED = 2;
/** No length: the body runs until the upstream closes (§6.3 item 8). */
export const BODY_CLOSE = 3;
/** 101 Switching Protocols: after the head, both directions are an opaque tunnel. */
export const BODY_UPGRADE = 4;

/** Hop-by-hop response fields (RFC 9110 §7.6.1) plus framing, which the serializer re-emits. */
const RES_DROP = new Uint8Array(32);
for (const k of [H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_KEEP_ALIVE, H_PROXY_CONNECTION, H_TE, H_TRAILER, H_UPGRADE]) {
  RES_DROP[k] = 1;
}

const OK = 'OK';

export class ResponseHead extends MessageHead {
  status: number;
  /** Reason phrase as received (may be empty; RFC 9112 §4: clients ignore it). */
  reason: string;
  /** BODY_* framing of this response given the request it answers. */
  bodyKind: number;
  /** 1xx other than 101 (100 Continue, 103 Early Hints...): another head follows. */
  interim: boolean;

  constructor(buf: Buffer, start: number, end: number, offs: number[]) {
    super(buf, start, end, offs);
    this.status = 0;
    this.reason = '';
    this.bodyKind = BODY_NONE;
    this.interim = false;
  }
}

export class ResponseHeadParser {
  readonly maxHeaderBytes: number;
  readonly maxHeaderCount: number;
  error: ProxyErrorDef | null;
  head: ResponseHead | null;
  /** What the response answers: set by begin(), kept across interim responses. */
  headRequest: boolean;
  upgradeRequested: boolean;
  private readonly acc: HeadAccumulator;

  constructor(maxHeaderBytes: number, maxHeaderCount: number) {
    this.maxHeaderBytes = maxHeaderBytes;
    this.maxHeaderCount = maxHeaderCount;
    this.error = null;
    this.head = null;
    this.headRequest = false;
    this.upgradeRequested = false;
    // No leading empty lines: RFC 9112 §2.2 tolerates them before a request-line only; stray
    // CRLFs from upstream mean we misjudged the previous body, so fail loudly.
    this.acc = new HeadAccumulator(maxHeaderBytes, maxHeaderCount, 0, maxHeaderBytes);
  }

  get buffered(): number {
    return this.acc.buffered;
  }

  /** Starts reading the response to a new request on this upstream connection. */
  begin(headRequest: boolean, upgradeRequested: boolean): void {
    this.acc.reset();
    this.error = null;
    this.head = null;
    this.headRequest = headRequest;
    this.upgradeRequested = upgradeRequested;
  }

  /** Same contract as RequestHeadParser.feed; after an interim head, just feed again. */
  feed(buf: Buffer, start: number): number {
    if (this.error !== null) return -1;
    const acc = this.acc;
    const n = acc.feed(buf, start);
    if (n === 0) return 0;
    if (n > 0 && this.parse(acc.buf, acc.start, acc.end)) return n;
    this.error = E.BAD_RESPONSE;
    return -1;
  }

  private parse(b: Buffer, s: number, e: number): boolean {
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4).
    if (
      b[s] !== 0x48 ||
      b[s + 1] !== 0x54 ||
      b[s + 2] !== 0x54 ||
      b[s + 3] !== 0x50 ||
      b[s + 4] !== 0x2f ||
      b[s + 5] !== 0x31 ||
      b[s + 6] !== 0x2e ||
      (b[s + 7] !== 0x30 && b[s + 7] !== 0x31) ||
      b[s + 8] !== SP
    ) {
      return false;
    }
    const minor = b[s + 7] === 0x31 ? 1 : 0;
    const d0 = b[s + 9] - 0x30;
    const d1 = b[s + 10] - 0x30;
    const d2 = b[s + 11] - 0x30;
    // RFC 9110 §15: three digits, first digit 1-5.
    if (!(d0 >= 1 && d0 <= 5 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9)) return false;
    const status = d0 * 100 + d1 * 10 + d2;
    let p = s + 12;
    let rs = p;
    // The SP before an empty reason is required by the grammar but often omitted; accept both.
    if (b[p] === SP) {
      rs = ++p;
      while (FIELD_VCHAR[b[p]] === 1) p++;
    }
    if (b[p] !== CR || b[p + 1] !== LF) return false;
    const reason = p - rs === 2 && b[rs] === 0x4f && b[rs + 1] === 0x4b ? OK : latin1(b, rs, p);
    p += 2;

    const count = scanFields(b, p, e, SCRATCH, this.maxHeaderCount);
    if (count < 0) return false;
    const offs = SCRATCH.slice(0, count * SLOTS);

    let clCount = 0;
    let cl = -1;
    let teCount = 0;
    let teOk = false;
    let conn = 0;
    let tokens: string[] | null = null;
    let upgradeCount = 0;
    for (let i = 0; i < count; i++) {
      const k = offs[i * SLOTS + 4];
      if (k === H_OTHER) continue;
      const fvs = offs[i * SLOTS + 2];
      const fve = offs[i * SLOTS + 3];
      switch (k) {
        case H_CONTENT_LENGTH:
          if (++clCount === 1) cl = parseLength(b, fvs, fve);
          break;
        case H_TRANSFER_ENCODING:
          if (++teCount === 1) teOk = bytesEqLower(b, fvs, fve, 'chunked');
          break;
        case H_CONNECTION:
          if (tokens === null) tokens = [];
          conn |= parseConnection(b, fvs, fve, tokens);
          break;
        case H_UPGRADE:
          upgradeCount++;
          break;
      }
    }
    if ((conn & CONN_INVALID) !== 0) return false;
    // Same framing rules as requests (RFC 9112 §6.1, §6.3 items 3-5), applied even when the
    // status or a HEAD request means there is no body: a response that lies about its framing
    // is not one we want to relay. Only "chunked" is accepted as a coding: "gzip, chunked" is
    // legal but we would have to forward the coding list as is; no app we front sends it.
    if (clCount > 0 && teCount > 0) return false;
    if (clCount > 1 || (clCount === 1 && cl < 0)) return false;
    if (teCount > 0 && (teCount > 1 || !teOk || minor === 0)) return false;

    let bodyKind: number;
    let interim = false;
    let upgrade: string | null = null;
    if (status === 101) {
      // RFC 9110 §15.2.2: only to a protocol the client asked for, and Upgrade says which.
      if (!this.upgradeRequested || upgradeCount === 0) return false;
      for (let i = 0; i < count; i++) {
        if (offs[i * SLOTS + 4] !== H_UPGRADE) continue;
        const v = latin1(b, offs[i * SLOTS + 2], offs[i * SLOTS + 3]).toLowerCase();
        upgrade = upgrade === null ? v : upgrade + ', ' + v;
      }
      bodyKind = BODY_UPGRADE;
    } else if (status < 200) {
      interim = true;
      bodyKind = BODY_NONE;
    } else if (this.headRequest || status === 204 || status === 304) {
      bodyKind = BODY_NONE; // §6.3 item 1: whatever the framing fields say.
    } else if (teCount === 1) {
      bodyKind = BODY_CHUNKED;
    } else if (clCount === 1) {
      bodyKind = BODY_LENGTH;
    } else {
      bodyKind = BODY_CLOSE;
    }

    const hasTokens = tokens !== null && tokens.length > 0;
    let dropCount = 0;
    for (let i = 0; i < count; i++) {
      const k = offs[i * SLOTS + 4];
      let drop: boolean;
      if (k === H_UPGRADE) drop = upgrade === null;
      else drop = RES_DROP[k] === 1 || (hasTokens && namedByConnection(b, offs, i, tokens!));
      if (drop) {
        offs[i * SLOTS + 4] = k | DROP;
        dropCount++;
      }
    }

    const h = new ResponseHead(b, s, e, offs);
    h.versionMinor = minor;
    h.count = count;
    if (tokens !== null) h.connectionTokens = tokens;
    h.dropCount = dropCount;
    h.contentLength = clCount === 1 ? cl : -1;
    h.chunked = teCount === 1;
    // The upstream connection can carry the next request only if both ends keep it (RFC 9112
    // §9.3) and the body has an end other than the close.
    h.keepAlive =
      (conn & CONN_CLOSE) === 0 &&
      (minor === 1 || (conn & CONN_KEEP_ALIVE) !== 0) &&
      bodyKind !== BODY_CLOSE &&
      bodyKind !== BODY_UPGRADE;
    h.upgrade = upgrade;
    h.status = status;
    h.reason = reason;
    h.bodyKind = bodyKind;
    h.interim = interim;
    this.head = h;
    return true;
  }
}
