// Public ports of a service (`[[services.ports]]`): port numbers and ranges, handlers, and the
// options each handler takes (tls_options, http_options, proxy_proto_options).

import { indexPath } from '../toml.ts';
import type { Handler, HttpOptions, PortConfig, ResponseHeaderRule, TlsOptions, TlsVersion } from '../types.ts';
import type { AppReading } from './app.ts';
import { describeValue, quoteList } from './section.ts';
import type { Section } from './section.ts';
import { checkHeaderValue, readHeaderName } from './valueRules.ts';

const HANDLERS = ['tls', 'http', 'proxy_proto', 'pg_tls'] as const satisfies readonly Handler[];
const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const satisfies readonly TlsVersion[];
/** Framing and hop-by-hop headers belong to the proxy: rewriting them would break the exchange. */
const MANAGED_HEADERS = [
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
];

export function claimPublicPort(s: Section, port: number, reading: AppReading): void {
  const first = reading.publicPorts.get(port);
  if (first !== undefined) s.failHere(`port ${port} is already declared by ${first}; a public port routes to one service`);
  reading.publicPorts.set(port, `${s.path} (line ${s.line})`);
}

/** One `[[services.ports]]` entry: one PortConfig, or one per port of a start_port..end_port range. */
export function readPorts(s: Section, reading: AppReading): PortConfig[] {
  const numbers = readPortNumbers(s);
  const handlers = readHandlers(s);
  const forceHttps = s.boolean('force_https') ?? false;
  if (forceHttps && !handlers.includes('http')) s.fail('force_https', 'needs the "http" handler on this port');
  const tls = readTlsOptions(s.section('tls_options'), handlers);
  const http = readHttpOptions(s.section('http_options'), handlers);
  const proxyProtoVersion = readProxyProtoVersion(s.section('proxy_proto_options'), handlers);
  s.finish();
  const source = s.source();
  return numbers.map((port) => {
    claimPublicPort(s, port, reading);
    const config: PortConfig = { port, handlers, forceHttps, tls, http, proxyProtoVersion, source };
    reading.origin.portPaths.set(config, s.path);
    return config;
  });
}

function readPortNumbers(s: Section): number[] {
  const port = s.port('port');
  const start = s.port('start_port');
  const end = s.port('end_port');
  if (port !== undefined) {
    if (start !== undefined || end !== undefined) {
      s.fail(start !== undefined ? 'start_port' : 'end_port', 'set either port or start_port/end_port, not both');
    }
    return [port];
  }
  if (start === undefined && end === undefined) s.fail('port', 'missing required key (or start_port and end_port)');
  const first = s.require('start_port', start);
  const last = s.require('end_port', end);
  if (last < first) s.fail('end_port', `must not be below start_port (${first}), got ${last}`);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

function isTlsHandler(handler: Handler): boolean {
  return handler === 'tls' || handler === 'pg_tls';
}

function readHandlers(s: Section): Handler[] {
  const handlers: Handler[] = [];
  (s.stringList('handlers') ?? []).forEach((name, i) => {
    const itemPath = s.itemPath('handlers', i);
    if (!(HANDLERS as readonly string[]).includes(name)) {
      s.failAt(itemPath, `unknown handler ${JSON.stringify(name)}; expected one of ${quoteList(HANDLERS)}`);
    }
    const handler = name as Handler;
    if (handlers.includes(handler)) s.failAt(itemPath, `handler ${JSON.stringify(name)} is listed twice`);
    // Also rejects "tls" with "pg_tls": whichever comes second is not first.
    if (isTlsHandler(handler) && i > 0) {
      s.failAt(itemPath, `${JSON.stringify(name)} must come first: TLS is terminated before any other handler sees the stream`);
    }
    handlers.push(handler);
  });
  return handlers;
}

export function defaultTlsOptions(handlers: readonly Handler[]): TlsOptions {
  return { alpn: handlers.includes('http') ? ['h2', 'http/1.1'] : [], versions: [...TLS_VERSIONS], defaultSelfSigned: false };
}

export function readTlsOptions(s: Section, handlers: readonly Handler[]): TlsOptions {
  if (s.present && !handlers.some(isTlsHandler)) s.failHere('tls_options need the "tls" or "pg_tls" handler on this port');
  const defaults = defaultTlsOptions(handlers);
  const alpn = readUniqueList(s, 'alpn', (protocol) =>
    protocol.length === 0 || protocol.length > 255 ? 'an ALPN protocol name is 1 to 255 characters' : undefined,
  ) ?? defaults.alpn;
  const versions = (readUniqueList(s, 'versions', (version) =>
    (TLS_VERSIONS as readonly string[]).includes(version) ? undefined : `must be one of ${quoteList(TLS_VERSIONS)}`,
  ) as TlsVersion[] | undefined) ?? defaults.versions;
  if (versions.length === 0) s.fail('versions', 'needs at least one TLS version');
  const defaultSelfSigned = s.boolean('default_self_signed') ?? false;
  s.finish();
  return { alpn, versions, defaultSelfSigned };
}

/** A list of strings without repeats; `problem` returns why an item is bad, if it is. */
function readUniqueList(s: Section, key: string, problem: (item: string) => string | undefined): string[] | undefined {
  const items = s.stringList(key);
  items?.forEach((item, i) => {
    const reason = problem(item) ?? (items.indexOf(item) < i ? `${JSON.stringify(item)} is listed twice` : undefined);
    if (reason !== undefined) s.failAt(s.itemPath(key, i), reason);
  });
  return items;
}

export function readHttpOptions(s: Section, handlers: readonly Handler[]): HttpOptions {
  if (s.present && !handlers.includes('http')) s.failHere('http_options need the "http" handler on this port');
  const h2Backend = s.boolean('h2_backend') ?? false;
  // Accepted as fly.toml keys, but refused when on until petrel implements them: a setting
  // that silently does nothing would mislead an operator.
  if (h2Backend) s.fail('h2_backend', 'h2c to the Machine is not supported yet; remove the key or set it to false');
  // fly.toml counts these two in seconds.
  const idleTimeoutMs = s.durationMs('idle_timeout', 's') ?? null;
  const headersReadTimeoutMs = s.durationMs('headers_read_timeout', 's') ?? null;
  const compress = s.boolean('compress') ?? false;
  if (compress) s.fail('compress', 'response compression is not supported yet; remove the key or set it to false');
  const response = s.section('response');
  const responseHeaders = readResponseHeaders(response.section('headers'));
  const pristine = response.boolean('pristine') ?? false;
  response.finish();
  s.finish();
  return { h2Backend, idleTimeoutMs, headersReadTimeoutMs, compress, responseHeaders, pristine };
}

/** `Name = false` removes, `Name = "v"` sets, `Name = ["v1", "v2"]` sets several. */
function readResponseHeaders(s: Section): ResponseHeaderRule[] {
  const seen = new Set<string>();
  return s.entries().map(({ key, value, path: itemPath }) => {
    const name = readHeaderName(s, key, itemPath, seen);
    if (MANAGED_HEADERS.includes(name)) s.failAt(itemPath, `${JSON.stringify(key)} is managed by the proxy and cannot be changed`);
    if (value === false) return { name, values: null };
    if (typeof value === 'string') return { name, values: [checkHeaderValue(s, itemPath, value)] };
    if (Array.isArray(value) && value.length > 0) {
      const values = value.map((v, i) =>
        typeof v === 'string'
          ? checkHeaderValue(s, indexPath(itemPath, i), v)
          : s.failAt(indexPath(itemPath, i), `expected a string, got ${describeValue(v)}`),
      );
      return { name, values };
    }
    return s.failAt(itemPath, `expected false (remove), a string or a non-empty list of strings, got ${describeValue(value)}`);
  });
}

function readProxyProtoVersion(s: Section, handlers: readonly Handler[]): 'v1' | 'v2' {
  if (s.present && !handlers.includes('proxy_proto')) s.failHere('proxy_proto_options need the "proxy_proto" handler on this port');
  const version = s.oneOf('version', ['v1', 'v2'] as const) ?? 'v1';
  s.finish();
  return version;
}
