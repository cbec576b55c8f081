// Downstream request head parser: strict RFC 9112 framing, the first line of defence against
// request smuggling (RFC 9112 §6.3, §11.2). Anything two HTTP implementations could read two ways
// is refused (400, or 414/431/505 for limits and versions) and the caller closes the connection;
// spec.md §9. The error values are the E.* registry entries, so the responder and the access log
// read status and code straight from them.
//
// Usage (one parser per connection, reused for every request on it):
//
//   const n = parser.feed(chunk, off);
//   if (n > 0) { const head = parser.head!; off += n; ... }   // bytes after the head: body / next
//   else if (n < 0) { respond(parser.error!); close(); }      // parser stays failed until reset()
//   else { /* the rest of the chunk was buffered: wait for more */ }

import type { Limits } from '../../config/types.ts';
import { E, type ProxyErrorDef } from '../errors.ts';
import { ACC_BARE_LF, ACC_LEADING, ACC_TOO_LARGE, ACC_TOO_MANY, HeadAccumulator } from './accumulator.ts';
import {
  CR,
  COLON,
  H_CL_LOOKALIKE,
  H_CONNECTION,
  H_CONTENT_LENGTH,
  H_EXPECT,
  H_FLY_CLIENT_IP,
  H_FLY_FORWARDED_PORT,
  H_FLY_REGION,
  H_FLY_REQUEST_ID,
  H_HOST,
  H_KEEP_ALIVE,
  H_OTHER,
  H_PROXY_CONNECTION,
  H_TE,
  H_TE_LOOKALIKE,
  H_FLY_FORCE_INSTANCE_ID,
  H_FLY_PREFER_INSTANCE_ID,
  H_FLY_FORCE_REGION,
  H_FLY_PREFER_REGION,
  H_TRAILER,
  H_TRANSFER_ENCODING,
  H_UPGRADE,
  H_VIA,
  H_X_FORWARDED_FOR,
  H_X_FORWARDED_PORT,
  H_X_FORWARDED_PROTO,
  H_X_FORWARDED_SSL,
  HOST_CHAR,
  HEXVAL,
  LF,
  SP,
  TARGET_CHAR,
  TCHAR,
  bytesEqLower,
  latin1,
} from './chars.ts';
import {
  CONN_CLOSE,
  CONN_INVALID,
  CONN_KEEP_ALIVE,
  CONN_UPGRADE,
  DROP,
  FE_BARE,
  FE_CTL,
  FE_TOO_MANY,
  MessageHead,
  SCRATCH,
  SLOTS,
  lineError,
  FE_BAD,
  namedByConnection,
  parseConnection,
  parseLength,
  scanFields,
} from './head.ts';

export type RequestLimits = Pick<Limits, 'maxHeaderBytes' | 'maxHeaderCount' | 'maxUriBytes'>;

/** RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line. */
export const MAX_LEADING_CRLF = 4;

/** request-target forms, RFC 9112 §3.2. */
export const FORM_ORIGIN = 0;
export const FORM_ABSOLUTE = 1;
export const FORM_ASTERISK = 2;

/**
 * Request fields never forwarded as received. Framing (Content-Length, Transfer-Encoding) and
 * X-Forwarded-For are re-emitted by the serializer in canonical form; the hop-by-hop set is RFC
 * 9110 §7.6.1 plus the legacy Keep-Alive/Proxy-Connection; the rest are headers petrel sets itself
 * (spec.md §4), whose client-supplied copies must not reach the app as if we had set them.
 */
export const REQUEST_DROP_KINDS: readonly number[] = Object.freeze([
  H_CONTENT_LENGTH,
  H_TRANSFER_ENCODING,
  H_CONNECTION,
  H_KEEP_ALIVE,
  H_PROXY_CONNECTION,
  H_TE,
  H_TRAILER,
  H_UPGRADE,
  H_FLY_CLIENT_IP,
  H_X_FORWARDED_PROTO,
  H_X_FORWARDED_SSL,
  H_X_FORWARDED_PORT,
  H_FLY_FORWARDED_PORT,
  H_FLY_REGION,
  H_FLY_REQUEST_ID,
  H_VIA,
  H_X_FORWARDED_FOR,
]);
const REQ_DROP = new Uint8Array(32);
for (const k of REQUEST_DROP_KINDS) REQ_DROP[k] = 1;

const METHODS: readonly string[] = ['GET', 'PUT', 'POST', 'HEAD', 'PATCH', 'TRACE', 'DELETE', 'OPTIONS', 'CONNECT'];
const METHOD_BYTES = METHODS.map((m) => Uint8Array.from(m, (c) => c.charCodeAt(0)));

/** Known methods come back as constant strings: no allocation for them. Methods are case-sensitive. */
function internMethod(b: Buffer, s: number, e: number): string {
  const n = e - s;
  outer: for (let m = 0; m < METHOD_BYTES.length; m++) {
    const lit = METHOD_BYTES[m];
    if (lit.length !== n) continue;
    for (let i = 0; i < n; i++) if (b[s + i] !== lit[i]) continue outer;
    return METHODS[m];
  }
  return latin1(b, s, e);
}

/**
 * uri-host [ ":" port ] (RFC 9110 §7.2) with the reg-name narrowed to HOST_CHAR; IP-literal as
 * "[" hex/":"/"." "]". Port, when present, is 1-5 digits.
 */
export function validAuthority(b: Buffer, s: number, e: number): boolean {
  let p = s;
  if (p >= e) return false;
  if (b[p] === 0x5b /* [ */) {
    p++;
    while (p < e && (HEXVAL[b[p]] !== 0 || b[p] === COLON || b[p] === 0x2e)) p++;
    if (p === s + 1 || p >= e || b[p] !== 0x5d /* ] */) return false;
    p++;
  } else {
    while (p < e && HOST_CHAR[b[p]] === 1) p++;
    if (p === s) return false;
  }
  if (p === e) return true;
  if (b[p] !== COLON) return false;
  const ps = ++p;
  while (p < e && b[p] >= 0x30 && b[p] <= 0x39) p++;
  return p === e && p > ps && p - ps <= 5;
}

export class RequestHead extends MessageHead {
  /** Method as received (case-sensitive, RFC 9110 §9.1); known methods are interned strings. */
  method: string;
  /** request-target exactly as received. */
  target: string;
  /** FORM_ORIGIN | FORM_ABSOLUTE | FORM_ASTERISK. */
  form: number;
  /**
   * Target to send upstream: origin-form ("/p?q") or "*". Same string as `target` for
   * origin-form; for absolute-form the path and query of the URI (RFC 9112 §3.2.4, "*" for an
   * OPTIONS with an empty path).
   */
  path: string;
  /** Authority of an absolute-form target (it overrides Host, RFC 9112 §3.2.2), else null. */
  authority: string | null;
  /**
   * Where the request is going, as received (not normalised: case, port and trailing dot kept):
   * the absolute-form authority if any, else the Host value; null only for HTTP/1.0 without Host.
   */
  host: string | null;
  /** Index of the Host field, -1 if none. */
  hostIndex: number;
  /** Expect: 100-continue on an HTTP/1.1 request (RFC 9110 §10.1.1: ignored for HTTP/1.0). */
  expectContinue: boolean;
  /** A Fly-Force-/Prefer-Instance-Id or -Region header is present (read on the slow path). */
  flyRouting: boolean;

  constructor(buf: Buffer, start: number, end: number, offs: number[]) {
    super(buf, start, end, offs);
    this.method = '';
    this.target = '';
    this.form = FORM_ORIGIN;
    this.path = '';
    this.authority = null;
    this.host = null;
    this.hostIndex = -1;
    this.expectContinue = false;
    this.flyRouting = false;
  }

  /** True when the request has a body to forward (Content-Length > 0 or chunked). */
  get hasBody(): boolean {
    return this.chunked || this.contentLength > 0;
  }
}

export class RequestHeadParser {
  readonly maxHeaderBytes: number;
  readonly maxHeaderCount: number;
  readonly maxUriBytes: number;
  /** Set when feed() returned -1; the parser stays failed until reset(). */
  error: ProxyErrorDef | null;
  /** The last complete head (a new object per request; the previous one stays valid). */
  head: RequestHead | null;
  private readonly acc: HeadAccumulator;

  constructor(limits: RequestLimits) {
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.maxHeaderCount = limits.maxHeaderCount;
    this.maxUriBytes = limits.maxUriBytes;
    this.error = null;
    this.head = null;
    // The start line may be long for a long target; beyond maxUriBytes + room for method and
    // version it can only end in 414, so say so without waiting for maxHeaderBytes.
    this.acc = new HeadAccumulator(limits.maxHeaderBytes, limits.maxHeaderCount, MAX_LEADING_CRLF, limits.maxUriBytes + 256);
  }

  /** Bytes of an incomplete head held between feeds: 0 means the connection is between requests. */
  get buffered(): number {
    return this.acc.buffered;
  }

  reset(): void {
    this.acc.reset();
    this.error = null;
    this.head = null;
  }

  /**
   * Feeds buf[start..]. Returns how many of those bytes make up the now complete head (> 0; the
   * head is in `this.head`, bytes after it belong to the body or the next request), 0 when all of
   * them were buffered and more are needed, or -1 on error (`this.error`).
   *
   * Zero copy when a head arrives whole: the head then references `buf` and must not outlive the
   * caller's use of that memory without head.detach().
   */
  feed(buf: Buffer, start: number): number {
    if (this.error !== null) return -1;
    const acc = this.acc;
    const n = acc.feed(buf, start);
    if (n === 0) return 0;
    if (n > 0) {
      const err = this.parse(acc.buf, acc.start, acc.end);
      if (err === null) return n;
      this.error = err;
      return -1;
    }
    switch (acc.err) {
      case ACC_TOO_LARGE:
        this.error = this.tooLarge(acc.buf, acc.start, acc.end);
        break;
      case ACC_TOO_MANY:
        this.error = E.TOO_MANY_HEADERS;
        break;
      case ACC_BARE_LF:
        this.error = E.BARE_CR_LF;
        break;
      case ACC_LEADING:
        this.error = E.BAD_REQUEST;
        break;
      default:
        this.error = E.INTERNAL;
    }
    return -1;
  }

  /** 414 when it is the request-target that is too long (RFC 9112 §3), else 431. */
  private tooLarge(b: Buffer, s: number, e: number): ProxyErrorDef {
    let p = s;
    while (p < e && b[p] !== SP && b[p] !== CR && b[p] !== LF) p++;
    if (p < e && b[p] === SP) {
      const ts = ++p;
      while (p < e && b[p] !== SP && b[p] !== CR && b[p] !== LF) p++;
      if (p - ts > this.maxUriBytes) return E.URI_TOO_LONG;
    }
    return E.HEADERS_TOO_LARGE;
  }

  /** Parses the complete head b[s..e) (ends in CRLF CRLF). Sets this.head or returns the error. */
  private parse(b: Buffer, s: number, e: number): ProxyErrorDef | null {
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3). Exactly one SP
    // between parts: §3 allows lenient whitespace splitting, but that is where parsers diverge.
    let p = s;
    while (TCHAR[b[p]] === 1) p++;
    const me = p;
    if (b[p] !== SP || me === s) {
      const le = lineError(b, p);
      if (le !== FE_BAD) return fieldError(le);
      return b[p] === CR ? E.BAD_REQUEST : E.BAD_METHOD;
    }
    const ts = ++p;
    while (TARGET_CHAR[b[p]] === 1) p++;
    const te = p;
    if (te - ts > this.maxUriBytes) return E.URI_TOO_LONG;
    if (b[p] !== SP || te === ts) return fieldError(lineError(b, p));
    const vs = ++p;
    while (b[p] > 0x20 && b[p] < 0x7f) p++;
    if (b[p] !== CR || b[p + 1] !== LF) return fieldError(lineError(b, p));
    // HTTP-version is case-sensitive (RFC 9112 §2.3). Only 1.0 and 1.1; an HTTP/2 preface
    // ("PRI * HTTP/2.0") on a cleartext HTTP/1 port lands here too.
    if (
      p - vs !== 8 ||
      b[vs] !== 0x48 ||
      b[vs + 1] !== 0x54 ||
      b[vs + 2] !== 0x54 ||
      b[vs + 3] !== 0x50 ||
      b[vs + 4] !== 0x2f ||
      b[vs + 5] !== 0x31 ||
      b[vs + 6] !== 0x2e ||
      (b[vs + 7] !== 0x30 && b[vs + 7] !== 0x31)
    ) {
      return E.BAD_VERSION;
    }
    const minor = b[vs + 7] === 0x31 ? 1 : 0;
    p += 2;

    const method = internMethod(b, s, me);
    // We are a reverse proxy, not a forward proxy: no tunnels to arbitrary hosts.
    if (method === 'CONNECT') return E.BAD_METHOD;

    const target = latin1(b, ts, te);
    let form = FORM_ORIGIN;
    let path = target;
    let authority: string | null = null;
    const c0 = b[ts];
    if (c0 === 0x2f /* / */) {
      // origin-form, the common case.
    } else if (c0 === 0x2a /* * */ && te - ts === 1) {
      // asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
      if (method !== 'OPTIONS') return E.BAD_REQUEST;
      form = FORM_ASTERISK;
    } else {
      // absolute-form (RFC 9112 §3.2.2), http/https only; authority-form is CONNECT-only and
      // CONNECT was refused above. A userinfo ("user@host") is refused (RFC 9110 §4.2.4).
      let q: number;
      if (te - ts >= 7 && bytesEqLower(b, ts, ts + 7, 'http://')) q = ts + 7;
      else if (te - ts >= 8 && bytesEqLower(b, ts, ts + 8, 'https://')) q = ts + 8;
      else return E.BAD_REQUEST;
      const as = q;
      while (q < te && b[q] !== 0x2f && b[q] !== 0x3f /* ? */) q++;
      if (!validAuthority(b, as, q)) return E.BAD_REQUEST;
      form = FORM_ABSOLUTE;
      authority = latin1(b, as, q);
      if (q === te) path = method === 'OPTIONS' ? '*' : '/';
      else if (b[q] === 0x3f) path = '/' + latin1(b, q, te);
      else path = latin1(b, q, te);
    }

    const count = scanFields(b, p, e, SCRATCH, this.maxHeaderCount);
    if (count < 0) return fieldError(count);
    const offs = SCRATCH.slice(0, count * SLOTS);

    let hostIdx = -1;
    let hostCount = 0;
    let clCount = 0;
    let cl = -1;
    let teCount = 0;
    let teOk = false;
    let conn = 0;
    let tokens: string[] | null = null;
    let upgradeCount = 0;
    let expect = false;
    let routing = false;
    for (let i = 0; i < count; i++) {
      const k = offs[i * SLOTS + 4];
      if (k === H_OTHER) continue;
      const fvs = offs[i * SLOTS + 2];
      const fve = offs[i * SLOTS + 3];
      switch (k) {
        case H_HOST:
          hostCount++;
          hostIdx = i;
          break;
        case H_CONTENT_LENGTH:
          if (++clCount === 1) cl = parseLength(b, fvs, fve);
          break;
        case H_TRANSFER_ENCODING:
          // Exactly "chunked": RFC 9112 §6.1 allows other codings before it, but a proxy that
          // forwards bytes unchanged gains nothing from them and every variant ("gzip, chunked",
          // "chunked, chunked", "xchunked") is a place where parsers have disagreed.
          if (++teCount === 1) teOk = bytesEqLower(b, fvs, fve, 'chunked');
          break;
        case H_CONNECTION:
          if (tokens === null) tokens = [];
          conn |= parseConnection(b, fvs, fve, tokens);
          break;
        case H_UPGRADE:
          upgradeCount++;
          break;
        case H_EXPECT:
          if (bytesEqLower(b, fvs, fve, '100-continue')) expect = true;
          break;
        case H_FLY_FORCE_INSTANCE_ID:
        case H_FLY_PREFER_INSTANCE_ID:
        case H_FLY_FORCE_REGION:
        case H_FLY_PREFER_REGION:
          routing = true;
          break;
        case H_CL_LOOKALIKE:
          return E.BAD_CONTENT_LENGTH;
        case H_TE_LOOKALIKE:
          return E.BAD_TRANSFER_ENCODING;
      }
    }

    if ((conn & CONN_INVALID) !== 0) return E.BAD_REQUEST;
    // RFC 9112 §6.1: CL with TE "ought to be handled as an error"; §6.3 lets a server go on with TE
    // and close afterwards, but rejecting is the only answer no downstream parser can misread.
    if (clCount > 0 && teCount > 0) return E.AMBIGUOUS_LENGTH;
    // RFC 9110 §8.6 allows folding identical repeats ("5, 5" or two lines); we do not: a repeat
    // only ever comes from a confused or hostile client.
    if (clCount > 1 || (clCount === 1 && cl < 0)) return E.BAD_CONTENT_LENGTH;
    // RFC 9112 §6.1: TE in an HTTP/1.0 message means faulty framing.
    if (teCount > 0 && (teCount > 1 || !teOk || minor === 0)) return E.BAD_TRANSFER_ENCODING;
    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host or with more than one, or with an
    // invalid value. An absolute-form target still needs its Host line.
    if (hostCount > 1 || (hostCount === 0 && minor === 1)) return E.MISSING_HOST;
    let host = authority;
    if (hostIdx >= 0) {
      const hs = offs[hostIdx * SLOTS + 2];
      const he = offs[hostIdx * SLOTS + 3];
      if (hs === he) return E.MISSING_HOST;
      if (!validAuthority(b, hs, he)) return E.BAD_REQUEST;
      if (host === null) host = latin1(b, hs, he);
    }

    // RFC 9110 §7.8: the Upgrade field only counts when Connection lists "upgrade", and a server
    // must ignore it in an HTTP/1.0 request.
    let upgrade: string | null = null;
    if (minor === 1 && (conn & CONN_UPGRADE) !== 0 && upgradeCount > 0) {
      for (let i = 0; i < count; i++) {
        if (offs[i * SLOTS + 4] !== H_UPGRADE) continue;
        const v = latin1(b, offs[i * SLOTS + 2], offs[i * SLOTS + 3]).toLowerCase();
        upgrade = upgrade === null ? v : upgrade + ', ' + v;
      }
    }

    // Mark what the forwarder drops. Fields named in Connection are hop-by-hop too (RFC 9110
    // §7.6.1), except Host and the framing fields (re-emitted anyway): "Connection: host" or
    // "Connection: content-length" is an attempt to make us strip routing or framing.
    const hasTokens = tokens !== null && tokens.length > 0;
    let dropCount = 0;
    for (let i = 0; i < count; i++) {
      const k = offs[i * SLOTS + 4];
      let drop: boolean;
      if (k === H_HOST) drop = form === FORM_ABSOLUTE;
      else if (k === H_UPGRADE) drop = upgrade === null;
      else drop = REQ_DROP[k] === 1 || (hasTokens && namedByConnection(b, offs, i, tokens!));
      if (drop) {
        offs[i * SLOTS + 4] = k | DROP;
        dropCount++;
      }
    }

    const h = new RequestHead(b, s, e, offs);
    h.versionMinor = minor;
    h.count = count;
    if (tokens !== null) h.connectionTokens = tokens;
    h.dropCount = dropCount;
    h.contentLength = clCount === 1 ? cl : -1;
    h.chunked = teCount === 1;
    // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    h.keepAlive = (conn & CONN_CLOSE) === 0 && (minor === 1 || (conn & CONN_KEEP_ALIVE) !== 0);
    h.upgrade = upgrade;
    h.method = method;
    h.target = target;
    h.form = form;
    h.path = path;
    h.authority = authority;
    h.host = host;
    h.hostIndex = hostIdx;
    h.expectContinue = expect && minor === 1;
    h.flyRouting = routing;
    this.head = h;
    return null;
  }
}

function fieldError(code: number): ProxyErrorDef {
  switch (code) {
    case FE_BARE:
      return E.BARE_CR_LF;
    case FE_TOO_MANY:
      return E.TOO_MANY_HEADERS;
    case FE_CTL - H_CONTENT_LENGTH:
      return E.BAD_CONTENT_LENGTH;
    case FE_CTL - H_TRANSFER_ENCODING:
      return E.BAD_TRANSFER_ENCODING;
  }
  return E.BAD_REQUEST;
}
