// Byte classes and header-name classification shared by the HTTP/1.1 request, response and
// chunked-body scanners. Tables are 256-entry Uint8Arrays so every check is one indexed load with
// no branches on ranges; `table[undefined]` is undefined (never 1), so a read past the end of a
// buffer fails a check instead of passing it.

export const HTAB = 0x09;
export const LF = 0x0a;
export const CR = 0x0d;
export const SP = 0x20;
export const COLON = 0x3a;
export const SEMI = 0x3b;
export const COMMA = 0x2c;

function table(fill: (c: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = fill(c) ? 1 : 0;
  return t;
}

const TCHAR_EXTRA = "!#$%&'*+-.^_`|~";

/** RFC 9110 §5.6.2 tchar: field names, methods, Connection options. */
export const TCHAR = table(
  (c) =>
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    TCHAR_EXTRA.includes(String.fromCharCode(c)),
);

/**
 * RFC 9110 §5.5 field-value octets: HTAB, SP, VCHAR and obs-text (>= 0x80, accepted on both sides
 * because real clients and apps send UTF-8 in values). Every other CTL, DEL and NUL is refused:
 * those are what differing parsers disagree on.
 */
export const FIELD_VCHAR = table((c) => c === HTAB || (c >= 0x20 && c <= 0x7e) || c >= 0x80);

/**
 * Request-target octets (RFC 9112 §3.2, RFC 3986): any visible ASCII, no SP, CTL or DEL. Bytes >=
 * 0x80 are let through (raw UTF-8 paths are common and harmless to framing); they are forwarded
 * unchanged and the app decides.
 */
export const TARGET_CHAR = table((c) => (c > 0x20 && c < 0x7f) || c >= 0x80);

/**
 * Host and absolute-form authority characters: RFC 3986 unreserved only. RFC 3986 also allows
 * sub-delims and pct-encoding in reg-name, but no DNS name uses them and a comma or semicolon in a
 * routing key invites disagreement between us and the app about which host was meant.
 */
export const HOST_CHAR = table(
  (c) =>
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f ||
    c === 0x7e,
);

/** Hex digit value + 1 (0 = not a hex digit), for chunk sizes. */
export const HEXVAL = table(() => false);
for (let c = 0; c < 256; c++) {
  if (c >= 0x30 && c <= 0x39) HEXVAL[c] = c - 0x30 + 1;
  else if (c >= 0x41 && c <= 0x46) HEXVAL[c] = c - 0x41 + 11;
  else if (c >= 0x61 && c <= 0x66) HEXVAL[c] = c - 0x61 + 11;
}

// ---------------------------------------------------------------------------------------------
// Header kinds. A header's kind is found once while scanning (by length, then a case-insensitive
// byte compare) so framing and hop-by-hop decisions never allocate a lower-cased name.

export const H_OTHER = 0;
export const H_HOST = 1;
export const H_CONTENT_LENGTH = 2;
export const H_TRANSFER_ENCODING = 3;
export const H_CONNECTION = 4;
export const H_KEEP_ALIVE = 5;
export const H_PROXY_CONNECTION = 6;
export const H_TE = 7;
export const H_TRAILER = 8;
export const H_UPGRADE = 9;
export const H_EXPECT = 10;
export const H_FLY_CLIENT_IP = 11;
export const H_X_FORWARDED_PROTO = 12;
export const H_X_FORWARDED_SSL = 13;
export const H_X_FORWARDED_PORT = 14;
export const H_FLY_FORWARDED_PORT = 15;
export const H_FLY_REGION = 16;
export const H_FLY_REQUEST_ID = 17;
export const H_VIA = 18;
export const H_X_FORWARDED_FOR = 19;
export const H_SERVER = 20;
/**
 * "Content_Length" / "Transfer_Encoding": not the framing fields to us, but CGI-style gateways
 * (WSGI, Rack, PHP) map both '-' and '_' to '_', so the app would see a second framing header we
 * never validated. The request parser refuses them.
 */
export const H_CL_LOOKALIKE = 21;
export const H_TE_LOOKALIKE = 22;
/** Fly's client routing headers (spec section 3): only looked at when one is present. */
export const H_FLY_FORCE_INSTANCE_ID = 23;
export const H_FLY_PREFER_INSTANCE_ID = 24;
export const H_FLY_FORCE_REGION = 25;
export const H_FLY_PREFER_REGION = 26;

/** Lower-case names by kind, for the slow paths (get(), tests). */
export const KIND_NAMES: readonly string[] = Object.freeze([
  '',
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'fly-client-ip',
  'x-forwarded-proto',
  'x-forwarded-ssl',
  'x-forwarded-port',
  'fly-forwarded-port',
  'fly-region',
  'fly-request-id',
  'via',
  'x-forwarded-for',
  'server',
  'content_length',
  'transfer_encoding',
  'fly-force-instance-id',
  'fly-prefer-instance-id',
  'fly-force-region',
  'fly-prefer-region',
]);

const LIT: Uint8Array[] = KIND_NAMES.map((n) => Uint8Array.from(n, (ch) => ch.charCodeAt(0)));

/**
 * Case-insensitive compare of b[s..s+lit.length) with a lower-case literal made of letters and
 * '-'. `c | 0x20` lower-cases ASCII letters; for the other tchars it can only produce a byte that
 * is not a letter or '-' (e.g. '^' -> '~'), so it never makes a false match.
 */
function eqLower(b: Uint8Array, s: number, lit: Uint8Array): boolean {
  for (let i = 0; i < lit.length; i++) if ((b[s + i] | 0x20) !== lit[i]) return false;
  return true;
}

/** eqLower, with '_' standing for '-'. */
function eqLowerUnderscore(b: Uint8Array, s: number, lit: Uint8Array): boolean {
  for (let i = 0; i < lit.length; i++) {
    const c = b[s + i];
    if ((c === 0x5f ? 0x2d : c | 0x20) !== lit[i]) return false;
  }
  return true;
}

/** Kind of the field name b[s..s+n); H_OTHER for anything we do not act on. */
export function classifyName(b: Uint8Array, s: number, n: number): number {
  switch (n) {
    case 2:
      return eqLower(b, s, LIT[H_TE]) ? H_TE : H_OTHER;
    case 3:
      return eqLower(b, s, LIT[H_VIA]) ? H_VIA : H_OTHER;
    case 4:
      return eqLower(b, s, LIT[H_HOST]) ? H_HOST : H_OTHER;
    case 6:
      if (eqLower(b, s, LIT[H_EXPECT])) return H_EXPECT;
      return eqLower(b, s, LIT[H_SERVER]) ? H_SERVER : H_OTHER;
    case 7:
      if (eqLower(b, s, LIT[H_UPGRADE])) return H_UPGRADE;
      return eqLower(b, s, LIT[H_TRAILER]) ? H_TRAILER : H_OTHER;
    case 10:
      switch (b[s] | 0x20) {
        case 0x63: // c
          return eqLower(b, s, LIT[H_CONNECTION]) ? H_CONNECTION : H_OTHER;
        case 0x6b: // k
          return eqLower(b, s, LIT[H_KEEP_ALIVE]) ? H_KEEP_ALIVE : H_OTHER;
        case 0x66: // f
          return eqLower(b, s, LIT[H_FLY_REGION]) ? H_FLY_REGION : H_OTHER;
      }
      return H_OTHER;
    case 13:
      return eqLower(b, s, LIT[H_FLY_CLIENT_IP]) ? H_FLY_CLIENT_IP : H_OTHER;
    case 14:
      if ((b[s] | 0x20) === 0x63) {
        if (eqLower(b, s, LIT[H_CONTENT_LENGTH])) return H_CONTENT_LENGTH;
        return eqLowerUnderscore(b, s, LIT[H_CONTENT_LENGTH]) ? H_CL_LOOKALIKE : H_OTHER;
      }
      return eqLower(b, s, LIT[H_FLY_REQUEST_ID]) ? H_FLY_REQUEST_ID : H_OTHER;
    case 15:
      if (eqLower(b, s, LIT[H_X_FORWARDED_FOR])) return H_X_FORWARDED_FOR;
      return eqLower(b, s, LIT[H_X_FORWARDED_SSL]) ? H_X_FORWARDED_SSL : H_OTHER;
    case 16:
      if ((b[s] | 0x20) === 0x70) return eqLower(b, s, LIT[H_PROXY_CONNECTION]) ? H_PROXY_CONNECTION : H_OTHER;
      if ((b[s] | 0x20) === 0x66) return eqLower(b, s, LIT[H_FLY_FORCE_REGION]) ? H_FLY_FORCE_REGION : H_OTHER;
      return eqLower(b, s, LIT[H_X_FORWARDED_PORT]) ? H_X_FORWARDED_PORT : H_OTHER;
    case 17:
      if ((b[s] | 0x20) === 0x74) {
        if (eqLower(b, s, LIT[H_TRANSFER_ENCODING])) return H_TRANSFER_ENCODING;
        return eqLowerUnderscore(b, s, LIT[H_TRANSFER_ENCODING]) ? H_TE_LOOKALIKE : H_OTHER;
      }
      if ((b[s] | 0x20) === 0x66) return eqLower(b, s, LIT[H_FLY_PREFER_REGION]) ? H_FLY_PREFER_REGION : H_OTHER;
      return eqLower(b, s, LIT[H_X_FORWARDED_PROTO]) ? H_X_FORWARDED_PROTO : H_OTHER;
    case 18:
      return eqLower(b, s, LIT[H_FLY_FORWARDED_PORT]) ? H_FLY_FORWARDED_PORT : H_OTHER;
    case 21:
      return eqLower(b, s, LIT[H_FLY_FORCE_INSTANCE_ID]) ? H_FLY_FORCE_INSTANCE_ID : H_OTHER;
    case 22:
      return eqLower(b, s, LIT[H_FLY_PREFER_INSTANCE_ID]) ? H_FLY_PREFER_INSTANCE_ID : H_OTHER;
  }
  return H_OTHER;
}

/** Case-insensitive compare of b[s..e) with a lower-case ASCII string (any characters). */
export function bytesEqLower(b: Uint8Array, s: number, e: number, lower: string): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = b[s + i];
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** `Buffer#latin1Slice` without the argument checks of toString(); present on every Node Buffer. */
interface FastBuffer {
  latin1Slice(start: number, end: number): string;
}

export function latin1(b: Buffer, s: number, e: number): string {
  return (b as unknown as FastBuffer).latin1Slice(s, e);
}
