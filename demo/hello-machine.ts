// A tiny app Machine for demos and tests: `node demo/hello-machine.ts` (no dependencies).
//
//   GET /healthz            200 "ok"
//   /slow?ms=N              answers after N ms
//   /stream?bytes=N         N bytes in 64 KiB chunks, honouring backpressure
//   anything else           200 JSON: machine, app, region, method, url, headers (+ bodyBytes
//                           for requests with a body, counted, never buffered)
//   Upgrade: websocket      RFC 6455 echo: text frames come back as "<machine id>: <text>",
//                           binary frames unchanged, pings answered, close echoed
//
// Listens on $HOST (default 127.0.0.1) port $PORT (0 = any; the chosen port is printed).
// SIGINT/SIGTERM close the server gracefully (in-flight requests finish, WebSockets get a 1001
// close); a second signal exits at once.

import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';

const MACHINE = process.env.FLY_MACHINE_ID ?? 'local';
const APP = process.env.FLY_APP_NAME ?? null;
const REGION = process.env.FLY_REGION ?? null;
const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8080);

const CHUNK = Buffer.alloc(64 * 1024, 'petrel hello-machine stream\n');
const MAX_SLOW_MS = 10 * 60_000;
const MAX_WS_MESSAGE = 16 * 1024 * 1024;
// RFC 6455 section 1.3: the fixed GUID appended to Sec-WebSocket-Key before hashing.
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function describe(req: http.IncomingMessage, extra: Record<string, unknown>): string {
  const body = {
    machine: MACHINE,
    app: APP,
    region: REGION,
    method: req.method,
    url: req.url,
    headers: req.headers,
    ...extra,
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

function sendJson(req: http.IncomingMessage, res: http.ServerResponse, extra: Record<string, unknown>): void {
  const text = describe(req, extra);
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function intParam(url: URL, name: string, max: number): number {
  const n = Number(url.searchParams.get(name) ?? 0);
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), max) : 0;
}

function stream(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      // CHUNK is never mutated, so the same buffer can be queued many times.
      if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.once('close', () => {
    left = 0;
    res.off('drain', pump);
  });
  pump();
}

function onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  // While shutting down, finish this request but do not keep the connection for another.
  if (shuttingDown) res.setHeader('connection', 'close');
  let bodyBytes = 0;
  req.on('data', (c: Buffer) => (bodyBytes += c.length));
  req.on('end', () => {
    const hasBody = bodyBytes > 0 || (req.method !== 'GET' && req.method !== 'HEAD');
    const extra: Record<string, unknown> = hasBody ? { bodyBytes } : {};
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    } else if (url.pathname === '/slow') {
      const ms = intParam(url, 'ms', MAX_SLOW_MS);
      const timer = setTimeout(() => sendJson(req, res, { ...extra, sleptMs: ms }), ms);
      res.once('close', () => clearTimeout(timer));
    } else if (url.pathname === '/stream') {
      stream(res, intParam(url, 'bytes', Number.MAX_SAFE_INTEGER));
    } else {
      sendJson(req, res, extra);
    }
  });
}

// --- WebSocket (RFC 6455), just enough for an echo server -------------------------------------

const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

const sockets = new Set<WsConn>();

/** Server frames are never masked (section 5.1). */
function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (len < 126) head[1] = len;
  else if (len < 65536) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

function closePayload(code: number, reason = ''): Buffer {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

class WsConn {
  readonly socket: Duplex;
  private buf: Buffer;
  private msgOpcode: number;
  private msgParts: Buffer[];
  private msgBytes: number;
  private closing: boolean;

  constructor(socket: Duplex) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.msgOpcode = -1;
    this.msgParts = [];
    this.msgBytes = 0;
    this.closing = false;
  }

  feed(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (!this.closing) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0]! & 0x80) !== 0;
      const opcode = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(MAX_WS_MESSAGE)) return this.fail(1009, 'message too big');
        len = Number(big);
        off = 10;
      }
      // Section 5.1: a server must close on an unmasked client frame; RSV bits need an extension.
      if (!masked) return this.fail(1002, 'client frames must be masked');
      if ((b[0]! & 0x70) !== 0) return this.fail(1002, 'reserved bits set');
      if (b.length < off + 4 + len) return;
      const mask = b.subarray(off, off + 4);
      const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      this.buf = b.subarray(off + 4 + len);
      this.onFrame(fin, opcode, payload);
    }
  }

  private onFrame(fin: boolean, opcode: number, payload: Buffer): void {
    if (opcode >= 0x8) {
      // Section 5.5: control frames are never fragmented and carry at most 125 bytes.
      if (!fin || payload.length > 125) return this.fail(1002, 'bad control frame');
      if (opcode === OP_CLOSE) return this.close(payload.length >= 2 ? payload.readUInt16BE(0) : 1000, '', true);
      if (opcode === OP_PING) this.socket.write(frame(OP_PONG, payload));
      else if (opcode !== OP_PONG) this.fail(1002, 'unknown opcode');
      return;
    }
    if (opcode === OP_CONT) {
      if (this.msgOpcode < 0) return this.fail(1002, 'continuation without a message');
    } else if (opcode === OP_TEXT || opcode === OP_BINARY) {
      if (this.msgOpcode >= 0) return this.fail(1002, 'new message inside a fragmented one');
      this.msgOpcode = opcode;
    } else {
      return this.fail(1002, 'unknown opcode');
    }
    this.msgBytes += payload.length;
    if (this.msgBytes > MAX_WS_MESSAGE) return this.fail(1009, 'message too big');
    this.msgParts.push(payload);
    if (!fin) return;
    const data = this.msgParts.length === 1 ? this.msgParts[0]! : Buffer.concat(this.msgParts);
    const op = this.msgOpcode;
    this.msgOpcode = -1;
    this.msgParts = [];
    this.msgBytes = 0;
    if (op === OP_TEXT) this.socket.write(frame(OP_TEXT, Buffer.from(`${MACHINE}: ${data.toString('utf8')}`)));
    else this.socket.write(frame(OP_BINARY, data));
  }

  private fail(code: number, reason: string): void {
    this.close(code, reason, false);
  }

  /** Sends our close frame (echoing the peer's code when answering one) and ends the TCP stream. */
  close(code: number, reason: string, answering: boolean): void {
    if (this.closing) return;
    this.closing = true;
    // 1005/1006/1015 must never be sent on the wire (section 7.4.1).
    const wireCode = answering && (code === 1005 || code === 1006 || code === 1015) ? 1000 : code;
    this.socket.end(frame(OP_CLOSE, closePayload(wireCode, reason)));
  }
}

function onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy());
  const refuse = (status: string, extra = ''): void => {
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n${extra}\r\n`);
  };
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return refuse('400 Bad Request');
  if (req.headers['sec-websocket-version'] !== '13') return refuse('426 Upgrade Required', 'sec-websocket-version: 13\r\n');
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || Buffer.from(key, 'base64').length !== 16) return refuse('400 Bad Request');
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' +
      `sec-websocket-accept: ${accept}\r\n\r\n`,
  );
  const conn = new WsConn(socket);
  sockets.add(conn);
  socket.on('close', () => sockets.delete(conn));
  socket.on('data', (c: Buffer) => conn.feed(c));
  if (head.length > 0) conn.feed(head);
}

// --- server -----------------------------------------------------------------------------------

const server = http.createServer(onRequest);
server.on('upgrade', onUpgrade);
server.on('clientError', (_err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  else socket.destroy();
});
server.listen(PORT, HOST, () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : PORT;
  process.stdout.write(`hello-machine ${MACHINE} listening on http://${HOST.includes(':') ? `[${HOST}]` : HOST}:${port}\n`);
});

let shuttingDown = false;
function shutdown(signal: string): void {
  if (shuttingDown) process.exit(1);
  shuttingDown = true;
  process.stdout.write(`hello-machine ${MACHINE} got ${signal}, closing\n`);
  // close() stops accepting and (Node >= 19) closes idle keep-alive sockets; busy ones finish
  // their request first. Upgraded sockets are no longer the server's: close them ourselves.
  server.close(() => process.exit(0));
  for (const ws of sockets) ws.close(1001, 'going away', false);
  // Peers that never finish (a WebSocket client ignoring our close) do not hold the exit forever.
  setTimeout(() => {
    server.closeAllConnections();
    for (const ws of sockets) ws.socket.destroy();
  }, 5000).unref();
}
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
