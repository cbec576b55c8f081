// WebSocket tunnels: after a real 101 the bytes flow unchanged both ways, but the Machine→client
// direction is followed frame by frame (headers only, RFC 6455 §5.2), so that the stop sequence
// can put a Close frame (1001, going away) between two frames instead of tearing the TCP
// connection mid-message. Clients then reconnect cleanly, and their next connection goes to a
// Machine that is not stopping (or wakes one).
//
// Cost while nothing is stopping: a few byte reads per frame header; payload bytes are skipped by
// length, never copied or unmasked. Control frames may sit between the fragments of a message
// (RFC 6455 §5.4), so a frame boundary is always a legal place for the Close.

import type net from 'node:net';
import type { TunnelHandle } from '../machines/runtime.ts';

/** Where the bytes seen so far stand in the frame sequence of one direction. */
export class WsFrameCursor {
  /** Payload bytes of the current frame not seen yet. */
  private left: number;
  /** Header bytes of the next frame seen so far (a header may straddle two chunks). */
  private readonly hdr: Buffer;
  private hdrLen: number;

  constructor() {
    this.left = 0;
    this.hdr = Buffer.alloc(14);
    this.hdrLen = 0;
  }

  /** True when the bytes seen so far end exactly between two frames. */
  get atBoundary(): boolean {
    return this.left === 0 && this.hdrLen === 0;
  }

  /**
   * Follows `chunk`. With `stopAtBoundary`, stops at the first frame boundary at or after the
   * start of the chunk and returns its index (0: the chunk starts a new frame); -1 when the chunk
   * ends before the current frame does. Without it, consumes everything and returns -1.
   */
  consume(chunk: Buffer, stopAtBoundary: boolean): number {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.left > 0) {
        const take = Math.min(this.left, n - i);
        this.left -= take;
        i += take;
        if (this.left === 0 && stopAtBoundary) return i;
        continue;
      }
      if (stopAtBoundary && this.hdrLen === 0) return i;
      this.hdr[this.hdrLen++] = chunk[i++]!;
      const need = headerLength(this.hdr, this.hdrLen);
      if (need !== 0 && this.hdrLen === need) {
        this.left = payloadLength(this.hdr);
        this.hdrLen = 0;
        if (this.left === 0 && stopAtBoundary) return i;
      }
    }
    return stopAtBoundary && this.atBoundary ? n : -1;
  }
}

/** Length of the frame header whose first `len` bytes are in `h`; 0 while that is not known. */
function headerLength(h: Buffer, len: number): number {
  if (len < 2) return 0;
  const l7 = h[1]! & 0x7f;
  return 2 + (l7 === 126 ? 2 : l7 === 127 ? 8 : 0) + ((h[1]! & 0x80) !== 0 ? 4 : 0);
}

function payloadLength(h: Buffer): number {
  const l7 = h[1]! & 0x7f;
  if (l7 < 126) return l7;
  if (l7 === 126) return h.readUInt16BE(2);
  // 64-bit length: exact below 2^53, which no real frame reaches.
  return h.readUInt32BE(2) * 0x1_0000_0000 + h.readUInt32BE(6);
}

/** An unmasked Close frame (servers never mask, RFC 6455 §5.1) with a status code and reason. */
export function closeFrame(code: number, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const f = Buffer.alloc(4 + r.length);
  f[0] = 0x88; // FIN + opcode 8 (Close)
  f[1] = 2 + r.length; // < 126: reasons are short constants
  f.writeUInt16BE(code, 2);
  r.copy(f, 4);
  return f;
}

const GOING_AWAY = closeFrame(1001, 'Machine stopping');

/**
 * Splices one WebSocket: client→Machine with pipe(), Machine→client through the cursor with the
 * same backpressure pipe() would apply. The owner (h1.ts) keeps its close and idle-timeout
 * handling; this object only adds `goAway`/`abort` for the stop sequence.
 */
export class WsSplice implements TunnelHandle {
  private readonly up: net.Socket;
  private readonly client: net.Socket;
  private readonly cursor: WsFrameCursor;
  private goingAway: boolean;
  /** RFC 6455 §5.5.1: after a Close nothing more may be sent, so Machine bytes are dropped. */
  private closeSent: boolean;

  constructor(up: net.Socket, client: net.Socket) {
    this.up = up;
    this.client = client;
    this.cursor = new WsFrameCursor();
    this.goingAway = false;
    this.closeSent = false;
  }

  start(): void {
    this.up.on('data', this.onUpData);
    this.up.on('end', this.onUpEnd);
    this.client.on('drain', this.onClientDrain);
    this.client.pipe(this.up);
  }

  goAway(): void {
    if (this.goingAway || this.client.destroyed) return;
    this.goingAway = true;
    if (this.cursor.atBoundary) this.sendClose();
  }

  abort(): void {
    this.up.destroy();
    this.client.destroy();
  }

  private sendClose(): void {
    this.closeSent = true;
    this.client.write(GOING_AWAY);
    // Keep reading (and dropping) so a Machine blocked on a full socket can still close.
    this.up.resume();
  }

  /** Bytes from the Machine: forwarded, or held back from a Close already sent. */
  fromMachine(chunk: Buffer): void {
    this.onUpData(chunk);
  }

  private readonly onUpData = (chunk: Buffer): void => {
    if (this.closeSent) return;
    if (!this.goingAway) {
      this.cursor.consume(chunk, false);
      if (!this.client.write(chunk)) this.up.pause();
      return;
    }
    const at = this.cursor.consume(chunk, true);
    if (at < 0) {
      if (!this.client.write(chunk)) this.up.pause();
      return;
    }
    if (at > 0) this.client.write(chunk.subarray(0, at));
    this.sendClose();
  };

  private readonly onClientDrain = (): void => {
    this.up.resume();
  };

  private readonly onUpEnd = (): void => {
    this.client.end();
  };
}
