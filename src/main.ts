// Process entry: command line, signals, start/stop order. Everything else lives in Daemon.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkConfig } from './config/load.ts';
import { ConfigError } from './config/types.ts';
import type { Daemon } from './daemon.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_CONFIG = path.join(ROOT, 'config', 'petrel.toml');

const USAGE = `usage: petrel <command> [options]

commands:
  start [--config PATH]     run the daemon (default config: config/petrel.toml, or $PETREL_CONFIG)
  check-config [PATH]       validate a node config (with its apps) or a single app file, then exit
  apps deploy FILE          validate an app file and deploy it through the local node's admin API
  apps list                 the node's apps
  apps show NAME            one app: its summary, then its app file
  apps destroy NAME [--yes] remove an app (asks for its name unless --yes)
                            (apps commands read the admin address and token from --config PATH)
  help                      this text

signals: SIGHUP reloads the config, SIGTERM/SIGINT shut down gracefully.
`;

function configArg(args: string[]): string {
  const i = args.indexOf('--config');
  if (i !== -1) {
    const v = args[i + 1];
    if (v === undefined) fail('--config needs a path');
    return path.resolve(v);
  }
  return defaultConfigPath();
}

/** The node config when no --config is given. */
function defaultConfigPath(): string {
  const env = process.env['PETREL_CONFIG'];
  return env ? path.resolve(env) : DEFAULT_CONFIG;
}

function fail(msg: string): never {
  process.stderr.write(`petrel: ${msg}\n`);
  process.exit(2);
}

function describeError(err: unknown): string {
  if (err instanceof ConfigError) return `invalid config: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

async function start(args: string[]): Promise<void> {
  const configPath = configArg(args);
  let d: Daemon;
  try {
    // Loaded lazily so that check-config does not pull in the whole data plane.
    const { Daemon } = await import('./daemon.ts');
    d = await Daemon.start({ configPath });
  } catch (err) {
    process.stderr.write(`petrel: cannot start: ${describeError(err)}\n`);
    process.exit(1);
  }
  const node = d.config.node;
  const addrs = d.addresses();
  const http = addrs.get(80);
  const https = addrs.get(443);
  const first = [...d.config.apps.values()][0];
  const host = first?.hostnames.find((h) => !h.startsWith('*.')) ?? 'localhost';
  const lines = [`petrel ${node.nodeId} (region ${node.region}) is up with ${d.config.apps.size} app(s).`];
  if (http !== undefined || https !== undefined) {
    const tries = [];
    if (http !== undefined) tries.push(`curl http://${host}:${http.port}/`);
    if (https !== undefined) tries.push(`curl -k https://${host}:${https.port}/`);
    lines.push(`  try: ${tries.join('   or   ')}`);
  }
  lines.push(`  admin: http://${node.admin.host}:${d.adminPort}/metrics  (reload: curl -X POST -H 'Authorization: Bearer ${node.admin.token ? '<your token>' : d.adminToken}' http://${node.admin.host}:${d.adminPort}/v1/reload)`);
  process.stderr.write(lines.join('\n') + '\n');
  d.log.root.info({ config: configPath, ports: Object.fromEntries([...addrs].map(([p, a]) => [p, `${a.host}:${a.port}`])), admin: `${node.admin.host}:${d.adminPort}` }, 'petrel started');

  process.on('SIGHUP', () => {
    void d.reload().then((r) => {
      if (!r.ok) process.stderr.write(`petrel: reload refused: ${r.error?.reason ?? 'unknown'}\n`);
    });
  });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) {
      process.stderr.write(`petrel: ${sig} again, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    d.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`petrel: shutdown failed: ${describeError(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Nothing a single request does may take the daemon down; log and carry on.
  process.on('uncaughtException', (err) => d.log.root.error({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => d.log.root.error({ err }, 'unhandled rejection (kept running)'));
}

async function check(args: string[]): Promise<void> {
  const target = args[0] ?? configArg(args);
  try {
    const lines = await checkConfig(path.resolve(target));
    process.stdout.write(lines.join('\n') + '\n');
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exit(1);
  }
}

const [cmd, ...rest] = process.argv.slice(2);
switch (cmd) {
  case 'start':
    await start(rest);
    break;
  case 'check-config':
    await check(rest);
    break;
  case 'apps': {
    // Loaded lazily, like the daemon: only this command needs the admin API client.
    const { runApps } = await import('./cli/apps.ts');
    process.exitCode = await runApps(rest, { defaultConfig: defaultConfigPath() });
    break;
  }
  case 'help':
  case '--help':
  case '-h':
    process.stdout.write(USAGE);
    break;
  case undefined:
    process.stdout.write(USAGE);
    process.exit(2);
    break;
  default:
    fail(`unknown command ${cmd}\n${USAGE}`);
}
