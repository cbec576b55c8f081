// What request and response heads share: the field-line scanner and the parsed-head base class.
//
// Representation: a head keeps a reference to the bytes it was parsed from plus, per field, five
// numbers in one flat array: [nameStart, nameEnd, valueStart, valueEnd, kind|flags]. No string is
// made for a field unless someone asks (name(i)/value(i)/get()). The forwarder re-emits kept
// fields by copying byte ranges, so a typical browser request never turns its 15-20 fields into
// 30-40 strings (bench/micro-http1-parse.ts measures the difference). The value range is the field
// value with OWS trimmed (RFC 9112 §5.1); the raw line i is [nameStart(i), lineEnd(i)) incl. CRLF.

import { CR, COLON, COMMA, FIELD_VCHAR, HTAB, LF, SP, TCHAR, bytesEqLower, classifyName, latin1 } from './chars.ts';

export const SLOTS = 5;
export const KIND_MASK = 0xff;
/** Flag on a field's kind slot: the forwarder must not copy this line (hop-by-hop/spoofable). */
export const DROP = 0x100;

// scanFields() results below 0.
export const FE_BAD = -1;
export const FE_BARE = -2;
export const FE_TOO_MANY = -3;
export const FE_NUL = -4;
/** A CTL in a field value: the code is FE_CTL - kind, so framing fields can get their own code. */
export const FE_CTL = -100;

const EMPTY: readonly string[] = Object.freeze([]);

/**
 * Shared scratch for scanFields: parsing is synchronous, so one array serves every parser; the
 * head gets an exact-size slice. Measured ~15% faster than pushing into a fresh array (no
 * regrowth), and no per-connection array sized by maxHeaderCount.
 */
export const SCRATCH: number[] = [];

/**
 * Scans field lines from `p` (the byte after the start line's CRLF) up to the blank line ending at
 * `e`, writing SLOTS numbers per field into `offs` from index 0 (sequentially, so a plain array
 * stays packed). Returns the field count, or an FE_* code.
 * Requires b[e-2..e) = CRLF and that a CRLF ends every line, which phase 1 guarantees for the
 * blank line; every other terminator is checked here.
 */
export function scanFields(b: Buffer, p: number, e: number, offs: number[], maxCount: number): number {
  const last = e - 2;
  let count = 0;
  let j = 0;
  while (p < last) {
    const ls = p;
    while (TCHAR[b[p]] === 1) p++;
    const ne = p;
    if (b[p] !== COLON || ne === ls) {
      // A line starting with SP/HTAB is obs-fold (or whitespace before the first field): RFC 9112
      // §5.2 and §2.2 let a server reject it, and we do. SP/HTAB before the colon: §5.1 MUST
      // reject. Anything else is not a field line at all.
      return lineError(b, p);
    }
    if (++count > maxCount) return FE_TOO_MANY;
    const kind = classifyName(b, ls, ne - ls);
    p++;
    while (b[p] === SP || b[p] === HTAB) p++;
    const vs = p;
    while (FIELD_VCHAR[b[p]] === 1) p++;
    if (b[p] !== CR || b[p + 1] !== LF) {
      const c = b[p];
      if (c === CR || c === LF) return FE_BARE;
      if (c === 0) return FE_NUL;
      return FE_CTL - kind;
    }
    let ve = p;
    while (ve > vs && (b[ve - 1] === SP || b[ve - 1] === HTAB)) ve--;
    offs[j] = ls;
    offs[j + 1] = ne;
    offs[j + 2] = vs;
    offs[j + 3] = ve;
    offs[j + 4] = kind;
    j += SLOTS;
    p += 2;
  }
  return count;
}

/** Classifies an unexpected byte where a start/field line token should have continued. */
export function lineError(b: Buffer, p: number): number {
  const c = b[p];
  if (c === LF || (c === CR && b[p + 1] !== LF)) return FE_BARE;
  if (c === 0) return FE_NUL;
  return FE_BAD;
}

/** 1*DIGIT (RFC 9110 §8.6) up to 2^53-1; -1 for anything else: sign, hex, list, empty, space. */
export function parseLength(b: Buffer, s: number, e: number): number {
  if (s >= e) return -1;
  let v = 0;
  for (let p = s; p < e; p++) {
    const d = b[p] - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
    if (v > Number.MAX_SAFE_INTEGER) return -1;
  }
  return v;
}

export const CONN_CLOSE = 1;
export const CONN_KEEP_ALIVE = 2;
export const CONN_UPGRADE = 4;
export const CONN_INVALID = 8;

/**
 * Connection options kept per message. Real clients send one to three; the cap bounds the
 * name-against-option comparisons (fields x options) a hostile head can make us do.
 */
export const MAX_CONNECTION_TOKENS = 32;

/**
 * Parses a Connection value (RFC 9110 §7.6.1: #connection-option, token list, empty elements
 * allowed by §5.6.1) into lower-cased tokens appended to `out`; returns CONN_* flags. The three
 * common options are interned, so `Connection: keep-alive` allocates nothing.
 */
export function parseConnection(b: Buffer, s: number, e: number, out: string[]): number {
  let flags = 0;
  let p = s;
  while (p < e) {
    while (p < e && (b[p] === SP || b[p] === HTAB || b[p] === COMMA)) p++;
    if (p >= e) break;
    const ts = p;
    while (p < e && TCHAR[b[p]] === 1) p++;
    const te = p;
    while (p < e && (b[p] === SP || b[p] === HTAB)) p++;
    if (te === ts || (p < e && b[p] !== COMMA) || out.length >= MAX_CONNECTION_TOKENS) return flags | CONN_INVALID;
    if (bytesEqLower(b, ts, te, 'close')) {
      flags |= CONN_CLOSE;
      out.push('close');
    } else if (bytesEqLower(b, ts, te, 'keep-alive')) {
      flags |= CONN_KEEP_ALIVE;
      out.push('keep-alive');
    } else if (bytesEqLower(b, ts, te, 'upgrade')) {
      flags |= CONN_UPGRADE;
      out.push('upgrade');
    } else {
      out.push(latin1(b, ts, te).toLowerCase());
    }
  }
  return flags;
}

/** True when field i's name equals one of the (lower-case) Connection options. */
export function namedByConnection(b: Buffer, offs: number[], i: number, tokens: readonly string[]): boolean {
  const s = offs[i * SLOTS];
  const e = offs[i * SLOTS + 1];
  for (let t = 0; t < tokens.length; t++) if (bytesEqLower(b, s, e, tokens[t])) return true;
  return false;
}

/** A parsed message head; RequestHead and ResponseHead add the start line and framing. */
export class MessageHead {
  /** The bytes the head was parsed from; the head is buf[start..end), blank line included. */
  buf: Buffer;
  start: number;
  end: number;
  /** HTTP/1.x minor version as received. */
  versionMinor: 0 | 1;
  /** Number of field lines. */
  count: number;
  /** SLOTS numbers per field: nameStart, nameEnd, valueStart, valueEnd (OWS-trimmed), kind|flags. */
  offs: number[];
  /** Lower-cased options listed in Connection (all Connection lines), in order. */
  connectionTokens: readonly string[];
  /** Number of fields flagged DROP. */
  dropCount: number;
  /** -1 when absent (or not applicable). */
  contentLength: number;
  /** Transfer-Encoding: chunked (the only coding we accept). */
  chunked: boolean;
  /** Whether this connection may carry another message after this one (see subclasses). */
  keepAlive: boolean;
  /** Lower-cased Upgrade value when the upgrade applies (see subclasses), else null. */
  upgrade: string | null;

  constructor(buf: Buffer, start: number, end: number, offs: number[]) {
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.versionMinor = 1;
    this.count = 0;
    this.offs = offs;
    this.connectionTokens = EMPTY;
    this.dropCount = 0;
    this.contentLength = -1;
    this.chunked = false;
    this.keepAlive = true;
    this.upgrade = null;
  }

  /** Field name as received (original case). */
  name(i: number): string {
    return latin1(this.buf, this.offs[i * SLOTS], this.offs[i * SLOTS + 1]);
  }

  /** Field value, OWS trimmed, latin1-decoded (obs-text bytes map 1:1 to U+0080..U+00FF). */
  value(i: number): string {
    return latin1(this.buf, this.offs[i * SLOTS + 2], this.offs[i * SLOTS + 3]);
  }

  /** H_* kind of field i (H_OTHER for names we do not act on). */
  kind(i: number): number {
    return this.offs[i * SLOTS + 4] & KIND_MASK;
  }

  /** True when the forwarder drops field i (hop-by-hop, framing, or a header we set ourselves). */
  dropped(i: number): boolean {
    return (this.offs[i * SLOTS + 4] & DROP) !== 0;
  }

  /** Start of field line i in buf. */
  lineStart(i: number): number {
    return this.offs[i * SLOTS];
  }

  /** End of field line i in buf, after its CRLF. */
  lineEnd(i: number): number {
    return i + 1 < this.count ? this.offs[(i + 1) * SLOTS] : this.end - 2;
  }

  /** First value of the field with this (lower-case) name, or null. Slow path: tests, logging. */
  get(lowerName: string): string | null {
    const o = this.offs;
    for (let i = 0; i < this.count; i++) {
      if (bytesEqLower(this.buf, o[i * SLOTS], o[i * SLOTS + 1], lowerName)) return this.value(i);
    }
    return null;
  }

  /** Every value of the field with this (lower-case) name, in order. */
  getAll(lowerName: string): string[] {
    const r: string[] = [];
    const o = this.offs;
    for (let i = 0; i < this.count; i++) {
      if (bytesEqLower(this.buf, o[i * SLOTS], o[i * SLOTS + 1], lowerName)) r.push(this.value(i));
    }
    return r;
  }

  /** The whole head as a latin1 string (debugging, tests). */
  toString(): string {
    return latin1(this.buf, this.start, this.end);
  }

  /**
   * Copies the head bytes into a Buffer of its own and points the head at it. The parser parses
   * in place from the caller's chunk; call this before keeping the head past the point where the
   * caller might reuse that chunk's memory (e.g. a socket with a fixed `onread` buffer).
   */
  detach(): void {
    const n = this.end - this.start;
    const nb = Buffer.allocUnsafeSlow(n);
    this.buf.copy(nb, 0, this.start, this.end);
    const d = -this.start;
    const o = this.offs;
    for (let i = 0; i < o.length; i += SLOTS) {
      o[i] += d;
      o[i + 1] += d;
      o[i + 2] += d;
      o[i + 3] += d;
    }
    this.buf = nb;
    this.start = 0;
    this.end = n;
  }
}
