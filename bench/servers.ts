// The origin and the contenders, each a plain process with a config generated into one temporary
// directory, pinned with taskset (origin on the load generator's core, proxies alone on the
// other).
//
// Origin: nginx serving static files, not a node:http server. Measured here with wrk on the
// same core: nginx answered ~41k req/s of 64 B, node:http ~21k; with a node origin every proxy
// (nginx included) would have measured the origin's core instead of itself.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST } from './tools.ts';

export const BODIES: Readonly<Record<string, number>> = { '64': 64, '16k': 16 * 1024, '1m': 1024 * 1024 };

export interface Workdir {
  readonly dir: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * Temp dir with the origin's files and one certificate every TLS contender serves.
 * RSA-2048: the common certificate, and the one that makes the server side the expensive side of
 * a handshake (sign ~280 µs vs verify ~20 µs here). With ECDSA P-256 the client's verify costs
 * more than the server's sign, and a new-connections run would measure the load generator.
 */
export async function prepareWorkdir(): Promise<Workdir> {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-bench-'));
  // nginx workers run as `nobody` when started by root: they must be able to read the files.
  await chmod(dir, 0o755);
  const www = join(dir, 'www');
  await mkdir(www, { mode: 0o755 });
  for (const [name, size] of Object.entries(BODIES)) await writeFile(join(www, name), Buffer.alloc(size, 'x'), { mode: 0o644 });
  const certPem = join(dir, 'cert.pem');
  const keyPem = join(dir, 'key.pem');
  const res = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '7',
    '-keyout', keyPem, '-out', certPem, '-subj', `/CN=${HOST}`,
    '-addext', `subjectAltName=DNS:${HOST},DNS:*.bench.test`,
  ], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`openssl req failed: ${res.stderr || res.error?.message}`);
  return { dir, certPem, keyPem };
}

export interface Contender {
  readonly name: string;
  readonly httpPort: number;
  readonly httpsPort: number;
  /** Process whose tree's CPU time is the proxy's cost; null for direct (no proxy). */
  readonly pid: number | null;
  alive(): boolean;
  stop(): Promise<void>;
}

/** A started server process and how to stop it. */
class Proc {
  readonly child: ChildProcess;
  readonly logFile: string;
  #exited = false;

  constructor(child: ChildProcess, logFile: string) {
    this.child = child;
    this.logFile = logFile;
    child.once('exit', () => (this.#exited = true));
    // Best effort if the harness dies: never leave a pinned server behind.
    process.once('exit', () => child.kill('SIGKILL'));
  }

  get exited(): boolean {
    return this.#exited;
  }

  async stop(graceMs: number): Promise<void> {
    if (this.#exited) return;
    const exit = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await exit;
    clearTimeout(timer);
  }

  async logTail(lines = 15): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '');
    return text.trim().split('\n').slice(-lines).join('\n');
  }
}

async function startPinned(core: number, cmd: readonly string[], logFile: string): Promise<Proc> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn('taskset', ['-c', String(core), ...cmd], { stdio: ['ignore', fd, fd] });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    return new Proc(child, logFile);
  } finally {
    closeSync(fd);
  }
}

/** GET `path` with the bench Host (and SNI) until it answers 200 with the expected length. */
async function probe(port: number, tls: boolean, path: string): Promise<string | null> {
  return new Promise((resolve) => {
    const opts = { host: '127.0.0.1', port, path, headers: { host: HOST }, servername: HOST, rejectUnauthorized: false, timeout: 2000 };
    const req = (tls ? httpsRequest : httpRequest)(opts, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => (n += d.length));
      res.on('end', () => resolve(res.statusCode === 200 && n === BODIES['64'] ? null : `status ${res.statusCode}, ${n} bytes`));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve(e.message));
    req.end();
  });
}

async function waitReady(proc: Proc, name: string, ports: { http: number; https: number }, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = 'not tried';
  for (;;) {
    if (proc.exited) throw new Error(`${name} exited during start-up:\n${await proc.logTail()}`);
    last = (await probe(ports.http, false, '/64')) ?? (await probe(ports.https, true, '/64'));
    if (last === null) return;
    if (Date.now() > deadline) {
      await proc.stop(2000);
      throw new Error(`${name} not serving GET /64 (Host ${HOST}) over http and https after ${timeoutMs} ms: ${last}\n${await proc.logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const NGINX_COMMON = (dir: string, name: string): string => `
worker_processes 1;
daemon off;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}.log warn;
events { worker_connections 8192; }
`;

// Settings both nginx instances share. keepalive_requests: nginx closes a client connection
// after 1000 requests by default, which would add reconnects to keep-alive runs that petrel
// does not have.
const NGINX_HTTP = (dir: string, name: string): string => `
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/${name}-tmp/body;
  proxy_temp_path ${dir}/${name}-tmp/proxy;
  fastcgi_temp_path ${dir}/${name}-tmp/fastcgi;
  uwsgi_temp_path ${dir}/${name}-tmp/uwsgi;
  scgi_temp_path ${dir}/${name}-tmp/scgi;
  ssl_protocols TLSv1.2 TLSv1.3;
`;

async function startNginx(w: Workdir, name: string, core: number, conf: string, ports: { http: number; https: number }): Promise<Proc> {
  await mkdir(join(w.dir, `${name}-tmp`), { mode: 0o755 });
  const file = join(w.dir, `${name}.conf`);
  await writeFile(file, conf);
  // -e: the start-up error log, before the config's error_log applies (the default path is
  // /var/log/nginx, not writable without root).
  const proc = await startPinned(core, ['nginx', '-p', w.dir, '-e', join(w.dir, `${name}.log`), '-c', file], join(w.dir, `${name}.out`));
  await waitReady(proc, name, ports, 10_000);
  return proc;
}

/** Origin on the load generator's core: static files over http and https. */
export async function startOrigin(w: Workdir, core: number, ports: { http: number; https: number }): Promise<Contender> {
  const conf = `${NGINX_COMMON(w.dir, 'origin')}
http {${NGINX_HTTP(w.dir, 'origin')}
  open_file_cache max=16;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${ports.http};
    listen 127.0.0.1:${ports.https} ssl;
    ssl_certificate ${w.certPem};
    ssl_certificate_key ${w.keyPem};
    root ${w.dir}/www;
  }
}
`;
  const proc = await startNginx(w, 'origin', core, conf, ports);
  return { name: 'direct', httpPort: ports.http, httpsPort: ports.https, pid: null, alive: () => !proc.exited, stop: () => proc.stop(5000) };
}

/**
 * nginx as the reference proxy, configured the way the issue asks: one worker, upstream
 * keep-alive pool, everything else at Debian's defaults. That includes proxy buffering, which may
 * spool part of a 1 MiB response to a temp file in the bench dir: tried without it
 * (proxy_max_temp_file_size 0) and with larger proxy_buffers, nginx streamed no faster here.
 */
export async function startNginxProxy(w: Workdir, core: number, ports: { http: number; https: number }, originPort: number): Promise<Contender> {
  const conf = `${NGINX_COMMON(w.dir, 'nginx')}
http {${NGINX_HTTP(w.dir, 'nginx')}
  upstream origin {
    server 127.0.0.1:${originPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${ports.http};
    listen 127.0.0.1:${ports.https} ssl;
    ssl_certificate ${w.certPem};
    ssl_certificate_key ${w.keyPem};
    # Both proxies log every request (petrel's access log is always on): buffered, as an
    # operator would run it.
    access_log ${w.dir}/nginx-access.log combined buffer=64k flush=1s;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`;
  const proc = await startNginx(w, 'nginx', core, conf, ports);
  return { name: 'nginx', httpPort: ports.http, httpsPort: ports.https, pid: proc.child.pid!, alive: () => !proc.exited, stop: () => proc.stop(5000) };
}

/**
 * petrel with a generated node config and one app whose static Machine is the origin. The
 * certificate is the same file pair nginx serves, placed where petrel's cert store reads it
 * (`<certs_dir>/<name>/cert.pem` + `key.pem`).
 */
export async function startPetrel(
  w: Workdir,
  core: number,
  ports: { http: number; https: number; admin: number },
  originPort: number,
): Promise<Contender> {
  const root = join(w.dir, 'petrel');
  await mkdir(join(root, 'apps'), { recursive: true });
  await mkdir(join(root, 'certs', HOST), { recursive: true });
  await writeFile(join(root, 'certs', HOST, 'cert.pem'), await readFile(w.certPem));
  await writeFile(join(root, 'certs', HOST, 'key.pem'), await readFile(w.keyPem));
  const config = join(root, 'petrel.toml');
  await writeFile(
    config,
    `node_id = "bench-1"
region = "bench"
default_domain = "bench.test"
log_level = "warn"
apps_dir = "apps"
certs_dir = "certs"

[[listen]]
port = 80
address = "127.0.0.1:${ports.http}"

[[listen]]
port = 443
address = "127.0.0.1:${ports.https}"

[admin]
address = "127.0.0.1:${ports.admin}"
token = "bench"
`,
  );
  await writeFile(
    join(root, 'apps', 'bench.toml'),
    `app = "bench"

[http_service]
internal_port = ${originPort}

[http_service.concurrency]
type = "requests"
soft_limit = 1000

[[machines]]
id = "origin-1"
driver = "static"
address = "127.0.0.1:${originPort}"
`,
  );
  const bin = join(import.meta.dirname, '..', 'bin', 'petrel.js');
  // Same Node binary as the harness (npm run bench puts the project's Node 24 first on PATH).
  const proc = await startPinned(core, [process.execPath, bin, 'start', '--config', config], join(w.dir, 'petrel.out'));
  await waitReady(proc, 'petrel', ports, 20_000);
  // petrel's graceful shutdown waits for in-flight work; nothing is in flight between runs.
  return { name: 'petrel', httpPort: ports.http, httpsPort: ports.https, pid: proc.child.pid!, alive: () => !proc.exited, stop: () => proc.stop(10_000) };
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) used so far by `pid` and its live descendants (nginx's worker). */
export async function treeCpuSeconds(pid: number): Promise<number> {
  const parents = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null);
    if (stat === null) continue;
    // Fields after the parenthesised command name (which may contain spaces): state is field 3.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parents.set(Number(entry), Number(f[1]));
    ticks.set(Number(entry), Number(f[11]) + Number(f[12]));
  }
  let total = 0;
  for (const [p, t] of ticks) {
    for (let q: number | undefined = p; q !== undefined && q > 1; q = parents.get(q)) {
      if (q === pid) {
        total += t;
        break;
      }
    }
  }
  return total / CLK_TCK;
}

/**
 * Busy CPU seconds of one core so far, whoever used it (/proc/stat: everything but idle and
 * iowait, steal included). The proxy core should be busy with the proxy only; the difference
 * shows other work on a shared machine skewing a run.
 */
export async function coreBusySeconds(core: number): Promise<number> {
  const stat = await readFile('/proc/stat', 'utf8');
  const line = stat.split('\n').find((l) => l.startsWith(`cpu${core} `));
  if (!line) return NaN;
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number) as number[];
  return (user! + nice! + system! + irq! + softirq! + steal!) / CLK_TCK;
}

export async function removeWorkdir(w: Workdir): Promise<void> {
  await rm(w.dir, { recursive: true, force: true });
}
