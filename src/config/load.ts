// Config loading: TOML text → validated, defaulted, deep-frozen objects of types.ts.
//
// Validation is strict on purpose: a typo in a proxy config silently falls back to a default and
// surfaces as an outage much later, so every unknown key, wrong type or bad value is a ConfigError
// naming file, key path and line. Reading happens through `Section`, which remembers which keys the
// reader asked for so that whatever is left over is an unknown key.
//
// This file is the public API and the file reading; the work is done in load/:
//   section.ts     Section: typed reads of one TOML table, unknown keys, error lines
//   valueRules.ts  rules several parts share (regions, host names, host:port, header names)
//   node.ts        node config (config/petrel.toml), [limits] defaults; acme.ts its [acme];
//                  store.ts (+ storeErrors.ts, storeKeys.ts, natsServers.ts) its [store];
//                  cluster.ts its [cluster]
//   app.ts         app file: name, hostnames, fingerprint; hands parts to
//                  services.ts, ports.ts (handlers and their options), checks.ts, machines.ts,
//                  certificates.ts ([[certificates]])
//   acrossApps.ts  rules across apps: names, Machine ids, hostnames, port sharing, binds
//   bindClaims.ts  bind-address clashes (node listeners, app ports)
//   freeze.ts      read-only Maps and deep freezing
//   describe.ts    the check-config summary
// They live under load/ so that whatever keeps the data plane out of `src/config/load` keeps it
// out of them too.

import type { Dirent, Stats } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import { parseToml } from './toml.ts';
import { ConfigError } from './types.ts';
import type { AppConfig, Config, Limits, NodeConfig } from './types.ts';
import { checkAcrossApps } from './load/acrossApps.ts';
import { appFromDocument } from './load/app.ts';
import { describeApp, describeNode } from './load/describe.ts';
import { deepFreeze, frozenMap } from './load/freeze.ts';
import { nodeFromDocument } from './load/node.ts';
import type { Env } from './load/node.ts';

export type { Env };

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
