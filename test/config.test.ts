import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';

import { formatDuration, formatSize, parseDuration, parseSize } from '../src/config/durations.ts';
import {
  BUILT_IN_NODE,
  buildConfig,
  checkConfig,
  defaultLimits,
  loadAppFile,
  loadConfig,
  loadNodeConfig,
  parseAppConfig,
  parseNodeConfig,
} from '../src/config/load.ts';
import type { AppConfig, HttpCheck, NodeConfig } from '../src/config/types.ts';

import { APP_FILE, NODE_FILE, rejectsConfig, throwsConfig, tree, type Wanted } from './helpers/config-assert.ts';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = parseNodeConfig('', NODE_FILE, { env: {} });

function app(text: string, node: NodeConfig = NODE, file = APP_FILE): AppConfig {
  return parseAppConfig(text, file, node);
}


function isDeepFrozen(value: unknown, seen = new Set<unknown>()): boolean {
  if (typeof value !== 'object' || value === null || seen.has(value)) return true;
  seen.add(value);
  if (!Object.isFrozen(value)) return false;
  const children = value instanceof Map ? [...value.values()] : Object.values(value);
  return children.every((child) => isDeepFrozen(child, seen));
}

// ------------------------------------------------------------------------------------------------

t.test('durations and sizes', async (t) => {
  t.equal(parseDuration('10s'), 10_000);
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('2m'), 120_000);
  t.equal(parseDuration('1h'), 3_600_000);
  t.equal(parseDuration('1.5s'), 1_500);
  t.equal(parseDuration('1m30s'), 90_000);
  for (const bad of ['', '10', 's', '10 s', '-1s', '1d', '1.s', '10sec', ' 1s']) t.equal(parseDuration(bad), undefined, bad);
  t.equal(formatDuration(90_000), '1m30s');
  t.equal(formatDuration(1_500), '1.5s');
  t.equal(formatDuration(250), '250ms');
  t.equal(formatDuration(3_600_000), '1h');
  for (const ms of [90_000, 1_500, 250, 3_600_000, 3_723_500]) t.equal(parseDuration(formatDuration(ms)), ms, 'round trip');
  t.equal(parseSize('16KiB'), 16_384);
  t.equal(parseSize('1MiB'), 1_048_576);
  t.equal(parseSize('1.5 MiB'), 1_572_864);
  t.equal(parseSize('64kB'), 64_000);
  t.equal(parseSize('10B'), 10);
  for (const bad of ['16', '16kib', '1.3B', 'KiB', '16 KiB ']) t.equal(parseSize(bad), undefined, bad);
  t.equal(formatSize(16_384), '16KiB');
  t.equal(formatSize(1000), '1000B');
});

t.test('node config defaults', async (t) => {
  const node = parseNodeConfig('', NODE_FILE, { env: {} });
  t.equal(node.file, NODE_FILE);
  t.equal(node.nodeId, os.hostname());
  t.equal(node.region, 'local');
  t.equal(node.location, null);
  t.equal(node.defaultDomain, 'localhost');
  t.equal(node.appsDir, '/srv/petrel/apps');
  t.equal(node.certsDir, '/srv/certs');
  t.equal(node.logLevel, 'info');
  t.equal(node.bindHost, '0.0.0.0');
  t.same(node.listen, []);
  t.same(node.admin, { host: '127.0.0.1', port: 9091, token: '' });
  t.same(node.limits, {
    maxHeaderBytes: 16_384,
    maxHeaderCount: 100,
    maxUriBytes: 8_192,
    headerReadTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
    tlsHandshakeTimeoutMs: 10_000,
    connectTimeoutMs: 5_000,
    responseTimeoutMs: 60_000,
    upstreamIdleTimeoutMs: 30_000,
    upstreamMaxIdlePerMachine: 64,
    connectAttempts: 3,
    retryBufferBytes: 65_536,
    replayBufferBytes: 1_048_576,
    queueLength: 100,
    queueTimeoutMs: 5_000,
    wakeTimeoutMs: 30_000,
    autostopIntervalMs: 30_000,
    autostopIdleMs: 300_000,
    stopDrainTimeoutMs: 30_000,
    maxConnectionsPerApp: 10_000,
    maxConnections: 50_000,
    shutdownTimeoutMs: 30_000,
    h2MaxConcurrentStreams: 100,
    tunnelIdleTimeoutMs: 3_600_000,
    drainIdleTimeoutMs: 1_000,
  });
  t.same(defaultLimits(), node.limits);
  t.ok(isDeepFrozen(node));
});

t.test('node config: every key', async (t) => {
  const text = [
    'node_id = "ams-1"', // 1
    'region = "ams"', // 2
    'location = { lat = 52.37, lon = 4.89 }', // 3
    'default_domain = "Apps.Example.COM"', // 4
    'apps_dir = "/etc/petrel/apps.d"', // 5
    'certs_dir = "tls"', // 6
    'log_level = "debug"', // 7
    'bind_host = "::"', // 8
    '[[listen]]', // 9
    'port = 80', // 10
    'address = "[::]:8080"', // 11
    '[[listen]]', // 12
    'port = 443', // 13
    'address = "127.0.0.1:0"', // 14
    '[admin]', // 15
    'address = "127.0.0.1:0"', // 16
    'token_env = "MY_TOKEN"', // 17
    '[limits]', // 18
    'max_header_bytes = "32KiB"', // 19
    'max_uri_bytes = 4096', // 20
    'header_read_timeout = "1.5s"', // 21
    'idle_timeout = 250', // 22: bare number = ms
    'upstream_max_idle_per_machine = 0', // 23
    'queue_length = 0', // 24
    'wake_timeout = "1m"', // 25
    '[store]', // 26
    'kind = "embedded"', // 27
  ].join('\n');
  const node = parseNodeConfig(text, NODE_FILE, { env: { MY_TOKEN: 's3cret' } });
  t.equal(node.nodeId, 'ams-1');
  t.equal(node.region, 'ams');
  t.same(node.location, { lat: 52.37, lon: 4.89 });
  t.equal(node.defaultDomain, 'apps.example.com');
  t.equal(node.appsDir, '/etc/petrel/apps.d');
  t.equal(node.certsDir, '/srv/petrel/tls');
  t.equal(node.logLevel, 'debug');
  t.equal(node.bindHost, '::');
  t.same(node.listen, [
    { port: 80, host: '::', bindPort: 8080 },
    { port: 443, host: '127.0.0.1', bindPort: 0 },
  ]);
  t.same(node.admin, { host: '127.0.0.1', port: 0, token: 's3cret' });
  t.equal(node.limits.maxHeaderBytes, 32_768);
  t.equal(node.limits.maxUriBytes, 4096);
  t.equal(node.limits.headerReadTimeoutMs, 1500);
  t.equal(node.limits.idleTimeoutMs, 250);
  t.equal(node.limits.upstreamMaxIdlePerMachine, 0);
  t.equal(node.limits.queueLength, 0);
  t.equal(node.limits.wakeTimeoutMs, 60_000);
  t.equal(node.limits.connectAttempts, 3, 'unset keys keep their default');
  t.same(node.sources.get('limits.wake_timeout'), { file: NODE_FILE, line: 25 });
  t.same(node.sources.get('listen[1]'), { file: NODE_FILE, line: 12 });
  t.ok(isDeepFrozen(node));
  t.throws(() => (node.sources as Map<string, unknown>).set('x', 1), TypeError, 'maps refuse writes');

  t.equal(parseNodeConfig('[admin]\ntoken = "inline"', NODE_FILE).admin.token, 'inline');
  t.equal(parseNodeConfig('[admin]\ntoken_env = "UNSET_VAR"', NODE_FILE, { env: {} }).admin.token, '', 'unset variable: generated later');
});

t.test('node config errors', async (t) => {
  const node = (text: string) => () => parseNodeConfig(text, NODE_FILE, { env: {} });
  const at = (key: string, line: number, reason: RegExp): Wanted => ({ file: NODE_FILE, key, line, reason });
  throwsConfig(t, node('region = "ams"\nregoin = "x"'), at('regoin', 2, /unknown key; did you mean "region"\?/));
  throwsConfig(t, node('\n[limits]\nmax_header_byte = 1'), at('limits.max_header_byte', 3, /did you mean "max_header_bytes"/));
  throwsConfig(t, node('region = 5'), at('region', 1, /expected a string, got the integer 5/));
  throwsConfig(t, node('region = "Amsterdam"'), at('region', 1, /lower-case letters/));
  throwsConfig(t, node('node_id = "no spaces"'), at('node_id', 1, /not valid/));
  throwsConfig(t, node('log_level = "verbose"'), at('log_level', 1, /must be one of "fatal", "error", .* got "verbose"/));
  throwsConfig(t, node('default_domain = "bad domain"'), at('default_domain', 1, /not a valid host name/));
  throwsConfig(t, node('apps_dir = ""'), at('apps_dir', 1, /give a directory/));
  throwsConfig(t, node('location = { lat = 91, lon = 0 }'), at('location.lat', 1, /between -90 and 90/));
  throwsConfig(t, node('\n[location]\nlat = 1'), at('location.lon', 2, /missing required key/));
  throwsConfig(t, node('location = "ams"'), at('location', 1, /expected a table, got the string "ams"/));
  throwsConfig(t, node('\n\n[[listen]]\naddress = "0.0.0.0:8080"'), at('listen[0].port', 3, /missing required key/));
  throwsConfig(t, node('[[listen]]\nport = 80'), at('listen[0].address', 1, /missing required key/));
  throwsConfig(t, node('[[listen]]\nport = 0\naddress = ":80"'), at('listen[0].port', 2, /between 1 and 65535, got 0/));
  throwsConfig(t, node('[[listen]]\nport = 80\naddress = "8080"'), at('listen[0].address', 3, /is not "host:port"/));
  throwsConfig(t, node('[[listen]]\nport = 80\naddress = "0.0.0.0:70000"'), at('listen[0].address', 3, /is not "host:port"/));
  throwsConfig(t, node('[[listen]]\nport = 80\naddress = "::1:80"'), at('listen[0].address', 3, /IPv6 as "\[::1\]:port"/));
  throwsConfig(
    t,
    node('[[listen]]\nport = 80\naddress = "0.0.0.0:8080"\n[[listen]]\nport = 80\naddress = "0.0.0.0:8081"'),
    at('listen[1].port', 5, /already has a \[\[listen\]\] entry \(line 1\)/),
  );
  throwsConfig(
    t,
    node('[[listen]]\nport = 80\naddress = "0.0.0.0:8080"\n[[listen]]\nport = 81\naddress = "127.0.0.1:8080"'),
    at('listen[1].address', 6, /127\.0\.0\.1:8080 is already bound by public port 80/),
  );
  throwsConfig(t, node('[[listen]]\nport = 80\naddress = "127.0.0.1:9091"'), at('listen[0].address', 3, /already bound by the admin listener/));
  throwsConfig(t, node('listen = { port = 80 }'), at('listen', 1, /expected a list of tables/));
  throwsConfig(t, node('[admin]\ntoken = "a"\ntoken_env = "B"'), at('admin.token_env', 3, /either token or token_env/));
  throwsConfig(t, node('[admin]\ntoken_env = "1BAD"'), at('admin.token_env', 2, /not valid/));
  throwsConfig(t, node('[admin]\naddress = "localhost"'), at('admin.address', 2, /host:port/));
  throwsConfig(t, node('[limits]\nmax_header_bytes = 0'), at('limits.max_header_bytes', 2, /at least 1 bytes, got 0/));
  throwsConfig(t, node('[limits]\nmax_header_bytes = "16kb"'), at('limits.max_header_bytes', 2, /invalid size "16kb"/));
  throwsConfig(t, node('[limits]\nmax_header_bytes = 1.5'), at('limits.max_header_bytes', 2, /invalid size 1\.5/));
  throwsConfig(t, node('[limits]\nmax_header_bytes = true'), at('limits.max_header_bytes', 2, /expected a size/));
  throwsConfig(t, node('[limits]\nconnect_attempts = 0'), at('limits.connect_attempts', 2, /at least 1, got 0/));
  throwsConfig(t, node('[limits]\nqueue_length = -1'), at('limits.queue_length', 2, /at least 0/));
  throwsConfig(t, node('[limits]\nmax_connections = 2.5'), at('limits.max_connections', 2, /expected an integer, got the number 2\.5/));
  throwsConfig(t, node('[limits]\nqueue_timeout = "5 seconds"'), at('limits.queue_timeout', 2, /invalid duration "5 seconds"/));
  throwsConfig(t, node('[limits]\nqueue_timeout = "0s"'), at('limits.queue_timeout', 2, /greater than zero/));
  throwsConfig(t, node('[limits]\nqueue_timeout = -5'), at('limits.queue_timeout', 2, /greater than zero/));
  throwsConfig(t, node('[limits]\nqueue_timeout = inf'), at('limits.queue_timeout', 2, /invalid duration Infinity/));
  throwsConfig(t, node('[limits]\nqueue_timeout = true'), at('limits.queue_timeout', 2, /expected a duration such as "10s" or a number of milliseconds, got true/));
  throwsConfig(t, node('[limits]\nqueue_timeout = "1000h"'), at('limits.queue_timeout', 2, /at most 2147483647ms/));
  throwsConfig(t, node('[store]\nkind = "nats"'), at('store.servers', 1, /missing required key/));
  throwsConfig(t, node('[store]\nkind = "embedded"\nurl = "x"'), at('store.url', 3, /unknown key/));
  throwsConfig(t, node('region = "ams'), at('region', 1, /unterminated string/));
});

t.test('app file: every key', async (t) => {
  const file = path.join(ROOT, 'config/examples/app-reference.toml');
  const a = await loadAppFile(file, NODE);
  const dir = path.dirname(file);
  const fileLines = fs.readFileSync(file, 'utf8').split('\n');
  const lineOf = (header: string): number => fileLines.findIndex((l) => l.startsWith(header)) + 1;
  t.equal(a.name, 'reference');
  t.equal(a.file, file);
  t.equal(a.primaryRegion, 'local');
  t.equal(a.killSignal, 'SIGTERM');
  t.equal(a.killTimeoutMs, 10_000, 'kill_timeout = 10 is seconds');
  t.same(a.hostnames, ['reference.example.com', '*.reference.example.com', 'reference.localhost']);
  t.match(a.fingerprint, /^[0-9a-f]{64}$/);
  t.equal(a.services.length, 3);

  const [web, pg, grpc] = a.services;
  t.equal(web!.index, 0);
  t.equal(web!.internalPort, 8080);
  t.same(web!.concurrency, { type: 'requests', softLimit: 20, hardLimit: 25 });
  t.equal(web!.autoStopMachines, 'stop');
  t.equal(web!.autoStartMachines, true);
  t.equal(web!.minMachinesRunning, 1);
  t.same(
    web!.ports.map((p) => [p.port, p.handlers, p.forceHttps]),
    [
      [80, ['http'], true],
      [443, ['tls', 'http'], false],
    ],
  );
  const https = web!.ports[1]!;
  t.same(https.tls, { alpn: ['h2', 'http/1.1'], versions: ['TLSv1.2', 'TLSv1.3'], defaultSelfSigned: false });
  t.same(https.http, {
    h2Backend: false,
    idleTimeoutMs: 60_000,
    headersReadTimeoutMs: 5_000,
    compress: false,
    responseHeaders: [
      { name: 'x-powered-by', values: null },
      { name: 'strict-transport-security', values: ['max-age=63072000'] },
      { name: 'vary', values: ['Accept-Encoding', 'Origin'] },
    ],
    pristine: false,
  });
  t.equal(web!.ports[0]!.http, https.http, 'http_options apply to both ports');
  t.same(https.source, { file, line: lineOf('[http_service]') });
  const check = web!.checks[0] as HttpCheck;
  t.same(
    { ...check, headers: Object.fromEntries(check.headers) },
    {
      kind: 'http',
      name: 'http-0',
      gracePeriodMs: 5_000,
      intervalMs: 15_000,
      timeoutMs: 2_000,
      method: 'GET',
      path: '/healthz',
      protocol: 'http',
      tlsSkipVerify: false,
      headers: { 'x-check': 'petrel' },
    },
  );

  t.equal(pg!.internalPort, 5432);
  t.same(pg!.concurrency, { type: 'connections', softLimit: 50, hardLimit: 100 });
  t.equal(pg!.autoStopMachines, 'off', 'legacy false = off');
  t.equal(pg!.ports.length, 11, 'port 5432 plus the range 10000-10009');
  t.same(pg!.ports[0]!.tls, { alpn: ['postgresql'], versions: ['TLSv1.3'], defaultSelfSigned: true });
  t.same(
    pg!.ports.slice(1).map((p) => p.port),
    Array.from({ length: 10 }, (_, i) => 10_000 + i),
  );
  t.same(pg!.ports[1]!.handlers, ['proxy_proto']);
  t.equal(pg!.ports[1]!.proxyProtoVersion, 'v2');
  t.same(pg!.ports[1]!.tls.alpn, [], 'no http handler: no default ALPN');
  t.same(
    pg!.checks.map((c) => [c.kind, c.name, c.gracePeriodMs, c.intervalMs, c.timeoutMs]),
    [
      ['tcp', 'tcp-0', 1_000, 15_000, 2_000],
      ['http', 'http-0', 1_000, 15_000, 2_000],
    ],
  );
  t.equal((pg!.checks[1] as HttpCheck).path, '/ready');
  t.equal(grpc!.ports[0]!.http.idleTimeoutMs, 30_000);
  t.equal(grpc!.concurrency.hardLimit, Infinity);

  const [fixed, proc] = a.machines;
  t.same(
    { ...fixed!, env: [...fixed!.env] },
    {
      id: 'reference-static-1',
      app: 'reference',
      region: 'local',
      driver: 'static',
      address: '127.0.0.1:18080',
      cmd: null,
      api: null,
      node: null,
      cwd: dir,
      env: [],
      killSignal: 'SIGTERM',
      killTimeoutMs: 10_000,
      source: { file, line: lineOf('[[machines]]') },
    },
  );
  t.same(proc!.cmd, ['node', path.join(dir, 'server.js'), '--verbose'], 'a relative path argument resolves against the file');
  t.same(Object.fromEntries(proc!.env), { LOG_LEVEL: 'debug', GREETING: 'hello' });
  t.equal(proc!.cwd, dir);
  t.ok(isDeepFrozen(a), 'deep-frozen');
  t.throws(() => {
    (a.hostnames as string[]).push('x');
  }, TypeError);
});

t.test('the node reference example is all defaults', async (t) => {
  const node = await loadNodeConfig(path.join(ROOT, 'config/examples/node-reference.toml'), { env: {} });
  t.same(node.limits, defaultLimits());
  t.equal(node.nodeId, 'dev-1');
  t.same(node.location, { lat: 52.37, lon: 4.89 });
});

t.test('app defaults', async (t) => {
  const node = parseNodeConfig('region = "iad"\ndefault_domain = "example.net"', NODE_FILE);
  const a = app(
    [
      'app = "web"',
      'hostnames = ["WWW.Example.com"]',
      '[http_service]',
      '[[services]]',
      'protocol = "tcp"',
      'internal_port = 7000',
      '[[services.ports]]',
      'port = 7000',
      '[[machines]]',
      'id = "m1"',
      'driver = "process"',
      'cmd = "./bin/server --port 1"',
    ].join('\n'),
    node,
  );
  t.equal(a.primaryRegion, 'iad');
  t.equal(a.killSignal, 'SIGINT');
  t.equal(a.killTimeoutMs, 5_000);
  t.same(a.hostnames, ['www.example.com', 'web.example.net']);
  const [web, tcp] = a.services;
  t.equal(web!.internalPort, 8080);
  t.same(web!.concurrency, { type: 'connections', softLimit: 20, hardLimit: Infinity });
  t.equal(web!.autoStopMachines, 'off');
  t.equal(web!.autoStartMachines, true);
  t.equal(web!.minMachinesRunning, 0);
  t.same(web!.checks, []);
  t.same(web!.ports.map((p) => p.forceHttps), [false, false]);
  t.same(web!.ports[1]!.tls, { alpn: ['h2', 'http/1.1'], versions: ['TLSv1.2', 'TLSv1.3'], defaultSelfSigned: false });
  t.same(web!.ports[1]!.http, {
    h2Backend: false,
    idleTimeoutMs: null,
    headersReadTimeoutMs: null,
    compress: false,
    responseHeaders: [],
    pristine: false,
  });
  t.same(tcp!.ports[0]!.handlers, []);
  t.equal(tcp!.ports[0]!.proxyProtoVersion, 'v1');
  t.same(tcp!.ports[0]!.tls.alpn, []);
  t.same(tcp!.ports[0]!.source, { file: APP_FILE, line: 7 });
  t.same(tcp!.source, { file: APP_FILE, line: 4 });
  const m = a.machines[0]!;
  t.equal(m.region, 'iad');
  t.same(m.cmd, ['/srv/petrel/apps/bin/server', '--port', '1'], 'string cmd split on spaces; program path resolved');
  t.equal(m.cwd, '/srv/petrel/apps');
  t.equal(m.env.size, 0);

  t.same(app('app = "a"\n[http_service.concurrency]\nhard_limit = 5').services[0]!.concurrency, {
    type: 'connections',
    softLimit: 5,
    hardLimit: 5,
  }, 'soft limit follows a low hard limit down');
  t.equal(app('app = "a"\nkill_timeout = "1.5s"').killTimeoutMs, 1_500);
  t.equal(app('app = "a"\nkill_timeout = 0.5').killTimeoutMs, 500);
  t.equal(app('app = "a"\n[http_service]\nauto_stop_machines = true').services[0]!.autoStopMachines, 'stop');
  t.equal(app('app = "a"\n[http_service]\nauto_stop_machines = "suspend"').services[0]!.autoStopMachines, 'suspend');
  t.same(
    app('app = "a"\n[[machines]]\nid = "m"\ndriver = "static"\naddress = "[::1]:80"').machines[0]!.address,
    '[::1]:80',
  );
  t.same(app('app = "a"\n[[machines]]\nid = "m"\ndriver = "process"\ncmd = ["/usr/bin/env", "x/y"]\ncwd = "../work"').machines[0]!.cmd, [
    '/usr/bin/env',
    'x/y',
  ], 'absolute programs and plain arguments are left alone');
  t.equal(app('app = "a"\n[[machines]]\nid = "m"\ndriver = "process"\ncmd = "node"\ncwd = "../work"').machines[0]!.cwd, '/srv/petrel/work');
  t.same(app('app = "a"\nhostnames = ["a.localhost"]').hostnames, ['a.localhost'], 'the derived hostname is not repeated');
  t.same(app('app = "a"\n[http_service]\n[http_service.http_options]\nidle_timeout = "750ms"').services[0]!.ports[0]!.http.idleTimeoutMs, 750);
});

t.test('app file errors', async (t) => {
  const bad = (text: string, key: string, line: number, reason: RegExp): void =>
    throwsConfig(t, () => app(text), { key, line, reason });
  const A = 'app = "a"\n'; // line 1

  // Missing required keys point at their table's header (or line 1).
  bad('primary_region = "ams"', 'app', 1, /missing required key/);
  bad(`${A}[[services]]\ninternal_port = 80`, 'services[0].protocol', 2, /missing required key/);
  bad(`${A}\n[[services]]\nprotocol = "tcp"`, 'services[0].internal_port', 3, /missing required key/);
  bad(`${A}[[services]]\nprotocol = "tcp"\ninternal_port = 80\n[[services.ports]]\nhandlers = []`, 'services[0].ports[0].port', 5, /missing required key \(or start_port and end_port\)/);
  bad(`${A}[[services]]\nprotocol = "tcp"\ninternal_port = 80\n[[services.ports]]\nstart_port = 1000`, 'services[0].ports[0].end_port', 5, /missing required key/);
  bad(`${A}[[machines]]\ndriver = "static"`, 'machines[0].id', 2, /missing required key/);
  bad(`${A}[[machines]]\nid = "m"`, 'machines[0].driver', 2, /missing required key/);
  bad(`${A}[[machines]]\nid = "m"\ndriver = "static"`, 'machines[0].address', 2, /missing required key/);
  bad(`${A}[[machines]]\nid = "m"\ndriver = "process"`, 'machines[0].cmd', 2, /missing required key for driver "process"/);

  // Unknown keys, at any depth.
  bad(`${A}primary_regoin = "ams"`, 'primary_regoin', 2, /unknown key; did you mean "primary_region"\?/);
  bad(`${A}[http_servce]`, 'http_servce', 2, /unknown key; did you mean "http_service"/);
  bad(`${A}[http_service]\nprocesses = ["app"]`, 'http_service.processes', 3, /unknown key; known keys here: auto_start_machines/);
  bad(
    `${A}[[services]]\nprotocol = "tcp"\ninternal_port = 80\n[[services.ports]]\nport = 443\nhandlers = ["tls"]\n[services.ports.tls_options]\nalpnn = ["h2"]`,
    'services[0].ports[0].tls_options.alpnn',
    9,
    /did you mean "alpn"/,
  );
  bad(`${A}[http_service]\n[[http_service.checks]]\ntype = "http"`, 'http_service.checks[0].type', 4, /unknown key/);
  bad(`${A}[[machines]]\nid = "m"\ndriver = "static"\naddress = "h:1"\nimage = "x"`, 'machines[0].image', 6, /unknown key/);
  bad(`${A}[http_service.http_options.response]\nheader = {}`, 'http_service.http_options.response.header', 3, /did you mean "headers"/);

  // Wrong types.
  bad('app = 5', 'app', 1, /expected a string, got the integer 5/);
  bad(`${A}hostnames = "a.com"`, 'hostnames', 2, /expected a list of strings, got the string "a\.com"/);
  bad(`${A}hostnames = ["a.com", 5]`, 'hostnames[1]', 2, /expected a string, got the integer 5/);
  bad(`${A}http_service = 1`, 'http_service', 2, /expected a table, got the integer 1/);
  bad(`${A}[[http_service]]`, 'http_service', 2, /expected a table, got a list/);
  bad(`${A}[services]\nprotocol = "tcp"`, 'services', 2, /expected a list of tables/);
  bad(`${A}services = [1]`, 'services[0]', 2, /expected a table, got the integer 1/);
  bad(`${A}[http_service]\nforce_https = "yes"`, 'http_service.force_https', 3, /expected true or false, got the string "yes"/);
  bad(`${A}[http_service]\ninternal_port = "8080"`, 'http_service.internal_port', 3, /expected an integer/);
  bad(`${A}[http_service.concurrency]\nsoft_limit = 1.5`, 'http_service.concurrency.soft_limit', 3, /expected an integer, got the number 1\.5/);

  // Bad values.
  bad('app = "My_App"', 'app', 1, /lower-case letters, digits and dashes/);
  bad('app = "-a"', 'app', 1, /no dash at either end/);
  bad(`app = "${'a'.repeat(64)}"`, 'app', 1, /at most 63/);
  bad(`${A}primary_region = "AMS"`, 'primary_region', 2, /lower-case/);
  bad(`${A}kill_signal = "SIGSTOP"`, 'kill_signal', 2, /must be one of "SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", got "SIGSTOP"/);
  bad(`${A}kill_timeout = "5"`, 'kill_timeout', 2, /invalid duration "5".*number of seconds/);
  bad(`${A}kill_timeout = 0`, 'kill_timeout', 2, /greater than zero/);
  bad(`${A}hostnames = ["bad host"]`, 'hostnames[0]', 2, /not a host name/);
  bad(`${A}hostnames = ["a.*.com"]`, 'hostnames[0]', 2, /not a host name/);
  bad(`${A}hostnames = ["-a.com"]`, 'hostnames[0]', 2, /not a host name/);
  bad(`${A}hostnames = [\n"a.com",\n"A.COM"\n]`, 'hostnames[1]', 4, /"a\.com" is listed twice \(first on line 3\)/);
  bad(`${A}[http_service]\ninternal_port = 0`, 'http_service.internal_port', 3, /between 1 and 65535, got 0/);
  bad(`${A}[http_service]\ninternal_port = 65536`, 'http_service.internal_port', 3, /between 1 and 65535, got 65536/);
  bad(`${A}[http_service]\nauto_stop_machines = "yes"`, 'http_service.auto_stop_machines', 3, /must be one of "off", "stop", "suspend" \(or legacy true\/false\)/);
  bad(`${A}[http_service]\nmin_machines_running = -1`, 'http_service.min_machines_running', 3, /at least 0/);
  bad(`${A}[http_service]\nmin_machines_running_per_region = { FRA = 1 }`, 'http_service.min_machines_running_per_region.FRA', 3, /not a region name/);
  bad(`${A}[http_service]\nmin_machines_running_per_region = { fra = -1 }`, 'http_service.min_machines_running_per_region.fra', 3, /whole number of Machines/);
  bad(`${A}[http_service]\nmin_machines_running_per_region = { fra = "1" }`, 'http_service.min_machines_running_per_region.fra', 3, /whole number.*got the string "1"/);
  bad(`${A}[http_service]\nmin_machines_running_per_region = 1`, 'http_service.min_machines_running_per_region', 3, /expected a table/);
  bad(`${A}[http_service.concurrency]\ntype = "bytes"`, 'http_service.concurrency.type', 3, /must be one of "connections", "requests"/);
  bad(`${A}[http_service.concurrency]\nsoft_limit = 0`, 'http_service.concurrency.soft_limit', 3, /at least 1/);
  bad(`${A}[http_service.concurrency]\nsoft_limit = 30\nhard_limit = 25`, 'http_service.concurrency.soft_limit', 3, /must not be above hard_limit \(25\), got 30/);
  bad(`${A}[http_service.tls_options]\nversions = ["TLSv1.1"]`, 'http_service.tls_options.versions[0]', 3, /must be one of "TLSv1\.2", "TLSv1\.3"/);
  bad(`${A}[http_service.tls_options]\nversions = []`, 'http_service.tls_options.versions', 3, /at least one TLS version/);
  bad(`${A}[http_service.tls_options]\nalpn = ["h2", "h2"]`, 'http_service.tls_options.alpn[1]', 3, /"h2" is listed twice/);
  bad(`${A}[http_service.tls_options]\nalpn = [""]`, 'http_service.tls_options.alpn[0]', 3, /1 to 255 characters/);
  bad(`${A}[http_service.http_options]\nidle_timeout = "soon"`, 'http_service.http_options.idle_timeout', 3, /invalid duration "soon"/);
  bad(`${A}[[http_service.checks]]\ninterval = "fast"`, 'http_service.checks[0].interval', 3, /invalid duration "fast".*number of milliseconds/);
  bad(`${A}[[http_service.checks]]\ntimeout = 0`, 'http_service.checks[0].timeout', 3, /greater than zero/);
  bad(`${A}[[http_service.checks]]\ngrace_period = -1`, 'http_service.checks[0].grace_period', 3, /must not be negative/);
  bad(`${A}[[http_service.checks]]\npath = "healthz"`, 'http_service.checks[0].path', 3, /starting with "\/"/);
  bad(`${A}[[http_service.checks]]\nmethod = "GE T"`, 'http_service.checks[0].method', 3, /HTTP method/);
  bad(`${A}[[http_service.checks]]\nprotocol = "tcp"`, 'http_service.checks[0].protocol', 3, /must be one of "http", "https"/);
  bad(`${A}[[http_service.checks]]\nheaders = { Host = 1 }`, 'http_service.checks[0].headers.Host', 3, /expected a string/);
  bad(`${A}[[http_service.checks]]\nheaders = { "Bad Name" = "x" }`, 'http_service.checks[0].headers."Bad Name"', 3, /not a valid HTTP header name/);

  // Services and ports.
  const S = `${A}[[services]]\nprotocol = "tcp"\ninternal_port = 80\n`; // lines 2-4
  bad(`${A}[[services]]\nprotocol = "udp"\ninternal_port = 53`, 'services[0].protocol', 3, /udp services are not supported/);
  bad(`${A}[[services]]\nprotocol = "http"\ninternal_port = 53`, 'services[0].protocol', 3, /must be "tcp", got "http"/);
  bad(`${S}[[services.ports]]\nport = 70000`, 'services[0].ports[0].port', 6, /between 1 and 65535, got 70000/);
  bad(`${S}[[services.ports]]\nport = "80"`, 'services[0].ports[0].port', 6, /expected an integer, got the string "80"/);
  bad(`${S}[[services.ports]]\nport = 80\nstart_port = 81`, 'services[0].ports[0].start_port', 7, /either port or start_port\/end_port/);
  bad(`${S}[[services.ports]]\nstart_port = 90\nend_port = 80`, 'services[0].ports[0].end_port', 7, /must not be below start_port \(90\), got 80/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["h2"]`, 'services[0].ports[0].handlers[0]', 7, /unknown handler "h2"; expected one of "tls", "http", "proxy_proto", "pg_tls"/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["http", "http"]`, 'services[0].ports[0].handlers[1]', 7, /listed twice/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["http", "tls"]`, 'services[0].ports[0].handlers[1]', 7, /"tls" must come first/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["tls", "pg_tls"]`, 'services[0].ports[0].handlers[1]', 7, /"pg_tls" must come first/);
  bad(`${S}[[services.ports]]\nport = 80\nforce_https = true`, 'services[0].ports[0].force_https', 7, /needs the "http" handler/);
  bad(`${S}[[services.ports]]\nport = 80\n[services.ports.tls_options]\nalpn = []`, 'services[0].ports[0].tls_options', 7, /need the "tls" or "pg_tls" handler/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["tls"]\n[services.ports.http_options]`, 'services[0].ports[0].http_options', 8, /need the "http" handler/);
  bad(`${S}[[services.ports]]\nport = 80\n[services.ports.proxy_proto_options]`, 'services[0].ports[0].proxy_proto_options', 7, /need the "proxy_proto" handler/);
  bad(`${S}[[services.ports]]\nport = 80\nhandlers = ["proxy_proto"]\nproxy_proto_options = { version = "v3" }`, 'services[0].ports[0].proxy_proto_options.version', 8, /must be one of "v1", "v2"/);
  bad(`${S}[[services.ports]]\nport = 80\n[[services.ports]]\nport = 80`, 'services[0].ports[1]', 7, /port 80 is already declared by services\[0\]\.ports\[0\] \(line 5\)/);
  bad(`${S}[[services.ports]]\nstart_port = 79\nend_port = 81\n[[services.ports]]\nport = 80`, 'services[0].ports[1]', 8, /port 80 is already declared/);
  bad(`${A}[http_service]\n${S.slice(A.length)}[[services.ports]]\nport = 443`, 'services[0].ports[0]', 6, /port 443 is already declared by http_service \(line 2\)/);
  bad(`${A}[http_service]\ninternal_port = 80\n${S.slice(A.length)}`, 'services[0].internal_port', 6, /internal port 80 is already used by http_service \(line 2\)/);
  bad(`${S}[[services.tcp_checks]]\npath = "/"`, 'services[0].tcp_checks[0].path', 6, /unknown key/);

  // Response header rules.
  const H = `${A}[http_service.http_options.response.headers]\n`; // line 2
  bad(`${H}Content-Length = "5"`, 'http_service.http_options.response.headers.Content-Length', 3, /managed by the proxy/);
  bad(`${H}Connection = false`, 'http_service.http_options.response.headers.Connection', 3, /managed by the proxy/);
  bad(`${H}X-A = "1"\nx-a = "2"`, 'http_service.http_options.response.headers.x-a', 4, /listed twice \(names are case-insensitive\)/);
  bad(`${H}X-A = true`, 'http_service.http_options.response.headers.X-A', 3, /expected false \(remove\), a string or a non-empty list/);
  bad(`${H}X-A = []`, 'http_service.http_options.response.headers.X-A', 3, /non-empty list/);
  bad(`${H}X-A = ["ok", 1]`, 'http_service.http_options.response.headers.X-A[1]', 3, /expected a string/);
  bad(`${H}X-A = "a\\r\\nSet-Cookie: x"`, 'http_service.http_options.response.headers.X-A', 3, /cannot contain CR, LF or NUL/);
  bad(`${H}"X A" = "1"`, 'http_service.http_options.response.headers."X A"', 3, /not a valid HTTP header name/);

  // Machines.
  const M = `${A}[[machines]]\nid = "m"\n`; // lines 2-3
  bad(`${M}driver = "docker"`, 'machines[0].driver', 4, /must be one of "static", "process", "machines-api", got "docker"/);
  bad(`${A}[[machines]]\nid = "M_1"\ndriver = "static"`, 'machines[0].id', 3, /lower-case letters, digits and dashes/);
  bad(`${M}driver = "static"\naddress = "127.0.0.1"`, 'machines[0].address', 5, /is not "host:port"/);
  bad(`${M}driver = "static"\naddress = "127.0.0.1:0"`, 'machines[0].address', 5, /port 1-65535/);
  bad(`${M}driver = "static"\naddress = "h:1"\ncmd = "x"`, 'machines[0].cmd', 6, /only for driver "process"/);
  bad(`${M}driver = "static"\naddress = "h:1"\nenv = {}`, 'machines[0].env', 6, /only for driver "process"/);
  bad(`${M}driver = "process"\naddress = "h:1"\ncmd = "x"`, 'machines[0].address', 5, /only for driver "static"/);
  bad(`${M}driver = "process"\ncmd = "   "`, 'machines[0].cmd', 5, /must not be empty/);
  bad(`${M}driver = "process"\ncmd = []`, 'machines[0].cmd', 5, /must not be empty/);
  bad(`${M}driver = "process"\ncmd = ["node", ""]`, 'machines[0].cmd[1]', 5, /expected a non-empty string/);
  bad(`${M}driver = "process"\ncmd = 5`, 'machines[0].cmd', 5, /expected a command string or a list of strings/);
  bad(`${M}driver = "process"\ncmd = "x"\nenv = { PORT = "1" }`, 'machines[0].env.PORT', 6, /set by petrel/);
  bad(`${M}driver = "process"\ncmd = "x"\nenv = { N = 1 }`, 'machines[0].env.N', 6, /expected a string \(quote numbers/);
  bad(`${M}driver = "process"\ncmd = "x"\nenv = { "1X" = "1" }`, 'machines[0].env.1X', 6, /not a valid variable name/);
  bad(`${M}driver = "process"\ncmd = "x"\ncwd = ""`, 'machines[0].cwd', 6, /give a directory/);
  bad(`${M}driver = "process"\ncmd = "x"\n[[machines]]\nid = "m"\ndriver = "process"\ncmd = "y"`, 'machines[1].id', 7, /used twice in this app \(first on line 3\)/);

  // TOML errors surface the same way.
  bad(`${A}[http_service]\nforce_https = tru`, 'http_service.force_https', 3, /invalid value "tru"/);
});

t.test('across apps', async (t) => {
  const a = app('app = "a"\nhostnames = ["shop.example.com", "*.example.com"]\n[[machines]]\nid = "m1"\ndriver = "static"\naddress = "h:1"', NODE, '/srv/a.toml');
  const across = (text: string, key: string, line: number, reason: RegExp): void =>
    throwsConfig(t, () => buildConfig(NODE, [a, app(text, NODE, '/srv/b.toml')]), { file: '/srv/b.toml', key, line, reason });

  const config = buildConfig(NODE, [a, app('app = "b"\nhostnames = ["api.example.com"]', NODE, '/srv/b.toml')]);
  t.same([...config.apps.keys()], ['a', 'b']);
  t.ok(isDeepFrozen(config));
  t.throws(() => (config.apps as Map<string, AppConfig>).delete('a'), TypeError);

  across('app = "a"', 'app', 1, /app "a" is already defined by \/srv\/a\.toml/);
  across('app = "b"\n\n[[machines]]\nid = "m1"\ndriver = "static"\naddress = "h:2"', 'machines[0].id', 4, /Machine id "m1" is already used by app "a" \(\/srv\/a\.toml:4\)/);
  across('app = "b"\nhostnames = ["x.com", "Shop.Example.com"]', 'hostnames[1]', 2, /hostname "shop\.example\.com" is already claimed by app "a" \(\/srv\/a\.toml:2\)/);
  across('app = "b"\nhostnames = ["*.example.com"]', 'hostnames[0]', 2, /"\*\.example\.com" is already claimed/);
  across('app = "b"\nhostnames = ["a.localhost"]', 'hostnames[0]', 2, /"a\.localhost" is already claimed by app "a" \(\/srv\/a\.toml:1\)/);
  t.doesNotThrow(() => buildConfig(NODE, [a, app('app = "b"\nhostnames = ["www.example.com"]')]), 'an exact name may sit under another app\'s wildcard');

  // Ports.
  const service = (name: string, port: number, handlers: string, file = `/srv/${name}.toml`): AppConfig =>
    app(`app = "${name}"\n[[services]]\nprotocol = "tcp"\ninternal_port = 9000\n[[services.ports]]\nport = ${port}\nhandlers = ${handlers}`, NODE, file);
  const conflict = (first: AppConfig, second: AppConfig, reason: RegExp): void =>
    throwsConfig(t, () => buildConfig(NODE, [first, second]), { file: second.file, key: 'services[0].ports[0]', line: 5, reason });
  conflict(service('a', 5000, '[]'), service('b', 5000, '["tls"]'), /with handlers \[\] it carries no TLS server name or HTTP Host to route by, so only one app can use it/);
  conflict(service('a', 5000, '["tls"]'), service('b', 5000, '["proxy_proto"]'), /with handlers \["proxy_proto"\]/);
  conflict(service('a', 5000, '["http"]'), service('b', 5000, '["tls", "http"]'), /starts with "tls" here but with plaintext in app "a"/);
  conflict(service('a', 5000, '["tls"]'), service('b', 5000, '["pg_tls"]'), /starts with "pg_tls" here but with "tls"/);
  const shared = [service('a', 5000, '["tls"]'), service('b', 5000, '["tls", "http"]'), service('c', 5000, '["tls", "proxy_proto"]')];
  t.doesNotThrow(() => buildConfig(NODE, shared), 'TLS-first ports are shared, routed by SNI');
  t.doesNotThrow(() => buildConfig(NODE, [service('a', 5000, '["http"]'), service('b', 5000, '["http"]')]), 'http ports are shared, routed by Host');
  t.doesNotThrow(() => buildConfig(NODE, [app('app = "a"\n[http_service]'), app('app = "b"\n[http_service]')]), 'two http_services share 80 and 443');

  // Bind addresses.
  const node = parseNodeConfig('[[listen]]\nport = 80\naddress = "0.0.0.0:8080"\n[admin]\naddress = "127.0.0.1:9091"', NODE_FILE);
  throwsConfig(t, () => buildConfig(node, [service('a', 8080, '[]')]), {
    file: '/srv/a.toml',
    key: 'services[0].ports[0]',
    line: 5,
    reason: /port 8080 would bind 0\.0\.0\.0:8080, which public port 80 \(\/srv\/petrel\/petrel\.toml:1\) already binds/,
  });
  throwsConfig(t, () => buildConfig(node, [service('a', 9091, '[]')]), {
    file: '/srv/a.toml',
    key: 'services[0].ports[0]',
    line: 5,
    reason: /which the admin listener \(\/srv\/petrel\/petrel\.toml:5\) already binds/,
  });
});

t.test('fingerprint', async (t) => {
  const base = 'app = "a"\n[http_service]\ninternal_port = 8080\nforce_https = true';
  const same = '# a comment\napp = "a"\n\nhttp_service = { force_https = true, internal_port = 8_080 } # reordered';
  t.equal(app(base).fingerprint, app(same).fingerprint, 'comments, order and number spelling do not count');
  t.not(app(base).fingerprint, app(base.replace('8080', '8081')).fingerprint, 'content counts');
  t.not(app(base).fingerprint, app(base, parseNodeConfig('default_domain = "example.com"', NODE_FILE)).fingerprint, 'default_domain counts');
  t.not(app(base).fingerprint, app(base, parseNodeConfig('region = "ams"', NODE_FILE)).fingerprint, 'node region counts');
  t.not(app(base).fingerprint, app(base, NODE, '/elsewhere/app.toml').fingerprint, 'the directory counts');
  t.equal(app('app = "a"\n[http_service.concurrency]\nhard_limit = 5').fingerprint.length, 64);
});

t.test('loadConfig reads the node and every app file', async (t) => {
  const dir = tree(t, {
    'etc/petrel.toml': 'node_id = "n1"\napps_dir = "apps"\n',
    'etc/apps/a.toml': 'app = "a"\n[http_service]\n[[machines]]\nid = "a-1"\ndriver = "process"\ncmd = ["node", "../srv/a.js"]',
    'etc/apps/b.toml': 'app = "b"\n[http_service]\ninternal_port = 3000',
    'etc/apps/notes.txt': 'not toml',
    'etc/apps/.hidden.toml': 'junk =',
    'etc/apps/sub/c.toml': 'app = "c"',
  });
  fs.symlinkSync(path.join(dir, 'etc/linked.toml'), path.join(dir, 'etc/apps/linked.toml'));
  fs.writeFileSync(path.join(dir, 'etc/linked.toml'), 'app = "linked"');
  const config = await loadConfig(path.join(dir, 'etc/petrel.toml'));
  t.equal(config.node.nodeId, 'n1');
  t.same([...config.apps.keys()], ['a', 'b', 'linked'], 'only *.toml files (or links to files) directly in the apps dir');
  t.same(config.apps.get('a')!.machines[0]!.cmd, ['node', path.join(dir, 'etc/srv/a.js')]);
  t.equal(config.apps.get('b')!.file, path.join(dir, 'etc/apps/b.toml'));
  t.ok(isDeepFrozen(config));

  const nodeFile = path.join(dir, 'etc/petrel.toml');
  await rejectsConfig(t, loadConfig(path.join(dir, 'missing.toml')), {
    file: path.join(dir, 'missing.toml'),
    key: '(file)',
    line: 1,
    reason: /cannot read the file \(ENOENT\)/,
  });
  fs.writeFileSync(nodeFile, 'node_id = "n1"\n\napps_dir = "nowhere"\n');
  await rejectsConfig(t, loadConfig(nodeFile), { file: nodeFile, key: 'apps_dir', line: 3, reason: /cannot read the apps directory .*nowhere \(ENOENT\)/ });
  fs.writeFileSync(nodeFile, 'apps_dir = "apps"\n');

  fs.writeFileSync(path.join(dir, 'etc/apps/c.toml'), 'app = "b"');
  await rejectsConfig(t, loadConfig(nodeFile), { file: path.join(dir, 'etc/apps/c.toml'), key: 'app', line: 1, reason: /app "b" is already defined by .*b\.toml/ });
  fs.writeFileSync(path.join(dir, 'etc/apps/c.toml'), 'app = "c"\n[http_service]\nforce_https = maybe');
  await rejectsConfig(t, loadConfig(nodeFile), { file: path.join(dir, 'etc/apps/c.toml'), key: 'http_service.force_https', line: 3, reason: /invalid value "maybe"/ });
  fs.writeFileSync(path.join(dir, 'etc/apps/c.toml'), 'app = "c"');
  fs.symlinkSync(path.join(dir, 'nowhere.toml'), path.join(dir, 'etc/apps/dangling.toml'));
  await rejectsConfig(t, loadConfig(nodeFile), { file: path.join(dir, 'etc/apps/dangling.toml'), key: '(file)', line: 1, reason: /cannot read the file \(ENOENT\)/ });
  fs.unlinkSync(path.join(dir, 'etc/apps/dangling.toml'));
  fs.writeFileSync(path.join(dir, 'etc/apps/c.toml'), '# no app key\n[http_service]');
  await rejectsConfig(t, loadConfig(nodeFile), { file: path.join(dir, 'etc/apps/c.toml'), key: 'app', line: 1, reason: /missing required key/ });
});

t.test('the shipped config loads cleanly', async (t) => {
  const config = await loadConfig(path.join(ROOT, 'config/petrel.toml'), { env: { PETREL_ADMIN_TOKEN: 'from-env' } });
  const { node } = config;
  t.equal(node.nodeId, 'dev-1');
  t.equal(node.region, 'local');
  t.equal(node.defaultDomain, 'localhost');
  t.equal(node.appsDir, path.join(ROOT, 'config/apps'));
  t.equal(node.certsDir, path.join(ROOT, 'certs'));
  t.same(node.listen, [
    { port: 80, host: '0.0.0.0', bindPort: 8080 },
    { port: 443, host: '0.0.0.0', bindPort: 8443 },
  ]);
  t.same(node.admin, { host: '127.0.0.1', port: 9091, token: 'from-env' });

  const hello = config.apps.get('hello')!;
  t.same(hello.hostnames, ['hello.localhost']);
  const service = hello.services[0]!;
  t.equal(service.internalPort, 8080);
  t.same(service.concurrency, { type: 'requests', softLimit: 20, hardLimit: 50 });
  t.same(service.ports.map((p) => [p.port, p.handlers, p.forceHttps]), [
    [80, ['http'], false],
    [443, ['tls', 'http'], false],
  ]);
  const check = service.checks[0] as HttpCheck;
  t.same([check.name, check.method, check.path, check.intervalMs, check.timeoutMs, check.gracePeriodMs], ['http-0', 'GET', '/healthz', 2000, 1000, 1000]);
  t.same(hello.machines.map((m) => [m.id, m.driver, m.region, m.cmd]), [
    ['hello-1', 'process', 'local', ['node', path.join(ROOT, 'demo/hello-machine.ts')]],
    ['hello-2', 'process', 'local', ['node', path.join(ROOT, 'demo/hello-machine.ts')]],
  ]);

  const withoutToken = await loadConfig(path.join(ROOT, 'config/petrel.toml'), { env: {} });
  t.equal(withoutToken.node.admin.token, '');
});

t.test('checkConfig', async (t) => {
  const nodeLines = await checkConfig(path.join(ROOT, 'config/petrel.toml'), { env: {} });
  t.match(nodeLines[0], /^node dev-1, region local, default domain localhost/);
  t.ok(nodeLines.some((l) => l.includes('listen: 80 -> 0.0.0.0:8080, 443 -> 0.0.0.0:8443')));
  t.ok(nodeLines.some((l) => l.includes('token generated at start')));
  t.ok(nodeLines.some((l) => l.startsWith('app hello ')));
  t.ok(nodeLines.some((l) => l.includes('ports 80 [http], 443 [tls,http]; requests 20/50')));
  t.ok(nodeLines.some((l) => l.includes('machine hello-1 (process, local)')));
  t.equal(nodeLines[nodeLines.length - 1], 'OK');

  const appLines = await checkConfig(path.join(ROOT, 'config/examples/app-reference.toml'));
  t.match(appLines[0], new RegExp(`checked against ${BUILT_IN_NODE.replace(/[()]/g, '\\$&')}`));
  t.ok(appLines.some((l) => l.includes('10000-10009 [proxy_proto]')), 'a port range stays one entry');
  t.ok(appLines.some((l) => l.includes('connections 20/unlimited')));

  const againstNode = await checkConfig(path.join(ROOT, 'config/apps/hello.toml'), { nodeFile: path.join(ROOT, 'config/petrel.toml'), env: {} });
  t.match(againstNode[0], /checked against node config .*petrel\.toml/);

  const dir = tree(t, {
    'app.toml': 'app = "x"\n[[services]]\nprotocol = "udp"\ninternal_port = 53',
    'node.toml': 'apps_dir = "."\nlog_level = "loud"',
    'clash.toml': 'app = "x"\n[[services]]\nprotocol = "tcp"\ninternal_port = 1\n[[services.ports]]\nport = 9091',
  });
  await rejectsConfig(t, checkConfig(path.join(dir, 'app.toml')), {
    file: path.join(dir, 'app.toml'),
    key: 'services[0].protocol',
    line: 3,
    reason: /udp services are not supported/,
  });
  await rejectsConfig(t, checkConfig(path.join(dir, 'node.toml')), { file: path.join(dir, 'node.toml'), key: 'log_level', line: 2, reason: /must be one of/ });
  await rejectsConfig(t, checkConfig(path.join(dir, 'clash.toml')), {
    file: path.join(dir, 'clash.toml'),
    key: 'services[0].ports[0]',
    line: 5,
    reason: /admin listener/,
  });
});

t.test('fly.toml keys petrel does not implement yet are refused when switched on', async (t) => {
  const node = parseNodeConfig('', NODE_FILE, { env: {} });
  for (const key of ['h2_backend', 'compress']) {
    const text = `app = "x"\n[http_service]\ninternal_port = 8080\n[http_service.http_options]\n${key} = true\n`;
    t.throws(() => parseAppConfig(text, '/tmp/x.toml', node), { name: 'ConfigError', key: `http_service.http_options.${key}`, line: 5 }, key);
    t.doesNotThrow(() => parseAppConfig(text.replace('true', 'false'), '/tmp/x.toml', node), `${key} = false is fine`);
  }
});
