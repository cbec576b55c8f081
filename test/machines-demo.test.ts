// The demo Machine (demo/hello-machine.ts) run as a real process, probed with real clients.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { DEMO, get, sleep } from './helpers/machines-fixtures.ts';

interface Demo {
  readonly child: ChildProcess;
  readonly port: number;
  readonly out: string[];
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startDemo(t: Test): Promise<Demo> {
  const child = spawn(process.execPath, [DEMO], {
    env: { ...process.env, PORT: '0', FLY_MACHINE_ID: 'd8e1', FLY_APP_NAME: 'hello', FLY_REGION: 'ams' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const out: string[] = [];
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      out.push(s);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out.join(''));
      if (m !== null) resolve(Number(m[1]));
    });
    child.once('exit', () => reject(new Error(`demo exited early: ${out.join('')}`)));
  });
  return { child, port, out, exit };
}

function request(port: number, method: string, path: string, body?: Buffer): Promise<{ status: number; body: Buffer; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

// --- a raw RFC 6455 client, so the test controls masking, fragmentation and control frames ---

function clientFrame(opcode: number, payload: Buffer, fin = true, masked = true): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (masked ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = randomBytes(4);
  mask.copy(head, 2 + ext);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
  return Buffer.concat([head, body]);
}

interface Frame {
  readonly opcode: number;
  readonly payload: Buffer;
}

class RawWs {
  readonly socket: Socket;
  private buf = Buffer.alloc(0);
  private readonly frames: Frame[] = [];
  private waiter: (() => void) | null = null;
  constructor(socket: Socket, rest: Buffer) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => this.push(c));
    socket.on('end', () => this.waiter?.());
    this.push(rest);
  }
  private push(c: Buffer): void {
    this.buf = Buffer.concat([this.buf, c]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) break;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if ((b[1]! & 0x80) !== 0) throw new Error('server frames must not be masked');
      if (b.length < off + len) break;
      this.frames.push({ opcode: b[0]! & 0x0f, payload: b.subarray(off, off + len) });
      this.buf = b.subarray(off + len);
    }
    this.waiter?.();
  }
  async next(): Promise<Frame> {
    while (this.frames.length === 0) {
      if (this.socket.readableEnded) throw new Error('connection ended');
      await new Promise<void>((r) => (this.waiter = r));
    }
    return this.frames.shift()!;
  }
}

function wsConnect(port: number, headers: Record<string, string> = {}): Promise<{ status: string; head: string; ws: RawWs | null }> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const s = connect({ host: '127.0.0.1', port });
    const h = { host: `127.0.0.1:${port}`, upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': key, 'sec-websocket-version': '13', ...headers };
    s.write(`GET /chat HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      const status = head.split('\r\n')[0]!;
      if (!status.includes(' 101 ')) return resolve({ status, head, ws: null });
      const want = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      if (!head.toLowerCase().includes(`sec-websocket-accept: ${want.toLowerCase()}`)) reject(new Error(`bad accept in ${head}`));
      resolve({ status, head, ws: new RawWs(s, buf.subarray(end + 4)) });
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

t.test('demo machine', async (t) => {
  const d = await startDemo(t);

  t.test('GET /healthz', async (t) => {
    const r = await get('127.0.0.1', d.port, '/healthz');
    t.equal(r.status, 200);
    t.equal(r.body, 'ok');
  });

  t.test('JSON echo of the request', async (t) => {
    const r = await get('127.0.0.1', d.port, '/some/path?q=1');
    const j = JSON.parse(r.body) as Record<string, unknown>;
    t.match(j, { machine: 'd8e1', app: 'hello', region: 'ams', method: 'GET', url: '/some/path?q=1', headers: { host: `127.0.0.1:${d.port}` } });
    t.notOk('bodyBytes' in j, 'no bodyBytes for a GET without body');
    t.match(r.body, /\n {2}"machine"/, 'pretty-printed for curl');
  });

  t.test('POST body is counted', async (t) => {
    const r = await request(d.port, 'POST', '/upload', Buffer.alloc(3 * 1024 * 1024 + 7, 1));
    t.equal(r.status, 200);
    t.match(JSON.parse(r.body.toString()), { method: 'POST', bodyBytes: 3 * 1024 * 1024 + 7 });
  });

  t.test('/slow?ms waits', async (t) => {
    const t0 = performance.now();
    const r = await get('127.0.0.1', d.port, '/slow?ms=250');
    t.ok(performance.now() - t0 >= 240, 'took the requested time');
    t.match(JSON.parse(r.body), { sleptMs: 250 });
  });

  t.test('/stream?bytes streams with backpressure', async (t) => {
    const total = 5 * 1024 * 1024 + 3;
    const got = await new Promise<{ n: number; cl: string | undefined }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: d.port, path: `/stream?bytes=${total}`, agent: false }, (res) => {
        let n = 0;
        // A slow reader: pause between chunks so the server must wait for drain.
        res.on('data', (c: Buffer) => {
          n += c.length;
          res.pause();
          setTimeout(() => res.resume(), 1);
        });
        res.on('end', () => resolve({ n, cl: res.headers['content-length'] }));
        res.on('error', reject);
      });
    });
    t.equal(got.n, total);
    t.equal(got.cl, String(total));
  });

  t.test('WebSocket with the platform client', async (t) => {
    const ws = new WebSocket(`ws://127.0.0.1:${d.port}/any/path`);
    const msgs: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        ws.send('hello');
        ws.send(new Uint8Array([1, 2, 3]));
        ws.send('x'.repeat(100_000));
      };
      ws.onmessage = (e) => {
        msgs.push(e.data);
        if (msgs.length === 3) ws.close(1000, 'done');
      };
      ws.onclose = () => resolve();
      ws.onerror = () => reject(new Error('websocket error'));
    });
    t.equal(msgs[0], 'd8e1: hello');
    t.same(new Uint8Array(await (msgs[1] as Blob).arrayBuffer()), new Uint8Array([1, 2, 3]), 'binary echoed unchanged');
    t.equal(msgs[2], `d8e1: ${'x'.repeat(100_000)}`);
  });

  t.test('WebSocket framing details', async (t) => {
    const { ws } = await wsConnect(d.port);
    t.ok(ws, 'handshake with a valid Sec-WebSocket-Accept');
    const w = ws!;
    // Fragmented text message: "he" + "llo".
    w.socket.write(clientFrame(0x1, Buffer.from('he'), false));
    w.socket.write(clientFrame(0x9, Buffer.from('p1'))); // a ping between fragments is allowed
    w.socket.write(clientFrame(0x0, Buffer.from('llo'), true));
    const pong = await w.next();
    t.same({ op: pong.opcode, p: pong.payload.toString() }, { op: 0xa, p: 'p1' }, 'ping answered with pong');
    const text = await w.next();
    t.same({ op: text.opcode, p: text.payload.toString() }, { op: 0x1, p: 'd8e1: hello' }, 'fragments joined');
    const close = Buffer.alloc(2);
    close.writeUInt16BE(4001);
    w.socket.write(clientFrame(0x8, close));
    const c = await w.next();
    t.equal(c.opcode, 0x8);
    t.equal(c.payload.readUInt16BE(0), 4001, 'close code echoed');
  });

  t.test('WebSocket refuses unmasked client frames and bad handshakes', async (t) => {
    const { ws } = await wsConnect(d.port);
    ws!.socket.write(clientFrame(0x1, Buffer.from('hi'), true, false));
    const c = await ws!.next();
    t.equal(c.opcode, 0x8);
    t.equal(c.payload.readUInt16BE(0), 1002, 'protocol error');
    const bad = await wsConnect(d.port, { 'sec-websocket-version': '8' });
    t.match(bad.status, / 426 /);
    const notWs = await wsConnect(d.port, { upgrade: 'h2c' });
    t.match(notWs.status, / 400 /);
  });

  t.test('SIGTERM: graceful, in-flight requests finish, exit 0', async (t) => {
    // The request must have reached the demo before the signal: a margin for a loaded machine.
    const slow = get('127.0.0.1', d.port, '/slow?ms=1500');
    await sleep(500);
    d.child.kill('SIGTERM');
    const r = await slow;
    t.equal(r.status, 200, 'the in-flight request was answered');
    const e = await d.exit;
    t.same(e, { code: 0, signal: null });
    t.match(d.out.join(''), /got SIGTERM, closing/);
  });
});
