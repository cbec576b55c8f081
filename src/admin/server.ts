// The admin listener (loopback by default): metrics, health, readiness, and the bearer-token
// protected /v1 API (reload, apps, Machines, certificates). node:http
// is fine here: this is the control plane, not the hot path.

import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import { handleMachineRoute, machineRouteMethods, readBody, type MachinesBackend } from './machinesApi.ts';
import { certificateRouteMethods, handleCertificateRoute, type CertificatesBackend } from './certificatesApi.ts';
import { appRouteMethods, handleAppRoute, type AppsBackend } from './appsApi.ts';

export interface ReloadOutcome {
  readonly ok: boolean;
  readonly version: number;
  readonly error?: { readonly file: string; readonly key: string; readonly line: number; readonly reason: string };
}

export interface AdminBackend extends MachinesBackend, CertificatesBackend, AppsBackend {
  ready(): boolean;
  /** Lines after the verdict of /readyz: what the node depends on and how it is. */
  readyDetails(): string[];
  reload(): Promise<ReloadOutcome>;
}

const MAX_BODY = 64 * 1024;

export class AdminServer {
  private readonly server: http.Server;
  private readonly token: Buffer;
  private readonly metrics: Metrics;
  private readonly backend: AdminBackend;
  private readonly log: Logger;

  constructor(token: string, metrics: Metrics, backend: AdminBackend, log: Logger) {
    this.token = Buffer.from(token);
    this.metrics = metrics;
    this.backend = backend;
    this.log = log;
    this.server = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, 'admin request failed');
        if (!res.headersSent) json(res, 500, { error: { code: 'PX01', reason: 'internal error' } });
        else res.destroy();
      });
    });
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private authorized(req: http.IncomingMessage): boolean {
    const h = req.headers.authorization;
    // RFC 9110 §11.1: the auth scheme is case-insensitive.
    const m = typeof h === 'string' ? /^bearer +(\S+) *$/i.exec(h) : null;
    if (m === null) return false;
    const given = Buffer.from(m[1]!);
    return given.length === this.token.length && timingSafeEqual(given, this.token);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const allowed = allowedMethods(path);
    if (allowed === null) return json(res, 404, { error: { code: 'PA04', reason: `no admin route ${method} ${path}` } });
    if (!allowed.includes(method)) {
      res.setHeader('allow', allowed.join(', '));
      return json(res, 405, { error: { code: 'PA05', reason: `${path} takes ${allowed.join(', ')}` } });
    }
    if (path === '/metrics') {
      const body = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(body);
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const ready = this.backend.ready();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' });
      // The first line is the verdict; the rest explain it (e.g. a cluster store that is away:
      // the node still serves, from its last known state).
      res.end([ready ? 'ready' : 'not ready', ...this.backend.readyDetails()].join('\n') + '\n');
      return;
    }
    if (!this.authorized(req)) {
      res.setHeader('www-authenticate', 'Bearer');
      return json(res, 401, { error: { code: 'PA01', reason: 'missing or wrong bearer token' } });
    }
    const body = await readBody(req, MAX_BODY);
    if (body === null) return json(res, 413, { error: { code: 'PA09', reason: `request body larger than ${MAX_BODY} bytes` } });
    if (appRouteMethods(path) !== null) {
      const out = await handleAppRoute(method, path, body, this.backend);
      return json(res, out.status, out.body);
    }
    if (machineRouteMethods(path) !== null) {
      const out = await handleMachineRoute(method, path, url, body, this.backend);
      return json(res, out.status, out.body);
    }
    if (certificateRouteMethods(path) !== null) {
      const out = await handleCertificateRoute(method, path, body, this.backend);
      return json(res, out.status, out.body);
    }
    if (path === '/v1/reload') {
      const out = await this.backend.reload();
      return json(res, out.ok ? 200 : 422, out);
    }
    return json(res, 404, { error: { code: 'PA04', reason: `no admin route ${method} ${path}` } });
  }
}

/** The methods a path takes, or null for an unknown path (404 before 405, RFC 9110 §15.5.6). */
function allowedMethods(path: string): readonly string[] | null {
  switch (path) {
    case '/metrics':
    case '/healthz':
    case '/readyz':
      return GET;
    case '/v1/reload':
      return POST;
  }
  return appRouteMethods(path) ?? machineRouteMethods(path) ?? certificateRouteMethods(path);
}
const GET = ['GET', 'HEAD'] as const;
const POST = ['POST'] as const;


function json(res: http.ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}
