// Config keys for the cluster (issue 5): `[store]` and `[cluster]` in the node config and `node` in
// `[[machines]]`. Every key is read with its default; every refusal names file, key path and line.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

import { checkConfig, loadAppFile, loadNodeConfig, parseAppConfig, parseNodeConfig } from '../src/config/load.ts';
import type { Env } from '../src/config/load.ts';
import type { AppConfig, NodeConfig } from '../src/config/types.ts';
import { NATS_DEFAULTS, resolveNatsConfig } from '../src/store/config.ts';

import { APP_FILE, NODE_FILE, throwsConfig, tree } from './helpers/config-assert.ts';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = parseNodeConfig('', NODE_FILE, { env: {} });
const CREDS = '-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUAM\n------END USER NKEY SEED------\n';

/** `[store]` on line 1, kind on 2, servers on 3; `more` starts on line 4. */
function natsText(...more: string[]): string {
  return ['[store]', 'kind = "nats"', 'servers = ["nats://10.0.0.5:4222"]', ...more].join('\n');
}

function node(text: string, env: Env = {}, file = NODE_FILE): NodeConfig {
  return parseNodeConfig(text, file, { env });
}

function app(text: string): AppConfig {
  return parseAppConfig(text, APP_FILE, NODE);
}

/** A machine entry: `[[machines]]` on line 2, `more` from line 5. */
function machineText(...more: string[]): string {
  return ['app = "web"', '[[machines]]', 'id = "m1"', 'driver = "static"\naddress = "127.0.0.1:1"', ...more].join('\n');
}

// ---- [store] ------------------------------------------------------------------------------------

t.test('[store] is embedded unless it says otherwise', async (t) => {
  t.same(NODE.store, { kind: 'embedded' });
  t.same(node('[store]').store, { kind: 'embedded' });
  t.same(node('[store]\nkind = "embedded"').store, { kind: 'embedded' });
  t.same(node('store = { kind = "embedded" }').store, { kind: 'embedded' });
  t.same((await loadNodeConfig(path.join(ROOT, 'config/petrel.toml'), { env: {} })).store, { kind: 'embedded' }, 'the demo runs alone');
});

t.test('[store] kind = "nats": defaults, and absent keys are left out', async (t) => {
  const store = node(natsText()).store;
  t.same(store, { kind: 'nats', servers: ['nats://10.0.0.5:4222'], bucketPrefix: 'petrel', replicas: 1 });
  t.same(Object.keys(store), ['kind', 'servers', 'bucketPrefix', 'replicas'], 'no key holds undefined');
  t.equal(JSON.stringify(store), JSON.stringify(node(natsText()).store), 'the same text gives the same JSON (reload compares it)');
  t.ok(Object.isFrozen(store) && Object.isFrozen(store.kind === 'nats' && store.servers));
  const resolved = resolveNatsConfig(store as Parameters<typeof resolveNatsConfig>[0]);
  t.equal(resolved.opTimeoutMs, NATS_DEFAULTS.opTimeoutMs, 'the daemon resolves the waits');
});

t.test('[store] kind = "nats": every key', async (t) => {
  const withToken = node(
    natsText(
      'token_env = "NATS_TOKEN"',
      'bucket_prefix = "eu-prod_1"',
      'replicas = 3',
      'connect_timeout = "2s"',
      'op_timeout = 1500', // bare number = milliseconds, as in [limits]
      'request_timeout = "10s"',
      'ping_interval = "20s"',
      'max_ping_out = 4',
      'reconnect_min = "100ms"',
      'reconnect_max = "1m"',
      'watch_check = "3s"',
    ).replace('servers = ["nats://10.0.0.5:4222"]', 'servers = ["nats://10.0.0.5:4222", "nats-2.internal:4223", "[::1]:4222", "NATS://Upper.Example:4222"]'),
    { NATS_TOKEN: 's3cret' },
  ).store;
  t.same(withToken, {
    kind: 'nats',
    servers: ['nats://10.0.0.5:4222', 'nats-2.internal:4223', '[::1]:4222', 'NATS://Upper.Example:4222'],
    token: 's3cret',
    bucketPrefix: 'eu-prod_1',
    replicas: 3,
    connectTimeoutMs: 2000,
    opTimeoutMs: 1500,
    requestTimeoutMs: 10_000,
    pingIntervalMs: 20_000,
    reconnectMinMs: 100,
    reconnectMaxMs: 60_000,
    watchCheckMs: 3000,
    maxPingOut: 4,
  });

  t.same(node(natsText('token = "inline"')).store, { kind: 'nats', servers: ['nats://10.0.0.5:4222'], token: 'inline', bucketPrefix: 'petrel', replicas: 1 });
  const userPass = node(natsText('user = "petrel"', 'pass_env = "NATS_PASS"', 'replicas = 5'), { NATS_PASS: 'pw' }).store;
  t.same(userPass, { kind: 'nats', servers: ['nats://10.0.0.5:4222'], user: 'petrel', pass: 'pw', bucketPrefix: 'petrel', replicas: 5 });
  t.same(node(natsText('user = "petrel"', 'pass = "inline"')).store, {
    kind: 'nats',
    servers: ['nats://10.0.0.5:4222'],
    user: 'petrel',
    pass: 'inline',
    bucketPrefix: 'petrel',
    replicas: 1,
  });

  const dir = tree(t, { 'etc/petrel.toml': '', 'etc/nats/petrel.creds': CREDS });
  const file = path.join(dir, 'etc/petrel.toml');
  t.same(node(natsText('creds_file = "nats/petrel.creds"'), {}, file).store, {
    kind: 'nats',
    servers: ['nats://10.0.0.5:4222'],
    credsFile: path.join(dir, 'etc/nats/petrel.creds'),
    bucketPrefix: 'petrel',
    replicas: 1,
  }, 'creds_file is relative to the config file');
  const absolute = path.join(dir, 'etc/nats/petrel.creds');
  t.equal((node(natsText(`creds_file = "${absolute}"`)).store as { credsFile?: string }).credsFile, absolute, 'an absolute path stays');
});

t.test('[store] refusals name key and line', async (t) => {
  const bad = (text: string, key: string, line: number, reason: RegExp, env: Env = {}): void =>
    throwsConfig(t, () => node(text, env), { file: NODE_FILE, key, line, reason });

  bad('[store]\nkind = "redis"', 'store.kind', 2, /must be one of "embedded", "nats", got "redis"/);
  bad('[store]\nkind = 1', 'store.kind', 2, /expected a string/);
  bad('store = "nats"', 'store', 1, /expected a table/);

  // The embedded store takes no other key: a forgotten kind = "nats" must not leave a node alone.
  bad('[store]\nkind = "embedded"\nservers = ["a:4222"]', 'store.servers', 3, /only applies to kind = "nats" \(this \[store\] has kind = "embedded"\); keys that only apply to nats: servers, token, token_env/);
  bad('\n[store]\nreplicas = 3\ntoken = "t"', 'store.replicas', 3, /only applies to kind = "nats" \(this \[store\] has no kind, so the default "embedded"\)/);
  bad('[store]\nkind = "embedded"\nurl = "x"', 'store.url', 3, /unknown key/);

  // servers
  bad('[store]\nkind = "nats"', 'store.servers', 1, /missing required key: kind = "nats" needs the NATS servers to connect to/);
  bad('[store]\nkind = "nats"\nservers = []', 'store.servers', 3, /at least one NATS server/);
  bad('[store]\nkind = "nats"\nservers = "a:4222"', 'store.servers', 3, /expected a list of strings/);
  bad('[store]\nkind = "nats"\nservers = [4222]', 'store.servers[0]', 3, /expected a string, got the integer 4222/);
  const server = (value: string, reason: RegExp): void =>
    bad(`[store]\nkind = "nats"\nservers = [\n  "nats://ok:4222",\n  ${JSON.stringify(value)},\n]`, 'store.servers[1]', 5, reason);
  server('http://b:4222', /"http:\/\/b:4222" is not "nats:\/\/host:port" or "host:port".*only the nats:\/\/ scheme/);
  server('tls://b:4222', /only the nats:\/\/ scheme/);
  server('nats://b', /add the port \(NATS clients use 4222 by default\)/);
  server('b', /add the port/);
  server('nats://petrel:pw@b:4222', /holds credentials: set token, user and pass, or creds_file/);
  server('nats://b:4222/', /is not "nats:\/\/host:port"/);
  server('bad_host:4222', /the host is not a valid host name or IP address/);
  server('[zz::1]:4222', /the host is not a valid host name/);
  server('::1:4222', /IPv6 as "\[::1\]:4222"/);
  server('b:0', /the port must be 1-65535/);
  server('b:65536', /the port must be 1-65535/);
  server('', /is not "nats:\/\/host:port"/);
  server('OK:4222', /"OK:4222" is listed twice \(first on line 4\)/);

  // token, user, pass
  bad(natsText('token = "t"', 'user = "u"', 'pass = "p"'), 'store.user', 5, /token and user\/pass are exclusive \(token is on line 4\)/);
  bad(natsText('user = "u"', 'pass = "p"', 'token_env = "T"'), 'store.token_env', 6, /exclusive \(user is on line 4\)/, { T: 'x' });
  bad(natsText('token = "t"', 'token_env = "T"'), 'store.token_env', 5, /set either token or token_env, not both/, { T: 'x' });
  bad(natsText('token_env = "PETREL_NATS_TOKEN"'), 'store.token_env', 4, /environment variable PETREL_NATS_TOKEN is not set/);
  bad(natsText('token_env = "PETREL_NATS_TOKEN"'), 'store.token_env', 4, /PETREL_NATS_TOKEN is empty/, { PETREL_NATS_TOKEN: '' });
  bad(natsText('token_env = "1BAD"'), 'store.token_env', 4, /is not valid: use letters, digits and underscores/);
  bad(natsText('token = ""'), 'store.token', 4, /must not be empty/);
  bad(natsText('user = "u"'), 'store.user', 4, /user and pass go together: user is set, so set pass or pass_env too/);
  bad(natsText('pass = "p"'), 'store.pass', 4, /user and pass go together: pass is set without user/);
  bad(natsText('pass_env = "P"'), 'store.pass_env', 4, /pass_env is set without user/, { P: 'pw' });
  bad(natsText('user = "u"', 'pass_env = "P"'), 'store.pass_env', 5, /environment variable P is not set/);
  bad(natsText('user = ""', 'pass = "p"'), 'store.user', 4, /must not be empty/);

  // creds_file
  const dir = tree(t, { 'petrel.toml': '', 'petrel.creds': CREDS, 'key.pem': '-----BEGIN PRIVATE KEY-----\n', 'sub/x': '' });
  const file = path.join(dir, 'petrel.toml');
  const inDir = (text: string, key: string, line: number, reason: RegExp): void => throwsConfig(t, () => node(text, {}, file), { file, key, line, reason });
  inDir(natsText('creds_file = "missing.creds"'), 'store.creds_file', 4, new RegExp(`cannot read ${path.join(dir, 'missing.creds')} \\(ENOENT\\); it must be a readable NATS .creds file`));
  inDir(natsText('creds_file = "sub"'), 'store.creds_file', 4, /\(EISDIR\)/);
  inDir(natsText('creds_file = "key.pem"'), 'store.creds_file', 4, /is not a readable NATS \.creds file \(no "-----BEGIN NATS USER JWT-----"\)/);
  inDir(natsText('creds_file = ""'), 'store.creds_file', 4, /give the path of a readable NATS \.creds file/);
  inDir(natsText('token = "t"', 'creds_file = "petrel.creds"'), 'store.creds_file', 5, /set creds_file alone: it replaces token/);
  inDir(natsText('user = "u"', 'pass = "p"', 'creds_file = "petrel.creds"'), 'store.creds_file', 6, /it replaces user\/pass/);
  if (process.getuid?.() !== 0) {
    fs.chmodSync(path.join(dir, 'petrel.creds'), 0o000);
    inDir(natsText('creds_file = "petrel.creds"'), 'store.creds_file', 4, /\(EACCES\)/);
  }

  // bucket_prefix, replicas
  bad(natsText('bucket_prefix = "a.b"'), 'store.bucket_prefix', 4, /must be 1-32 characters of \[-_A-Za-z0-9\], starting with a letter or digit, got "a\.b" \(it names the buckets/);
  bad(natsText('bucket_prefix = "-x"'), 'store.bucket_prefix', 4, /starting with a letter or digit/);
  bad(natsText(`bucket_prefix = "${'p'.repeat(33)}"`), 'store.bucket_prefix', 4, /1-32 characters/);
  bad(natsText('bucket_prefix = ""'), 'store.bucket_prefix', 4, /1-32 characters/);
  bad(natsText('replicas = 2'), 'store.replicas', 4, /must be 1, 3 or 5, got 2 \(a replicated bucket needs a majority/);
  bad(natsText('replicas = 7'), 'store.replicas', 4, /must be 1, 3 or 5, got 7/);
  bad(natsText('replicas = 0'), 'store.replicas', 4, /must be at least 1, got 0/);
  bad(natsText('replicas = "3"'), 'store.replicas', 4, /expected an integer, got the string "3"/);

  // waits
  bad(natsText('connect_timeout = "0s"'), 'store.connect_timeout', 4, /greater than zero/);
  bad(natsText('op_timeout = "5 s"'), 'store.op_timeout', 4, /invalid duration "5 s"/);
  bad(natsText('ping_interval = true'), 'store.ping_interval', 4, /expected a duration/);
  bad(natsText('watch_check = -1'), 'store.watch_check', 4, /greater than zero/);
  bad(natsText('request_timeout = "1000h"'), 'store.request_timeout', 4, /at most 2147483647ms/);
  bad(natsText('max_ping_out = 0'), 'store.max_ping_out', 4, /must be at least 1, got 0/);
  bad(natsText('max_ping_out = 1.5'), 'store.max_ping_out', 4, /expected an integer/);
  bad(natsText('reconnect_min = "2s"', 'reconnect_max = "1s"'), 'store.reconnect_max', 5, /must be >= reconnect_min$/);
  bad(natsText('reconnect_min = "10s"'), 'store.reconnect_min', 4, /reconnect_max \(5s, the default\) must be >= reconnect_min/);

  // typos
  bad(natsText('server = ["b:4222"]'), 'store.server', 4, /unknown key; did you mean "servers"\?/);
  bad(natsText('bucket = "x"'), 'store.bucket', 4, /unknown key/);
});

// ---- [cluster] ----------------------------------------------------------------------------------

const CLUSTER_DEFAULTS = {
  heartbeatIntervalMs: 1000,
  nodeDeadAfterMs: 5000,
  loadPublishIntervalMs: 200,
  applyDebounceMs: 50,
  ownerRequestTimeoutMs: 30_000,
};

t.test('[cluster] defaults and every key', async (t) => {
  t.same(NODE.cluster, CLUSTER_DEFAULTS);
  t.same(node('[cluster]').cluster, CLUSTER_DEFAULTS);
  t.same(node(natsText()).cluster, CLUSTER_DEFAULTS, 'the same with a shared store');
  const cluster = node(
    [
      '[cluster]',
      'heartbeat_interval = "2s"',
      'node_dead_after = "10s"',
      'load_publish_interval = 500', // bare number = milliseconds
      'apply_debounce = 0', // 0: no batching
      'owner_request_timeout = "1m"',
    ].join('\n'),
  ).cluster;
  t.same(cluster, { heartbeatIntervalMs: 2000, nodeDeadAfterMs: 10_000, loadPublishIntervalMs: 500, applyDebounceMs: 0, ownerRequestTimeoutMs: 60_000 });
  t.equal(node('[cluster]\nheartbeat_interval = "2.5s"').cluster.nodeDeadAfterMs, 5000, 'exactly two heartbeats is enough');
  t.equal(node('[cluster]\nnode_dead_after = "2s"').cluster.nodeDeadAfterMs, 2000);
  t.ok(Object.isFrozen(cluster));
});

t.test('[cluster] refusals name key and line', async (t) => {
  const bad = (text: string, key: string, line: number, reason: RegExp): void =>
    throwsConfig(t, () => node(text), { file: NODE_FILE, key, line, reason });
  bad(
    '[cluster]\nheartbeat_interval = "1s"\nnode_dead_after = "1.5s"',
    'cluster.node_dead_after',
    3,
    /node_dead_after \(1\.5s\) must be at least 2 x heartbeat_interval \(1s\), i\.e\. 2s: with less, a live node would look dead between two heartbeats/,
  );
  bad('[cluster]\nnode_dead_after = "1s"', 'cluster.node_dead_after', 2, /at least 2 x heartbeat_interval \(1s\)/);
  bad('[cluster]\nheartbeat_interval = "3s"', 'cluster.heartbeat_interval', 2, /node_dead_after \(5s, the default\) must be at least 2 x heartbeat_interval \(3s\), i\.e\. 6s/);
  bad('[cluster]\nheartbeat_interval = "0s"', 'cluster.heartbeat_interval', 2, /must be greater than zero/);
  bad('[cluster]\nheartbeat_interval = 0', 'cluster.heartbeat_interval', 2, /must be greater than zero/);
  bad('[cluster]\nnode_dead_after = 0', 'cluster.node_dead_after', 2, /must be greater than zero/);
  bad('[cluster]\nload_publish_interval = "0ms"', 'cluster.load_publish_interval', 2, /must be greater than zero/);
  bad('[cluster]\napply_debounce = -1', 'cluster.apply_debounce', 2, /must not be negative/);
  bad('[cluster]\nowner_request_timeout = "soon"', 'cluster.owner_request_timeout', 2, /invalid duration "soon"/);
  bad('[cluster]\nheartbeat_intervall = "1s"', 'cluster.heartbeat_intervall', 2, /unknown key; did you mean "heartbeat_interval"\?/);
  bad('cluster = 5', 'cluster', 1, /expected a table/);
  bad('[clusters]', 'clusters', 1, /unknown key; did you mean "cluster"\?/);
});

// ---- node in [[machines]] -----------------------------------------------------------------------

t.test('[[machines]] node', async (t) => {
  t.equal(app(machineText()).machines[0]!.node, null, 'absent: the node that deploys the app');
  t.equal(app(machineText('node = "ams-1.prod_2"')).machines[0]!.node, 'ams-1.prod_2');
  const proc = app('app = "web"\n[[machines]]\nid = "p1"\ndriver = "process"\ncmd = "node server.js"\nnode = "b"').machines[0]!;
  t.equal(proc.node, 'b', 'every driver takes it');

  const bad = (value: string, reason: RegExp): void => throwsConfig(t, () => app(machineText(`node = ${value}`)), { key: 'machines[0].node', line: 6, reason });
  bad('"bad node"', /"bad node" is not valid: use letters, digits, "\.", "_" and "-", starting with a letter or digit/);
  bad('"-a"', /is not valid/);
  bad('""', /is not valid/);
  bad('"a/b"', /is not valid/);
  bad('5', /expected a string, got the integer 5/);
  throwsConfig(t, () => app(machineText('nodes = "a"')), { key: 'machines[0].nodes', line: 6, reason: /did you mean "node"\?/ });
});

// ---- check-config and the reference files -----------------------------------------------------

t.test('check-config shows the shared store and the owning node, never a secret', async (t) => {
  const dir = tree(t, {
    'petrel.toml': [
      'node_id = "ams-1"',
      'apps_dir = "apps"',
      '[admin]',
      'address = "127.0.0.1:0"',
      '[store]',
      'kind = "nats"',
      'servers = ["nats://10.0.0.5:4222", "10.0.0.6:4222"]',
      'token_env = "NATS_TOKEN"',
      'bucket_prefix = "eu"',
      'replicas = 3',
    ].join('\n'),
    'apps/web.toml': machineText('node = "ams-2"'),
  });
  const lines = await checkConfig(path.join(dir, 'petrel.toml'), { env: { NATS_TOKEN: 'do-not-print-me' } });
  t.ok(lines.includes('store: nats nats://10.0.0.5:4222, 10.0.0.6:4222, prefix eu, replicas 3, token set'), lines.join('\n'));
  t.ok(lines.includes('  machine m1 (static, local, node ams-2): 127.0.0.1:1'), lines.join('\n'));
  t.notOk(lines.some((l) => l.includes('do-not-print-me')), 'the token is never printed');

  const embedded = await checkConfig(path.join(ROOT, 'config/petrel.toml'), { env: {} });
  t.notOk(embedded.some((l) => l.startsWith('store:')), 'nothing to say about the embedded store');
  t.ok(embedded.some((l) => l.includes('machine hello-1 (process, local)')), 'no node, no mention');
});

t.test('check-config names the user but not the password', async (t) => {
  const { describeNode } = await import('../src/config/load/describe.ts');
  const lines = describeNode(node(natsText('user = "petrel"', 'pass = "hunter2"')), 0);
  t.ok(lines.includes('store: nats nats://10.0.0.5:4222, prefix petrel, replicas 1, user petrel with password'), lines.join('\n'));
  t.notOk(lines.some((l) => l.includes('hunter2')));
  const dir = tree(t, { 'petrel.creds': CREDS });
  const creds = describeNode(node(natsText('creds_file = "petrel.creds"'), {}, path.join(dir, 'petrel.toml')), 0);
  t.ok(creds.includes(`store: nats nats://10.0.0.5:4222, prefix petrel, replicas 1, creds ${path.join(dir, 'petrel.creds')}`));
  t.notOk(creds.some((l) => l.includes('SUAM')), 'nor what the creds file holds');
});

t.test('the reference files document [store], [cluster] and node at their defaults', async (t) => {
  const reference = await loadNodeConfig(path.join(ROOT, 'config/examples/node-reference.toml'), { env: {} });
  t.same(reference.store, { kind: 'embedded' });
  t.same(reference.cluster, CLUSTER_DEFAULTS);
  const text = fs.readFileSync(path.join(ROOT, 'config/examples/node-reference.toml'), 'utf8');
  // Every nats key is documented (commented out, since the reference loads with an empty env).
  for (const key of ['servers', 'token', 'token_env', 'user', 'pass', 'pass_env', 'creds_file', 'bucket_prefix', 'replicas', 'connect_timeout', 'op_timeout', 'request_timeout', 'ping_interval', 'max_ping_out', 'reconnect_min', 'reconnect_max', 'watch_check']) {
    t.match(text, new RegExp(`^# ${key} = .*# `, 'm'), `${key} is documented`);
  }
  // The commented-out nats block, switched on, is a valid [store] of its own.
  const store = text.slice(text.indexOf('[store]'), text.indexOf('[cluster]'));
  const active = store
    .replace('kind = "embedded"', 'kind = "nats"')
    .replace(/^# (servers|token_env|bucket_prefix|replicas|connect_timeout|op_timeout|request_timeout|ping_interval|max_ping_out|reconnect_min|reconnect_max|watch_check) = /gm, '$1 = ');
  t.same(node(active, { PETREL_NATS_TOKEN: 't' }).store, {
    kind: 'nats',
    servers: ['nats://10.0.0.5:4222', '10.0.0.6:4222'],
    token: 't',
    bucketPrefix: 'petrel',
    replicas: 1,
    connectTimeoutMs: NATS_DEFAULTS.connectTimeoutMs,
    opTimeoutMs: NATS_DEFAULTS.opTimeoutMs,
    requestTimeoutMs: NATS_DEFAULTS.requestTimeoutMs,
    pingIntervalMs: NATS_DEFAULTS.pingIntervalMs,
    reconnectMinMs: NATS_DEFAULTS.reconnectMinMs,
    reconnectMaxMs: NATS_DEFAULTS.reconnectMaxMs,
    watchCheckMs: NATS_DEFAULTS.watchCheckMs,
    maxPingOut: NATS_DEFAULTS.maxPingOut,
  }, 'the documented defaults are the store\'s');

  const a = await loadAppFile(path.join(ROOT, 'config/examples/app-reference.toml'), NODE);
  t.same(a.machines.map((m) => m.node), [null, null]);
  t.match(fs.readFileSync(path.join(ROOT, 'config/examples/app-reference.toml'), 'utf8'), /^# node = "ams-1" +# default: /m, 'node is documented');
});
