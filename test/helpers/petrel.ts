// Runs a real petrel Daemon in-process on loopback port 0 with a config written to a temp dir,
// and gives tests raw-socket and HTTP clients. Access-log lines are captured for assertions.

import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Daemon } from '../../src/daemon.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEMO_MACHINE = path.join(ROOT, 'demo', 'hello-machine.ts');

export interface PetrelOptions {
  /** App files: name -> TOML text. */
  readonly apps: Record<string, string>;
  /** Extra `[limits]` lines, e.g. `queue_timeout = "300ms"`. */
  readonly limits?: string;
  /** Extra top-level node config lines. */
  readonly node?: string;
  readonly logLevel?: string;
  /** Directory to reuse (reload tests rewrite files in it). */
  readonly dir?: string;
  /** Extra public ports to bind on loopback port 0 (`[[listen]] port = P address = "127.0.0.1:0"`). */
  readonly listen?: readonly number[];
  readonly nodeId?: string;
  /** Bind addresses of public ports 80 and 443 (default 127.0.0.1:0), e.g. where pebble validates. */
  readonly listen80?: string;
  readonly listen443?: string;
  /** Certificates written to `<dir>/certs/<label>/{cert,key}.pem` before the daemon starts. */
  readonly certs?: Readonly<Record<string, { readonly certPem: string; readonly keyPem: string }>>;
}

export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const l of chunk.toString('utf8').split('\n')) {
      if (l.trim() === '') continue;
      try {
        this.lines.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        this.lines.push({ raw: l });
      }
    }
    cb();
  }
  access(): Record<string, unknown>[] {
    return this.lines.filter((l) => l['c'] === 'access');
  }
}

export interface Petrel {
  readonly daemon: Daemon;
  readonly dir: string;
  readonly configPath: string;
  readonly log: LogCapture;
  readonly httpPort: number;
  readonly httpsPort: number;
  readonly adminPort: number;
  port(publicPort: number): number;
  writeApp(name: string, text: string): void;
  stop(): Promise<void>;
}

/** Options of nodeConfig() alone (also used by the spawned-process helpers). */
export interface NodeConfigOptions {
  /** `node_id` (default test-1): cluster tests run several nodes. */
  readonly nodeId?: string;
  readonly limits?: string;
  readonly node?: string;
  readonly logLevel?: string;
  readonly listen?: readonly number[];
  /** Bind addresses of public ports 80 and 443 and of the admin listener (default 127.0.0.1:0). */
  readonly listen80?: string;
  readonly listen443?: string;
  readonly admin?: string;
}

export function nodeConfig(opts: NodeConfigOptions, certsDir: string): string {
  return `node_id = "${opts.nodeId ?? 'test-1'}"
region = "tst"
default_domain = "test"
apps_dir = "apps"
certs_dir = ${JSON.stringify(certsDir)}
log_level = ${JSON.stringify(opts.logLevel ?? 'info')}
${opts.node ?? ''}

[[listen]]
port = 80
address = "${opts.listen80 ?? '127.0.0.1:0'}"

[[listen]]
port = 443
address = "${opts.listen443 ?? '127.0.0.1:0'}"

${(opts.listen ?? []).map((port) => `[[listen]]\nport = ${port}\naddress = "127.0.0.1:0"\n`).join('\n')}
[admin]
address = "${opts.admin ?? '127.0.0.1:0'}"
token = "test-token"

[limits]
${opts.limits ?? ''}
`;
}

export async function startPetrel(opts: PetrelOptions): Promise<Petrel> {
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), 'petrel-test-'));
  const certs = path.join(dir, 'certs');
  mkdirSync(path.join(dir, 'apps'), { recursive: true });
  mkdirSync(certs, { recursive: true });
  const configPath = path.join(dir, 'petrel.toml');
  writeFileSync(configPath, nodeConfig(opts, certs));
  for (const [name, text] of Object.entries(opts.apps)) writeFileSync(path.join(dir, 'apps', `${name}.toml`), text);
  for (const [label, pair] of Object.entries(opts.certs ?? {})) writeCert(dir, label, pair);
  const log = new LogCapture();
  const daemon = await Daemon.start({ configPath, logDestination: log });
  const addrs = daemon.addresses();
  const portOf = (p: number) => {
    const a = addrs.get(p) ?? daemon.addresses().get(p);
    if (a === undefined) throw new Error(`public port ${p} is not bound`);
    return a.port;
  };
  return {
    daemon,
    dir,
    configPath,
    log,
    httpPort: addrs.get(80)?.port ?? 0,
    httpsPort: addrs.get(443)?.port ?? 0,
    adminPort: daemon.adminPort,
    port: portOf,
    writeApp(name, text) {
      writeFileSync(path.join(dir, 'apps', `${name}.toml`), text);
    },
    async stop() {
      await daemon.shutdown();
      if (opts.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A static-Machine app pointing at `port` on loopback. */
export function staticApp(name: string, machines: { id: string; port: number }[], extra = '', concurrency = ''): string {
  return `app = "${name}"
${extra}
[http_service]
internal_port = ${machines[0]?.port ?? 8080}
${concurrency ? `[http_service.concurrency]\n${concurrency}\n` : ''}
${machines.map((m) => `[[machines]]\nid = "${m.id}"\ndriver = "static"\naddress = "127.0.0.1:${m.port}"\n`).join('\n')}`;
}

export interface DemoAppOptions {
  /** Machine ids (default `<name>-1`), or [id, region] pairs. */
  readonly machines?: readonly (string | readonly [string, string])[];
  /** Extra `[http_service]` lines (auto_stop_machines, min_machines_running, ...). */
  readonly service?: string;
  /** `[http_service.concurrency]` lines, e.g. `type = "requests"\nsoft_limit = 5`. */
  readonly concurrency?: string;
  /** The demo's HTTP check on /healthz (default on). */
  readonly checks?: boolean;
  /** Extra top-level lines. */
  readonly extra?: string;
}

/** An app whose `process` Machines run demo/hello-machine.ts (the default config's shape). */
export function demoApp(name: string, o: DemoAppOptions = {}): string {
  const machines = (o.machines ?? [`${name}-1`]).map((m) => (typeof m === 'string' ? [m, ''] : m));
  return `app = "${name}"
${o.extra ?? ''}
[http_service]
internal_port = 8080
${o.service ?? ''}
${o.concurrency === undefined ? '' : `[http_service.concurrency]\n${o.concurrency}\n`}
${o.checks === false ? '' : '[[http_service.checks]]\npath = "/healthz"\ninterval = "200ms"\ntimeout = "2s"\ngrace_period = "30s"\n'}
${machines
  .map(([id, region]) => `[[machines]]\nid = "${id}"\n${region ? `region = "${region}"\n` : ''}driver = "process"\ncmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]\n`)
  .join('')}`;
}

export interface Origin {
  readonly port: number;
  readonly server: http.Server;
  readonly requests: http.IncomingMessage[];
  close(): Promise<void>;
}

/** A real HTTP origin on loopback; default handler echoes method, url and headers as JSON. */
export function startOrigin(handler?: http.RequestListener, name = 'origin'): Promise<Origin> {
  const requests: http.IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req);
    if (handler) return handler(req, res);
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      const body = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, bodyBytes: n });
      res.writeHead(200, { 'content-type': 'application/json', 'x-origin': name });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 30_000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        port,
        server,
        requests,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Sends raw bytes, collects everything until the server closes or `idleMs` of silence. */
export function rawExchange(port: number, data: string | Buffer, idleMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    let closed = false;
    let timer = setTimeout(done, idleMs);
    function done() {
      clearTimeout(timer);
      s.destroy();
      resolve({ text: buf, closed });
    }
    s.on('data', (c) => {
      buf += c.toString('latin1');
      clearTimeout(timer);
      timer = setTimeout(done, idleMs);
    });
    s.on('end', () => {
      closed = true;
      done();
    });
    s.on('error', () => {
      closed = true;
      done();
    });
    s.write(data);
  });
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * One HTTP/1.1 request through node:http (fresh connection unless an agent is given). `host`
 * undefined sends node's default Host field (the address dialled).
 */
export function get(port: number, host: string | undefined, pathName = '/', opts: { method?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent } = {}): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const headers = host === undefined ? { ...opts.headers } : { host, ...opts.headers };
    const req = http.request(
      { host: '127.0.0.1', port, path: pathName, method: opts.method ?? 'GET', headers, agent: opts.agent ?? false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

// ---- added for the balance / Machines / admin suites ----

export interface ParsedResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * One client connection kept open across requests (raw socket, so the test knows every request
 * used the same connection). Understands Content-Length and chunked responses.
 */
export class KeepAliveConn {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiting: { resolve: (r: ParsedResponse) => void; reject: (e: Error) => void } | null = null;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.tryParse();
    });
    const fail = (err?: Error) => {
      this.closed = true;
      const w = this.waiting;
      this.waiting = null;
      w?.reject(err ?? new Error('connection closed before a complete response'));
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
  }

  static open(port: number): Promise<KeepAliveConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new KeepAliveConn(s));
      });
      s.once('error', reject);
    });
  }

  /** Sends one request and resolves with its response (one request in flight at a time). */
  request(host: string, pathName = '/', headers: Record<string, string> = {}): Promise<ParsedResponse> {
    if (this.waiting !== null) return Promise.reject(new Error('a request is already in flight'));
    if (this.closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      let head = `GET ${pathName} HTTP/1.1\r\nhost: ${host}\r\n`;
      for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
      this.socket.write(head + '\r\n');
    });
  }

  private tryParse(): void {
    if (this.waiting === null) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    let rest = this.buf.subarray(end + 4);
    let body: Buffer;
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      let off = 0;
      for (;;) {
        const le = rest.indexOf('\r\n', off);
        if (le < 0) return;
        const size = parseInt(rest.subarray(off, le).toString('latin1'), 16);
        if (rest.length < le + 2 + size + 2) return;
        if (size === 0) {
          off = le + 4;
          break;
        }
        parts.push(rest.subarray(le + 2, le + 2 + size));
        off = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
      rest = rest.subarray(off);
    } else {
      const len = Number(headers['content-length'] ?? 0);
      if (rest.length < len) return;
      body = rest.subarray(0, len);
      rest = rest.subarray(len);
    }
    this.buf = rest;
    const w = this.waiting;
    this.waiting = null;
    w.resolve({ status, headers, body: body.toString('utf8') });
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

export interface AdminReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: unknown;
}

/** One request to the admin listener (fresh connection); `token` null sends no Authorization. */
export function adminRequest(port: number, method: string, pathName: string, token: string | null = 'test-token', body?: string): Promise<AdminReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    const req = http.request({ host: '127.0.0.1', port, method, path: pathName, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The admin /metrics text. */
export async function scrapeMetrics(adminPort: number): Promise<string> {
  const r = await adminRequest(adminPort, 'GET', '/metrics', null);
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
  return r.text;
}

/**
 * Value of one sample in Prometheus text format: `name` with exactly the `labels` given
 * (label order does not matter; extra labels on the sample make it not match). Undefined if absent.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1));
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got: [string, string][] = [];
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got.push([lm[1]!, lm[2]!]);
    got.sort(([a], [b]) => (a < b ? -1 : 1));
    if (JSON.stringify(got) === JSON.stringify(want)) return Number(m[3]);
  }
  return undefined;
}

/** Writes a PEM pair as `<dir>/certs/<label>/{cert,key}.pem` (the layout the certs dir scan reads). */
export function writeCert(dir: string, label: string, pair: { readonly certPem: string; readonly keyPem: string }): void {
  const d = path.join(dir, 'certs', label);
  mkdirSync(d, { recursive: true });
  writeFileSync(path.join(d, 'key.pem'), pair.keyPem, { mode: 0o600 });
  writeFileSync(path.join(d, 'cert.pem'), pair.certPem);
}

/**
 * Polls `pred` until it holds. The deadline is only a guard against a hang (the test then fails
 * naming `what`), never an assertion about speed.
 */
export async function pollUntil(pred: () => boolean | Promise<boolean>, what: string, guardMs = 20_000): Promise<void> {
  const end = Date.now() + guardMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
