// The immutable routing snapshot the data plane reads: built whole by build.ts, published by
// the holder, never mutated. It references live objects (Machine slots, queues, metric children)
// whose counters survive reloads, but its own structure (maps, lists, settings) is frozen.

import type { AppConfig, Limits, NodeConfig, PortConfig, ServiceConfig, TlsVersion } from '../config/types.ts';
import type { MachineSlot } from '../machines/runtime.ts';
import type { AppMetrics } from '../observe/metrics.ts';
import type { AppLive, ServiceLive } from './live.ts';
import type { CertTable } from '../tls/certTable.ts';

/** One app's service as reached through one public port. */
export class ServiceRoute {
  readonly app: AppRoute;
  readonly service: ServiceConfig;
  readonly port: PortConfig;
  readonly slots: readonly MachineSlot[];
  readonly live: ServiceLive;
  readonly http: boolean;
  readonly tls: boolean;
  readonly proxyProto: 'v1' | 'v2' | null;
  /** Concurrency counted per request (true) or per client connection (false). */
  readonly perRequest: boolean;
  readonly softLimit: number;
  readonly hardLimit: number;
  /** Response header names (lower-case) to drop: `Name = false` and every name a rule sets. */
  readonly dropResponse: ReadonlySet<string>;
  /** Prepared response header lines ("name: value\r\n"...) added to every response. */
  readonly addResponse: string;
  /** The same lines as name/value pairs, for HTTP/2 responses. */
  readonly addResponsePairs: readonly (readonly [string, string])[];
  readonly idleTimeoutMs: number;
  readonly headerTimeoutMs: number;

  constructor(
    app: AppRoute,
    service: ServiceConfig,
    port: PortConfig,
    slots: readonly MachineSlot[],
    live: ServiceLive,
    limits: Limits,
  ) {
    this.app = app;
    this.service = service;
    this.port = port;
    this.slots = slots;
    this.live = live;
    this.http = port.handlers.includes('http');
    this.tls = port.handlers.includes('tls') || port.handlers.includes('pg_tls');
    this.proxyProto = port.handlers.includes('proxy_proto') ? port.proxyProtoVersion : null;
    this.perRequest = service.concurrency.type === 'requests';
    this.softLimit = service.concurrency.softLimit;
    this.hardLimit = service.concurrency.hardLimit;
    const drop = new Set<string>();
    const pairs: [string, string][] = port.http.pristine ? [] : [['server', 'petrel']];
    for (const rule of port.http.responseHeaders) {
      drop.add(rule.name);
      if (rule.values !== null) for (const v of rule.values) pairs.push([rule.name, v]);
    }
    if (!port.http.pristine) drop.add('server');
    this.dropResponse = drop;
    this.addResponsePairs = pairs;
    this.addResponse = pairs.map(([n, v]) => `${n}: ${v}\r\n`).join('');
    this.idleTimeoutMs = port.http.idleTimeoutMs ?? limits.idleTimeoutMs;
    this.headerTimeoutMs = port.http.headersReadTimeoutMs ?? limits.headerReadTimeoutMs;
  }
}

export class AppRoute {
  readonly config: AppConfig;
  readonly metrics: AppMetrics;
  readonly live: AppLive;
  /** Public port -> the app's service on that port. */
  readonly byPort: Map<number, ServiceRoute>;
  constructor(config: AppConfig, metrics: AppMetrics, live: AppLive) {
    this.config = config;
    this.metrics = metrics;
    this.live = live;
    this.byPort = new Map();
  }
}

/** How a public port is served: what the listener does before it knows the app. */
export class PortRoute {
  readonly port: number;
  readonly bindHost: string;
  readonly bindPort: number;
  /** TLS is terminated first and the SNI picks the app. */
  readonly tlsFirst: boolean;
  /** Plaintext port whose single app is raw TCP (no `http` handler): no Host to route by. */
  readonly raw: ServiceRoute | null;
  /** Some app on this port serves a self-signed default cert when no cert matches the SNI. */
  readonly defaultSelfSigned: boolean;
  /** Every TLS version some app on this port allows (the listener enforces this range). */
  readonly tlsVersions: readonly TlsVersion[];
  /** Postgres-aware TLS (`pg_tls`): answer the SSLRequest preamble, then terminate TLS. */
  readonly pgTls: boolean;
  /** The service when a single app uses this port (a client without SNI still has a route). */
  readonly only: ServiceRoute | null;
  /** Some app on this port has the `http` handler (Host routing is possible). */
  readonly anyHttp: boolean;
  constructor(
    port: number,
    bindHost: string,
    bindPort: number,
    tlsFirst: boolean,
    raw: ServiceRoute | null,
    defaultSelfSigned: boolean,
    tlsVersions: readonly TlsVersion[],
    pgTls: boolean,
    only: ServiceRoute | null,
    anyHttp: boolean,
  ) {
    this.port = port;
    this.bindHost = bindHost;
    this.bindPort = bindPort;
    this.tlsFirst = tlsFirst;
    this.raw = raw;
    this.defaultSelfSigned = defaultSelfSigned;
    this.tlsVersions = tlsVersions;
    this.pgTls = pgTls;
    this.only = only;
    this.anyHttp = anyHttp;
  }
}

export class Snapshot {
  readonly version: number;
  readonly node: NodeConfig;
  readonly limits: Limits;
  readonly apps: ReadonlyMap<string, AppRoute>;
  private readonly exact: ReadonlyMap<string, AppRoute>;
  /** `*.example.com` is stored under `example.com`. */
  private readonly wildcard: ReadonlyMap<string, AppRoute>;
  readonly ports: ReadonlyMap<number, PortRoute>;
  readonly certs: CertTable;
  /** Prepared per-node part of the request headers petrel adds (`fly-region`). */
  readonly regionHeader: string;

  constructor(
    version: number,
    node: NodeConfig,
    apps: ReadonlyMap<string, AppRoute>,
    exact: ReadonlyMap<string, AppRoute>,
    wildcard: ReadonlyMap<string, AppRoute>,
    ports: ReadonlyMap<number, PortRoute>,
    certs: CertTable,
  ) {
    this.version = version;
    this.node = node;
    this.limits = node.limits;
    this.apps = apps;
    this.exact = exact;
    this.wildcard = wildcard;
    this.ports = ports;
    this.certs = certs;
    this.regionHeader = `fly-region: ${node.region}\r\n`;
  }

  /** The same routes with another cert table (a certificate was issued, imported or removed). */
  withCerts(certs: CertTable): Snapshot {
    return new Snapshot(this.version, this.node, this.apps, this.exact, this.wildcard, this.ports, certs);
  }

  /** `hostname` must already be normalised (lower-case, no port, no trailing dot). */
  lookupHost(hostname: string): AppRoute | undefined {
    const a = this.exact.get(hostname);
    if (a !== undefined) return a;
    const dot = hostname.indexOf('.');
    return dot > 0 ? this.wildcard.get(hostname.slice(dot + 1)) : undefined;
  }
}
