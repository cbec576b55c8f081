// Raw TCP services (`[[services]] protocol = "tcp"`, handlers [] / ["proxy_proto"] / ["tls"])
// through petrel to real TCP servers on loopback: bytes unchanged both ways, half-closes,
// backpressure, PROXY protocol v1/v2, TLS termination, dead Machines and connect retries.

import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { createSelfSigned } from '../src/tls/selfsigned.ts';
import { pollUntil, startPetrel } from './helpers/petrel.ts';

interface TcpServer {
  readonly port: number;
  readonly conns: net.Socket[];
  close(): Promise<void>;
}

/** A TCP server on loopback; half-open allowed so a test can see each direction end on its own. */
async function tcpServer(onConn: (s: net.Socket) => void): Promise<TcpServer> {
  const conns: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    conns.push(s);
    s.on('error', () => undefined);
    onConn(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of conns) c.destroy();
        server.close(() => resolve());
      }),
  };
}

const echo = (s: net.Socket) => s.pipe(s);

/** A loopback port with nothing listening on it. */
async function deadPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** An app with one raw TCP service on `publicPort`; `portLines` go in its [[services.ports]]. */
function tcpApp(name: string, publicPort: number, machines: { id: string; port: number }[], portLines = 'handlers = []', extra = ''): string {
  return `app = "${name}"

[[services]]
protocol = "tcp"
internal_port = ${machines[0]!.port}

[[services.ports]]
port = ${publicPort}
${portLines}
${extra}
${machines.map((m) => `[[machines]]\nid = "${m.id}"\ndriver = "static"\naddress = "127.0.0.1:${m.port}"\n`).join('\n')}`;
}

interface Client {
  readonly socket: net.Socket;
  /** Everything received so far. */
  data(): Buffer;
  /** Resolves when the peer ended its side (or the socket closed), with all data received. */
  readonly ended: Promise<Buffer>;
  readonly closed: Promise<void>;
}

function collect(socket: net.Socket): Client {
  const parts: Buffer[] = [];
  socket.on('data', (c: Buffer) => parts.push(c));
  socket.on('error', () => undefined);
  const ended = new Promise<Buffer>((resolve) => {
    socket.once('end', () => resolve(Buffer.concat(parts)));
    socket.once('close', () => resolve(Buffer.concat(parts)));
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, data: () => Buffer.concat(parts), ended, closed };
}

/** `halfOpen`: keep our side open after the peer's FIN (to test half-closes). */
async function connect(port: number, halfOpen = true): Promise<Client> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: halfOpen });
  await once(s, 'connect');
  return collect(s);
}

/** Waits until `c` has received at least `n` bytes. */
async function receive(c: Client, n: number): Promise<Buffer> {
  await pollUntil(() => c.data().length >= n || c.socket.destroyed, `${n} bytes`);
  return c.data();
}

t.test('bytes pass unchanged both ways, half-closes carry across in both directions', async (t) => {
  const echoSrv = await tcpServer(echo);
  // Answers once the client has finished sending (needs the client's FIN to reach it).
  const replySrv = await tcpServer((s) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => s.end(`got ${Buffer.concat(parts).length}: ${Buffer.concat(parts).toString('latin1')}`));
  });
  // Half-closes first (a greeting, then FIN), and keeps reading what the client sends after that.
  const late: Buffer[] = [];
  let lateEnded = false;
  const bannerSrv = await tcpServer((s) => {
    s.end('banner\n');
    s.on('data', (c: Buffer) => late.push(c));
    s.on('end', () => (lateEnded = true));
  });
  const p = await startPetrel({
    apps: {
      echo: tcpApp('echo', 5432, [{ id: 'echo-1', port: echoSrv.port }]),
      reply: tcpApp('reply', 5433, [{ id: 'reply-1', port: replySrv.port }]),
      banner: tcpApp('banner', 5434, [{ id: 'banner-1', port: bannerSrv.port }]),
    },
    listen: [5432, 5433, 5434],
  });
  t.teardown(async () => {
    await p.stop();
    await echoSrv.close();
    await replySrv.close();
    await bannerSrv.close();
  });
  t.not(p.port(5432), 5432, 'public port 5432 bound on a free loopback port');

  // Every byte value, including what HTTP or a PROXY parser would choke on.
  const all = Buffer.alloc(256 * 4);
  for (let i = 0; i < all.length; i++) all[i] = i & 0xff;
  const c = await connect(p.port(5432));
  c.socket.write(all.subarray(0, 300));
  c.socket.write(all.subarray(300));
  t.same(await receive(c, all.length), all, 'all byte values echoed unchanged');
  c.socket.write('more');
  t.equal((await receive(c, all.length + 4)).subarray(all.length).toString(), 'more', 'the connection stays a stream');
  c.socket.end();
  t.equal((await c.ended).length, all.length + 4, 'client FIN reaches the echo server, whose FIN comes back');
  await c.closed;

  const r = await connect(p.port(5433));
  r.socket.write('abc');
  r.socket.end('def');
  t.equal((await r.ended).toString(), 'got 6: abcdef', 'after the client half-closed it still receives the reply');
  await r.closed;

  const b = await connect(p.port(5434));
  t.equal((await b.ended).toString(), 'banner\n', "the Machine's FIN reaches the client");
  t.notOk(b.socket.destroyed, 'the client may still send after the Machine half-closed');
  b.socket.end('late words');
  await b.closed;
  await pollUntil(() => lateEnded || bannerSrv.conns[0]!.destroyed, 'the banner Machine to see the end of the stream');
  t.equal(Buffer.concat(late).toString(), 'late words', 'bytes sent after the Machine half-closed still reach it');
  t.ok(lateEnded, 'and the client FIN after them');

  await pollUntil(() => p.log.access().filter((l) => l['proto'] === 'tcp').length >= 3, 'three tcp access lines');
  const line = p.log.access().find((l) => l['app'] === 'echo');
  t.equal(line?.['proto'], 'tcp');
  t.equal(line?.['machine'], 'echo-1');
  t.equal(line?.['bytes_in'], all.length + 4, 'bytes from the client counted');
  t.equal(line?.['bytes_out'], all.length + 4, 'bytes to the client counted');
  t.equal(line?.['code'], '', 'a clean connection has no error code');
});

t.test('a large transfer flows with backpressure both ways', async (t) => {
  // The Machine starts by not reading at all; the test releases it once petrel has stopped
  // reading from the client (the proof that it does not buffer without bound).
  let machineSide: net.Socket | null = null;
  const srv = await tcpServer((s) => {
    machineSide = s;
    s.pause();
  });
  const p = await startPetrel({ apps: { bulk: tcpApp('bulk', 5432, [{ id: 'bulk-1', port: srv.port }]) }, listen: [5432] });
  t.teardown(async () => {
    await p.stop();
    await srv.close();
  });
  const total = 48 * 1024 * 1024;
  const chunk = randomBytes(256 * 1024);
  const c = net.connect({ port: p.port(5432), host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => undefined);
  await once(c, 'connect');
  await pollUntil(() => machineSide !== null && p.daemon.listeners.sockets.size === 1, 'the spliced connection');
  const petrelClientSide = [...p.daemon.listeners.sockets][0]!;

  let sent = 0;
  let writing = true;
  const sentHash = createHash('sha256');
  void (async () => {
    while (sent < total) {
      sentHash.update(chunk);
      sent += chunk.length;
      if (!c.write(chunk)) await once(c, 'drain');
    }
    c.end();
    writing = false;
  })();
  await pollUntil(() => petrelClientSide.isPaused() || !writing, 'petrel to pause reading from the client, or the client to finish');
  t.ok(petrelClientSide.isPaused(), 'petrel stopped reading from the client while the Machine does not read');
  t.ok(sent < total, `the client is held back too (${sent} of ${total} bytes accepted)`);

  // Release the Machine: it echoes everything back; the client reads it all and compares.
  const gotHash = createHash('sha256');
  let got = 0;
  c.on('data', (d: Buffer) => {
    gotHash.update(d);
    got += d.length;
  });
  const ended = once(c, 'end');
  machineSide!.pipe(machineSide!);
  machineSide!.resume();
  await ended;
  t.equal(got, total, 'every byte came back');
  t.equal(gotHash.digest('hex'), sentHash.digest('hex'), 'unchanged');
  c.destroy();

  // Other direction: the Machine sends a lot to a client that does not read.
  let machine2: net.Socket | null = null;
  const srv2 = await tcpServer((s) => (machine2 = s));
  t.teardown(() => srv2.close());
  p.writeApp('bulk', tcpApp('bulk', 5432, [{ id: 'bulk-2', port: srv2.port }]));
  t.ok((await p.daemon.reload()).ok, 'reload to a second Machine');
  const c2 = net.connect({ port: p.port(5432), host: '127.0.0.1' });
  c2.on('error', () => undefined);
  c2.pause();
  await once(c2, 'connect');
  await pollUntil(() => machine2 !== null, 'the Machine to be connected');
  let pushed = 0;
  let pushing = true;
  void (async () => {
    while (pushed < total && !machine2!.destroyed) {
      pushed += chunk.length;
      if (!machine2!.write(chunk)) await once(machine2!, 'drain');
    }
    pushing = false;
  })();
  // petrel's connection to the Machine: the socket whose local port is the Machine's peer port.
  const up = () => activeSockets().find((s) => s.localPort === machine2!.remotePort && s.remotePort === srv2.port);
  await pollUntil(() => up()?.isPaused() === true || !pushing, 'petrel to pause reading from the Machine, or the Machine to finish');
  t.ok(up()?.isPaused(), 'petrel stopped reading from the Machine while the client does not read');
  t.ok(pushed < total, `the Machine is held back too (${pushed} of ${total} bytes accepted)`);
  let got2 = 0;
  c2.on('data', (d: Buffer) => (got2 += d.length));
  c2.resume();
  await pollUntil(() => got2 >= pushed && !pushing, 'the client to read everything');
  t.equal(got2, total, 'all bytes delivered once the client reads');
  c2.destroy();
});

/** Live sockets of this process: petrel runs in-process, so its upstream sockets are among them. */
function activeSockets(): net.Socket[] {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.filter((h): h is net.Socket => h instanceof net.Socket);
}

interface ProxyInfo {
  version: number;
  family: string;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
}

/**
 * A Machine that expects a PROXY header (haproxy's proxy-protocol.txt), answers with what it
 * parsed as one JSON line, then echoes the rest of the stream.
 */
function proxyProtoServer(): Promise<TcpServer> {
  const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  return tcpServer((s) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      let info: ProxyInfo | { error: string } | null = null;
      let rest = 0;
      if (buf.length >= 16 && buf.subarray(0, 12).equals(SIG)) {
        const len = buf.readUInt16BE(14);
        if (buf.length < 16 + len) return;
        const fam = buf[13];
        if (buf[12] !== 0x21) info = { error: `version/command byte ${buf[12]}` };
        else if (fam === 0x11)
          info = {
            version: 2,
            family: 'TCP4',
            src: [...buf.subarray(16, 20)].join('.'),
            dst: [...buf.subarray(20, 24)].join('.'),
            srcPort: buf.readUInt16BE(24),
            dstPort: buf.readUInt16BE(26),
          };
        else info = { error: `family byte ${fam}` };
        rest = 16 + len;
      } else if (buf.subarray(0, 6).toString('latin1') === 'PROXY ') {
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const [, family, src, dst, sp, dp] = buf.subarray(0, eol).toString('latin1').split(' ');
        info = { version: 1, family: family!, src: src!, dst: dst!, srcPort: Number(sp), dstPort: Number(dp) };
        rest = eol + 2;
      } else if (buf.length >= 16) {
        info = { error: `no PROXY header: ${JSON.stringify(buf.subarray(0, 16).toString('latin1'))}` };
      } else {
        return;
      }
      s.off('data', onData);
      s.write(`${JSON.stringify(info)}\n`);
      if (rest < buf.length) s.write(buf.subarray(rest));
      s.pipe(s);
    };
    s.on('data', onData);
  });
}

function splitInfo(b: Buffer): { info: ProxyInfo; rest: string } {
  const nl = b.indexOf('\n');
  return { info: JSON.parse(b.subarray(0, nl).toString()) as ProxyInfo, rest: b.subarray(nl + 1).toString() };
}

t.test('proxy_proto v1 and v2: the Machine sees the real client address first, then the stream', async (t) => {
  const srv = await proxyProtoServer();
  const cert = createSelfSigned(['pptls.test']);
  const p = await startPetrel({
    apps: {
      ppv1: tcpApp('ppv1', 5440, [{ id: 'ppv1-1', port: srv.port }], 'handlers = ["proxy_proto"]'),
      ppv2: tcpApp('ppv2', 5441, [{ id: 'ppv2-1', port: srv.port }], 'handlers = ["proxy_proto"]\nproxy_proto_options = { version = "v2" }'),
      pptls: tcpApp('pptls', 5442, [{ id: 'pptls-1', port: srv.port }], 'handlers = ["tls", "proxy_proto"]'),
    },
    listen: [5440, 5441, 5442],
    certs: { pptls: cert },
  });
  t.teardown(async () => {
    await p.stop();
    await srv.close();
  });
  for (const [pub, version] of [
    [5440, 1],
    [5441, 2],
  ] as const) {
    const c = await connect(p.port(pub));
    // Sent at once: the header must come before these bytes, and they must follow unchanged.
    c.socket.write('PROXY TCP4 6.6.6.6 6.6.6.6 1 1\r\nhello');
    await pollUntil(() => c.data().toString().endsWith('hello'), 'the echo');
    const { info, rest } = splitInfo(c.data());
    t.same(
      info,
      { version, family: 'TCP4', src: '127.0.0.1', dst: '127.0.0.1', srcPort: c.socket.localPort, dstPort: p.port(pub) },
      `v${version}: real client address and port, and the address it connected to`,
    );
    t.equal(rest, 'PROXY TCP4 6.6.6.6 6.6.6.6 1 1\r\nhello', `v${version}: a client-sent PROXY line is just data after ours`);
    c.socket.destroy();
  }
  const s = tls.connect({ host: '127.0.0.1', port: p.port(5442), servername: 'pptls.test', ca: cert.certPem });
  s.on('error', () => undefined);
  await once(s, 'secureConnect');
  const tc = collect(s);
  s.write('over tls');
  await pollUntil(() => tc.data().toString().endsWith('over tls'), 'the echo over TLS');
  const { info, rest } = splitInfo(tc.data());
  t.equal(info.version, 1, 'tls + proxy_proto: default version v1');
  t.equal(info.srcPort, s.localPort, 'the client port behind the TLS termination');
  t.equal(rest, 'over tls');
  s.destroy();
});

t.test('tls handler: TLS terminated, the Machine gets plaintext', async (t) => {
  const received: Buffer[] = [];
  const srv = await tcpServer((s) => {
    s.on('data', (c: Buffer) => received.push(c));
    s.pipe(s);
  });
  const cert = createSelfSigned(['db.test']);
  const p = await startPetrel({
    apps: { db: tcpApp('db', 5443, [{ id: 'db-1', port: srv.port }], 'handlers = ["tls"]') },
    listen: [5443],
    certs: { db: cert },
  });
  t.teardown(async () => {
    await p.stop();
    await srv.close();
  });
  const s = tls.connect({ host: '127.0.0.1', port: p.port(5443), servername: 'db.test', ca: cert.certPem });
  s.on('error', () => undefined);
  await once(s, 'secureConnect');
  t.equal(s.authorized, true, 'certificate verified for db.test');
  const c = collect(s);
  s.write('SELECT 1;');
  await pollUntil(() => c.data().length >= 9, 'the echo');
  t.equal(c.data().toString(), 'SELECT 1;', 'echoed through TLS');
  t.equal(Buffer.concat(received).toString(), 'SELECT 1;', 'the Machine received plaintext');
  s.end();
  await c.closed;

  const unknown = tls.connect({ host: '127.0.0.1', port: p.port(5443), servername: 'other.test', rejectUnauthorized: false });
  const err = await new Promise<Error | null>((resolve) => {
    unknown.once('secureConnect', () => resolve(null));
    unknown.once('error', resolve);
  });
  unknown.destroy();
  t.ok(err, 'no certificate for another name: handshake refused');
});

t.test('tls handler with default_self_signed: clients without SNI, or with another name, never get HTTP', async (t) => {
  const srv = await tcpServer(echo);
  const p = await startPetrel({
    apps: { db: tcpApp('db', 5443, [{ id: 'db-1', port: srv.port }], 'handlers = ["tls"]\ntls_options = { default_self_signed = true }') },
    listen: [5443],
  });
  t.teardown(async () => {
    await p.stop();
    await srv.close();
  });
  const exchange = async (servername: string): Promise<string> => {
    const s = tls.connect({ host: '127.0.0.1', port: p.port(5443), servername, rejectUnauthorized: false });
    s.on('error', () => undefined);
    await once(s, 'secureConnect');
    const c = collect(s);
    s.write('SELECT 1;\r\n\r\n');
    await pollUntil(() => c.data().length >= 13 || s.destroyed || s.readableEnded, 'an answer or a close');
    s.destroy();
    return c.data().toString('latin1');
  };
  t.equal(await exchange('db.test'), 'SELECT 1;\r\n\r\n', 'with SNI: echoed');
  // A TLS service reached by IP address (psql -h 10.0.0.1, most database drivers) sends no SNI:
  // the port has one app, so that is where the connection goes, as on a plaintext raw port.
  t.equal(await exchange(''), 'SELECT 1;\r\n\r\n', 'without SNI: the single raw app on the port');
  t.notMatch(await exchange('other.test'), /^HTTP\//, 'another name: no HTTP answer on a port without the http handler');
});

t.test('a dead Machine closes the client connection (PC01); a connect failure retries on another Machine', async (t) => {
  const srv = await tcpServer(echo);
  const dead = await deadPort();
  const p = await startPetrel({
    apps: {
      gone: tcpApp('gone', 5450, [{ id: 'gone-1', port: dead }]),
      both: tcpApp('both', 5451, [
        { id: 'dead-1', port: dead },
        { id: 'live-1', port: srv.port },
      ]),
    },
    listen: [5450, 5451],
  });
  t.teardown(async () => {
    await p.stop();
    await srv.close();
  });
  const c = await connect(p.port(5450), false);
  c.socket.write('anyone?');
  await c.closed;
  t.equal(c.data().length, 0, 'closed without an answer');
  await pollUntil(() => p.log.access().some((l) => l['app'] === 'gone'), 'the access line');
  const line = p.log.access().find((l) => l['app'] === 'gone');
  t.equal(line?.['code'], 'PC01', 'connect refused');
  t.equal(line?.['proto'], 'tcp');

  // The dead Machine is picked first about half the time; every connection must still work.
  for (let i = 0; i < 20; i++) {
    const b = await connect(p.port(5451), false);
    b.socket.write(`ping ${i}`);
    t.equal((await receive(b, `ping ${i}`.length)).toString(), `ping ${i}`, `connection ${i} answered`);
    b.socket.destroy();
    await b.closed;
    await pollUntil(() => p.log.access().filter((l) => l['app'] === 'both').length === i + 1, 'the access line');
    if (p.log.access().some((l) => l['app'] === 'both' && (l['retries'] as number) > 0)) break;
  }
  const retried = p.log.access().find((l) => l['app'] === 'both' && (l['retries'] as number) > 0);
  t.ok(retried, 'a connection was retried');
  t.equal(retried?.['machine'], 'live-1', 'and served by the live Machine');
  t.equal(retried?.['code'], '', 'without an error');
});
