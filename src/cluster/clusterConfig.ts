// The config a node runs with a shared store: its own node config (the file) plus the apps
// deployed to the store. Every app document goes through the same loader as an app file, so a
// deployed app means exactly what `petrel check-config` says of the file.

import path from 'node:path';
import { buildConfig, parseAppConfig } from '../config/load.ts';
import { ConfigError, type AppConfig, type Config, type NodeConfig } from '../config/types.ts';
import type { AppDoc, MachineDoc, MachineSpec } from './records.ts';
import { KILL_SIGNALS } from '../config/load/app.ts';
import { MACHINE_ID } from '../config/load/machines.ts';
import { REGION } from '../config/load/valueRules.ts';
import type { MachineConfig } from '../config/types.ts';

/**
 * How an app deployed to the store is named in errors. There is no file on this node; the name
 * sits in `apps_dir` so that relative paths in the app (a Machine's `cmd`, its `cwd`) resolve
 * against `apps_dir`, as they would for a file there.
 */
function appSource(node: NodeConfig, name: string): string {
  return `${path.join(node.appsDir, name)}.toml@store`;
}

export interface AssembledConfig {
  readonly config: Config;
  /** Apps left out, with why: a document that does not load, or a clash with another app. */
  readonly skipped: readonly { readonly app: string; readonly reason: string }[];
}

/**
 * Builds the config from the deployed apps. A bad document (which a deploy would have refused,
 * but another version or a race may write) leaves out that app only; a clash between two apps
 * leaves out the one deployed last, so what served before keeps serving.
 */
export function assembleConfig(node: NodeConfig, docs: Iterable<AppDoc>, machines: Iterable<MachineDoc> = []): AssembledConfig {
  const skipped: { app: string; reason: string }[] = [];
  const parsed: { app: AppConfig; doc: AppDoc }[] = [];
  for (const doc of docs) {
    try {
      parsed.push({ app: parseAppConfig(doc.config, appSource(node, doc.name), node), doc });
    } catch (err) {
      skipped.push({ app: doc.name, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  addApiMachines(parsed, machines, skipped);
  parsed.sort((a, b) => a.doc.deployedAt - b.doc.deployedAt);
  for (;;) {
    try {
      return { config: buildConfig(node, parsed.map((p) => p.app)), skipped };
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // The error names one app's source; drop it (or, if unnamed, the newest) and try again.
      let i = parsed.findIndex((p) => p.app.file === err.file);
      if (i < 0) i = parsed.length - 1;
      const [gone] = parsed.splice(i, 1);
      skipped.push({ app: gone!.doc.name, reason: err.message });
    }
  }
}

/** The MachineConfig of a Machine created through the admin API, or why it cannot be one. */
function specMachine(doc: MachineDoc, spec: MachineSpec): MachineConfig | string {
  if (!MACHINE_ID.test(doc.id)) return `id ${JSON.stringify(doc.id)} is not a Machine id`;
  if (!REGION.test(spec.region)) return `region ${JSON.stringify(spec.region)} is not a region`;
  if (!(KILL_SIGNALS as readonly string[]).includes(spec.killSignal)) return `kill signal ${spec.killSignal} is not allowed`;
  if (!(spec.killTimeoutMs > 0)) return 'kill timeout must be positive';
  return Object.freeze({
    id: doc.id,
    app: doc.app,
    region: spec.region,
    driver: 'process',
    address: null,
    cmd: Object.freeze([...spec.cmd]),
    api: null,
    node: doc.owner,
    cwd: spec.cwd,
    env: new Map(Object.entries(spec.env)),
    killSignal: spec.killSignal as NodeJS.Signals,
    killTimeoutMs: spec.killTimeoutMs,
    source: Object.freeze({ file: `(admin API on ${doc.owner})`, line: 0 }),
  });
}

/** Adds the API-made Machines to their apps; one whose id an app file uses is left out. */
function addApiMachines(parsed: { app: AppConfig; doc: AppDoc }[], machines: Iterable<MachineDoc>, skipped: { app: string; reason: string }[]): void {
  const fileIds = new Set<string>();
  for (const p of parsed) for (const mc of p.app.machines) fileIds.add(mc.id);
  const extra = new Map<string, MachineConfig[]>();
  for (const doc of machines) {
    if (doc.spec === undefined) continue;
    const mc = specMachine(doc, doc.spec);
    if (typeof mc === 'string' || fileIds.has(doc.id)) {
      skipped.push({ app: doc.app, reason: `Machine ${doc.id} (created through the API) left out: ${typeof mc === 'string' ? mc : 'an app file uses its id'}` });
      continue;
    }
    let list = extra.get(doc.app);
    if (list === undefined) extra.set(doc.app, (list = []));
    list.push(mc);
  }
  for (const p of parsed) {
    const more = extra.get(p.app.name);
    if (more !== undefined) p.app = Object.freeze({ ...p.app, machines: Object.freeze([...p.app.machines, ...more]) });
  }
}

/**
 * Checks a deploy before it is written: the text loads as an app file, and it fits with the
 * apps served now (hostnames, ports, Machine ids). Returns the parsed app; throws ConfigError
 * naming the key and line.
 */
export function checkDeploy(node: NodeConfig, text: string, served: Iterable<AppConfig>, name?: string): AppConfig {
  // Parse once under a provisional source to learn the name, then again under its own.
  const first = parseAppConfig(text, appSource(node, name ?? 'new'), node);
  if (name !== undefined && first.name !== name) {
    throw new ConfigError(appSource(node, name), 'app', 1, `the file says app = "${first.name}", not "${name}"`);
  }
  const app = parseAppConfig(text, appSource(node, first.name), node);
  buildConfig(node, [...[...served].filter((a) => a.name !== app.name), app]);
  return app;
}
