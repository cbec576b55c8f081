// Chunked body scanner (RFC 9112 §7.1). It does not decode for forwarding: it tells the proxy how
// many of the bytes it has belong to the body, so the original bytes go on unchanged (no copy, no
// re-encoding) and the end of the body is known exactly, which is what keeps the next request or
// response on the connection in sync. Whatever it lets through reaches the other side verbatim,
// so it is strict about every place parsers have disagreed: bare LF, bytes after the size, chunk
// extensions, missing CRLF after data, oversize sizes, trailers.
//
//   scanner.reset();
//   const n = scanner.scan(chunk, off, chunk.length);   // forward chunk[off..off+n)
//   if (n < 0) fail(scanner.error); else if (scanner.done) { body over; chunk[off+n..] is next }
//
// decode() is the same machine stopping after each data span, for a consumer that needs the
// payload (an HTTP/1.0 client cannot receive chunked; a buffered body for retry/replay).

import type { ProxyErrorDef } from '../errors.ts';
import { CR, FIELD_VCHAR, HEXVAL, HTAB, LF, SEMI, SP, TCHAR } from './chars.ts';

const S_SIZE0 = 0; // first hex digit of chunk-size
const S_SIZE = 1; // more hex digits, or what follows the size
const S_BWS = 2; // whitespace after the size: only BWS ";" may follow (§7.1.1)
const S_EXT = 3; // chunk-ext bytes until CR
const S_SIZE_LF = 4;
const S_DATA = 5;
const S_DATA_CR = 6;
const S_DATA_LF = 7;
const S_TR_START = 8; // start of a trailer field line, or the final CRLF
const S_TR_NAME = 9;
const S_TR_VALUE = 10;
const S_TR_LF = 11;
const S_END_LF = 12;
const S_DONE = 13;
const S_ERROR = 14;

/** chunk-size digits we accept, leading zeros included: 16 hex digits already exceed 2^53. */
const MAX_SIZE_DIGITS = 16;

/** Chunk-ext octets: HTAB, SP, VCHAR, obs-text. No CTL: a CR or LF inside must not end the line. */
const EXT_CHAR = FIELD_VCHAR;

// Trailer fields that must never appear after the body (RFC 9110 §6.5.1): a recipient that merges
// trailers into the header section would let them re-frame or re-route the message.
const NAME_BUF = 20;
const FORBIDDEN_TRAILERS = ['content-length', 'transfer-encoding', 'host'].map((n) => Uint8Array.from(n, (c) => c.charCodeAt(0)));

export const DEFAULT_MAX_EXT_BYTES = 4096;
export const DEFAULT_MAX_TRAILER_BYTES = 16384;

export class ChunkedScanner {
  /** The error to report: E.BAD_CHUNK for request bodies, E.BAD_RESPONSE for response bodies. */
  readonly errorDef: ProxyErrorDef;
  /** Per chunk-size line: bytes after the size (BWS + extensions). */
  readonly maxExtBytes: number;
  /** Whole trailer section, final CRLF included. */
  readonly maxTrailerBytes: number;

  error: ProxyErrorDef | null;
  /** The last-chunk, trailers and final CRLF have been consumed. */
  done: boolean;
  /** Payload bytes seen so far (chunk data only, not framing). */
  payloadBytes: number;
  /** After decode(): the payload span inside the consumed bytes, or -1/-1 when there was none. */
  dataStart: number;
  dataEnd: number;

  private state: number;
  private size: number; // chunk-size while reading it, then data bytes left in the chunk
  private digits: number;
  private extLen: number;
  private trailerLen: number;
  private nameLen: number;
  private readonly nameBuf: Uint8Array;

  constructor(errorDef: ProxyErrorDef, maxExtBytes = DEFAULT_MAX_EXT_BYTES, maxTrailerBytes = DEFAULT_MAX_TRAILER_BYTES) {
    this.errorDef = errorDef;
    this.maxExtBytes = maxExtBytes;
    this.maxTrailerBytes = maxTrailerBytes;
    this.error = null;
    this.done = false;
    this.payloadBytes = 0;
    this.dataStart = -1;
    this.dataEnd = -1;
    this.state = S_SIZE0;
    this.size = 0;
    this.digits = 0;
    this.extLen = 0;
    this.trailerLen = 0;
    this.nameLen = 0;
    this.nameBuf = new Uint8Array(NAME_BUF);
  }

  reset(): void {
    this.error = null;
    this.done = false;
    this.payloadBytes = 0;
    this.dataStart = -1;
    this.dataEnd = -1;
    this.state = S_SIZE0;
    this.size = 0;
    this.digits = 0;
    this.extLen = 0;
    this.trailerLen = 0;
    this.nameLen = 0;
  }

  /** True while in the middle of chunk data (useful to tell a clean EOF from a truncated body). */
  get inData(): boolean {
    return this.state === S_DATA;
  }

  /**
   * Consumes body bytes from buf[start..end). Returns how many belong to the chunked body (all of
   * them unless the body ends inside this range: then `done` is set and the rest is not ours),
   * or -1 on malformed framing (`error`).
   */
  scan(buf: Uint8Array, start: number, end: number): number {
    return this.run(buf, start, end, false);
  }

  /**
   * Like scan(), but returns right after the first run of chunk data, which is then
   * buf[dataStart..dataEnd). Call again from start + returned count until it returns 0 or done.
   */
  decode(buf: Uint8Array, start: number, end: number): number {
    this.dataStart = -1;
    this.dataEnd = -1;
    return this.run(buf, start, end, true);
  }

  private run(buf: Uint8Array, start: number, end: number, stopAtData: boolean): number {
    let st = this.state;
    if (st === S_DONE) return 0;
    if (st === S_ERROR) return -1;
    let p = start;
    while (p < end) {
      if (st === S_DATA) {
        const left = this.size;
        const n = end - p < left ? end - p : left;
        this.size = left - n;
        this.payloadBytes += n;
        p += n;
        if (this.size === 0) st = S_DATA_CR;
        if (stopAtData) {
          this.dataStart = p - n;
          this.dataEnd = p;
          this.state = st;
          return p - start;
        }
        continue;
      }
      const c = buf[p++];
      switch (st) {
        case S_SIZE0: {
          const v = HEXVAL[c];
          if (v === 0) return this.fail();
          this.size = v - 1;
          this.digits = 1;
          this.extLen = 0;
          st = S_SIZE;
          break;
        }
        case S_SIZE: {
          const v = HEXVAL[c];
          if (v !== 0) {
            if (++this.digits > MAX_SIZE_DIGITS) return this.fail();
            const size = this.size * 16 + (v - 1);
            if (size > Number.MAX_SAFE_INTEGER) return this.fail();
            this.size = size;
          } else if (c === CR) {
            st = S_SIZE_LF;
          } else if (c === SEMI) {
            this.extLen = 1;
            st = S_EXT;
          } else if (c === SP || c === HTAB) {
            this.extLen = 1;
            st = S_BWS;
          } else {
            return this.fail();
          }
          break;
        }
        case S_BWS:
          if (++this.extLen > this.maxExtBytes) return this.fail();
          if (c === SEMI) st = S_EXT;
          else if (c !== SP && c !== HTAB) return this.fail(); // "5 \r\n": no extension after BWS
          break;
        case S_EXT:
          if (c === CR) st = S_SIZE_LF;
          else if (EXT_CHAR[c] !== 1 || ++this.extLen > this.maxExtBytes) return this.fail();
          break;
        case S_SIZE_LF:
          if (c !== LF) return this.fail();
          if (this.size === 0) {
            this.trailerLen = 0;
            st = S_TR_START;
          } else {
            st = S_DATA;
          }
          break;
        case S_DATA_CR:
          if (c !== CR) return this.fail();
          st = S_DATA_LF;
          break;
        case S_DATA_LF:
          if (c !== LF) return this.fail();
          st = S_SIZE0;
          break;
        case S_TR_START:
          if (++this.trailerLen > this.maxTrailerBytes) return this.fail();
          if (c === CR) {
            st = S_END_LF;
          } else if (TCHAR[c] === 1) {
            // obs-fold (SP/HTAB here), bare LF and an empty name all fail this test.
            this.nameBuf[0] = c | 0x20;
            this.nameLen = 1;
            st = S_TR_NAME;
          } else {
            return this.fail();
          }
          break;
        case S_TR_NAME:
          if (++this.trailerLen > this.maxTrailerBytes) return this.fail();
          if (TCHAR[c] === 1) {
            if (this.nameLen < NAME_BUF) this.nameBuf[this.nameLen] = c | 0x20;
            this.nameLen++;
          } else if (c === 0x3a /* : */) {
            if (this.forbiddenTrailer()) return this.fail();
            st = S_TR_VALUE;
          } else {
            return this.fail(); // includes whitespace before the colon (RFC 9112 §5.1)
          }
          break;
        case S_TR_VALUE:
          if (++this.trailerLen > this.maxTrailerBytes) return this.fail();
          if (c === CR) st = S_TR_LF;
          else if (FIELD_VCHAR[c] !== 1) return this.fail();
          break;
        case S_TR_LF:
          if (++this.trailerLen > this.maxTrailerBytes || c !== LF) return this.fail();
          st = S_TR_START;
          break;
        case S_END_LF:
          if (++this.trailerLen > this.maxTrailerBytes || c !== LF) return this.fail();
          this.state = S_DONE;
          this.done = true;
          return p - start;
      }
    }
    this.state = st;
    return p - start;
  }

  private forbiddenTrailer(): boolean {
    const n = this.nameLen;
    if (n > NAME_BUF) return false;
    outer: for (let f = 0; f < FORBIDDEN_TRAILERS.length; f++) {
      const lit = FORBIDDEN_TRAILERS[f];
      if (lit.length !== n) continue;
      for (let i = 0; i < n; i++) if (this.nameBuf[i] !== lit[i]) continue outer;
      return true;
    }
    return false;
  }

  private fail(): number {
    this.state = S_ERROR;
    this.error = this.errorDef;
    return -1;
  }
}
