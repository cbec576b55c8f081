// App file (fly.toml keys, spec section 2): the app's name, region, kill settings and hostnames.
// Services and their ports, checks, Machines and certificates each have a module of their own;
// this one reads the top of the file, hands each part to its reader and freezes the result.

import { createHash } from 'node:crypto';
import path from 'node:path';

import { isTomlTable } from '../toml.ts';
import type { TomlDocument, TomlTable, TomlValue } from '../toml.ts';
import type { AppConfig, NodeConfig, PortConfig, ServiceConfig } from '../types.ts';
import { readCertificates } from './certificates.ts';
import { deepFreeze } from './freeze.ts';
import { readMachine } from './machines.ts';
import { Section } from './section.ts';
import { readHttpService, readService } from './services.ts';
import { isHostname, REGION, REGION_RULE } from './valueRules.ts';

const APP_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const APP_NAME_RULE = 'use lower-case letters, digits and dashes (it becomes a DNS label: at most 63, no dash at either end)';
/** Only signals that ask a process to end: SIGSTOP/SIGCONT are how the process driver suspends. */
export const KILL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGKILL'] as const satisfies readonly NodeJS.Signals[];

/** Where an app's parts were declared, for errors that `buildConfig` finds across apps. */
interface AppOrigin {
  readonly lines: ReadonlyMap<string, number>;
  /** Hostname → key path (`hostnames[2]`, or `app` for the derived `<app>.<default_domain>`). */
  readonly hostnamePaths: Map<string, string>;
  readonly portPaths: Map<PortConfig, string>;
}
export const appOrigins = new WeakMap<AppConfig, AppOrigin>();

/** State shared while one app file is read. */
export interface AppReading {
  readonly node: NodeConfig;
  /** The app file's directory: relative `cmd` and `cwd` paths start here. */
  readonly dir: string;
  readonly origin: AppOrigin;
  /** Public port → where this app declared it; one port routes to one service of an app. */
  readonly publicPorts: Map<number, string>;
  /** Internal port → where; Machine slots are keyed by internal port, so each names one service. */
  readonly internalPorts: Map<number, string>;
}

export function appFromDocument(doc: TomlDocument, file: string, node: NodeConfig): AppConfig {
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
  const certificates = readCertificates(root.sections('certificates'), reading.origin.hostnamePaths);

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
    certificates,
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
