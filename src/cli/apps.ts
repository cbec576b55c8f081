// `petrel apps deploy|list|show|destroy`: the apps API of the local node, from the command line.
// The node config says where the admin listener is and which token it takes; an app file is
// validated here first with the same loader the daemon uses, so a typo is reported as
// file:line before anything is sent. What the node does with a deploy (write it to the cluster
// store, or refuse because the embedded store reads app files) is its answer to print.

import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { buildConfig, loadNodeConfig, parseAppConfig } from '../config/load.ts';
import { ConfigError, type AppConfig, type NodeConfig } from '../config/types.ts';

export const APPS_USAGE = `usage: petrel apps <command> [--config PATH]

commands:
  deploy FILE               validate an app file, then deploy it through the local node's admin API
  list                      the node's apps
  show NAME                 one app: its summary, then its app file
  destroy NAME [--yes]      remove an app (asks for its name unless --yes)

--config PATH: the node config (admin address and token); default $PETREL_CONFIG or config/petrel.toml
`;

/** Reads are quick; a deploy or destroy may wait for the store and for Machines to stop. */
const READ_TIMEOUT_MS = 10_000;
const WRITE_TIMEOUT_MS = 60_000;

/** A failure to report as `petrel: message` with this exit code (2: the command line is wrong). */
class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

interface Args {
  readonly command: string | undefined;
  readonly operands: readonly string[];
  readonly configPath: string;
  readonly yes: boolean;
}

interface AdminTarget {
  /** host:port as people write it ([v6]:port), for messages. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly token: string;
}

interface Reply {
  readonly status: number;
  readonly json: unknown;
  readonly text: string;
}

/** Runs `petrel apps ...args`; resolves with the exit code. */
export async function runApps(args: readonly string[], opts: { readonly defaultConfig: string }): Promise<number> {
  try {
    const a = parseArgs(args, opts.defaultConfig);
    switch (a.command) {
      case 'deploy':
        await deploy(a, operand(a, 'deploy FILE'));
        break;
      case 'list':
        await list(a);
        break;
      case 'show':
        await show(a, operand(a, 'show NAME'));
        break;
      case 'destroy':
        await destroy(a, operand(a, 'destroy NAME'));
        break;
      default:
        throw new CliError(`${a.command === undefined ? 'apps needs a command' : `unknown apps command ${a.command}`}\n${APPS_USAGE}`, 2);
    }
    return 0;
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    process.stderr.write(`petrel: ${err.message}\n`);
    return err.exitCode;
  }
}

function parseArgs(args: readonly string[], defaultConfig: string): Args {
  let configPath = defaultConfig;
  let yes = false;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--config') {
      const v = args[++i];
      if (v === undefined) throw new CliError('--config needs a path', 2);
      configPath = path.resolve(v);
    } else if (arg === '--yes' || arg === '-y') {
      yes = true;
    } else if (arg.startsWith('-') && arg !== '-') {
      throw new CliError(`unknown option ${arg}\n${APPS_USAGE}`, 2);
    } else {
      rest.push(arg);
    }
  }
  const [command, ...operands] = rest;
  return { command, operands, configPath, yes };
}

function operand(a: Args, usage: string): string {
  if (a.operands.length !== 1) throw new CliError(`usage: petrel apps ${usage}`, 2);
  return a.operands[0]!;
}

async function nodeConfig(a: Args): Promise<NodeConfig> {
  try {
    return await loadNodeConfig(a.configPath);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`invalid node config: ${err.message}`);
    throw err;
  }
}

/** Where the local node's admin API listens and the token it takes, from its node config. */
function adminTarget(node: NodeConfig): AdminTarget {
  const { host, port, token } = node.admin;
  if (port === 0) throw new CliError(`the admin listener of ${node.file} binds port 0 (a free port picked at start): give [admin] address a fixed port to use petrel apps`);
  // A generated token is only printed by the daemon at start; the CLI cannot know it.
  if (token === '') throw new CliError(`${node.file} has no admin token ([admin] token, or token_env naming a variable that is set): petrel apps needs the same token as the daemon`);
  // A wildcard bind is reached on loopback.
  const connect = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return { address: connect.includes(':') ? `[${connect}]:${port}` : `${connect}:${port}`, host: connect, port, token };
}

async function deploy(a: Args, file: string): Promise<void> {
  const node = await nodeConfig(a);
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${absolute} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const app = validate(text, absolute, node);
  const reply = await call(adminTarget(node), 'POST', '/v1/apps', { name: app.name, config: text }, WRITE_TIMEOUT_MS);
  const body = record(reply.json);
  const hostnames = Array.isArray(body['hostnames']) ? body['hostnames'].length : app.hostnames.length;
  const machines = typeof body['machines'] === 'number' ? body['machines'] : app.machines.length;
  process.stdout.write(`deployed app ${app.name} (${count(hostnames, 'hostname')}, ${count(machines, 'Machine')})\n`);
}

/** The loader's checks for one app file against this node: the same as `check-config FILE`. */
function validate(text: string, file: string, node: NodeConfig): AppConfig {
  try {
    const app = parseAppConfig(text, file, node);
    buildConfig(node, [app]);
    return app;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // The location first, alone on its line, the way editors and check-config print it.
    process.stderr.write(`${err.message}\n`);
    throw new CliError('the app file is invalid; nothing was deployed');
  }
}

async function list(a: Args): Promise<void> {
  const reply = await call(adminTarget(await nodeConfig(a)), 'GET', '/v1/apps', undefined, READ_TIMEOUT_MS);
  const apps = Array.isArray(reply.json) ? reply.json.map(record) : [];
  if (apps.length === 0) {
    process.stdout.write('no apps\n');
    return;
  }
  const rows = apps.map((app) => [
    String(app['name'] ?? ''),
    cell(app['machines']),
    cell(app['connections']),
    Array.isArray(app['hostnames']) ? app['hostnames'].join(', ') : '',
  ]);
  process.stdout.write(table([['NAME', 'MACHINES', 'CONNECTIONS', 'HOSTNAMES'], ...rows]));
}

async function show(a: Args, name: string): Promise<void> {
  const reply = await call(adminTarget(await nodeConfig(a)), 'GET', `/v1/apps/${encodeURIComponent(name)}`, undefined, READ_TIMEOUT_MS);
  const body = record(reply.json);
  // Every field the node sends is shown, so a store that adds some (revision, deployed at)
  // needs no CLI change; the TOML text comes last, as the file reads.
  const lines = [`app ${String(body['name'] ?? name)}`];
  for (const [key, value] of Object.entries(body)) {
    if (key === 'name' || key === 'config') continue;
    lines.push(`  ${key.replace(/_/g, ' ')}: ${Array.isArray(value) ? value.join(', ') : cell(value)}`);
  }
  const config = body['config'];
  if (typeof config === 'string') lines.push('', config.endsWith('\n') ? config.slice(0, -1) : config);
  process.stdout.write(lines.join('\n') + '\n');
}

async function destroy(a: Args, name: string): Promise<void> {
  const node = await nodeConfig(a);
  const target = adminTarget(node);
  if (!a.yes) await confirm(name);
  await call(target, 'DELETE', `/v1/apps/${encodeURIComponent(name)}`, undefined, WRITE_TIMEOUT_MS);
  process.stdout.write(`destroyed app ${name}\n`);
}

/** Destroying is not undone: ask on a terminal, refuse when nobody can be asked. */
async function confirm(name: string): Promise<void> {
  if (!process.stdin.isTTY) throw new CliError(`not destroying app ${name}: stdin is not a terminal to ask on; pass --yes`, 2);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  // Ctrl-D rejects the question; Ctrl-C would only pause the prompt (readline's default) and
  // leave the command hanging, so it aborts the question: either is a no.
  const ctrlC = new AbortController();
  rl.on('SIGINT', () => ctrlC.abort());
  const answer = await rl.question(`destroy app ${name} and its Machines? type its name to confirm: `, { signal: ctrlC.signal }).catch(() => null);
  rl.close();
  if (answer === null) process.stderr.write('\n');
  if (answer?.trim() !== name) throw new CliError(`not destroying app ${name}: ${answer === null ? 'not confirmed' : 'the name did not match'}`);
}

/** One request to the admin API; a non-2xx answer becomes a CliError with the API's code and reason. */
async function call(target: AdminTarget, method: string, pathName: string, body: unknown, timeoutMs: number): Promise<Reply> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const signal = AbortSignal.timeout(timeoutMs);
  let reply: Reply;
  try {
    reply = await send(target, method, pathName, payload, signal);
  } catch (err) {
    if (signal.aborted) throw new CliError(`petrel's admin API at ${target.address} did not answer within ${timeoutMs / 1000} s`);
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new CliError(`cannot reach petrel's admin API at ${target.address}: ${code}${code === 'ECONNREFUSED' ? ' (is the daemon running?)' : ''}`);
  }
  if (reply.status >= 200 && reply.status < 300) return reply;
  const error = record(record(reply.json)['error']);
  if (typeof error['code'] !== 'string') throw new CliError(`the admin API answered ${reply.status}: ${reply.text.trim().slice(0, 300)}`);
  const hint = reply.status === 401 ? ` (is the token in the node config the one the daemon at ${target.address} was started with?)` : '';
  throw new CliError(`${error['code']} ${String(error['reason'] ?? '')}${hint}`);
}

function send(target: AdminTarget, method: string, pathName: string, payload: string | undefined, signal: AbortSignal): Promise<Reply> {
  const headers: Record<string, string> = { authorization: `Bearer ${target.token}`, accept: 'application/json' };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: target.host, port: target.port, method, path: pathName, headers, agent: false, signal }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('error', reject);
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function record(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return '-';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Columns padded to their widest cell; the last one is not padded (no trailing blanks). */
function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}
