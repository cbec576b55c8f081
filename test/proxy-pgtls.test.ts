// pg_tls: the Postgres SSLRequest preamble is answered with 'S', TLS is terminated, and the
// stream reaches the Machine as plain bytes. Bad preambles are refused without crashing.

import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { startPetrel } from './helpers/petrel.ts';

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const GSSENC_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);

function echoServer(): Promise<{ port: number; close(): void }> {
  return new Promise((resolve) => {
    const s = net.createServer((c) => c.pipe(c)).listen(0, '127.0.0.1', () =>
      resolve({ port: (s.address() as net.AddressInfo).port, close: () => s.close() }),
    );
  });
}

function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= n) {
        s.off('data', onData);
        s.pause();
        resolve(buf);
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed after ${buf.length} bytes`)));
  });
}

t.test('pg_tls answers SSLRequest, terminates TLS and forwards raw bytes', async (t) => {
  const echo = await echoServer();
  const app = `app = "pg"
[[services]]
protocol = "tcp"
internal_port = ${echo.port}
[[services.ports]]
port = 5432
handlers = ["pg_tls"]
[services.ports.tls_options]
default_self_signed = true
[[machines]]
id = "pg-1"
driver = "static"
address = "127.0.0.1:${echo.port}"
`;
  const p = await startPetrel({ apps: { pg: app }, listen: [5432] });
  t.teardown(async () => {
    await p.stop();
    echo.close();
  });
  const port = p.port(5432);

  const raw = net.connect(port, '127.0.0.1');
  await new Promise((r) => raw.once('connect', r));
  raw.write(GSSENC_REQUEST);
  t.equal((await readBytes(raw, 1)).toString(), 'N', 'GSSENCRequest declined');
  raw.resume();
  raw.write(SSL_REQUEST);
  t.equal((await readBytes(raw, 1)).toString(), 'S', 'SSLRequest accepted');
  const secure = tls.connect({ socket: raw, servername: 'pg.test', rejectUnauthorized: false });
  await new Promise((r) => secure.once('secureConnect', r));
  secure.write('startup-bytes');
  const back = await new Promise<string>((resolve) => secure.once('data', (d: Buffer) => resolve(d.toString())));
  t.equal(back, 'startup-bytes', 'bytes reach the Machine unchanged and come back');
  secure.destroy();

  // A plaintext startup message (no SSLRequest) is refused: this port only speaks TLS.
  const plain = net.connect(port, '127.0.0.1');
  plain.write(Buffer.from([0, 0, 0, 9, 0, 3, 0, 0, 0]));
  await new Promise((r) => plain.once('close', r));
  t.pass('non-SSL preamble closed');
});
