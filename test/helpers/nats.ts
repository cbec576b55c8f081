// Real nats-server processes for the store tests (lab.md: the only fakes are real local servers):
// one server with JetStream, or a cluster of three, on free loopback ports with their own data
// directories. Servers can be killed (SIGKILL, like a crash) and restarted on the same port and
// data directory. Everything started is killed in teardown, and at process exit as a last resort.
//
// Readiness is the server's /healthz on its monitoring port, not just an open client port: a
// clustered server accepts clients before JetStream has a meta leader, and bucket creation fails
// until it has one.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';

const READY_TIMEOUT_MS = 30_000;

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** `n` distinct free loopback ports (all bound at once, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function healthy(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

export class NatsServer {
  readonly name: string;
  readonly port: number;
  readonly monitorPort: number;
  readonly dataDir: string;
  readonly #bin: string;
  readonly #args: string[];
  readonly #logFile: string;
  #child: ChildProcess | null = null;

  constructor(bin: string, name: string, port: number, monitorPort: number, dataDir: string, extra: string[]) {
    this.#bin = bin;
    this.name = name;
    this.port = port;
    this.monitorPort = monitorPort;
    this.dataDir = dataDir;
    this.#logFile = join(dataDir, `${name}.log`);
    this.#args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort), '-sd', join(dataDir, name), '-n', name, ...extra];
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== null;
  }

  /** Starts the process; ready() says when it serves JetStream. */
  spawn(): void {
    if (this.#child !== null) throw new Error(`${this.name} is already running`);
    const log = openSync(this.#logFile, 'a');
    const child = spawn(this.#bin, this.#args, { stdio: ['ignore', log, log] });
    closeSync(log);
    live.add(child);
    child.once('exit', () => {
      live.delete(child);
      if (this.#child === child) this.#child = null;
    });
    this.#child = child;
  }

  async ready(): Promise<void> {
    const end = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.#child === null) throw new Error(`${this.name} exited while starting:\n${this.logTail()}`);
      if (await healthy(this.monitorPort)) return;
      if (Date.now() > end) throw new Error(`${this.name} not healthy after ${READY_TIMEOUT_MS} ms:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async start(): Promise<void> {
    this.spawn();
    await this.ready();
  }

  /** SIGKILL, like a crash: no goodbye to clients or cluster peers. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL'); // also ends a paused (SIGSTOPped) process
    await exited;
  }

  /**
   * SIGSTOP: the process keeps its sockets open but answers nothing (a hung server). Resolves
   * once every thread is stopped: the signal takes effect asynchronously, and on a loaded machine
   * a request sent right after kill() was seen answered.
   */
  async pause(): Promise<void> {
    const pid = this.#child?.pid;
    if (pid === undefined) return;
    this.#child!.kill('SIGSTOP');
    const deadline = Date.now() + 5000;
    while (!allThreadsStopped(pid)) {
      if (Date.now() > deadline) throw new Error(`nats-server ${pid} did not stop within 5 s of SIGSTOP`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /** Same port, same data directory. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.#logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

export interface NatsSet {
  readonly servers: readonly NatsServer[];
  readonly urls: string[];
  kill(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  /** Starts every stopped server at once (a cluster needs a quorum before any is healthy). */
  startAll(): Promise<void>;
  stopAll(): Promise<void>;
}

function makeSet(servers: NatsServer[], dir: string): NatsSet {
  return {
    servers,
    urls: servers.map((s) => s.url),
    kill: (i) => servers[i]!.kill(),
    restart: (i) => servers[i]!.restart(),
    async startAll() {
      for (const s of servers) if (!s.running) s.spawn();
      await Promise.all(servers.map((s) => s.ready()));
    },
    async stopAll() {
      await Promise.all(servers.map((s) => s.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One nats-server with JetStream; stopped (and its data removed) in t's teardown. */
export async function startNats(t: Test, bin: string): Promise<NatsServer> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-nats-'));
  const [port, mport] = await freePorts(2);
  const s = new NatsServer(bin, 'n1', port!, mport!, dir, []);
  const set = makeSet([s], dir);
  t.teardown(() => set.stopAll());
  await s.start();
  return s;
}

/** `n` clustered nats-servers with JetStream (routes to each other); stopped in t's teardown. */
export async function startNatsCluster(t: Test, bin: string, n = 3): Promise<NatsSet> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-natsc-'));
  const ports = await freePorts(n * 3);
  const cport = (i: number): number => ports[n * 2 + i]!;
  const servers = Array.from({ length: n }, (_, i) => {
    const routes = Array.from({ length: n }, (_, j) => j)
      .filter((j) => j !== i)
      .map((j) => `nats://127.0.0.1:${cport(j)}`)
      .join(',');
    const extra = ['--cluster_name', 'petrel-test', '--cluster', `nats://127.0.0.1:${cport(i)}`, '--routes', routes];
    return new NatsServer(bin, `s${i + 1}`, ports[i]!, ports[n + i]!, dir, extra);
  });
  const set = makeSet(servers, dir);
  t.teardown(() => set.stopAll());
  await set.startAll();
  return set;
}

/**
 * A TCP relay to a server that the test can cut (every connection reset, new ones refused) and
 * restore on the same port: a network partition between one client and a server that stays up,
 * so other clients can change things while the cut-off one cannot see them.
 */
export class CuttableLink {
  readonly port: number;
  readonly #target: number;
  readonly #sockets = new Set<net.Socket>();
  #server: net.Server | null = null;

  private constructor(port: number, target: number) {
    this.port = port;
    this.#target = target;
  }

  static async open(t: Test, targetPort: number): Promise<CuttableLink> {
    const [port] = await freePorts(1);
    const link = new CuttableLink(port!, targetPort);
    t.teardown(() => link.cut());
    await link.restore();
    return link;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async restore(): Promise<void> {
    if (this.#server !== null) return;
    const server = net.createServer((down) => {
      const up = net.connect(this.#target, '127.0.0.1');
      for (const s of [down, up]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => {
          down.destroy();
          up.destroy();
        });
      }
      down.pipe(up);
      up.pipe(down);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', resolve);
    });
    this.#server = server;
  }

  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    for (const s of this.#sockets) s.resetAndDestroy();
    if (server !== null) await new Promise((r) => server.close(r));
  }
}

/** Whether every thread of `pid` is in state T (stopped), from /proc. */
function allThreadsStopped(pid: number): boolean {
  try {
    const tasks = readdirSync(`/proc/${pid}/task`);
    // The state is the field after the parenthesised command name (which may contain spaces).
    return tasks.every((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'T';
    });
  } catch {
    return false;
  }
}
