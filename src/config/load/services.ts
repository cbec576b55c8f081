// Services of an app file: `[http_service]` and `[[services]]`, with the keys they share
// (concurrency, auto stop/start) and the rule that each service has its own internal port.

import type { AutoStop, Check, Concurrency, Handler, PortConfig, ServiceConfig, TlsOptions } from '../types.ts';
import type { AppReading } from './app.ts';
import { readHttpCheck, readTcpCheck } from './checks.ts';
import { claimPublicPort, defaultTlsOptions, readHttpOptions, readPorts, readTlsOptions } from './ports.ts';
import { frozenMap } from './freeze.ts';
import { describeValue, quoteList } from './section.ts';
import type { Section } from './section.ts';
import { REGION, REGION_RULE } from './valueRules.ts';

const AUTO_STOP = ['off', 'stop', 'suspend'] as const satisfies readonly AutoStop[];
const DEFAULT_SOFT_LIMIT = 20;

interface ServiceCommon {
  readonly concurrency: Concurrency;
  readonly autoStopMachines: AutoStop;
  readonly autoStartMachines: boolean;
  readonly minMachinesRunning: number;
  readonly minMachinesPerRegion: ReadonlyMap<string, number>;
}

/** Keys that `[http_service]` and `[[services]]` share. */
function readServiceCommon(s: Section): ServiceCommon {
  return {
    concurrency: readConcurrency(s.section('concurrency')),
    autoStopMachines: readAutoStop(s),
    autoStartMachines: s.boolean('auto_start_machines') ?? true,
    minMachinesRunning: s.integer('min_machines_running', 0) ?? 0,
    minMachinesPerRegion: readRegionMinimums(s.section('min_machines_running_per_region')),
  };
}

/**
 * petrel's addition: `min_machines_running_per_region = { ams = 1, syd = 1 }`. Fly keeps only
 * `min_machines_running`, and only in the primary region; a region listed here overrides it.
 */
function readRegionMinimums(s: Section): ReadonlyMap<string, number> {
  return frozenMap(
    s.entries().map(({ key, value, path: itemPath }) => {
      if (!REGION.test(key)) s.failAt(itemPath, `${JSON.stringify(key)} is not a region name: ${REGION_RULE}`);
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
        s.failAt(itemPath, `expected a whole number of Machines (0 or more), got ${describeValue(value)}`);
      }
      return [key, value as number] as const;
    }),
  );
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

/** `[http_service]`: fly.toml's shorthand for ports 80 ["http"] and 443 ["tls", "http"]. */
export function readHttpService(s: Section, index: number, reading: AppReading): ServiceConfig {
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
export function readService(s: Section, index: number, reading: AppReading): ServiceConfig {
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
