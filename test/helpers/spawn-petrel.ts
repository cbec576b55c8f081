// Runs petrel as a real child process (`node bin/petrel.js ...`), the way an operator does, for
// the tests of signals, exit codes, reload and shutdown under load, and the CLI. Bound ports are
// read back from the "petrel started" JSON log line on stdout (configs bind port 0). Every
// process spawned here is recorded and killed on teardown if it is still running; nothing is
// ever killed by name.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { get, nodeConfig } from './petrel.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PETREL_BIN = path.join(ROOT, 'bin', 'petrel.js');
export const DEMO_MACHINE = path.join(ROOT, 'demo', 'hello-machine.ts');
export const TOKEN = 'test-token';

/** The parts of a tap Test the helpers use. */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Arguments after `bin/petrel.js`, e.g. ['start', '--config', file]. */
  readonly args: readonly string[];
  readonly cwd?: string;
  /** Replaces the environment (default: this process's, without PETREL_*). */
  readonly env?: Record<string, string | undefined>;
  /** How long to wait for the "petrel started" line (a safety net, not an assertion). */
  readonly startTimeoutMs?: number;
}

/** One petrel child process and what it printed. */
export class PetrelProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  /** Public port -> bound port, from the "petrel started" line. */
  readonly ports = new Map<number, number>();
  adminPort = 0;
  /** Whether the JSON "petrel started" line had reached stdout when start-up was detected. */
  startedLogSeen = false;
  readonly exited: Promise<Exit>;
  exit: Exit | null = null;
  private readonly parsed: Record<string, unknown>[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(child: ChildProcess) {
    this.child = child;
    this.pid = child.pid!;
    this.exited = new Promise<Exit>((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
        this.notify();
      });
    });
    lines(child.stdout!, (l) => {
      this.stdout.push(l);
      if (l.startsWith('{')) {
        try {
          this.parsed.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          // a line cut by a crash: not a log record
        }
      }
      this.notify();
    });
    lines(child.stderr!, (l) => {
      this.stderr.push(l);
      this.notify();
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  get httpPort(): number {
    return this.port(80);
  }
  get httpsPort(): number {
    return this.port(443);
  }

  port(publicPort: number): number {
    const p = this.ports.get(publicPort);
    if (p === undefined) throw new Error(`public port ${publicPort} is not bound (ports: ${JSON.stringify([...this.ports])})`);
    return p;
  }

  get running(): boolean {
    return this.exit === null;
  }

  /** stdout lines that are JSON (pino) objects, parsed once as they arrive. */
  logs(): readonly Record<string, unknown>[] {
    return this.parsed;
  }

  /** How many JSON log lines so far have this msg. */
  countLogs(msg: string | RegExp): number {
    let n = 0;
    for (const l of this.parsed) if (msgMatches(l, msg)) n++;
    return n;
  }

  /** Everything printed so far, for assertion messages. */
  output(): string {
    return `--- stdout\n${this.stdout.join('\n')}\n--- stderr\n${this.stderr.join('\n')}`;
  }

  /**
   * Resolves when `test` (re-run on every new line and at exit) returns something other than
   * undefined; rejects after `timeoutMs` or when the process exits first.
   */
  waitFor<T>(what: string, test: () => T | undefined, timeoutMs = 20_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): void => {
        let v: T | undefined;
        try {
          v = test();
        } catch (err) {
          done();
          reject(err as Error);
          return;
        }
        if (v !== undefined) {
          done();
          resolve(v);
        } else if (this.exit !== null) {
          done();
          reject(new Error(`petrel exited (${JSON.stringify(this.exit)}) before ${what}\n${this.output()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.output()}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Waits for the (skip+1)-th JSON log line whose msg matches. Scans each line once, so waiting
   * stays cheap while an access-log flood (wrk) arrives.
   */
  waitForLog(msg: string | RegExp, timeoutMs = 20_000, skip = 0): Promise<Record<string, unknown>> {
    let scanned = 0;
    let seen = 0;
    return this.waitFor(`log line ${String(msg)}${skip ? ` #${skip + 1}` : ''}`, () => {
      for (; scanned < this.parsed.length; scanned++) {
        const l = this.parsed[scanned]!;
        if (msgMatches(l, msg) && seen++ === skip) return l;
      }
      return undefined;
    }, timeoutMs);
  }

  /** Waits for a stderr line matching `re`, looking only at lines from index `from` on. */
  waitForStderr(re: RegExp, timeoutMs = 20_000, from = 0): Promise<string> {
    let scanned = from;
    return this.waitFor(`stderr ${String(re)}`, () => {
      for (; scanned < this.stderr.length; scanned++) if (re.test(this.stderr[scanned]!)) return this.stderr[scanned]!;
      return undefined;
    }, timeoutMs);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.exit === null) this.child.kill(sig);
  }

  /** Waits for the exit; rejects after `timeoutMs` (the process is left to teardown). */
  waitExit(timeoutMs = 30_000): Promise<Exit> {
    return this.waitFor('exit', () => this.exit ?? undefined, timeoutMs).catch((err: Error) => {
      if (this.exit !== null) return this.exit;
      throw err;
    });
  }

  /** Teardown: SIGTERM, and SIGKILL if it is still there after a while. */
  async stop(): Promise<void> {
    if (this.exit !== null) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
  }
}

function msgMatches(l: Record<string, unknown>, msg: string | RegExp): boolean {
  return typeof msg === 'string' ? l['msg'] === msg : msg.test(String(l['msg']));
}

function lines(stream: NodeJS.ReadableStream, onLine: (l: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (s: string) => {
    rest += s;
    let i: number;
    while ((i = rest.indexOf('\n')) !== -1) {
      onLine(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  });
  stream.on('end', () => {
    if (rest !== '') onLine(rest);
    rest = '';
  });
}

/** This process's environment without PETREL_* (a developer's own settings must not leak in). */
export function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PETREL_')) env[k] = v;
  return { ...env, ...extra };
}

/** Spawns `node bin/petrel.js ...args` on this Node (24), killed on teardown if still running. */
export function spawnPetrelProcess(t: Teardownable, opts: SpawnOptions): PetrelProcess {
  const child = spawn(process.execPath, [PETREL_BIN, ...opts.args], {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = new PetrelProcess(child);
  t.teardown(() => p.stop());
  return p;
}

/**
 * Spawns `petrel start` and waits until it is up. The bound addresses come from the JSON
 * "petrel started" line (`ports`, `admin`) when it has reached stdout; petrel's logger buffers
 * stdout (sonic-boom minLength 4 KiB, no timed flush), so on a quiet start that line may only
 * appear at exit. The human start-up lines on stderr (written at once, just before the JSON line)
 * carry the same ports for 80 and 443 and the admin port, and are used when the JSON line is not
 * there yet. `startedLogSeen` records which one it was.
 */
export async function startPetrelProcess(t: Teardownable, opts: SpawnOptions): Promise<PetrelProcess> {
  const p = spawnPetrelProcess(t, opts);
  const found = await p.waitFor<{ json: Record<string, unknown> | null; admin: string | null }>('the start-up lines ("petrel started" on stdout or the admin line on stderr)', () => {
    const json = p.logs().find((l) => l['msg'] === 'petrel started');
    if (json !== undefined) return { json, admin: null };
    const admin = p.stderr.find((l) => /^\s*admin: http:\/\/\S+:\d+\/metrics/.test(l));
    return admin !== undefined ? { json: null, admin } : undefined;
  }, opts.startTimeoutMs ?? 30_000);
  if (found.json !== null) {
    p.startedLogSeen = true;
    const ports = (found.json['ports'] ?? {}) as Record<string, string>;
    for (const [pub, addr] of Object.entries(ports)) p.ports.set(Number(pub), portOf(addr));
    p.adminPort = portOf(String(found.json['admin']));
  } else {
    p.adminPort = Number(/admin: http:\/\/\S+:(\d+)\/metrics/.exec(found.admin!)![1]);
    const tryLine = p.stderr.find((l) => /^\s*try: /.test(l)) ?? '';
    const http = /curl http:\/\/[^\s/]+:(\d+)\//.exec(tryLine);
    const https = /curl -k https:\/\/[^\s/]+:(\d+)\//.exec(tryLine);
    if (http !== null) p.ports.set(80, Number(http[1]));
    if (https !== null) p.ports.set(443, Number(https[1]));
  }
  return p;
}

function portOf(addr: string): number {
  const i = addr.lastIndexOf(':');
  const n = Number(addr.slice(i + 1));
  if (!Number.isInteger(n) || n <= 0) throw new Error(`cannot read a port from ${JSON.stringify(addr)}`);
  return n;
}

/** Runs `petrel ...args` to its end (for commands that exit: help, check-config, failed starts). */
export async function runPetrel(t: Teardownable, args: readonly string[], opts: { cwd?: string; env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = spawnPetrelProcess(t, { args, cwd: opts.cwd, env: opts.env });
  const exit = await p.waitExit(opts.timeoutMs ?? 30_000);
  // 'exit' may come before the pipes are drained.
  await Promise.all([streamEnd(p.child.stdout!), streamEnd(p.child.stderr!)]);
  return { code: exit.code, signal: exit.signal, stdout: p.stdout.join('\n'), stderr: p.stderr.join('\n') };
}

function streamEnd(s: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    if ((s as unknown as { readableEnded: boolean }).readableEnded) return resolve();
    s.once('end', () => resolve());
    s.once('close', () => resolve());
  });
}

// ---- config trees ------------------------------------------------------------------------

/** A static-Machine app on ports 80 (http) and 443 (tls + http, self-signed certificate). */
export function webApp(originPort: number): string {
  return `app = "web"

[http_service]
internal_port = ${originPort}

[http_service.tls_options]
default_self_signed = true

[[machines]]
id = "web-1"
driver = "static"
address = "127.0.0.1:${originPort}"
`;
}

export interface NodeDirOptions {
  /** App files: name -> TOML text. */
  readonly apps: Record<string, string>;
  readonly nodeId?: string;
  /** Extra `[limits]` lines. */
  readonly limits?: string;
  /** Extra top-level node config lines. */
  readonly node?: string;
  readonly logLevel?: string;
  /** `[[listen]]` addresses of public ports 80 and 443 (default 127.0.0.1:0 each). */
  readonly listen80?: string;
  readonly listen443?: string;
  readonly admin?: string;
}

export interface NodeDir {
  readonly dir: string;
  readonly configPath: string;
  appPath(name: string): string;
  writeApp(name: string, text: string): void;
}

/** A node config on loopback port 0: the same text the in-process helper writes. */
export function nodeConfigText(opts: NodeDirOptions, certsDir: string): string {
  return nodeConfig(opts, certsDir);
}

/** Writes a node config and its apps to a fresh temp dir, removed on teardown. */
export function makeNodeDir(t: Teardownable, opts: NodeDirOptions): NodeDir {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'petrel-proc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const certs = path.join(dir, 'certs');
  mkdirSync(path.join(dir, 'apps'), { recursive: true });
  mkdirSync(certs, { recursive: true });
  const configPath = path.join(dir, 'petrel.toml');
  writeFileSync(configPath, nodeConfigText(opts, certs));
  const appPath = (name: string): string => path.join(dir, 'apps', `${name}.toml`);
  for (const [name, text] of Object.entries(opts.apps)) writeFileSync(appPath(name), text);
  return {
    dir,
    configPath,
    appPath,
    writeApp: (name, text) => writeFileSync(appPath(name), text),
  };
}

/** An app with static Machines on loopback ports. */
export function staticAppText(name: string, machines: { id: string; port: number }[], extra = ''): string {
  return `app = "${name}"
${extra}
[http_service]
internal_port = ${machines[0]?.port ?? 8080}

${machines.map((m) => `[[machines]]\nid = "${m.id}"\ndriver = "static"\naddress = "127.0.0.1:${m.port}"\n`).join('\n')}`;
}

// ---- origins and clients -----------------------------------------------------------------

export interface Origin {
  readonly port: number;
  readonly server: http.Server;
  /** Requests received (counted when the head arrives). */
  readonly received: number;
  /** Requests to /gate waiting for release(). */
  readonly held: number;
  /** Answers every /gate request held so far and any that arrive later. */
  release(): void;
  close(): Promise<void>;
}

/**
 * A node:http origin on loopback, closed on teardown. `/slow?ms=N` answers after N ms (default
 * 500); `/gate` answers only once the test calls release(), so "in flight" needs no timing;
 * anything else answers at once with a small JSON body.
 */
export function startOrigin(t: Teardownable, name = 'origin'): Promise<Origin> {
  const state = { received: 0, released: false };
  const gated: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    state.received++;
    const url = new URL(req.url ?? '/', 'http://x');
    const answer = (): void => {
      const body = JSON.stringify({ name, url: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    req.resume();
    req.on('end', () => {
      if (url.pathname === '/slow') {
        const timer = setTimeout(answer, Number(url.searchParams.get('ms') ?? 500));
        res.once('close', () => clearTimeout(timer));
      } else if (url.pathname === '/gate' && !state.released) {
        gated.push(answer);
      } else {
        answer();
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const close = (): Promise<void> =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        });
      t.teardown(close);
      resolve({
        port,
        server,
        get received() {
          return state.received;
        },
        get held() {
          return gated.length;
        },
        release() {
          state.released = true;
          for (const a of gated.splice(0)) a();
        },
        close,
      });
    });
  });
}

export interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** One HTTP/1.1 request on a fresh connection (no Host field unless `host` is given). */
export function request(port: number, opts: { host?: string; path?: string; method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return get(port, opts.host, opts.path, opts);
}

/** POST /v1/reload on the admin listener with the test token. */
export async function adminReload(adminPort: number): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await request(adminPort, { method: 'POST', path: '/v1/reload', headers: { authorization: `Bearer ${TOKEN}` } });
  return { status: r.status, json: JSON.parse(r.body) as Record<string, unknown> };
}

/** Resolves with the error code of a TCP connect attempt, or null when it connected. */
export function tryConnect(port: number, host = '127.0.0.1'): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(null);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** True when a process with this pid exists (signal 0 probes without sending anything). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `test` every `everyMs` until it is true; false after `timeoutMs` (a safety net). */
export async function until(test: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 25): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await test()) return true;
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
}

// ---- wrk ---------------------------------------------------------------------------------

export interface WrkResult {
  readonly code: number | null;
  readonly output: string;
  readonly requests: number;
  /** "Non-2xx or 3xx responses: N", 0 when the line is absent. */
  readonly non2xx: number;
  readonly non2xxLine: boolean;
  /** "Socket errors: connect A, read B, write C, timeout D", zeros when absent. */
  readonly socketErrors: { connect: number; read: number; write: number; timeout: number };
  readonly socketErrorsLine: boolean;
}

export function parseWrk(output: string, code: number | null): WrkResult {
  const req = /(\d+) requests in/.exec(output);
  const non = /Non-2xx or 3xx responses:\s*(\d+)/.exec(output);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    code,
    output,
    requests: req ? Number(req[1]) : -1,
    non2xx: non ? Number(non[1]) : 0,
    non2xxLine: non !== null,
    socketErrors: se ? { connect: Number(se[1]), read: Number(se[2]), write: Number(se[3]), timeout: Number(se[4]) } : { connect: 0, read: 0, write: 0, timeout: 0 },
    socketErrorsLine: se !== null,
  };
}

export interface WrkRun {
  readonly child: ChildProcess;
  readonly done: Promise<WrkResult>;
}

/** Starts wrk (path from requireBinary); killed on teardown if still running. */
export function startWrk(t: Teardownable, wrk: string, args: readonly string[]): WrkRun {
  const child = spawn(wrk, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (s: string) => (out += s));
  child.stderr!.on('data', (s: string) => (out += s));
  const done = new Promise<WrkResult>((resolve) => {
    child.once('close', (code) => resolve(parseWrk(out, code)));
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, done };
}
