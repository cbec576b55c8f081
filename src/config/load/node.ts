// Node config (config/petrel.toml): identity, region, directories, listeners, admin, limits,
// `[acme]` (read in acme.ts), `[store]` (store.ts) and `[cluster]` (cluster.ts).

import os from 'node:os';
import path from 'node:path';

import type { TomlDocument } from '../toml.ts';
import type { AdminConfig, Limits, ListenConfig, Location, LogLevel, NodeConfig } from '../types.ts';
import { readAcme } from './acme.ts';
import { BindClaims } from './bindClaims.ts';
import { readCluster } from './cluster.ts';
import { deepFreeze, frozenMap } from './freeze.ts';
import { Section } from './section.ts';
import { readStore } from './store.ts';
import { ENV_NAME, ENV_NAME_RULE, isHostname, readHostPort, REGION, REGION_RULE } from './valueRules.ts';

export type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[];
/** Node ids: `node_id` here, and `node` of a `[[machines]]` entry, which names one. */
export const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
export const NODE_ID_RULE = 'use letters, digits, ".", "_" and "-", starting with a letter or digit';
const BIND_HOST = /^[A-Za-z0-9.:%-]+$/;

interface LimitSpec {
  readonly key: string;
  readonly unit: 'bytes' | 'count' | 'ms';
  readonly fallback: number;
  /** Smallest accepted value; 0 only where zero has a meaning of its own. */
  readonly min: number;
}

/** Every `[limits]` key, its unit and default (spec section 9). */
const LIMITS: { readonly [F in keyof Limits]: LimitSpec } = {
  maxHeaderBytes: { key: 'max_header_bytes', unit: 'bytes', fallback: 16 * 1024, min: 1 },
  maxHeaderCount: { key: 'max_header_count', unit: 'count', fallback: 100, min: 1 },
  maxUriBytes: { key: 'max_uri_bytes', unit: 'bytes', fallback: 8 * 1024, min: 1 },
  headerReadTimeoutMs: { key: 'header_read_timeout', unit: 'ms', fallback: 10_000, min: 1 },
  idleTimeoutMs: { key: 'idle_timeout', unit: 'ms', fallback: 60_000, min: 1 },
  tlsHandshakeTimeoutMs: { key: 'tls_handshake_timeout', unit: 'ms', fallback: 10_000, min: 1 },
  connectTimeoutMs: { key: 'upstream_connect_timeout', unit: 'ms', fallback: 5_000, min: 1 },
  responseTimeoutMs: { key: 'upstream_response_timeout', unit: 'ms', fallback: 60_000, min: 1 },
  upstreamIdleTimeoutMs: { key: 'upstream_idle_timeout', unit: 'ms', fallback: 30_000, min: 1 },
  // 0: no keep-alive pooling towards Machines.
  upstreamMaxIdlePerMachine: { key: 'upstream_max_idle_per_machine', unit: 'count', fallback: 64, min: 0 },
  connectAttempts: { key: 'connect_attempts', unit: 'count', fallback: 3, min: 1 },
  retryBufferBytes: { key: 'retry_buffer_bytes', unit: 'bytes', fallback: 64 * 1024, min: 1 },
  replayBufferBytes: { key: 'replay_buffer_bytes', unit: 'bytes', fallback: 1024 * 1024, min: 1 },
  // 0: no queue, answer 503 at once when every Machine is at its hard limit.
  queueLength: { key: 'queue_length', unit: 'count', fallback: 100, min: 0 },
  queueTimeoutMs: { key: 'queue_timeout', unit: 'ms', fallback: 5_000, min: 1 },
  wakeTimeoutMs: { key: 'wake_timeout', unit: 'ms', fallback: 30_000, min: 1 },
  autostopIntervalMs: { key: 'autostop_interval', unit: 'ms', fallback: 30_000, min: 1 },
  autostopIdleMs: { key: 'autostop_idle', unit: 'ms', fallback: 300_000, min: 1 },
  stopDrainTimeoutMs: { key: 'stop_drain_timeout', unit: 'ms', fallback: 30_000, min: 1 },
  maxConnectionsPerApp: { key: 'max_connections_per_app', unit: 'count', fallback: 10_000, min: 1 },
  maxConnections: { key: 'max_connections', unit: 'count', fallback: 50_000, min: 1 },
  shutdownTimeoutMs: { key: 'shutdown_timeout', unit: 'ms', fallback: 30_000, min: 1 },
  h2MaxConcurrentStreams: { key: 'h2_max_concurrent_streams', unit: 'count', fallback: 100, min: 1 },
  tunnelIdleTimeoutMs: { key: 'tunnel_idle_timeout', unit: 'ms', fallback: 3_600_000, min: 1 },
  drainIdleTimeoutMs: { key: 'drain_idle_timeout', unit: 'ms', fallback: 1_000, min: 1 },
};

export function nodeFromDocument(doc: TomlDocument, file: string, env: Env): NodeConfig {
  const root = new Section(file, doc);
  const dir = path.dirname(file);
  const nodeId = root.matching('node_id', NODE_ID, NODE_ID_RULE) ?? os.hostname();
  const region = root.matching('region', REGION, REGION_RULE) ?? 'local';
  const location = readLocation(root.section('location'));
  const defaultDomain = readDefaultDomain(root);
  const appsDir = path.resolve(dir, root.matching('apps_dir', /\S/, 'give a directory') ?? 'apps');
  const certsDir = path.resolve(dir, root.matching('certs_dir', /\S/, 'give a directory') ?? '../certs');
  const logLevel = root.oneOf('log_level', LOG_LEVELS) ?? 'info';
  const bindHost = root.matching('bind_host', BIND_HOST, 'give an IP address or host name without a port') ?? '0.0.0.0';
  const adminSection = root.section('admin');
  const admin = readAdmin(adminSection, env);
  const listen = readListeners(root.sections('listen'), adminSection, admin);
  const limits = readLimits(root.section('limits'));
  const store = readStore(root.section('store'), dir, env);
  const cluster = readCluster(root.section('cluster'));
  const acme = readAcme(root.section('acme'), dir, env);
  root.finish();

  const sources = frozenMap([...doc.lines].map(([key, line]) => [key, Object.freeze({ file, line })] as const));
  return deepFreeze({
    file,
    nodeId,
    region,
    location,
    defaultDomain,
    appsDir,
    certsDir,
    logLevel,
    bindHost,
    listen,
    admin,
    limits,
    acme,
    store,
    cluster,
    sources,
  });
}

function readLocation(s: Section): Location | null {
  if (!s.present) return null;
  const lat = s.require('lat', s.number('lat', -90, 90));
  const lon = s.require('lon', s.number('lon', -180, 180));
  s.finish();
  return { lat, lon };
}

function readDefaultDomain(root: Section): string {
  const value = root.string('default_domain');
  if (value === undefined) return 'localhost';
  const domain = value.toLowerCase();
  if (!isHostname(domain)) root.fail('default_domain', `${JSON.stringify(value)} is not a valid host name`);
  return domain;
}

function readAdmin(s: Section, env: Env): AdminConfig {
  const { host, port } = readHostPort(s, 'address', 0) ?? { host: '127.0.0.1', port: 9091 };
  const token = s.string('token');
  const tokenEnv = s.matching('token_env', ENV_NAME, ENV_NAME_RULE);
  if (token !== undefined && tokenEnv !== undefined) s.fail('token_env', 'set either token or token_env, not both');
  s.finish();
  // An unset variable means the same as no token: one is generated at start.
  return { host, port, token: tokenEnv === undefined ? (token ?? '') : (env[tokenEnv] ?? '') };
}

function readListeners(sections: Section[], adminSection: Section, admin: AdminConfig): ListenConfig[] {
  const binds = new BindClaims();
  binds.claim(admin, `the admin listener (${adminSection.at('address')}, line ${adminSection.lineOf(adminSection.at('address'))})`);
  const byPort = new Map<number, Section>();
  return sections.map((s) => {
    const port = s.require('port', s.port('port'));
    // Port 0 binds a free port: tests and benchmarks run many nodes side by side.
    const { host, port: bindPort } = s.require('address', readHostPort(s, 'address', 0));
    s.finish();
    const first = byPort.get(port);
    if (first !== undefined) s.fail('port', `public port ${port} already has a [[listen]] entry (line ${first.line})`);
    byPort.set(port, s);
    const clash = binds.claim({ host, port: bindPort }, `public port ${port} (${s.path}, line ${s.line})`);
    if (clash !== undefined) s.fail('address', `${host}:${bindPort} is already bound by ${clash}`);
    return { port, host, bindPort };
  });
}

function readLimits(s: Section): Limits {
  const limits: Partial<Record<keyof Limits, number>> = {};
  for (const field of Object.keys(LIMITS) as (keyof Limits)[]) {
    const { key, unit, fallback, min } = LIMITS[field];
    const value = unit === 'bytes' ? s.bytes(key, min) : unit === 'count' ? s.integer(key, min) : s.durationMs(key, 'ms');
    limits[field] = value ?? fallback;
  }
  s.finish();
  return limits as Limits;
}
