// Config loading: TOML text → validated, defaulted, deep-frozen objects of types.ts.
//
// Validation is strict on purpose: a typo in a proxy config silently falls back to a default and
// surfaces as an outage much later, so every unknown key, wrong type or bad value is a ConfigError
// naming file, key path and line. Reading happens through `Section`, which remembers which keys the
// reader asked for so that whatever is left over is an unknown key.
//
// Layout: public API → Section (typed reads) → node config → app file (services, ports, checks,
// machines) → whole-config checks across apps → freezing, fingerprint, check-config report.

import { createHash } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { formatDuration, formatSize, parseDuration, parseSize } from './durations.ts';
import { indexPath, isTomlTable, keyPath, parseToml, TOP_LEVEL } from './toml.ts';
import type { TomlDocument, TomlTable, TomlValue } from './toml.ts';
import { ConfigError } from './types.ts';
import type {
  AdminConfig,
  AppConfig,
  AutoStop,
  Check,
  Concurrency,
  Config,
  Handler,
  HttpCheck,
  HttpOptions,
  Limits,
  ListenConfig,
  Location,
  LogLevel,
  MachineConfig,
  NodeConfig,
  PortConfig,
  ResponseHeaderRule,
  ServiceConfig,
  SourceRef,
  TcpCheck,
  TlsOptions,
  TlsVersion,
} from './types.ts';

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadOptions {
  /** Environment for `admin.token_env`; defaults to process.env. */
  readonly env?: Env;
}

export interface CheckOptions extends LoadOptions {
  /** Node config to check a single app file against; built-in node defaults when absent. */
  readonly nodeFile?: string;
}

/** `NodeConfig.file` of the node used when an app file is checked on its own. */
export const BUILT_IN_NODE = '(built-in node defaults)';

// ================================================================================================
// Public API
// ================================================================================================

/** Reads the node config, then every `*.toml` file of its apps dir, and validates them together. */
export async function loadConfig(nodeFile: string, options: LoadOptions = {}): Promise<Config> {
  const node = await loadNodeConfig(nodeFile, options);
  return buildConfig(node, await loadAppsDir(node));
}

export async function loadNodeConfig(file: string, options: LoadOptions = {}): Promise<NodeConfig> {
  const absolute = path.resolve(file);
  return parseNodeConfig(await readText(absolute), absolute, options);
}

/** One app file, validated on its own; cross-app rules run in `buildConfig`. */
export async function loadAppFile(file: string, node: NodeConfig): Promise<AppConfig> {
  const absolute = path.resolve(file);
  return parseAppConfig(await readText(absolute), absolute, node);
}

/** Node config from text; `file` names it in errors and anchors its relative paths. */
export function parseNodeConfig(text: string, file: string, options: LoadOptions = {}): NodeConfig {
  return nodeFromDocument(parseToml(text, file), file, options.env ?? process.env);
}

/** App file from text; `file` names it in errors and anchors relative `cmd`/`cwd` paths. */
export function parseAppConfig(text: string, file: string, node: NodeConfig): AppConfig {
  return appFromDocument(parseToml(text, file), file, node);
}

/**
 * Validates apps against each other and the node (unique names, Machine ids and hostnames; ports
 * that can be shared; bind addresses) and returns the frozen whole.
 */
export function buildConfig(node: NodeConfig, apps: readonly AppConfig[]): Config {
  checkAcrossApps(node, apps);
  return deepFreeze({ node, apps: frozenMap(apps.map((app) => [app.name, app] as const)) });
}

/**
 * For `petrel check-config PATH`: PATH is a node config, or an app file (it has `app =`). Returns
 * a human summary, one line per entry; throws ConfigError on the first problem.
 */
export async function checkConfig(file: string, options: CheckOptions = {}): Promise<string[]> {
  const absolute = path.resolve(file);
  const doc = parseToml(await readText(absolute), absolute);
  if (doc.value['app'] === undefined) {
    const node = nodeFromDocument(doc, absolute, options.env ?? process.env);
    const config = buildConfig(node, await loadAppsDir(node));
    return [...describeNode(node, config.apps.size), ...[...config.apps.values()].flatMap(describeApp), 'OK'];
  }
  const node =
    options.nodeFile === undefined
      ? parseNodeConfig('', BUILT_IN_NODE, options)
      : await loadNodeConfig(options.nodeFile, options);
  const app = appFromDocument(doc, absolute, node);
  buildConfig(node, [app]);
  const against = node.file === BUILT_IN_NODE ? BUILT_IN_NODE : `node config ${node.file}`;
  return [`app file ${absolute}, checked against ${against}`, ...describeApp(app), 'OK'];
}

/** Defaults of every `[limits]` key. */
export function defaultLimits(): Limits {
  return parseNodeConfig('', BUILT_IN_NODE, { env: {} }).limits;
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, '(file)', 1, `cannot read the file (${errorCode(error)})`);
  }
}

async function loadAppsDir(node: NodeConfig): Promise<AppConfig[]> {
  let entries: Dirent[];
  try {
    entries = await readdir(node.appsDir, { withFileTypes: true });
  } catch (error) {
    const line = node.sources.get('apps_dir')?.line ?? 1;
    throw new ConfigError(node.file, 'apps_dir', line, `cannot read the apps directory ${node.appsDir} (${errorCode(error)})`);
  }
  // Sorted and sequential, so that the same broken tree always reports the same first error.
  const apps: AppConfig[] = [];
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    // Dot files are editor leftovers (.#hello.toml); sub-directories are not read.
    if (!entry.name.endsWith('.toml') || entry.name.startsWith('.')) continue;
    const file = path.join(node.appsDir, entry.name);
    // Symlinks count when they point at a file: Kubernetes mounts ConfigMap files that way.
    if (entry.isSymbolicLink() ? (await statFile(file)).isFile() : entry.isFile()) apps.push(await loadAppFile(file, node));
  }
  return apps;
}

async function statFile(file: string): Promise<Stats> {
  try {
    return await stat(file);
  } catch (error) {
    throw new ConfigError(file, '(file)', 1, `cannot read the file (${errorCode(error)})`);
  }
}

function errorCode(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code ?? (error instanceof Error ? error.message : String(error));
}

// ================================================================================================
// Section: typed reads of one TOML table, with key paths and lines for every error
// ================================================================================================

/** Node timers cannot wait longer than 2^31-1 ms; a longer setTimeout fires after 1 ms instead. */
const MAX_DURATION_MS = 2 ** 31 - 1;

class Section {
  readonly file: string;
  /** Key path of this table ('' for the document root). */
  readonly path: string;
  /** False for a table the file does not have: reads then return undefined and defaults apply. */
  readonly present: boolean;
  private readonly doc: TomlDocument;
  private readonly table: TomlTable;
  /** Line reported for an absent table: its parent's. */
  private readonly fallbackLine: number;
  /** Every key a read asked for; the rest are unknown keys. */
  private readonly known = new Set<string>();

  constructor(file: string, doc: TomlDocument, sectionPath = '', table = doc.value, present = true, fallbackLine = 1) {
    this.file = file;
    this.doc = doc;
    this.path = sectionPath;
    this.table = table;
    this.present = present;
    this.fallbackLine = fallbackLine;
  }

  /** Line of this table's header; an absent table reports its parent's. */
  get line(): number {
    return this.doc.lines.get(this.path) ?? this.fallbackLine;
  }

  source(): SourceRef {
    return { file: this.file, line: this.line };
  }

  at(key: string): string {
    return keyPath(this.path, key);
  }

  itemPath(key: string, index: number): string {
    return indexPath(this.at(key), index);
  }

  lineOf(fullPath: string): number {
    return this.doc.lines.get(fullPath) ?? this.line;
  }

  /** Fails at a key of this table (its line, or the table's line when the key is missing). */
  fail(key: string, reason: string): never {
    return this.failAt(this.at(key), reason);
  }

  /** Fails about this table as a whole. */
  failHere(reason: string): never {
    return this.failAt(this.path === '' ? TOP_LEVEL : this.path, reason);
  }

  failAt(fullPath: string, reason: string): never {
    throw new ConfigError(this.file, fullPath, this.lineOf(fullPath), reason);
  }

  has(key: string): boolean {
    return this.value(key) !== undefined;
  }

  value(key: string): TomlValue | undefined {
    this.known.add(key);
    return this.table[key];
  }

  require<T>(key: string, value: T | undefined): T {
    if (value === undefined) this.fail(key, 'missing required key');
    return value;
  }

  string(key: string): string | undefined {
    const value = this.value(key);
    if (value === undefined || typeof value === 'string') return value;
    return this.fail(key, `expected a string, got ${describeValue(value)}`);
  }

  /** A string matching `pattern`; `rule` tells the reader what is allowed. */
  matching(key: string, pattern: RegExp, rule: string): string | undefined {
    const value = this.string(key);
    if (value !== undefined && !pattern.test(value)) this.fail(key, `${JSON.stringify(value)} is not valid: ${rule}`);
    return value;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const value = this.string(key);
    if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
    return this.fail(key, `must be one of ${quoteList(allowed)}, got ${JSON.stringify(value)}`);
  }

  boolean(key: string): boolean | undefined {
    const value = this.value(key);
    if (value === undefined || typeof value === 'boolean') return value;
    return this.fail(key, `expected true or false, got ${describeValue(value)}`);
  }

  number(key: string, min: number, max: number): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || Number.isNaN(value)) this.fail(key, `expected a number, got ${describeValue(value)}`);
    if (value < min || value > max) this.fail(key, `must be between ${min} and ${max}, got ${value}`);
    return value;
  }

  integer(key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(key, `expected an integer, got ${describeValue(value)}`);
    if (value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
      this.fail(key, `must be ${range}, got ${value}`);
    }
    return value;
  }

  port(key: string): number | undefined {
    return this.integer(key, 1, 65535);
  }

  stringList(key: string): string[] | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (!Array.isArray(value)) return this.fail(key, `expected a list of strings, got ${describeValue(value)}`);
    return value.map((item, i) =>
      typeof item === 'string' ? item : this.failAt(this.itemPath(key, i), `expected a string, got ${describeValue(item)}`),
    );
  }

  /**
   * A duration: a string with a unit ("500ms", "10s", "1.5m", "1h", "1m30s") or a bare number in
   * `bareUnit` (milliseconds per the spec; seconds for the keys fly.toml counts in seconds).
   */
  durationMs(key: string, bareUnit: 'ms' | 's', allowZero = false): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    const bare = bareUnit === 'ms' ? 'milliseconds' : 'seconds';
    let ms: number | undefined;
    if (typeof value === 'number') ms = Number.isFinite(value) ? value * (bareUnit === 's' ? 1000 : 1) : undefined;
    else if (typeof value === 'string') ms = parseDuration(value);
    else this.fail(key, `expected a duration such as "10s" or a number of ${bare}, got ${describeValue(value)}`);
    if (ms === undefined) {
      this.fail(key, `invalid duration ${showValue(value)}: use ms, s, m or h ("500ms", "10s", "1.5m") or a number of ${bare}`);
    }
    if (ms < 0 || (ms === 0 && !allowZero)) this.fail(key, allowZero ? 'must not be negative' : 'must be greater than zero');
    if (ms > MAX_DURATION_MS) this.fail(key, `must be at most ${MAX_DURATION_MS}ms (about 24.8 days, the longest a Node timer can wait)`);
    return ms;
  }

  /** A byte count: an integer, or a string with a unit ("16KiB", "1MiB", "64kB"). */
  bytes(key: string, min: number): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    let bytes: number | undefined;
    if (typeof value === 'number') bytes = Number.isInteger(value) ? value : undefined;
    else if (typeof value === 'string') bytes = parseSize(value);
    else this.fail(key, `expected a size such as 16384 or "16KiB", got ${describeValue(value)}`);
    if (bytes === undefined) this.fail(key, `invalid size ${showValue(value)}: use whole bytes or B, KiB, MiB, GiB, kB, MB, GB ("16KiB")`);
    if (bytes < min) this.fail(key, `must be at least ${min} bytes, got ${bytes}`);
    return bytes;
  }

  /** A sub-table; always returns a Section so that absent tables read as all-defaults. */
  section(key: string): Section {
    const value = this.value(key);
    if (value !== undefined && !isTomlTable(value)) this.fail(key, `expected a table, got ${describeValue(value)}`);
    return new Section(this.file, this.doc, this.at(key), value ?? Object.create(null), value !== undefined, this.line);
  }

  /** An array of tables (`[[key]]` or `key = [{...}]`); empty when absent. */
  sections(key: string): Section[] {
    const value = this.value(key);
    if (value === undefined) return [];
    if (!Array.isArray(value)) return this.fail(key, `expected a list of tables ([[${this.at(key)}]]), got ${describeValue(value)}`);
    return value.map((item, i) => {
      const itemPath = this.itemPath(key, i);
      if (!isTomlTable(item)) this.failAt(itemPath, `expected a table, got ${describeValue(item)}`);
      return new Section(this.file, this.doc, itemPath, item, true, this.line);
    });
  }

  /** All entries of a free-form table (header names, env vars): every key is accepted here. */
  entries(): { key: string; value: TomlValue; path: string }[] {
    return Object.keys(this.table).map((key) => ({ key, value: this.value(key)!, path: this.at(key) }));
  }

  /** Fails on the first (by line) key that no read asked for. */
  finish(): void {
    const unknown = Object.keys(this.table).filter((key) => !this.known.has(key));
    if (unknown.length === 0) return;
    unknown.sort((a, b) => this.lineOf(this.at(a)) - this.lineOf(this.at(b)));
    const key = unknown[0]!;
    const suggestion = closest(key, this.known);
    const hint = suggestion === undefined ? '' : `did you mean "${suggestion}"? `;
    this.fail(key, `unknown key; ${hint}known keys here: ${[...this.known].sort().join(', ')}`);
  }
}

function describeValue(value: TomlValue): string {
  if (Array.isArray(value)) return 'a list';
  if (isTomlTable(value)) return 'a table';
  if (typeof value === 'number') return Number.isInteger(value) ? `the integer ${value}` : `the number ${value}`;
  if (typeof value === 'boolean') return String(value);
  return `the string ${JSON.stringify(value)}`;
}

/** A scalar as written: strings quoted, numbers as numbers (JSON would print inf and nan as null). */
function showValue(value: string | number): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function quoteList(values: readonly string[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ');
}

/** The known key within edit distance 2 of a misspelt one, if any. */
function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.min(3, word.length);
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

// ================================================================================================
// Shared value rules
// ================================================================================================

const REGION = /^[a-z0-9-]+$/;
const REGION_RULE = 'use lower-case letters, digits and dashes, like "ams"';
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ENV_NAME_RULE = 'use letters, digits and underscores, not starting with a digit';
/** RFC 9110 section 5.6.2 token: header names and methods. */
const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Header values end up on the wire: CR/LF would let a config inject headers, NUL is never valid. */
const UNSAFE_HEADER_VALUE = /[\r\n\0]/;

function isHostname(name: string): boolean {
  return name.length <= 253 && name.split('.').every((label) => HOST_LABEL.test(label));
}

interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** "host:port" or "[v6]:port"; the host is returned without brackets. */
function parseHostPort(text: string, minPort: number): HostPort | undefined {
  const match = /^\[([0-9A-Fa-f:.%a-z]+)\]:(\d{1,5})$/.exec(text) ?? /^([^\s:[\]/]+):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[2]);
  return port >= minPort && port <= 65535 ? { host: match[1]!, port } : undefined;
}

function readHostPort(s: Section, key: string, minPort: number): HostPort | undefined {
  const value = s.string(key);
  if (value === undefined) return undefined;
  const parsed = parseHostPort(value, minPort);
  if (parsed === undefined) {
    s.fail(key, `${JSON.stringify(value)} is not "host:port" (IPv6 as "[::1]:port", port ${minPort}-65535)`);
  }
  return parsed;
}

/** Header names: a token; case-insensitive, so duplicates are found after lower-casing. */
function readHeaderName(s: Section, key: string, fullPath: string, seen: Set<string>): string {
  if (!HTTP_TOKEN.test(key)) s.failAt(fullPath, `${JSON.stringify(key)} is not a valid HTTP header name`);
  const name = key.toLowerCase();
  if (seen.has(name)) s.failAt(fullPath, `header ${JSON.stringify(key)} is listed twice (names are case-insensitive)`);
  seen.add(name);
  return name;
}

function checkHeaderValue(s: Section, fullPath: string, value: string): string {
  if (UNSAFE_HEADER_VALUE.test(value)) s.failAt(fullPath, 'a header value cannot contain CR, LF or NUL');
  return value;
}

// ================================================================================================
// Node config (config/petrel.toml)
// ================================================================================================

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[];
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
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
  maxConnectionsPerApp: { key: 'max_connections_per_app', unit: 'count', fallback: 10_000, min: 1 },
  maxConnections: { key: 'max_connections', unit: 'count', fallback: 50_000, min: 1 },
  shutdownTimeoutMs: { key: 'shutdown_timeout', unit: 'ms', fallback: 30_000, min: 1 },
  h2MaxConcurrentStreams: { key: 'h2_max_concurrent_streams', unit: 'count', fallback: 100, min: 1 },
  tunnelIdleTimeoutMs: { key: 'tunnel_idle_timeout', unit: 'ms', fallback: 3_600_000, min: 1 },
  drainIdleTimeoutMs: { key: 'drain_idle_timeout', unit: 'ms', fallback: 1_000, min: 1 },
};

function nodeFromDocument(doc: TomlDocument, file: string, env: Env): NodeConfig {
  const root = new Section(file, doc);
  const dir = path.dirname(file);
  const nodeId = root.matching('node_id', NODE_ID, 'use letters, digits, ".", "_" and "-"') ?? os.hostname();
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
  readStore(root.section('store'));
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

function readStore(s: Section): void {
  const kind = s.string('kind');
  if (kind !== undefined && kind !== 'embedded') s.fail('kind', `only "embedded" is supported for now, got ${JSON.stringify(kind)}`);
  s.finish();
}

// ================================================================================================
// App file (fly.toml keys, spec section 2)
// ================================================================================================

const APP_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const APP_NAME_RULE = 'use lower-case letters, digits and dashes (it becomes a DNS label: at most 63, no dash at either end)';
const MACHINE_ID = /^[a-z0-9-]+$/;
/** Only signals that ask a process to end: SIGSTOP/SIGCONT are how the process driver suspends. */
const KILL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGKILL'] as const satisfies readonly NodeJS.Signals[];
const HANDLERS = ['tls', 'http', 'proxy_proto', 'pg_tls'] as const satisfies readonly Handler[];
const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const satisfies readonly TlsVersion[];
const AUTO_STOP = ['off', 'stop', 'suspend'] as const satisfies readonly AutoStop[];
/** The process driver sets these for every Machine (spec section 5); a config must not fight it. */
const RESERVED_ENV = ['PORT', 'FLY_APP_NAME', 'FLY_MACHINE_ID', 'FLY_REGION', 'PRIMARY_REGION'];
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
const DEFAULT_SOFT_LIMIT = 20;

/** Where an app's parts were declared, for errors that `buildConfig` finds across apps. */
interface AppOrigin {
  readonly lines: ReadonlyMap<string, number>;
  /** Hostname → key path (`hostnames[2]`, or `app` for the derived `<app>.<default_domain>`). */
  readonly hostnamePaths: Map<string, string>;
  readonly portPaths: Map<PortConfig, string>;
}
const appOrigins = new WeakMap<AppConfig, AppOrigin>();

/** State shared while one app file is read. */
interface AppReading {
  readonly node: NodeConfig;
  /** The app file's directory: relative `cmd` and `cwd` paths start here. */
  readonly dir: string;
  readonly origin: AppOrigin;
  /** Public port → where this app declared it; one port routes to one service of an app. */
  readonly publicPorts: Map<number, string>;
  /** Internal port → where; Machine slots are keyed by internal port, so each names one service. */
  readonly internalPorts: Map<number, string>;
}

function appFromDocument(doc: TomlDocument, file: string, node: NodeConfig): AppConfig {
  const root = new Section(file, doc);
  const reading: AppReading = {
    node,
    dir: path.dirname(file),
    origin: { lines: doc.lines, hostnamePaths: new Map(), portPaths: new Map() },
    publicPorts: new Map(),
    internalPorts: new Map(),
  };
  const name = root.require('app', root.matching('app', APP_NAME, APP_NAME_RULE));
  const primaryRegion = root.matching('primary_region', REGION, REGION_RULE) ?? node.region;
  const killSignal = root.oneOf('kill_signal', KILL_SIGNALS) ?? 'SIGINT';
  // fly.toml counts kill_timeout in seconds.
  const killTimeoutMs = root.durationMs('kill_timeout', 's') ?? 5_000;
  const hostnames = readHostnames(root, name, reading);

  const services: ServiceConfig[] = [];
  if (root.has('http_service')) services.push(readHttpService(root.section('http_service'), services.length, reading));
  for (const s of root.sections('services')) services.push(readService(s, services.length, reading));

  const machineLines = new Map<string, number>();
  const machines = root.sections('machines').map((s) => {
    const machine = readMachine(s, { name, killSignal, killTimeoutMs }, reading);
    const first = machineLines.get(machine.id);
    if (first !== undefined) s.fail('id', `Machine id ${JSON.stringify(machine.id)} is used twice in this app (first on line ${first})`);
    machineLines.set(machine.id, s.lineOf(s.at('id')));
    return machine;
  });
  root.finish();

  const app: AppConfig = deepFreeze({
    name,
    file,
    primaryRegion,
    hostnames,
    services,
    machines,
    killSignal,
    killTimeoutMs,
    fingerprint: fingerprint(doc.value, file, node),
  });
  appOrigins.set(app, reading.origin);
  return app;
}

/** Custom hostnames (lower-cased, `*.` wildcards allowed) and then `<app>.<default_domain>`. */
function readHostnames(root: Section, app: string, reading: AppReading): string[] {
  const paths = reading.origin.hostnamePaths;
  (root.stringList('hostnames') ?? []).forEach((written, i) => {
    const itemPath = root.itemPath('hostnames', i);
    const hostname = written.toLowerCase();
    const bare = hostname.startsWith('*.') ? hostname.slice(2) : hostname;
    if (!isHostname(bare)) root.failAt(itemPath, `${JSON.stringify(written)} is not a host name (a leading "*." wildcard is allowed)`);
    const first = paths.get(hostname);
    if (first !== undefined) root.failAt(itemPath, `${JSON.stringify(hostname)} is listed twice (first on line ${root.lineOf(first)})`);
    paths.set(hostname, itemPath);
  });
  const derived = `${app}.${reading.node.defaultDomain}`;
  if (!paths.has(derived)) paths.set(derived, root.at('app'));
  return [...paths.keys()];
}

interface ServiceCommon {
  readonly concurrency: Concurrency;
  readonly autoStopMachines: AutoStop;
  readonly autoStartMachines: boolean;
  readonly minMachinesRunning: number;
}

/** Keys that `[http_service]` and `[[services]]` share. */
function readServiceCommon(s: Section): ServiceCommon {
  return {
    concurrency: readConcurrency(s.section('concurrency')),
    autoStopMachines: readAutoStop(s),
    autoStartMachines: s.boolean('auto_start_machines') ?? true,
    minMachinesRunning: s.integer('min_machines_running', 0) ?? 0,
  };
}

function readConcurrency(s: Section): Concurrency {
  const type = s.oneOf('type', ['connections', 'requests'] as const) ?? 'connections';
  const hardLimit = s.integer('hard_limit', 1) ?? Infinity;
  // With only a hard limit below the default soft limit, the soft limit follows it down.
  const softLimit = s.integer('soft_limit', 1) ?? Math.min(DEFAULT_SOFT_LIMIT, hardLimit);
  if (softLimit > hardLimit) s.fail('soft_limit', `must not be above hard_limit (${hardLimit}), got ${softLimit}`);
  s.finish();
  return { type, softLimit, hardLimit };
}

/** "off" | "stop" | "suspend", or fly.toml's legacy booleans (true = stop, false = off). */
function readAutoStop(s: Section): AutoStop {
  const value = s.value('auto_stop_machines');
  if (value === undefined) return 'off';
  if (typeof value === 'boolean') return value ? 'stop' : 'off';
  if (typeof value === 'string' && (AUTO_STOP as readonly string[]).includes(value)) return value as AutoStop;
  return s.fail('auto_stop_machines', `must be one of ${quoteList(AUTO_STOP)} (or legacy true/false), got ${describeValue(value)}`);
}

function claimInternalPort(s: Section, key: string, port: number, reading: AppReading): void {
  const first = reading.internalPorts.get(port);
  if (first !== undefined) {
    s.fail(key, `internal port ${port} is already used by ${first}; each service needs its own internal port`);
  }
  reading.internalPorts.set(port, `${s.path} (line ${s.line})`);
}

function claimPublicPort(s: Section, port: number, reading: AppReading): void {
  const first = reading.publicPorts.get(port);
  if (first !== undefined) s.failHere(`port ${port} is already declared by ${first}; a public port routes to one service`);
  reading.publicPorts.set(port, `${s.path} (line ${s.line})`);
}

/** `[http_service]`: fly.toml's shorthand for ports 80 ["http"] and 443 ["tls", "http"]. */
function readHttpService(s: Section, index: number, reading: AppReading): ServiceConfig {
  const internalPort = s.port('internal_port') ?? 8080;
  claimInternalPort(s, 'internal_port', internalPort, reading);
  const forceHttps = s.boolean('force_https') ?? false;
  const tls = readTlsOptions(s.section('tls_options'), ['tls', 'http']);
  const http = readHttpOptions(s.section('http_options'), ['http']);
  const common = readServiceCommon(s);
  const checks = s.sections('checks').map((c, i) => readHttpCheck(c, i));
  s.finish();

  const makePort = (port: number, handlers: readonly Handler[], portForceHttps: boolean, portTls: TlsOptions): PortConfig => {
    claimPublicPort(s, port, reading);
    const source = s.source();
    const config: PortConfig = { port, handlers, forceHttps: portForceHttps, tls: portTls, http, proxyProtoVersion: 'v1', source };
    reading.origin.portPaths.set(config, s.path);
    return config;
  };
  const ports = [
    makePort(80, ['http'], forceHttps, defaultTlsOptions(['http'])),
    // Redirecting to https on the https port itself would loop.
    makePort(443, ['tls', 'http'], false, tls),
  ];
  return { index, protocol: 'tcp', internalPort, ports, ...common, checks, source: s.source() };
}

/** `[[services]]`. */
function readService(s: Section, index: number, reading: AppReading): ServiceConfig {
  const protocol = s.require('protocol', s.string('protocol'));
  if (protocol === 'udp') s.fail('protocol', 'udp services are not supported: petrel proxies tcp only');
  if (protocol !== 'tcp') s.fail('protocol', `must be "tcp", got ${JSON.stringify(protocol)}`);
  const internalPort = s.require('internal_port', s.port('internal_port'));
  claimInternalPort(s, 'internal_port', internalPort, reading);
  const ports = s.sections('ports').flatMap((p) => readPorts(p, reading));
  const common = readServiceCommon(s);
  const checks: Check[] = [
    ...s.sections('tcp_checks').map((c, i) => readTcpCheck(c, i)),
    ...s.sections('http_checks').map((c, i) => readHttpCheck(c, i)),
  ];
  s.finish();
  return { index, protocol: 'tcp', internalPort, ports, ...common, checks, source: s.source() };
}

/** One `[[services.ports]]` entry: one PortConfig, or one per port of a start_port..end_port range. */
function readPorts(s: Section, reading: AppReading): PortConfig[] {
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

function defaultTlsOptions(handlers: readonly Handler[]): TlsOptions {
  return { alpn: handlers.includes('http') ? ['h2', 'http/1.1'] : [], versions: [...TLS_VERSIONS], defaultSelfSigned: false };
}

function readTlsOptions(s: Section, handlers: readonly Handler[]): TlsOptions {
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

function readHttpOptions(s: Section, handlers: readonly Handler[]): HttpOptions {
  if (s.present && !handlers.includes('http')) s.failHere('http_options need the "http" handler on this port');
  const h2Backend = s.boolean('h2_backend') ?? false;
  // fly.toml counts these two in seconds.
  const idleTimeoutMs = s.durationMs('idle_timeout', 's') ?? null;
  const headersReadTimeoutMs = s.durationMs('headers_read_timeout', 's') ?? null;
  const compress = s.boolean('compress') ?? false;
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

/** Check durations are plain durations: a bare number is milliseconds. */
function readCheckTimings(s: Section): { gracePeriodMs: number; intervalMs: number; timeoutMs: number } {
  return {
    gracePeriodMs: s.durationMs('grace_period', 'ms', true) ?? 1_000,
    intervalMs: s.durationMs('interval', 'ms') ?? 15_000,
    timeoutMs: s.durationMs('timeout', 'ms') ?? 2_000,
  };
}

function readTcpCheck(s: Section, index: number): TcpCheck {
  const check: TcpCheck = { kind: 'tcp', name: `tcp-${index}`, ...readCheckTimings(s) };
  s.finish();
  return check;
}

function readHttpCheck(s: Section, index: number): HttpCheck {
  const timings = readCheckTimings(s);
  const method = (s.matching('method', HTTP_TOKEN, 'give an HTTP method such as "GET"') ?? 'GET').toUpperCase();
  const checkPath = s.matching('path', /^\/[^\s]*$/, 'give a path starting with "/" and without spaces') ?? '/';
  const protocol = s.oneOf('protocol', ['http', 'https'] as const) ?? 'http';
  const tlsSkipVerify = s.boolean('tls_skip_verify') ?? false;
  const headers = readCheckHeaders(s.section('headers'));
  s.finish();
  return { kind: 'http', name: `http-${index}`, ...timings, method, path: checkPath, protocol, tlsSkipVerify, headers };
}

function readCheckHeaders(s: Section): ReadonlyMap<string, string> {
  const seen = new Set<string>();
  return frozenMap(
    s.entries().map(({ key, value, path: itemPath }) => {
      const name = readHeaderName(s, key, itemPath, seen);
      if (typeof value !== 'string') s.failAt(itemPath, `expected a string, got ${describeValue(value)}`);
      return [name, checkHeaderValue(s, itemPath, value)] as const;
    }),
  );
}

/** `[[machines]]`: petrel's addition while the embedded store is in use. */
function readMachine(
  s: Section,
  app: { name: string; killSignal: NodeJS.Signals; killTimeoutMs: number },
  reading: AppReading,
): MachineConfig {
  const id = s.require('id', s.matching('id', MACHINE_ID, 'use lower-case letters, digits and dashes'));
  const region = s.matching('region', REGION, REGION_RULE) ?? reading.node.region;
  const driver = s.require('driver', s.oneOf('driver', ['static', 'process'] as const));
  let address: string | null = null;
  let cmd: string[] | null = null;
  let env: ReadonlyMap<string, string> = frozenMap([]);
  let cwd = reading.dir;
  if (driver === 'static') {
    const hostPort = s.require('address', readHostPort(s, 'address', 1));
    address = `${hostPort.host.includes(':') ? `[${hostPort.host}]` : hostPort.host}:${hostPort.port}`;
    for (const key of ['cmd', 'env', 'cwd']) if (s.has(key)) s.fail(key, 'only for driver "process"');
  } else {
    if (s.has('address')) s.fail('address', 'only for driver "static": petrel gives process Machines their port');
    cmd = readCommand(s, reading.dir);
    env = readEnv(s.section('env'));
    const dir = s.matching('cwd', /\S/, 'give a directory');
    if (dir !== undefined) cwd = path.resolve(reading.dir, dir);
  }
  s.finish();
  const { killSignal, killTimeoutMs } = app;
  return { id, app: app.name, region, driver, address, cmd, cwd, env, killSignal, killTimeoutMs, source: s.source() };
}

/**
 * `cmd` as a list, or a string split on whitespace. Paths relative to the app file (`./x`, `../x`,
 * or a program path with a slash) are made absolute so they do not depend on petrel's working
 * directory; bare program names such as "node" are left for PATH lookup by the driver.
 */
function readCommand(s: Section, dir: string): string[] {
  const value = s.value('cmd');
  if (value === undefined) return s.fail('cmd', 'missing required key for driver "process"');
  let argv: string[];
  if (typeof value === 'string') {
    argv = value.split(/\s+/).filter((arg) => arg !== '');
  } else if (Array.isArray(value)) {
    argv = value.map((arg, i) => {
      if (typeof arg === 'string' && arg !== '') return arg;
      return s.failAt(s.itemPath('cmd', i), `expected a non-empty string, got ${describeValue(arg)}`);
    });
  } else {
    return s.fail('cmd', `expected a command string or a list of strings, got ${describeValue(value)}`);
  }
  if (argv.length === 0) s.fail('cmd', 'must not be empty');
  return argv.map((arg, i) => {
    const relative = arg.startsWith('./') || arg.startsWith('../') || (i === 0 && arg.includes('/') && !path.isAbsolute(arg));
    return relative ? path.resolve(dir, arg) : arg;
  });
}

function readEnv(s: Section): ReadonlyMap<string, string> {
  return frozenMap(
    s.entries().map(({ key, value, path: itemPath }) => {
      if (!ENV_NAME.test(key)) s.failAt(itemPath, `${JSON.stringify(key)} is not a valid variable name: ${ENV_NAME_RULE}`);
      if (RESERVED_ENV.includes(key)) s.failAt(itemPath, `${key} is set by petrel for every process Machine`);
      if (typeof value !== 'string') s.failAt(itemPath, `expected a string (quote numbers and booleans), got ${describeValue(value)}`);
      return [key, value] as const;
    }),
  );
}

// ================================================================================================
// Across apps: names, Machine ids, hostnames, public ports, bind addresses
// ================================================================================================

interface Claim {
  readonly app: AppConfig;
  readonly path: string;
}

/** How a listener must read the first bytes of a connection on a port. */
type PortLayer = 'tls' | 'pg_tls' | 'plain';

interface PortUse extends Claim {
  readonly layer: PortLayer;
  /** No TLS and no HTTP: nothing in the stream names an app, so the port is the route. */
  readonly raw: boolean;
  readonly handlers: readonly Handler[];
}

function checkAcrossApps(node: NodeConfig, apps: readonly AppConfig[]): void {
  const names = new Map<string, Claim>();
  const machineIds = new Map<string, Claim>();
  const hostnames = new Map<string, Claim>();
  const ports = new Map<number, PortUse>();
  const binds = new BindClaims();
  const nodeLine = (key: string): number => node.sources.get(key)?.line ?? 1;
  binds.claim(node.admin, `the admin listener (${node.file}:${nodeLine('admin.address')})`);
  // Every [[listen]] entry counts, used by an app or not: a port binding another port's socket is
  // a mistake either way. Node loading already made sure they do not clash with each other.
  node.listen.forEach((l, i) => {
    binds.claim({ host: l.host, port: l.bindPort }, `public port ${l.port} (${node.file}:${nodeLine(`listen[${i}]`)})`);
  });
  const listened = new Set(node.listen.map((l) => l.port));

  for (const app of apps) {
    const origin = appOrigins.get(app);
    const lineOf = (keyPathText: string): number => origin?.lines.get(keyPathText) ?? 1;
    const fail = (keyPathText: string, reason: string): never => {
      throw new ConfigError(app.file, keyPathText, lineOf(keyPathText), reason);
    };
    const where = (claim: Claim): string => {
      const line = appOrigins.get(claim.app)?.lines.get(claim.path) ?? 1;
      return `app ${JSON.stringify(claim.app.name)} (${claim.app.file}:${line})`;
    };

    const sameName = names.get(app.name);
    if (sameName !== undefined) fail('app', `app ${JSON.stringify(app.name)} is already defined by ${sameName.app.file}`);
    names.set(app.name, { app, path: 'app' });

    app.machines.forEach((machine, i) => {
      const claim = { app, path: `machines[${i}].id` };
      const first = machineIds.get(machine.id);
      if (first !== undefined) fail(claim.path, `Machine id ${JSON.stringify(machine.id)} is already used by ${where(first)}`);
      machineIds.set(machine.id, claim);
    });

    for (const hostname of app.hostnames) {
      const claim = { app, path: origin?.hostnamePaths.get(hostname) ?? 'hostnames' };
      const first = hostnames.get(hostname);
      if (first !== undefined) fail(claim.path, `hostname ${JSON.stringify(hostname)} is already claimed by ${where(first)}`);
      hostnames.set(hostname, claim);
    }

    for (const service of app.services) {
      for (const port of service.ports) {
        const use: PortUse = {
          app,
          path: origin?.portPaths.get(port) ?? `services[${service.index}].ports`,
          layer: port.handlers[0] === 'tls' || port.handlers[0] === 'pg_tls' ? port.handlers[0] : 'plain',
          raw: !port.handlers.some((h) => h === 'tls' || h === 'pg_tls' || h === 'http'),
          handlers: port.handlers,
        };
        const first = ports.get(port.port);
        if (first === undefined) {
          ports.set(port.port, use);
          if (!listened.has(port.port)) {
            const bind = { host: node.bindHost, port: port.port };
            const clash = binds.claim(bind, `public port ${port.port} (${app.file}:${port.source.line})`);
            if (clash !== undefined) {
              fail(use.path, `port ${port.port} would bind ${bind.host}:${bind.port}, which ${clash} already binds`);
            }
          }
          continue;
        }
        if (first.raw || use.raw) {
          const rawUse = first.raw ? first : use;
          fail(
            use.path,
            `port ${port.port} is also used by ${where(first)}, but with handlers ${JSON.stringify(rawUse.handlers)} ` +
              'it carries no TLS server name or HTTP Host to route by, so only one app can use it',
          );
        }
        if (first.layer !== use.layer) {
          fail(
            use.path,
            `port ${port.port} starts with ${describeLayer(use.layer)} here ` +
              `but with ${describeLayer(first.layer)} in ${where(first)}; ` +
              'every app on a port must start the same way (the listener reads the first bytes before it knows the app)',
          );
        }
      }
    }
  }
}

function describeLayer(layer: PortLayer): string {
  return layer === 'plain' ? 'plaintext' : `"${layer}"`;
}

/** Bind addresses in use, so two listeners never try to bind the same socket. */
class BindClaims {
  private readonly byPort = new Map<number, { host: string; owner: string }[]>();

  /** Records the bind; returns the earlier owner's description when it overlaps one. */
  claim(bind: HostPort, owner: string): string | undefined {
    if (bind.port === 0) return undefined; // each port-0 bind gets its own free port
    const claims = this.byPort.get(bind.port) ?? [];
    const clash = claims.find((c) => c.host === bind.host || isAnyHost(c.host) || isAnyHost(bind.host));
    if (clash !== undefined) return clash.owner;
    claims.push({ host: bind.host, owner });
    this.byPort.set(bind.port, claims);
    return undefined;
  }
}

function isAnyHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

// ================================================================================================
// Freezing, fingerprint, check-config report
// ================================================================================================

/** A Map whose mutators throw: Object.freeze alone does not stop Map.set. */
function frozenMap<K, V>(entries: Iterable<readonly [K, V]>): ReadonlyMap<K, V> {
  const map = new Map<K, V>(entries);
  const refuse = (): never => {
    throw new TypeError('configuration is read-only');
  };
  Object.defineProperties(map, { set: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } });
  return Object.freeze(map);
}

function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value;
  const children = value instanceof Map ? value.values() : Object.values(value);
  for (const child of children) deepFreeze(child);
  return Object.freeze(value);
}

/**
 * Everything an AppConfig is derived from: the file's parsed content (so comments and key order do
 * not count) and the node settings that fill its defaults and anchor its paths. The brief asked
 * for content + default_domain; region and directory are included too, or a node region change
 * would leave apps whose Machines default to that region looking unchanged to reload.
 */
function fingerprint(content: TomlTable, file: string, node: NodeConfig): string {
  const input: TomlTable = { content, defaultDomain: node.defaultDomain, region: node.region, dir: path.dirname(file) };
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}

function canonicalJson(value: TomlValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isTomlTable(value)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(',')}}`;
  }
  // inf and nan are not JSON; their bare names cannot collide with any JSON token.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return JSON.stringify(value);
}

function describeNode(node: NodeConfig, appCount: number): string[] {
  const listen = node.listen.map((l) => `${l.port} -> ${l.host}:${l.bindPort}`);
  const token = node.admin.token === '' ? 'token generated at start' : 'token set';
  const { limits } = node;
  return [
    `node ${node.nodeId}, region ${node.region}, default domain ${node.defaultDomain} (${node.file})`,
    `listen: ${[...listen, `other ports on ${node.bindHost}`].join(', ')}`,
    `admin: ${node.admin.host}:${node.admin.port}, ${token}`,
    `limits: header bytes ${formatSize(limits.maxHeaderBytes)}, header count ${limits.maxHeaderCount}, ` +
      `header read ${formatDuration(limits.headerReadTimeoutMs)}, ` +
      `connect ${formatDuration(limits.connectTimeoutMs)} x${limits.connectAttempts}, ` +
      `response ${formatDuration(limits.responseTimeoutMs)}, ` +
      `queue ${limits.queueLength}/${formatDuration(limits.queueTimeoutMs)}, wake ${formatDuration(limits.wakeTimeoutMs)}`,
    `apps: ${appCount} in ${node.appsDir}; certs in ${node.certsDir}`,
  ];
}

function describeApp(app: AppConfig): string[] {
  const lines = [`app ${app.name} (${app.file}): ${app.hostnames.join(', ')}; primary region ${app.primaryRegion}`];
  for (const service of app.services) {
    const { type, softLimit, hardLimit } = service.concurrency;
    const checks = service.checks.length === 0 ? 'no checks' : `checks ${service.checks.map((c) => c.name).join(', ')}`;
    lines.push(
      `  service ${service.index}: internal port ${service.internalPort}; ports ${describePorts(service.ports)}; ` +
        `${type} ${softLimit}/${hardLimit === Infinity ? 'unlimited' : hardLimit}; ` +
        `auto stop ${service.autoStopMachines}, auto start ${service.autoStartMachines ? 'on' : 'off'}; ${checks}`,
    );
  }
  for (const machine of app.machines) {
    const target = machine.driver === 'static' ? machine.address : machine.cmd?.join(' ');
    lines.push(`  machine ${machine.id} (${machine.driver}, ${machine.region}): ${target}`);
  }
  return lines;
}

/** "80 [http], 443 [tls,http], 10000-10099 [tls]": a start_port..end_port range stays one entry. */
function describePorts(ports: readonly PortConfig[]): string {
  if (ports.length === 0) return 'none';
  const runs: { first: PortConfig; last: PortConfig }[] = [];
  for (const port of ports) {
    const run = runs[runs.length - 1];
    if (run !== undefined && run.last.source === port.source && run.last.port + 1 === port.port) run.last = port;
    else runs.push({ first: port, last: port });
  }
  return runs
    .map(({ first, last }) => `${first.port === last.port ? first.port : `${first.port}-${last.port}`} [${first.handlers.join(',')}]`)
    .join(', ');
}
