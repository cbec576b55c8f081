// Head serializers for the forwarder. Kept fields are taken from the parsed head's bytes in runs
// of adjacent kept lines (usually one to three latin1 slices for a whole head, original bytes and
// spelling), generated lines are appended, and the one string is either handed to the socket as
// is (socket.write(s, 'latin1'): no intermediate Buffer) or made a Buffer once. Measured
// (bench/micro-http1-parse.ts): string + Buffer.from ties with copying the runs into a pre-sized
// Buffer with Buffer#copy + latin1Write; the bare string costs less than half of either, so the
// forwarder should prefer *HeadString() + socket.write(s, 'latin1'). latin1 maps bytes 0-255 1:1,
// so obs-text survives the round trip.
//
// Framing is always re-emitted in canonical form from the parsed values, never copied: the next
// hop sees exactly one "content-length: N" or "transfer-encoding: chunked", whatever spelling
// the client used.
//
// `extra` strings are raw header lines, each ending in CRLF, latin1 only (one byte per char), e.g.
// "fly-client-ip: 1.2.3.4\r\nx-forwarded-proto: https\r\n". The caller builds them from values
// it controls; they are not validated here.

import { H_X_FORWARDED_FOR, latin1 } from './chars.ts';
import { DROP, KIND_MASK, type MessageHead, SLOTS } from './head.ts';
import { FORM_ABSOLUTE, type RequestHead } from './request.ts';
import { BODY_CHUNKED, BODY_CLOSE, type ResponseHead } from './response.ts';

/**
 * The kept field lines of h (not flagged DROP, kind not in dropMask) as one latin1 string, taken
 * in runs of adjacent kept lines: usually one to three slices for a whole head.
 */
function keptLines(h: MessageHead, dropMask: number): string {
  const b = h.buf;
  const o = h.offs;
  const n = h.count;
  if (n === 0) return '';
  if (h.dropCount === 0 && dropMask === 0) return latin1(b, o[0], h.end - 2);
  let s = '';
  let runStart = -1;
  for (let i = 0; i < n; i++) {
    const m = o[i * SLOTS + 4];
    if ((m & DROP) === 0 && (dropMask & (1 << (m & KIND_MASK))) === 0) {
      if (runStart < 0) runStart = o[i * SLOTS];
    } else if (runStart >= 0) {
      s += latin1(b, runStart, o[i * SLOTS]);
      runStart = -1;
    }
  }
  if (runStart >= 0) s += latin1(b, runStart, h.end - 2);
  return s;
}

/** Combined X-Forwarded-For: the client's values (all lines, in order), then the real peer. */
export function forwardedFor(h: RequestHead, peer: string): string {
  const o = h.offs;
  let v = '';
  for (let i = 0; i < h.count; i++) {
    if ((o[i * SLOTS + 4] & KIND_MASK) !== H_X_FORWARDED_FOR || o[i * SLOTS + 2] === o[i * SLOTS + 3]) continue;
    v = v === '' ? h.value(i) : v + ', ' + h.value(i);
  }
  return v === '' ? peer : v + ', ' + peer;
}

/**
 * The upstream request head: "METHOD path HTTP/1.1", the kept client fields as received, then
 * host (absolute-form only: the target's authority replaces Host, RFC 9112 §3.2.2), framing,
 * connection, x-forwarded-for (client values + `peer`), `extra`, blank line.
 *
 * Always HTTP/1.1 (RFC 9110 §6.2: an intermediary sends its own version). An HTTP/1.0 request
 * without Host gets none here: the caller adds one to `extra`. `keepAlive` false asks the app to
 * close after responding; an upgrade request always says "connection: upgrade".
 */
export function requestHeadString(h: RequestHead, peer: string, extra: string, keepAlive = true): string {
  let s = h.method + ' ' + h.path + ' HTTP/1.1\r\n' + keptLines(h, 0);
  if (h.form === FORM_ABSOLUTE) s += 'host: ' + h.authority + '\r\n';
  if (h.chunked) s += 'transfer-encoding: chunked\r\n';
  else if (h.contentLength >= 0) s += 'content-length: ' + h.contentLength + '\r\n';
  s += h.upgrade !== null ? 'connection: upgrade\r\n' : keepAlive ? 'connection: keep-alive\r\n' : 'connection: close\r\n';
  return s + 'x-forwarded-for: ' + forwardedFor(h, peer) + '\r\n' + extra + '\r\n';
}

/** requestHeadString() as a Buffer. */
export function buildRequestHead(h: RequestHead, peer: string, extra: string, keepAlive = true): Buffer {
  return Buffer.from(requestHeadString(h, peer, extra, keepAlive), 'latin1');
}

const STATUS_LINES: string[] = [];
function statusPrefix(status: number): string {
  return (STATUS_LINES[status] ??= 'HTTP/1.1 ' + status + ' ');
}

/**
 * The downstream response head: "HTTP/1.1 status reason", the kept upstream fields (hop-by-hop
 * stripped, RFC 9110 §7.6.1, and any kind whose bit (1 << H_*) is set in `dropMask`, e.g.
 * H_SERVER when `extra` carries petrel's own), framing, connection, `extra`, blank line.
 *
 * Framing: none for 1xx and 204 (RFC 9110 §8.6, RFC 9112 §6.1: must not be sent; some apps do);
 * otherwise the parsed Content-Length or chunked, which for HEAD and 304 describe the
 * representation and are passed on as such. Connection: nothing on interim responses, "upgrade"
 * on 101, else "keep-alive" or "close" (forced for a close-delimited body, whose end only the
 * close can signal downstream).
 *
 * `http10`: the client spoke HTTP/1.0, which has no chunked coding (RFC 9112 §7: a server MUST
 * NOT send chunked to it). A chunked body is then announced with no framing and "connection:
 * close"; the caller forwards the payload from ChunkedScanner.decode() and closes. (Interim 1xx
 * must not be sent to it at all, RFC 9110 §15.2.)
 */
export function responseHeadString(h: ResponseHead, extra: string, keepAlive: boolean, dropMask = 0, http10 = false): string {
  const st = h.status;
  let s = statusPrefix(st) + h.reason + '\r\n' + keptLines(h, dropMask);
  if (st < 200) {
    if (st === 101) s += 'connection: upgrade\r\n';
  } else {
    let close = !keepAlive || h.bodyKind === BODY_CLOSE;
    if (st !== 204) {
      if (h.chunked) {
        if (http10) close ||= h.bodyKind === BODY_CHUNKED;
        else s += 'transfer-encoding: chunked\r\n';
      } else if (h.contentLength >= 0) {
        s += 'content-length: ' + h.contentLength + '\r\n';
      }
    }
    s += close ? 'connection: close\r\n' : 'connection: keep-alive\r\n';
  }
  return s + extra + '\r\n';
}

/** responseHeadString() as a Buffer. */
export function buildResponseHead(h: ResponseHead, extra: string, keepAlive: boolean, dropMask = 0, http10 = false): Buffer {
  return Buffer.from(responseHeadString(h, extra, keepAlive, dropMask, http10), 'latin1');
}
