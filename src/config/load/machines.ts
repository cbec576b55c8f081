// Machines of an app file (`[[machines]]`): static addresses, or commands the process driver runs.

import path from 'node:path';

import type { MachineConfig, MachinesApiConfig } from '../types.ts';
import type { AppReading } from './app.ts';
import { frozenMap } from './freeze.ts';
import { NODE_ID, NODE_ID_RULE } from './node.ts';
import { describeValue } from './section.ts';
import type { Section } from './section.ts';
import { ENV_NAME, ENV_NAME_RULE, readHostPort, REGION, REGION_RULE } from './valueRules.ts';

export const MACHINE_ID = /^[a-z0-9-]+$/;
/** The process driver sets these for every Machine (spec section 5); a config must not fight it. */
export const RESERVED_ENV = ['PORT', 'FLY_APP_NAME', 'FLY_MACHINE_ID', 'FLY_REGION', 'PRIMARY_REGION'];

/** `[[machines]]`: petrel's addition while the embedded store is in use. */
export function readMachine(
  s: Section,
  app: { name: string; killSignal: NodeJS.Signals; killTimeoutMs: number },
  reading: AppReading,
): MachineConfig {
  const id = s.require('id', s.matching('id', MACHINE_ID, 'use lower-case letters, digits and dashes'));
  const region = s.matching('region', REGION, REGION_RULE) ?? reading.node.region;
  const driver = s.require('driver', s.oneOf('driver', ['static', 'process', 'machines-api'] as const));
  // The node that runs this Machine's driver. Only its shape is checked: which nodes exist is the
  // cluster's live state, not config, and an app file must also check on its own (check-config).
  const node = s.matching('node', NODE_ID, NODE_ID_RULE) ?? null;
  let address: string | null = null;
  let cmd: string[] | null = null;
  let api: MachinesApiConfig | null = null;
  let env: ReadonlyMap<string, string> = frozenMap([]);
  let cwd = reading.dir;
  if (driver === 'machines-api') {
    for (const key of ['cmd', 'env', 'cwd', 'address']) if (s.has(key)) s.fail(key, 'not for driver "machines-api": the API reports where the Machine is');
    api = readApi(s, app.name);
  } else if (driver === 'static') {
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
  return { id, app: app.name, region, driver, address, cmd, api, node, cwd, env, killSignal, killTimeoutMs, source: s.source() };
}

/** `api_url` (required), `api_token` or `api_token_env`, `api_app` (default: this app). */
function readApi(s: Section, appName: string): MachinesApiConfig {
  const url = s.require('api_url', s.string('api_url'));
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return s.fail('api_url', `not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') s.fail('api_url', 'must be an http:// or https:// URL');
  if (s.has('api_token') && s.has('api_token_env')) s.fail('api_token_env', 'give api_token or api_token_env, not both');
  const tokenEnv = s.matching('api_token_env', ENV_NAME, ENV_NAME_RULE) ?? null;
  const token = s.string('api_token') ?? '';
  const remoteApp = s.matching('api_app', /^[a-z0-9-]+$/, 'use lower-case letters, digits and dashes') ?? appName;
  return { url: url.replace(/\/+$/, ''), token, tokenEnv, app: remoteApp };
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
  return resolveCommand(argv, dir);
}

/** Relative program and argument paths made absolute against `dir` (see readCommand). */
export function resolveCommand(argv: readonly string[], dir: string): string[] {
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
