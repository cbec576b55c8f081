// Hand-built config objects and small socket helpers for the Machine tests. The TOML loader is
// someone else's; these builders produce the same typed shapes with the fewest fields named.

import http from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import type { Logger } from 'pino';
import type {
  AppConfig,
  Config,
  HttpCheck,
  MachineConfig,
  NodeConfig,
  ServiceConfig,
  TcpCheck,
} from '../../src/config/types.ts';

export const ROOT = join(import.meta.dirname, '..', '..');
export const DEMO = join(ROOT, 'demo', 'hello-machine.ts');
const SRC = Object.freeze({ file: 'test.toml', line: 1 });

type Opt<T, K extends keyof T> = Partial<T> & Pick<T, K>;

export function machineConfig(o: Opt<MachineConfig, 'id'>): MachineConfig {
  return Object.freeze({
    app: 'hello',
    region: 'ams',
    driver: 'process',
    address: null,
    cmd: null,
    api: null,
    node: null,
    cwd: ROOT,
    env: new Map<string, string>(),
    killSignal: 'SIGINT',
    killTimeoutMs: 5000,
    source: SRC,
    ...o,
  });
}

/** A process Machine running the demo app. */
export function demoMachine(id: string, o: Partial<MachineConfig> = {}): MachineConfig {
  return machineConfig({ id, driver: 'process', cmd: ['node', DEMO], ...o });
}

export function staticMachine(id: string, address: string, o: Partial<MachineConfig> = {}): MachineConfig {
  return machineConfig({ id, driver: 'static', address, ...o });
}

export function tcpCheck(o: Partial<TcpCheck> = {}): TcpCheck {
  return Object.freeze({ kind: 'tcp', name: 'tcp', intervalMs: 100, timeoutMs: 500, gracePeriodMs: 0, ...o });
}

export function httpCheck(o: Partial<HttpCheck> = {}): HttpCheck {
  return Object.freeze({
    kind: 'http',
    name: 'http',
    intervalMs: 100,
    timeoutMs: 500,
    gracePeriodMs: 0,
    method: 'GET',
    path: '/healthz',
    protocol: 'http',
    tlsSkipVerify: false,
    headers: new Map<string, string>(),
    ...o,
  });
}

export function serviceConfig(o: Partial<ServiceConfig> = {}): ServiceConfig {
  return Object.freeze({
    index: 0,
    protocol: 'tcp',
    internalPort: 8080,
    ports: [],
    concurrency: { type: 'connections' as const, softLimit: 20, hardLimit: Infinity },
    autoStopMachines: 'off',
    autoStartMachines: true,
    minMachinesPerRegion: new Map<string, number>(),
    minMachinesRunning: 0,
    checks: [],
    source: SRC,
    ...o,
  });
}

export function appConfig(o: Opt<AppConfig, 'name'>): AppConfig {
  return Object.freeze({
    file: `${o.name}.toml`,
    primaryRegion: 'ams',
    hostnames: [`${o.name}.localhost`],
    services: [serviceConfig()],
    machines: [],
    certificates: [],
    killSignal: 'SIGINT',
    killTimeoutMs: 5000,
    fingerprint: 'v1',
    ...o,
  });
}

/** A Config holding `apps`; the Machine code never reads node settings, so those are minimal. */
export function config(apps: readonly AppConfig[]): Config {
  const node = { nodeId: 'test', region: 'ams', defaultDomain: 'localhost' } as unknown as NodeConfig;
  return { node, apps: new Map(apps.map((a) => [a.name, a])) };
}

export interface Captured {
  readonly logger: Logger;
  readonly lines: Array<Record<string, unknown>>;
  messages(): string[];
}

/** A real pino logger whose JSON lines land in memory, so tests can assert what was logged. */
export function captureLogger(level: pino.LevelWithSilent = 'debug'): Captured {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines, messages: () => lines.map((l) => String(l.msg)) };
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether a TCP connect to host:port succeeds right now. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export interface Got {
  readonly status: number;
  readonly body: string;
  readonly reused: boolean;
}

export function get(host: string, port: number, path: string, agent?: http.Agent, timeoutMs = 5000): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent: agent ?? false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

export interface TestServer {
  readonly server: http.Server;
  readonly port: number;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 and a free port. */
export async function startServer(handler: http.RequestListener): Promise<TestServer> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
