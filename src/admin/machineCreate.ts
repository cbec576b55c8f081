// `POST /v1/apps/{app}/machines`: a Fly-Machines-API-shaped create body read into a `process`
// MachineConfig, with the same rules as a `[[machines]]` entry in an app file (id, region, env
// names, reserved variables, kill signal, relative command paths).
//
//   { "name": "web-3", "region": "ams", "skip_launch": false,
//     "config": { "init": { "cmd": ["node", "server.js"] }, "env": { "GREETING": "hi" },
//                 "stop_config": { "signal": "SIGTERM", "timeout": "10s" } } }
//
// Fly's `config.image` has no meaning here (petrel runs commands, not images): `init.cmd` (or
// `init.exec`) is required. Other Fly keys (guest, services, metadata, ...) are accepted and
// ignored, so existing clients can send their usual bodies.

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { AppConfig, MachineConfig } from '../config/types.ts';
import { parseDuration } from '../config/durations.ts';
import { KILL_SIGNALS } from '../config/load/app.ts';
import { MACHINE_ID, RESERVED_ENV, resolveCommand } from '../config/load/machines.ts';
import { ENV_NAME, ENV_NAME_RULE, REGION, REGION_RULE } from '../config/load/valueRules.ts';

export interface CreateRequest {
  readonly machine: MachineConfig;
  readonly skipLaunch: boolean;
}

/** A refused body: the admin API answers 400 PA08 with `reason`. */
export class CreateBodyError extends Error {}

const MAX_ID = 63;
const MAX_KILL_TIMEOUT_MS = 24 * 3600_000;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function fail(reason: string): never {
  throw new CreateBodyError(reason);
}

function optionalObject(parent: Record<string, unknown>, key: string, where: string): Record<string, unknown> {
  const v = parent[key];
  if (v === undefined || v === null) return {};
  if (!isObject(v)) fail(`${where}${key} must be a JSON object`);
  return v;
}

function readCmd(init: Record<string, unknown>, dir: string): string[] {
  const raw = init['cmd'] ?? init['exec'];
  const key = init['cmd'] !== undefined ? 'config.init.cmd' : 'config.init.exec';
  if (raw === undefined) fail('config.init.cmd is required: petrel runs a command per Machine (process driver), not an image');
  if (!Array.isArray(raw) || raw.length === 0) fail(`${key} must be a non-empty list of strings`);
  raw.forEach((arg, i) => {
    if (typeof arg !== 'string' || arg === '' || arg.includes('\0')) fail(`${key}[${i}] must be a non-empty string without NUL`);
  });
  return resolveCommand(raw as string[], dir);
}

function readEnv(config: Record<string, unknown>): Map<string, string> {
  const env = new Map<string, string>();
  for (const [k, v] of Object.entries(optionalObject(config, 'env', 'config.'))) {
    if (!ENV_NAME.test(k)) fail(`config.env: ${JSON.stringify(k)} is not a valid variable name: ${ENV_NAME_RULE}`);
    if (RESERVED_ENV.includes(k)) fail(`config.env: ${k} is set by petrel for every process Machine`);
    if (typeof v !== 'string' || v.includes('\0')) fail(`config.env.${k} must be a string without NUL`);
    env.set(k, v);
  }
  return env;
}

function readStop(config: Record<string, unknown>, app: AppConfig): { signal: NodeJS.Signals; timeoutMs: number } {
  const stop = optionalObject(config, 'stop_config', 'config.');
  let signal = app.killSignal;
  if (stop['signal'] !== undefined) {
    const s = stop['signal'];
    if (typeof s !== 'string' || !(KILL_SIGNALS as readonly string[]).includes(s)) {
      fail(`config.stop_config.signal must be one of ${KILL_SIGNALS.join(', ')}`);
    }
    signal = s as NodeJS.Signals;
  }
  let timeoutMs = app.killTimeoutMs;
  const t = stop['timeout'];
  if (t !== undefined) {
    // Fly sends a Go duration string ("10s"); a bare number counts seconds, as kill_timeout does.
    const ms = typeof t === 'string' ? parseDuration(t) : typeof t === 'number' ? t * 1000 : undefined;
    if (ms === undefined || !Number.isFinite(ms) || ms < 0 || ms > MAX_KILL_TIMEOUT_MS) {
      fail('config.stop_config.timeout must be a duration such as "10s" (at most 24h) or a number of seconds');
    }
    timeoutMs = ms;
  }
  return { signal, timeoutMs };
}

/** Reads a create body for `app`; throws CreateBodyError with a reason for the client. */
export function readCreateBody(body: Record<string, unknown>, app: AppConfig, nodeRegion: string, taken: (id: string) => boolean): CreateRequest {
  let id: string;
  if (body['name'] !== undefined) {
    const name = body['name'];
    if (typeof name !== 'string' || !MACHINE_ID.test(name) || name.length > MAX_ID) {
      fail(`name must be 1 to ${MAX_ID} lower-case letters, digits and dashes`);
    }
    id = name;
  } else {
    // Fly's ids are 14 hex digits; random, so two nodes never pick the same one.
    id = randomBytes(7).toString('hex');
  }
  if (taken(id)) fail(`a Machine named ${id} already exists`);
  let region = nodeRegion;
  if (body['region'] !== undefined) {
    const r = body['region'];
    if (typeof r !== 'string' || !REGION.test(r)) fail(`region: ${REGION_RULE}`);
    region = r;
  }
  const skip = body['skip_launch'];
  if (skip !== undefined && typeof skip !== 'boolean') fail('skip_launch must be true or false');
  if (!isObject(body['config'])) fail('config is required and must be a JSON object');
  const config = body['config'];
  const dir = path.dirname(app.file);
  const cmd = readCmd(optionalObject(config, 'init', 'config.'), dir);
  const env = readEnv(config);
  const stop = readStop(config, app);
  const machine: MachineConfig = Object.freeze({
    id,
    app: app.name,
    region,
    driver: 'process',
    address: null,
    cmd: Object.freeze(cmd),
    api: null,
    node: null,
    cwd: dir,
    env,
    killSignal: stop.signal,
    killTimeoutMs: stop.timeoutMs,
    source: Object.freeze({ file: '(admin API)', line: 0 }),
  });
  return { machine, skipLaunch: skip === true };
}
