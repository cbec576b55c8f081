// The stop sequence closes WebSockets cleanly (spec section 5, issue 3 scope 5): the client gets
// a Close frame (1001, "Machine stopping") at a frame boundary, never in the middle of a frame
// the Machine was sending, and the Machine is stopped only after that. Frame tracking is tested
// byte by byte; the sequence against a WebSocket origin that sends half a frame and waits, and
// through the admin API against the demo process Machine.

import t from 'tap';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { connectWs, encodeFrame, FrameDecoder, OP_BINARY, OP_CLOSE, OP_TEXT } from '../demo/ws-client.ts';
import { closeFrame, WsFrameCursor } from '../src/proxy/wsSplice.ts';
import { stopSequence } from '../src/machines/stopSequence.ts';
import { adminRequest, demoApp, get, pollUntil, startPetrel } from './helpers/petrel.ts';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

t.test('frame cursor: boundaries found whatever the chunking', async (t) => {
  const frames = [
    encodeFrame(OP_TEXT, Buffer.from('hi'), false),
    encodeFrame(OP_BINARY, Buffer.alloc(0), false), // empty payload
    encodeFrame(OP_BINARY, Buffer.alloc(300, 1), false), // 16-bit length
    encodeFrame(OP_BINARY, Buffer.alloc(70_000, 2), true), // 64-bit length, masked
    encodeFrame(OP_TEXT, Buffer.from('x'), true),
  ];
  const stream = Buffer.concat(frames);
  const ends: number[] = [];
  let at = 0;
  for (const f of frames) ends.push((at += f.length));

  // Every split point: following the first part and then asking for the next boundary in the
  // second gives the first frame end after the split.
  let checked = 0;
  for (let split = 0; split <= stream.length; split += split < 400 ? 1 : 997) {
    const c = new WsFrameCursor();
    c.consume(stream.subarray(0, split), false);
    const boundary = ends.includes(split) || split === 0;
    t.equal(c.atBoundary, boundary, `atBoundary after ${split} bytes`);
    // At a boundary the answer is "here" (0); inside a frame, that frame's end.
    const expected = boundary ? 0 : ends.find((e) => e > split)! - split;
    t.equal(c.consume(stream.subarray(split), true), expected, `next boundary after split ${split}`);
    checked++;
  }
  t.ok(checked > 400, `${checked} split points checked`);

  // Header bytes arriving one at a time.
  const c = new WsFrameCursor();
  const big = frames[3]!;
  for (let i = 0; i < 14; i++) {
    c.consume(big.subarray(i, i + 1), false);
    t.notOk(c.atBoundary, `inside the header after byte ${i}`);
  }
  t.equal(c.consume(big.subarray(14), true), big.length - 14, 'boundary at the end of the masked 64-bit frame');
  t.ok(c.atBoundary);

  const close = closeFrame(1001, 'Machine stopping');
  const dec = new FrameDecoder().push(close);
  t.equal(dec.length, 1);
  t.equal(dec[0]!.opcode, OP_CLOSE);
  t.equal(dec[0]!.payload.readUInt16BE(0), 1001);
  t.equal(dec[0]!.payload.subarray(2).toString(), 'Machine stopping');
});

interface HalfFrameOrigin {
  readonly port: number;
  /** Resolves when a WebSocket is open; `finish()` sends the rest of the held frame. */
  readonly opened: Promise<{ socket: net.Socket; finish(): void; frames: { opcode: number; payload: Buffer }[] }>;
  close(): void;
}

/** A WebSocket origin that sends a text frame, then only the first half of a 4000-byte frame. */
async function startHalfFrameOrigin(): Promise<HalfFrameOrigin> {
  const sockets: net.Socket[] = [];
  let resolveOpen!: (v: Awaited<HalfFrameOrigin['opened']>) => void;
  const opened = new Promise<Awaited<HalfFrameOrigin['opened']>>((r) => (resolveOpen = r));
  const server = http.createServer((_req, res) => res.end('plain'));
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    const accept = createHash('sha1').update(String(req.headers['sec-websocket-key']) + WS_GUID).digest('base64');
    const big = encodeFrame(OP_BINARY, Buffer.alloc(4000, 7), false);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.write(encodeFrame(OP_TEXT, Buffer.from('hello'), false));
    socket.write(big.subarray(0, 2000));
    const frames: { opcode: number; payload: Buffer }[] = [];
    const dec = new FrameDecoder();
    socket.on('data', (c: Buffer) => {
      for (const f of dec.push(c)) {
        frames.push(f);
        // The client answered our (petrel's) Close: a server ends the connection then.
        if (f.opcode === OP_CLOSE) socket.end();
      }
    });
    socket.on('end', () => socket.end());
    resolveOpen({ socket, finish: () => socket.write(big.subarray(2000)), frames });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    opened,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

t.test('stop sequence: the Close goes after the frame in flight, then the Machine stops', async (t) => {
  const origin = await startHalfFrameOrigin();
  t.teardown(() => origin.close());
  const p = await startPetrel({
    apps: { ws: `app = "ws"\n[http_service]\ninternal_port = ${origin.port}\n[[machines]]\nid = "ws-1"\ndriver = "static"\naddress = "127.0.0.1:${origin.port}"\n` },
  });
  t.teardown(() => p.stop());
  const client = await connectWs(`ws://ws.test:${p.httpPort}/`, { address: '127.0.0.1' });
  const o = await origin.opened;
  t.equal(await client.receiveText(), 'hello', 'a whole frame before the stop');
  const m = p.daemon.manager.get('ws-1')!;
  t.equal(m.tunnels.size, 1, 'the WebSocket is registered on its Machine');

  const seq = stopSequence(p.daemon.manager, m, 'stop', 5000);
  // Half of a frame is still on its way: no Close may be injected before it ends.
  await new Promise((r) => setTimeout(r, 300));
  t.equal(m.state, 'started', 'the Machine waits for its WebSocket');
  t.ok(m.cordoned, 'and is cordoned meanwhile');
  o.finish();
  const big = await client.receive();
  t.equal(big.opcode, OP_BINARY, 'the frame in flight arrives whole');
  t.equal(big.data.length, 4000);
  t.ok(big.data.every((b) => b === 7));
  const closed = await client.closed;
  t.same(closed, { code: 1001, reason: 'Machine stopping' }, 'then a Close 1001 from petrel');
  t.equal(await seq, 'stop');
  t.equal(m.state, 'stopped', 'the Machine is stopped after the WebSocket closed');
  t.notOk(m.cordoned, 'the cordon is lifted (autostart can wake it)');
  t.equal(m.tunnels.size, 0);
  await pollUntil(() => o.frames.some((f) => f.opcode === OP_CLOSE), "the client's Close answer to reach the Machine");
});

t.test('admin stop of a process Machine with an open WebSocket: 1001 first, then the stop', async (t) => {
  const p = await startPetrel({
    apps: { hello: demoApp('hello') },
  });
  t.teardown(() => p.stop());
  await pollUntil(async () => (await get(p.httpPort, 'hello.test', '/healthz').catch(() => ({ status: 0 }))).status === 200, 'the Machine to be ready', 60_000);
  const client = await connectWs(`ws://hello.test:${p.httpPort}/`, { address: '127.0.0.1' });
  client.send('ping');
  t.equal(await client.receiveText(), 'hello-1: ping');
  const stop = adminRequest(p.adminPort, 'POST', '/v1/apps/hello/machines/hello-1/stop');
  const closed = await client.closed;
  t.same(closed, { code: 1001, reason: 'Machine stopping' }, "petrel's Close, not the Machine's own shutdown one");
  const r = await stop;
  t.equal(r.status, 200, r.text);
  t.equal(p.daemon.manager.get('hello-1')!.state, 'stopped');
});
