// A real ACME CA for integration tests (lab.md "pebble"): pebble plus pebble-challtestsrv as its
// fake DNS, each run as a child process in a temp dir, and the small validation responder that
// plays petrel's part (it answers HTTP-01 and TLS-ALPN-01 from a ChallengeBook exactly the way
// the real listeners are meant to).
//
// pebble sends every validation to 127.0.0.1 (challtestsrv answers every A query with it) on the
// fixed `httpPort`/`tlsPort` of its config: the responder binds port 0 first and pebble is then
// configured with the ports it got, so nothing can take them in between.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { createSocket } from 'node:dgram';
import { connect, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { createSelfSigned } from '../../src/tls/selfsigned.ts';
import { ChallengeSync } from '../../src/tls/acme/challengeSync.ts';
import { resolveAcmeSettings, type AcmeSettings } from '../../src/tls/acme/config.ts';
import { AcmeManager, type AcmeManagerOptions } from '../../src/tls/acme/manager.ts';
import { ACME_TLS_ALPN, ChallengeBook, isAcmeChallengePath } from '../../src/tls/challenges.ts';
import { FileCertStore } from '../../src/tls/store/fileStore.ts';
import { freePort } from './prometheus.ts';

export interface PebbleOptions {
  /** Where pebble sends HTTP-01 validations (the responder's HTTP port). */
  readonly httpPort: number;
  /** Where pebble sends TLS-ALPN-01 validations (the responder's TLS port). */
  readonly tlsPort: number;
  /** Seconds; pebble's default is about five years. */
  readonly certificateValidityPeriod?: number;
  /** EAB kid → base64url HMAC key; when given, pebble requires external account binding. */
  readonly eab?: Readonly<Record<string, string>>;
  /** How long to wait for the directory. Default 20 s. */
  readonly readyTimeoutMs?: number;
}

export interface PebbleCounts {
  /** From pebble's "There are now N accounts in memory" (logged on each new account). */
  readonly accounts: number;
  /** From "There are now N orders in the db" (logged on each new order). */
  readonly orders: number;
  /** "Issued certificate serial ..." lines. */
  readonly issued: number;
}

export interface Pebble {
  readonly directoryUrl: string;
  /** PEM that verifies pebble's ACME listener (its self-signed localhost/127.0.0.1 certificate). */
  readonly caPem: string;
  /** File holding caPem, for the manager's `caFile`. */
  readonly caFile: string;
  /** pebble's issuing root; it is made anew on every start, so fetch it per instance. */
  root(): Promise<string>;
  counts(): PebbleCounts;
  logTail(): string;
  stop(): Promise<void>;
}

const ENV = {
  // lab.md: deterministic runs. No random validation sleep, no spurious badNonce, no reuse of an
  // earlier valid authorization (every order really validates).
  PEBBLE_VA_NOSLEEP: '1',
  PEBBLE_WFE_NONCEREJECT: '0',
  PEBBLE_AUTHZREUSE: '0',
};

class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  readonly exited: Promise<unknown>;
  readonly #killOnExit: () => void;

  constructor(name: string, proc: ChildProcess) {
    this.name = name;
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('close', resolve));
    const collect = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') this.lines.push(line);
    };
    proc.stdout?.on('data', collect);
    proc.stderr?.on('data', collect);
    // A test file that crashes must not leave a CA running on the machine.
    this.#killOnExit = () => {
      proc.kill('SIGKILL');
    };
    process.once('exit', this.#killOnExit);
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop(): Promise<void> {
    process.removeListener('exit', this.#killOnExit);
    if (this.running) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/** A port free on both TCP and UDP: challtestsrv serves DNS on both, pebble queries over UDP. */
async function freeDnsPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    const udp = createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      return port;
    }
  }
  throw new Error('no port free on both TCP and UDP');
}

function get(url: string, ca: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

async function tcpReachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

function count(lines: readonly string[], re: RegExp): number {
  let last = 0;
  for (const l of lines) {
    const m = re.exec(l);
    if (m) last = Number(m[1]);
  }
  return last;
}

/** Starts challtestsrv and pebble; resolves once pebble's directory answers over TLS. */
export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  // freePort() can race with another process taking the port before pebble binds it (tap runs
  // test files in parallel): retry on that one failure.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(opts: PebbleOptions): Promise<Pebble> {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-pebble-'));
  const children: Child[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.stop()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // pebble's own listener certificate: it signs nothing, so a self-signed leaf is its own CA.
    const listener = createSelfSigned(['localhost']);
    const certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    await writeFile(certFile, listener.certPem);
    await writeFile(keyFile, listener.keyPem, { mode: 0o600 });

    const [acmePort, mgmtPort, dnsPort, dnsMgmtPort] = [await freePort(), await freePort(), await freeDnsPort(), await freePort()];
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: certFile,
        privateKey: keyFile,
        httpPort: opts.httpPort,
        tlsPort: opts.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: opts.eab !== undefined,
        ...(opts.eab !== undefined ? { externalAccountMACKeys: opts.eab } : {}),
        ...(opts.certificateValidityPeriod !== undefined ? { certificateValidityPeriod: opts.certificateValidityPeriod } : {}),
      },
    };
    const configFile = join(dir, 'pebble-config.json');
    await writeFile(configFile, JSON.stringify(config, null, 2));

    const dns = new Child(
      'pebble-challtestsrv',
      spawn(
        'pebble-challtestsrv',
        // Only the fake DNS: the challenge servers it could run are petrel's job here.
        ['-defaultIPv4', '127.0.0.1', '-defaultIPv6', '', '-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${dnsMgmtPort}`],
        { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
      ),
    );
    children.push(dns);
    const pebble = new Child(
      'pebble',
      spawn('pebble', ['-config', configFile, '-dnsserver', `127.0.0.1:${dnsPort}`], {
        stdio: ['ignore', 'pipe', 'pipe'],
        cwd: dir,
        env: { ...process.env, ...ENV },
      }),
    );
    children.push(pebble);

    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
    for (;;) {
      for (const c of children) {
        if (!c.running) throw new Error(`${c.name} exited early:\n${c.lines.slice(-20).join('\n')}`);
      }
      const dirOk = await get(directoryUrl, listener.certPem, 2_000).then((r) => r.status === 200, () => false);
      if (dirOk && (await tcpReachable(dnsMgmtPort))) break;
      if (Date.now() > deadline) {
        throw new Error(`pebble not ready:\n${children.map((c) => `${c.name}:\n${c.lines.slice(-20).join('\n')}`).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }

    return {
      directoryUrl,
      caPem: listener.certPem,
      caFile: certFile,
      async root() {
        const r = await get(`https://127.0.0.1:${mgmtPort}/roots/0`, listener.certPem, 10_000);
        if (r.status !== 200) throw new Error(`pebble roots/0: HTTP ${r.status}`);
        return r.body;
      },
      counts() {
        return {
          accounts: count(pebble.lines, /There are now (\d+) accounts in memory/),
          orders: count(pebble.lines, /There are now (\d+) orders in the db/),
          issued: pebble.lines.filter((l) => l.includes('Issued certificate serial')).length,
        };
      },
      logTail() {
        return pebble.lines.slice(-40).join('\n');
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Plays petrel's listeners for pebble's validations, through the same calls the real ones make:
 * the HTTP server answers `/.well-known/acme-challenge/<token>` from `book.http01(token)`; the
 * TLS server's ALPNCallback claims a handshake that offers `acme-tls/1` for a name with a
 * challenge (ALPNCallback runs before SNICallback, both with the TLSSocket as `this`) and the
 * SNICallback then hands out the claimed challenge context.
 */
export class ChallengeResponder {
  readonly http: http.Server;
  readonly tls: tls.Server;
  /** Validations answered, by kind: lets a test see which challenge type was used. */
  readonly served = { http01: 0, tlsAlpn01: 0 };

  constructor(book: ChallengeBook) {
    this.http = http.createServer((req, res) => {
      const token = isAcmeChallengePath(req.url ?? '');
      const answer = token === null ? undefined : book.http01(token);
      if (answer === undefined) {
        res.writeHead(404).end();
        return;
      }
      this.served.http01++;
      res.writeHead(200, { 'content-type': 'text/plain' }).end(answer);
    });
    const served = this.served;
    this.tls = tls.createServer({
      ALPNCallback(this: tls.TLSSocket, { servername, protocols }) {
        return book.claimAlpnHandshake(this, servername, protocols) ? ACME_TLS_ALPN : undefined;
      },
      SNICallback(this: tls.TLSSocket, _servername, cb) {
        const ctx = book.claimedContext(this);
        // Not a validation: this responder has nothing else to serve.
        cb(ctx === undefined ? new Error('no challenge for this handshake') : null, ctx);
      },
    });
    // RFC 8737 §3: the validation handshake carries no application data; close once it is done.
    this.tls.on('secureConnection', (socket: tls.TLSSocket) => {
      if (socket.alpnProtocol === ACME_TLS_ALPN) served.tlsAlpn01++;
      socket.end();
    });
    this.tls.on('tlsClientError', () => {});
  }

  async listen(): Promise<{ httpPort: number; tlsPort: number }> {
    this.http.listen(0, '127.0.0.1');
    this.tls.listen(0, '127.0.0.1');
    await Promise.all([once(this.http, 'listening'), once(this.tls, 'listening')]);
    return {
      httpPort: (this.http.address() as AddressInfo).port,
      tlsPort: (this.tls.address() as AddressInfo).port,
    };
  }

  async close(): Promise<void> {
    const close = (s: Server | http.Server): Promise<void> =>
      new Promise((resolve) => {
        s.close(() => resolve());
        if ('closeAllConnections' in s) s.closeAllConnections();
      });
    await Promise.all([close(this.http), close(this.tls)]);
  }
}

/** One line a component logged: what the tests count to prove "one line per attempt". */
export interface LogLine {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly obj: Readonly<Record<string, unknown>>;
}

/** The pino-like logger the ACME code takes, keeping every line for assertions. */
export class CapturingLogger {
  readonly lines: LogLine[] = [];
  debug(obj: object, msg: string): void {
    this.lines.push({ level: 'debug', msg, obj: obj as Record<string, unknown> });
  }
  info(obj: object, msg: string): void {
    this.lines.push({ level: 'info', msg, obj: obj as Record<string, unknown> });
  }
  warn(obj: object, msg: string): void {
    this.lines.push({ level: 'warn', msg, obj: obj as Record<string, unknown> });
  }
  error(obj: object, msg: string): void {
    this.lines.push({ level: 'error', msg, obj: obj as Record<string, unknown> });
  }
  at(level: LogLine['level']): LogLine[] {
    return this.lines.filter((l) => l.level === level);
  }
}

export interface HandshakeResult {
  readonly authorized: boolean;
  readonly error: string | null;
  /** SHA-256 fingerprint of the leaf the client received. */
  readonly fingerprint256: string;
}

/**
 * Serves `chainPem`/`keyPem` on a loopback TLS server and connects to it as a strict client
 * trusting only `rootPem` with SNI `hostname`: proves that the chain the CA sent is complete and
 * valid for the name, the way a browser would see it.
 */
export async function handshakeWith(chainPem: string, keyPem: string, hostname: string, rootPem: string): Promise<HandshakeResult> {
  const server = tls.createServer({ cert: chainPem, key: keyPem }, (s) => s.end());
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const port = (server.address() as AddressInfo).port;
    return await new Promise<HandshakeResult>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: hostname, ca: rootPem, rejectUnauthorized: false });
      socket.once('secureConnect', () => {
        const err = socket.authorizationError;
        resolve({
          authorized: socket.authorized,
          error: err === null || err === undefined ? null : String(err),
          fingerprint256: socket.getPeerCertificate().fingerprint256,
        });
        socket.destroy();
      });
      socket.once('error', reject);
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Polls `probe` until it returns something other than undefined; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** ACME settings for managers ordering from `pebble` (what startAcmeLab's `settings()` gives). */
export function pebbleAcmeSettings(pebble: Pebble, over: Partial<AcmeSettings> = {}): AcmeSettings {
  return resolveAcmeSettings({
    directoryUrl: pebble.directoryUrl,
    termsAgreed: true,
    email: 'ops@petrel.test',
    caFile: pebble.caFile,
    // Quick retries: tests wait for the second and third attempt.
    backoffMinMs: 200,
    backoffMaxMs: 2_000,
    requestTimeoutMs: 10_000,
    orderTimeoutMs: 60_000,
    ...over,
  });
}

/** The parts of a tap Test the lab uses. */
interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface AcmeLabOptions {
  readonly certificateValidityPeriod?: number;
  readonly eab?: Readonly<Record<string, string>>;
}

/**
 * Everything an ACME test runs against, torn down with `t`: pebble, the validation responder,
 * a FileCertStore in a temp dir, the ChallengeBook it feeds and the ChallengeSync between them.
 * `manager()` makes AcmeManagers that are stopped at teardown (before the store closes).
 */
export async function startAcmeLab(t: Teardownable, opts: AcmeLabOptions = {}) {
  const book = new ChallengeBook();
  const responder = new ChallengeResponder(book);
  const ports = await responder.listen();
  const pebble = await startPebble({ ...ports, ...opts }).catch(async (err: unknown) => {
    await responder.close();
    throw err;
  });
  const storeDir = await mkdtemp(join(tmpdir(), 'petrel-acme-store-'));
  const store = await FileCertStore.open(storeDir);
  const log = new CapturingLogger();
  const sync = new ChallengeSync(store, book, log);
  sync.start();
  const managers: AcmeManager[] = [];
  t.teardown(async () => {
    await Promise.all(managers.map((m) => m.stop()));
    await sync.stop();
    await store.close();
    await responder.close();
    await pebble.stop();
    await rm(storeDir, { recursive: true, force: true });
  });

  const settings = (over: Partial<AcmeSettings> = {}): AcmeSettings => pebbleAcmeSettings(pebble, over);

  const manager = (o: Partial<AcmeManagerOptions> & { hostnames: () => Iterable<string> }): AcmeManager => {
    const m = new AcmeManager({ settings: settings(), store, challenges: sync, log, ...o });
    managers.push(m);
    return m;
  };

  return { book, responder, pebble, store, storeDir, log, sync, settings, manager };
}
