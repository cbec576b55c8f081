// A tiny WebSocket client for trying petrel by hand (and for the tests):
//
//   node demo/ws-client.ts ws://hello.localhost:8080/ [message]
//   node demo/ws-client.ts -k wss://hello.localhost:8443/ [message]     (or PETREL_INSECURE=1)
//
// It sends one text frame, prints the reply and closes cleanly (close frame both ways).
//
// Why not Node's global WebSocket: it cannot set Host, and nothing in Node resolves `*.localhost`
// (RFC 6761 §6.3 lets resolvers answer loopback for it; curl does, getaddrinfo here does not).
// So this client dials 127.0.0.1 for `localhost` and `*.localhost` itself and sends the URL's
// host in Host and SNI, exactly as curl does. No dependencies: RFC 6455 framing by hand.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';

// RFC 6455 §1.3: the fixed GUID appended to Sec-WebSocket-Key before hashing.
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
export const OP_CONT = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;
const MAX_MESSAGE = 16 * 1024 * 1024;

export interface WsOptions {
  /** Accept any server certificate (like curl -k). */
  readonly insecure?: boolean;
  /** Trusted CA certificates (PEM) for wss://. */
  readonly ca?: string | readonly string[];
  /** Dial this address instead of resolving the URL's host (Host and SNI still come from the URL). */
  readonly address?: string;
  /** Extra request headers. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Gives up on the opening handshake after this long (default 10 s). */
  readonly handshakeTimeoutMs?: number;
}

export interface WsMessage {
  readonly opcode: number;
  readonly data: Buffer;
}

export interface WsClosed {
  /** Status code of the peer's close frame; null when the TCP connection ended without one. */
  readonly code: number | null;
  readonly reason: string;
}

/** What the server answered instead of 101. */
export class WsHandshakeError extends Error {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  constructor(status: number, headers: http.IncomingHttpHeaders, body: string) {
    super(`server answered ${status} instead of 101 Switching Protocols${body ? `: ${body.trim()}` : ''}`);
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
}

/** RFC 6761 §6.3: `localhost` and every name under it are loopback; null = use DNS. */
export function loopbackFor(hostname: string): string | null {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h === 'localhost' || h.endsWith('.localhost') ? '127.0.0.1' : null;
}

/** One frame; RFC 6455 §5.3: everything a client sends is masked. */
export function encodeFrame(opcode: number, payload: Buffer, masked: boolean, fin = true): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (masked ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  else if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = randomBytes(4);
  mask.copy(head, 2 + ext);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
  return Buffer.concat([head, body]);
}

export interface Frame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly payload: Buffer;
}

/** Incremental frame decoder (masked or not); throws on frames larger than 16 MiB. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Frame[] = [];
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return out;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return out;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return out;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(MAX_MESSAGE)) throw new Error('frame too large');
        len = Number(big);
        off = 10;
      }
      const masked = (b[1]! & 0x80) !== 0;
      const need = off + (masked ? 4 : 0) + len;
      if (b.length < need) return out;
      const payload = Buffer.from(b.subarray(need - len, need));
      if (masked) {
        const mask = b.subarray(off, off + 4);
        for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      }
      out.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload });
      this.buf = b.subarray(need);
    }
  }
}

/** An open WebSocket (client side). */
export class WsClient {
  readonly socket: net.Socket;
  /** The server's 101 response (rawHeaders show exactly what came over the wire). */
  readonly response: http.IncomingMessage;
  /** Resolves once the TCP connection is closed, with the peer's close frame if one came. */
  readonly closed: Promise<WsClosed>;
  private readonly decoder = new FrameDecoder();
  private readonly queue: WsMessage[] = [];
  private waiters: { resolve: (m: WsMessage) => void; reject: (e: Error) => void }[] = [];
  private parts: Buffer[] = [];
  private partOpcode = -1;
  private closeSent = false;
  private peerClose: WsClosed | null = null;
  private ended = false;

  constructor(socket: net.Socket, response: http.IncomingMessage, head: Buffer) {
    this.socket = socket;
    this.response = response;
    socket.setNoDelay(true);
    this.closed = new Promise<WsClosed>((resolve) => {
      socket.once('close', () => {
        this.ended = true;
        const err = new Error('WebSocket closed');
        for (const w of this.waiters) w.reject(err);
        this.waiters = [];
        resolve(this.peerClose ?? { code: null, reason: '' });
      });
    });
    socket.on('error', () => undefined); // 'close' follows and says it all
    socket.on('data', (c: Buffer) => this.onData(c));
    if (head.length > 0) this.onData(head);
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch {
      this.socket.destroy();
      return;
    }
    for (const f of frames) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    if (f.opcode === OP_CLOSE) {
      const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
      this.peerClose = { code, reason: f.payload.subarray(2).toString('utf8') };
      // RFC 6455 §5.5.1: answer a close we did not start, echoing its code (1005 is never sent).
      if (!this.closeSent) this.sendClose(code === 1005 ? 1000 : code, '');
      // §7.1.1: the server closes TCP first; end our side so a half-open peer finishes too.
      this.socket.end();
      return;
    }
    if (f.opcode === OP_PING) {
      if (!this.closeSent) this.socket.write(encodeFrame(OP_PONG, f.payload, true));
      return;
    }
    if (f.opcode === OP_PONG) return this.deliver({ opcode: OP_PONG, data: f.payload });
    if (f.opcode !== OP_CONT) {
      this.partOpcode = f.opcode;
      this.parts = [];
    }
    this.parts.push(f.payload);
    if (!f.fin) return;
    const data = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    const opcode = this.partOpcode;
    this.parts = [];
    this.partOpcode = -1;
    this.deliver({ opcode, data });
  }

  private deliver(m: WsMessage): void {
    const w = this.waiters.shift();
    if (w !== undefined) w.resolve(m);
    else this.queue.push(m);
  }

  /** The next data message (or pong). Rejects once the connection is closed. */
  receive(): Promise<WsMessage> {
    const m = this.queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.ended) return Promise.reject(new Error('WebSocket closed'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** The next text message as a string. */
  async receiveText(): Promise<string> {
    const m = await this.receive();
    if (m.opcode !== OP_TEXT) throw new Error(`expected a text message, got opcode ${m.opcode}`);
    return m.data.toString('utf8');
  }

  send(text: string): void {
    this.socket.write(encodeFrame(OP_TEXT, Buffer.from(text, 'utf8'), true));
  }

  sendBinary(data: Buffer): void {
    this.socket.write(encodeFrame(OP_BINARY, data, true));
  }

  ping(data: Buffer = Buffer.alloc(0)): void {
    this.socket.write(encodeFrame(OP_PING, data, true));
  }

  private sendClose(code: number, reason: string): void {
    if (this.closeSent || this.socket.destroyed) return;
    this.closeSent = true;
    const p = Buffer.alloc(2 + Buffer.byteLength(reason));
    p.writeUInt16BE(code, 0);
    p.write(reason, 2);
    this.socket.write(encodeFrame(OP_CLOSE, p, true));
  }

  /**
   * Closing handshake (RFC 6455 §7): send a close frame, wait for the server's and for the TCP
   * close. A server that never answers is cut off after `timeoutMs`.
   */
  async close(code = 1000, reason = '', timeoutMs = 5000): Promise<WsClosed> {
    this.sendClose(code, reason);
    const timer = setTimeout(() => this.socket.destroy(), timeoutMs);
    try {
      return await this.closed;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Opening handshake (RFC 6455 §4.1) over node:http / node:https. */
export function connectWs(target: string | URL, opts: WsOptions = {}): Promise<WsClient> {
  const url = typeof target === 'string' ? new URL(target) : target;
  const secure = url.protocol === 'wss:' || url.protocol === 'https:';
  if (!secure && url.protocol !== 'ws:' && url.protocol !== 'http:') return Promise.reject(new Error(`not a ws:// or wss:// URL: ${url.href}`));
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const address = opts.address ?? loopbackFor(hostname) ?? hostname;
  const port = url.port !== '' ? Number(url.port) : secure ? 443 : 80;
  const key = randomBytes(16).toString('base64');
  const headers: Record<string, string> = {
    host: url.host,
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-key': key,
    'sec-websocket-version': '13',
    ...opts.headers,
  };
  const common = { host: address, port, path: `${url.pathname}${url.search}`, method: 'GET', headers, agent: false as const };
  return new Promise<WsClient>((resolve, reject) => {
    const req = secure
      ? https.request({
          ...common,
          // SNI carries the URL's name, never an IP literal (RFC 6066 §3).
          servername: /^[\d.]+$|:/.test(hostname) ? undefined : hostname,
          rejectUnauthorized: opts.insecure !== true,
          ca: opts.ca as string | string[] | undefined,
        })
      : http.request(common);
    const timer = setTimeout(() => req.destroy(new Error('WebSocket handshake timed out')), opts.handshakeTimeoutMs ?? 10_000);
    req.once('upgrade', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      clearTimeout(timer);
      const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
      if (res.statusCode !== 101 || res.headers['sec-websocket-accept'] !== accept || (res.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
        socket.destroy();
        reject(new Error(`bad 101 response: accept ${String(res.headers['sec-websocket-accept'])}, upgrade ${String(res.headers.upgrade)}`));
        return;
      }
      resolve(new WsClient(socket, res, head));
    });
    req.once('response', (res: http.IncomingMessage) => {
      clearTimeout(timer);
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (body.length < 4096) body += c;
      });
      res.on('end', () => reject(new WsHandshakeError(res.statusCode ?? 0, res.headers, body)));
      res.on('error', reject);
    });
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/** Connects, sends `message` as one text frame, returns the first reply, closes cleanly. */
export async function wsEcho(target: string | URL, message: string, opts: WsOptions = {}): Promise<string> {
  const ws = await connectWs(target, opts);
  try {
    ws.send(message);
    return await ws.receiveText();
  } finally {
    await ws.close();
  }
}

async function main(argv: readonly string[]): Promise<number> {
  let insecure = process.env.PETREL_INSECURE === '1' || process.env.PETREL_INSECURE === 'true';
  let help = false;
  const rest: string[] = [];
  for (const a of argv) {
    if (a === '-k' || a === '--insecure') insecure = true;
    else if (a === '-h' || a === '--help') help = true;
    else rest.push(a);
  }
  const [target, ...words] = rest;
  if (help || target === undefined) {
    process.stderr.write(
      'usage: node demo/ws-client.ts [-k|--insecure] ws[s]://host[:port]/path [message]\n' +
        '  -k, --insecure   accept any server certificate (also PETREL_INSECURE=1)\n' +
        '  *.localhost and localhost are dialled at 127.0.0.1; Host and SNI keep the URL name\n',
    );
    return 2;
  }
  const message = words.length > 0 ? words.join(' ') : `hello from ws-client at ${new Date().toISOString()}`;
  try {
    const ws = await connectWs(target, { insecure });
    ws.send(message);
    const reply = await ws.receiveText();
    process.stdout.write(`${reply}\n`);
    const closed = await ws.close();
    if (closed.code !== 1000 && closed.code !== 1005) process.stderr.write(`closed with code ${String(closed.code)} ${closed.reason}\n`);
    return 0;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    let hint = '';
    if (e.code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || e.code === 'SELF_SIGNED_CERT_IN_CHAIN' || e.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE') {
      hint = ' (a self-signed certificate: add -k, or set PETREL_INSECURE=1)';
    }
    process.stderr.write(`ws-client: ${e.message}${hint}\n`);
    return 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
