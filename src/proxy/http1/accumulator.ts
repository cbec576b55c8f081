// Finds where a message head ends, across chunks, without re-scanning and within limits.
//
// Two phases keep the hot path short. Phase 1 (here) only finds the end of the head: in the common
// case the whole head is in one socket chunk and a single native `indexOf("\r\n\r\n")` finds it
// with no copy at all; the head is then parsed in place from the caller's Buffer. Only when a head
// spans chunks are bytes copied into a private buffer, and then the search resumes where it
// stopped, so a head fed one byte at a time costs O(n), not O(n^2) (a slowloris client must not
// be able to buy quadratic CPU). Phase 2 (the request/response parsers) validates every byte once
// the end is known.

import { CR, LF } from './chars.ts';

export const ACC_OK = 0;
/** Head (from the start line to the blank line) is longer than maxBytes. */
export const ACC_TOO_LARGE = 1;
/** More field lines than maxFields. */
export const ACC_TOO_MANY = 2;
/** An LF not preceded by CR (RFC 9112 §2.2: we do not accept bare LF as a line terminator). */
export const ACC_BARE_LF = 3;
/** More empty lines before the start line than allowed. */
export const ACC_LEADING = 4;

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

export class HeadAccumulator {
  readonly maxBytes: number;
  readonly maxFields: number;
  /** Empty lines (CRLF) tolerated before the start line: RFC 9112 §2.2 (requests only). */
  readonly maxLeading: number;
  /** Longest start line before giving up early (the request parser reports 414 for it). */
  readonly maxFirstLine: number;

  /** After a complete head (feed() > 0), or an ACC_TOO_LARGE error: where the head bytes are. */
  buf: Buffer;
  start: number;
  end: number;
  err: number;

  private pbuf: Buffer | null;
  private plen: number;
  private scanPos: number;
  private lineStart: number;
  private headStart: number;
  private lines: number;
  private leading: number;

  constructor(maxBytes: number, maxFields: number, maxLeading: number, maxFirstLine: number) {
    this.maxBytes = maxBytes;
    this.maxFields = maxFields;
    this.maxLeading = maxLeading;
    this.maxFirstLine = maxFirstLine;
    this.buf = CRLFCRLF;
    this.start = 0;
    this.end = 0;
    this.err = ACC_OK;
    this.pbuf = null;
    this.plen = 0;
    this.scanPos = 0;
    this.lineStart = 0;
    this.headStart = 0;
    this.lines = 0;
    this.leading = 0;
  }

  /** Bytes of an incomplete head held between feeds (0 when idle between messages). */
  get buffered(): number {
    return this.plen;
  }

  reset(): void {
    this.err = ACC_OK;
    this.pbuf = null;
    this.plen = 0;
    this.scanPos = 0;
    this.lineStart = 0;
    this.headStart = 0;
    this.lines = 0;
    this.leading = 0;
  }

  /**
   * Feeds buf[start..]. Returns the number of those bytes that complete a head (> 0; then
   * this.buf/start/end delimit the head, leading empty lines excluded), 0 when every byte was taken
   * and more are needed, -1 on error (this.err).
   */
  feed(buf: Buffer, start: number): number {
    const avail = buf.length - start;
    if (avail <= 0) return 0;
    if (this.plen === 0) {
      const c = buf[start];
      // Fast path: the head starts right here (no leading CRLF) and ends inside this chunk.
      if (c !== CR && c !== LF) {
        const i = buf.indexOf(CRLFCRLF, start);
        if (i !== -1) {
          const end = i + 4;
          this.buf = buf;
          this.start = start;
          this.end = end;
          if (end - start > this.maxBytes) return this.fail(ACC_TOO_LARGE);
          return end - start;
        }
      }
    }
    return this.slow(buf, start, avail);
  }

  private slow(buf: Buffer, start: number, avail: number): number {
    // Never hold more than the largest acceptable head (+ leading CRLFs, + 1 to see the overflow).
    const cap = this.maxBytes + 2 * this.maxLeading + 1;
    const before = this.plen;
    const n = Math.min(avail, cap - before);
    let pb = this.pbuf;
    if (pb === null || pb.length < before + n) {
      let size = pb === null ? 1024 : pb.length * 2;
      while (size < before + n) size *= 2;
      if (size > cap) size = cap;
      // allocUnsafeSlow: a head that outlives this call must not pin a shared pool slab.
      const nb = Buffer.allocUnsafeSlow(size);
      if (pb !== null) pb.copy(nb, 0, 0, before);
      pb = nb;
      this.pbuf = nb;
    }
    buf.copy(pb, before, start, start + n);
    const plen = before + n;
    this.plen = plen;

    let lineStart = this.lineStart;
    let headStart = this.headStart;
    let lines = this.lines;
    for (let p = this.scanPos; p < plen; p++) {
      if (pb[p] !== LF) continue;
      if (p === 0 || pb[p - 1] !== CR) return this.fail(ACC_BARE_LF);
      if (p - 1 === lineStart) {
        if (lines === 0) {
          if (++this.leading > this.maxLeading) return this.fail(ACC_LEADING);
          headStart = p + 1;
        } else {
          // Blank line: end of head. Hand it over and forget it, so the next head gets a fresh
          // buffer and this one stays valid for as long as the caller holds it.
          const end = p + 1;
          this.buf = pb;
          this.start = headStart;
          this.end = end;
          const taken = end - before;
          this.reset();
          if (end - headStart > this.maxBytes) return this.fail(ACC_TOO_LARGE);
          return taken;
        }
      } else if (++lines - 1 > this.maxFields) {
        return this.fail(ACC_TOO_MANY);
      }
      lineStart = p + 1;
    }
    this.scanPos = plen;
    this.lineStart = lineStart;
    this.headStart = headStart;
    this.lines = lines;
    if (plen - headStart > this.maxBytes || (lines === 0 && plen - headStart > this.maxFirstLine)) {
      this.buf = pb;
      this.start = headStart;
      this.end = plen;
      return this.fail(ACC_TOO_LARGE);
    }
    return 0;
  }

  private fail(code: number): number {
    this.err = code;
    this.pbuf = null;
    this.plen = 0;
    return -1;
  }
}
