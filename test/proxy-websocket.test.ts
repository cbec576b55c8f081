// WebSockets through petrel (HTTP/1.1 Upgrade): the 101 relayed once, frames both ways in
// plaintext and over TLS, the tunnel surviving a reload, closes propagating from either side,
// refused upgrades answered as normal responses on a connection that stays usable, one access
// line per WebSocket. The client is demo/ws-client.ts; Machines are the demo hello-machine run
// by the `process` driver, and a WebSocket origin in this file whose server side the test sees.

import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { connectWs, encodeFrame, FrameDecoder, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, WsHandshakeError, type Frame } from '../demo/ws-client.ts';
import { DEMO_MACHINE, ROOT, KeepAliveConn, get, pollUntil, startOrigin, startPetrel, type Petrel } from './helpers/petrel.ts';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The demo app shape (config/apps/hello.toml) with one process Machine running hello-machine. */
function demoApp(name: string): string {
  return `app = "${name}"

[http_service]
internal_port = 8080

[http_service.tls_options]
default_self_signed = true

[[http_service.checks]]
path = "/healthz"
interval = "200ms"
timeout = "2s"
grace_period = "30s"

[[machines]]
id = "${name}-1"
driver = "process"
cmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]
`;
}

function staticHttpApp(name: string, port: number): string {
  return `app = "${name}"

[http_service]
internal_port = ${port}

[[machines]]
id = "${name}-1"
driver = "static"
address = "127.0.0.1:${port}"
`;
}

/** Server side of one WebSocket at the test origin. */
interface ServerWs {
  readonly socket: net.Socket;
  readonly req: http.IncomingMessage;
  readonly frames: Frame[];
  /** The client's side of the stream ended (FIN came through petrel). */
  readonly ended: Promise<void>;
  readonly closed: Promise<void>;
}

interface WsOrigin {
  readonly port: number;
  readonly conns: ServerWs[];
  close(): Promise<void>;
}

/** A WebSocket echo origin that records every upgraded socket and the frames it received. */
async function startWsOrigin(): Promise<WsOrigin> {
  const conns: ServerWs[] = [];
  const server = http.createServer((_req, res) => res.end('plain'));
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => undefined);
    const accept = createHash('sha1')
      .update(String(req.headers['sec-websocket-key']) + WS_GUID)
      .digest('base64');
    const head101 = Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    // /greet: a first frame in the same write as the 101 (so usually in the same TCP segment).
    const greeting = req.url === '/greet' ? encodeFrame(OP_TEXT, Buffer.from('welcome'), false) : Buffer.alloc(0);
    socket.write(Buffer.concat([head101, greeting]));
    const frames: Frame[] = [];
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    // As WebSocket servers do (ws, the demo Machine's node:http socket): the peer's FIN ends ours.
    const ended = new Promise<void>((r) =>
      socket.once('end', () => {
        socket.end();
        r();
      }),
    );
    conns.push({ socket, req, frames, ended, closed });
    const dec = new FrameDecoder();
    const onData = (c: Buffer) => {
      for (const f of dec.push(c)) {
        frames.push(f);
        if (f.opcode === OP_TEXT) socket.write(encodeFrame(OP_TEXT, Buffer.concat([Buffer.from('origin: '), f.payload]), false));
        else if (f.opcode === OP_CLOSE) socket.end(encodeFrame(OP_CLOSE, f.payload, false));
      }
    };
    socket.on('data', onData);
    if (head.length > 0) onData(head);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of conns) c.socket.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Starts petrel and waits until the process Machine of `app` passes its check. */
async function ready(p: Petrel, app: string): Promise<void> {
  await pollUntil(async () => (await get(p.httpPort, `${app}.test`, '/healthz').catch(() => ({ status: 0 }))).status === 200, `${app}'s Machine to pass its check`, 60_000);
}

const headerCount = (raw: readonly string[], name: string): number => raw.filter((v, i) => i % 2 === 0 && v.toLowerCase() === name).length;

t.test('plaintext and TLS: the 101 is relayed once, frames flow both ways (demo Machine)', async (t) => {
  const p = await startPetrel({ apps: { ws: demoApp('ws') } });
  t.teardown(() => p.stop());
  await ready(p, 'ws');

  const ws = await connectWs(`ws://ws.test:${p.httpPort}/chat?room=1`, { address: '127.0.0.1' });
  t.teardown(() => ws.socket.destroy());
  const raw = ws.response.rawHeaders;
  t.equal(ws.response.statusCode, 101);
  t.equal(headerCount(raw, 'upgrade'), 1, 'exactly one Upgrade header');
  t.equal(headerCount(raw, 'connection'), 1, 'exactly one Connection header');
  t.match(ws.response.headers['connection'], /upgrade/i);
  t.equal(ws.response.headers['upgrade'], 'websocket');
  t.match(ws.response.headers['fly-request-id'], /-tst$/);

  ws.send('hello');
  t.equal(await ws.receiveText(), 'ws-1: hello', 'text frame echoed by the Machine');
  const bin = randomBytes(70_000); // 64-bit length form
  ws.sendBinary(bin);
  const back = await ws.receive();
  t.equal(back.opcode, OP_BINARY);
  t.ok(back.data.equals(bin), 'binary frame echoed unchanged');
  ws.ping(Buffer.from('are you there'));
  const pong = await ws.receive();
  t.equal(pong.opcode, OP_PONG);
  t.equal(pong.data.toString(), 'are you there', 'ping answered through the tunnel');
  const big = 'x'.repeat(1024 * 1024);
  ws.send(big);
  t.equal(await ws.receiveText(), `ws-1: ${big}`, '1 MiB message both ways');
  const closed = await ws.close(1000, 'bye');
  t.equal(closed.code, 1000, 'clean close handshake through petrel');

  // wss:// on the TLS port, verified against petrel's self-signed certificate.
  const ca = readFileSync(path.join(p.dir, 'certs', '_self-signed', 'cert.pem'), 'utf8');
  const wss = await connectWs(`wss://ws.test:${p.httpsPort}/secure`, { address: '127.0.0.1', ca });
  t.teardown(() => wss.socket.destroy());
  t.equal(headerCount(wss.response.rawHeaders, 'upgrade'), 1, 'wss: exactly one Upgrade header');
  wss.send('over tls');
  t.equal(await wss.receiveText(), 'ws-1: over tls');
  t.equal((await wss.close()).code, 1000);
});

t.test('what the Machine sees, and closes from either side', async (t) => {
  const origin = await startWsOrigin();
  const p = await startPetrel({ apps: { wsx: staticHttpApp('wsx', origin.port) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const url = `ws://wsx.test:${p.httpPort}/`;

  // Clean close started by the client.
  const a = await connectWs(`${url}a`, { address: '127.0.0.1' });
  const req = origin.conns[0]!.req;
  t.equal(req.headers['upgrade'], 'websocket', 'Upgrade forwarded');
  t.match(req.headers['connection'], /upgrade/i, 'Connection: upgrade forwarded');
  t.ok(req.headers['sec-websocket-key'], 'Sec-WebSocket-Key forwarded');
  t.equal(req.headers['sec-websocket-version'], '13');
  t.equal(req.headers['via'], '1.1 petrel');
  t.equal(req.headers['x-forwarded-proto'], 'http');
  t.equal(req.headers['fly-client-ip'], '127.0.0.1');
  a.send('one');
  t.equal(await a.receiveText(), 'origin: one');
  t.equal((await a.close(1000)).code, 1000, 'close frame answered by the origin');
  await origin.conns[0]!.closed;
  t.ok(origin.conns[0]!.frames.some((f) => f.opcode === OP_CLOSE), 'the origin got the close frame');

  // The client drops the TCP connection: the origin's side closes.
  const b = await connectWs(`${url}b`, { address: '127.0.0.1' });
  b.send('two');
  t.equal(await b.receiveText(), 'origin: two');
  b.socket.destroy();
  await origin.conns[1]!.ended;
  t.pass('client gone: the origin sees the end of the stream');
  await origin.conns[1]!.closed;
  t.pass('and its socket closes');

  // The origin drops the TCP connection: the client's side closes.
  const c = await connectWs(`${url}c`, { address: '127.0.0.1' });
  c.send('three');
  t.equal(await c.receiveText(), 'origin: three');
  origin.conns[2]!.socket.destroy();
  t.equal((await c.closed).code, null, 'origin gone: client socket closed');

  // The origin starts the closing handshake.
  const d = await connectWs(`${url}d`, { address: '127.0.0.1' });
  const code = Buffer.alloc(2);
  code.writeUInt16BE(1001);
  origin.conns[3]!.socket.write(encodeFrame(OP_CLOSE, code, false));
  const dc = await d.closed;
  t.equal(dc.code, 1001, "the origin's close frame reaches the client");
  await origin.conns[3]!.closed;
  const answered = origin.conns[3]!.frames.find((f) => f.opcode === OP_CLOSE);
  t.equal(answered?.payload.readUInt16BE(0), 1001, "the client's answering close frame reaches the origin");

  await pollUntil(() => p.log.access().filter((l) => l['app'] === 'wsx').length >= 4, 'four access lines');
  t.equal(p.daemon.listeners.sockets.size, 0, 'no client connection left open in petrel');
});

t.test('bytes next to the 101: a frame sent before the 101, a frame in the same packet as the 101', async (t) => {
  const origin = await startWsOrigin();
  const p = await startPetrel({ apps: { wsx: staticHttpApp('wsx', origin.port) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const greet = await connectWs(`ws://wsx.test:${p.httpPort}/greet`, { address: '127.0.0.1' });
  t.equal(await greet.receiveText(), 'welcome', 'frame right behind the 101 delivered');
  greet.send('hi');
  t.equal(await greet.receiveText(), 'origin: hi');
  await greet.close();

  // A client that does not wait for the 101 (allowed for a client that knows the server).
  const s = net.connect(p.httpPort, '127.0.0.1');
  t.teardown(() => s.destroy());
  await once(s, 'connect');
  const key = randomBytes(16).toString('base64');
  s.write(
    Buffer.concat([
      Buffer.from(`GET /early HTTP/1.1\r\nHost: wsx.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`),
      encodeFrame(OP_TEXT, Buffer.from('early bird'), true),
    ]),
  );
  let buf = Buffer.alloc(0);
  s.on('data', (c: Buffer) => (buf = Buffer.concat([buf, c])));
  await pollUntil(() => buf.indexOf('\r\n\r\n') > 0 && new FrameDecoder().push(buf.subarray(buf.indexOf('\r\n\r\n') + 4)).length > 0, 'the 101 and the echo');
  const headEnd = buf.indexOf('\r\n\r\n');
  t.match(buf.subarray(0, headEnd).toString('latin1'), /^HTTP\/1\.1 101 /);
  const frames = new FrameDecoder().push(buf.subarray(headEnd + 4));
  t.equal(frames[0]?.payload.toString(), 'origin: early bird', 'the frame sent with the upgrade request reached the origin after the 101');
});

t.test('a WebSocket stays open across reloads that do not change its app', async (t) => {
  const origin = await startOrigin();
  const p = await startPetrel({ apps: { ws: demoApp('ws'), web: staticHttpApp('web', origin.port) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  await ready(p, 'ws');
  const ws = await connectWs(`ws://ws.test:${p.httpPort}/`, { address: '127.0.0.1' });
  t.teardown(() => ws.socket.destroy());
  ws.send('before');
  t.equal(await ws.receiveText(), 'ws-1: before');

  // Another app changes, a third one appears.
  p.writeApp('web', staticHttpApp('web', origin.port).replace('[http_service]', 'hostnames = ["www.example.test"]\n\n[http_service]'));
  p.writeApp('extra', staticHttpApp('extra', origin.port));
  const first = await p.daemon.reload();
  t.ok(first.ok, 'reload accepted');
  ws.send('after one reload');
  t.equal(await ws.receiveText(), 'ws-1: after one reload', 'same Machine, same tunnel');
  t.equal((await get(p.httpPort, 'extra.test', '/')).status, 200, 'the new app is served');

  // A reload that changes nothing at all.
  t.ok((await p.daemon.reload()).ok);
  ws.send('after two');
  t.equal(await ws.receiveText(), 'ws-1: after two');
  t.equal((await ws.close()).code, 1000);
});

t.test('an upgrade the Machine refuses is relayed as a normal response; the connection stays usable', async (t) => {
  const origin = await startOrigin((req, res) => {
    // No 'upgrade' listener: node:http hands upgrade requests to this handler as normal requests.
    const wantsUpgrade = req.headers['upgrade'] !== undefined;
    if (wantsUpgrade && req.url === '/refuse-400') {
      res.writeHead(400, { 'content-type': 'text/plain', 'content-length': 18 });
      return res.end('no websockets here');
    }
    const body = `plain ${req.url} upgrade=${String(req.headers['upgrade'])}`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const p = await startPetrel({ apps: { web: staticHttpApp('web', origin.port) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const upgradeHeaders = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': randomBytes(16).toString('base64'), 'sec-websocket-version': '13' };
  const conn = await KeepAliveConn.open(p.httpPort);
  t.teardown(() => conn.close());
  const refused = await conn.request('web.test', '/refuse-400', upgradeHeaders);
  t.equal(refused.status, 400, '400 relayed');
  t.equal(refused.body, 'no websockets here');
  const ignored = await conn.request('web.test', '/ignored', upgradeHeaders);
  t.equal(ignored.status, 200, 'a 200 without 101 relayed as a normal response');
  t.equal(ignored.body, 'plain /ignored upgrade=websocket');
  const next = await conn.request('web.test', '/next');
  t.equal(next.status, 200, 'the same client connection serves the next request');
  t.equal(next.body, 'plain /next upgrade=undefined');
  t.notOk(conn.closed);

  // The demo client reports the refusal with the status and body.
  const err = await connectWs(`ws://web.test:${p.httpPort}/refuse-400`, { address: '127.0.0.1' }).catch((e: unknown) => e);
  t.ok(err instanceof WsHandshakeError, 'ws-client rejects a refused upgrade');
  t.equal((err as WsHandshakeError).status, 400);
  t.equal((err as WsHandshakeError).body, 'no websockets here');
});

t.test('one access line per WebSocket, with status 101', async (t) => {
  const origin = await startWsOrigin();
  const p = await startPetrel({ apps: { wsx: staticHttpApp('wsx', origin.port) } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const ws = await connectWs(`ws://wsx.test:${p.httpPort}/logged?x=1`, { address: '127.0.0.1' });
  for (let i = 0; i < 5; i++) {
    ws.send(`m${i}`);
    t.equal(await ws.receiveText(), `origin: m${i}`);
  }
  t.equal(p.log.access().filter((l) => l['path'] === '/logged?x=1').length, 0, 'no line while the WebSocket is open');
  await ws.close();
  await pollUntil(() => p.log.access().some((l) => l['path'] === '/logged?x=1'), 'the access line');
  // Give a duplicate a chance to show up: a plain request after it is logged after it.
  await get(p.httpPort, 'wsx.test', '/after');
  await pollUntil(() => p.log.access().some((l) => l['path'] === '/after'), 'the next access line');
  const lines = p.log.access().filter((l) => l['path'] === '/logged?x=1');
  t.equal(lines.length, 1, 'exactly one line');
  const l = lines[0]!;
  t.equal(l['status'], 101);
  t.equal(l['app'], 'wsx');
  t.equal(l['machine'], 'wsx-1');
  t.equal(l['method'], 'GET');
  t.equal(l['code'], '');
  t.ok((l['bytes_in'] as number) > 0 && (l['bytes_out'] as number) > 0, 'tunnel bytes counted');
});

/** Runs demo/ws-client.ts as a user would; resolves with exit code and output. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'demo', 'ws-client.ts'), ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

t.test('demo/ws-client.ts CLI: *.localhost dialled on loopback, ws:// and wss:// (-k / PETREL_INSECURE=1)', async (t) => {
  const origin = await startWsOrigin();
  const p = await startPetrel({
    apps: {
      hello: staticHttpApp('hello', origin.port).replace('[http_service]', 'hostnames = ["hello.localhost"]\n\n[http_service]') + '\n[http_service.tls_options]\ndefault_self_signed = true\n',
    },
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const plain = await runCli([`ws://hello.localhost:${p.httpPort}/`, 'hi', 'there']);
  t.equal(plain.code, 0, plain.stderr);
  t.equal(plain.stdout, 'origin: hi there\n', 'reply printed');
  t.equal(origin.conns[0]?.req.headers['host'], `hello.localhost:${p.httpPort}`, 'Host is the URL authority');
  t.ok(origin.conns[0]?.frames.some((f) => f.opcode === OP_CLOSE), 'closed with a close frame');

  const strict = await runCli([`wss://hello.localhost:${p.httpsPort}/`, 'secure']);
  t.equal(strict.code, 1, 'self-signed certificate refused without -k');
  t.match(strict.stderr, /-k/, 'and the error says what to do');
  const k = await runCli(['-k', `wss://hello.localhost:${p.httpsPort}/`, 'secure']);
  t.equal(k.code, 0, k.stderr);
  t.equal(k.stdout, 'origin: secure\n');
  const env = await runCli([`wss://hello.localhost:${p.httpsPort}/`, 'by env'], { PETREL_INSECURE: '1' });
  t.equal(env.stdout, 'origin: by env\n', 'PETREL_INSECURE=1 works like -k');
  const usage = await runCli([]);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /^usage: /);
});
