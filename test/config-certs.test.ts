// Config keys for certificates (issue 4): `[acme]` in the node config and `[[certificates]]` in
// app files. Every key is read with its default; every refusal names file, key path and line.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Test } from 'tap';

import { buildConfig, checkConfig, loadConfig, loadNodeConfig, parseAppConfig, parseNodeConfig } from '../src/config/load.ts';
import type { Env } from '../src/config/load.ts';
import type { AppConfig, NodeConfig } from '../src/config/types.ts';
import { ACME_DEFAULTS } from '../src/tls/acme/config.ts';

import { APP_FILE, NODE_FILE, rejectsConfig, throwsConfig, tree } from './helpers/config-assert.ts';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = parseNodeConfig('', NODE_FILE, { env: {} });
const PEM = '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY2E=\n-----END CERTIFICATE-----\n';

/** `[acme]` on line 1, directory_url on 2, terms_agreed on 3; `more` starts on line 4. */
function acmeText(...more: string[]): string {
  return ['[acme]', 'directory_url = "https://ca.example.com/dir"', 'terms_agreed = true', ...more].join('\n');
}

function node(text: string, env: Env = {}, file = NODE_FILE): NodeConfig {
  return parseNodeConfig(text, file, { env });
}

function app(text: string, file = APP_FILE): AppConfig {
  return parseAppConfig(text, file, NODE);
}


// ---- [acme] -------------------------------------------------------------------------------------

t.test('[acme] is off unless the table is there', async (t) => {
  t.equal(NODE.acme, null);
  t.equal(node('[limits]\nqueue_length = 1').acme, null);
  const lines = await checkConfig(path.join(ROOT, 'config/petrel.toml'), { env: {} });
  t.notOk(lines.some((l) => l.startsWith('acme:')), 'the default config runs offline');
});

t.test('[acme] defaults', async (t) => {
  const acme = node(acmeText()).acme;
  t.same(acme, { ...ACME_DEFAULTS, directoryUrl: 'https://ca.example.com/dir', termsAgreed: true });
  t.same(acme, {
    directoryUrl: 'https://ca.example.com/dir',
    email: null,
    termsAgreed: true,
    eab: null,
    caFile: null,
    challenges: ['tls-alpn-01', 'http-01'],
    renewFraction: 2 / 3,
    renewJitterMs: 3_600_000,
    backoffMinMs: 60_000,
    backoffMaxMs: 3_600_000,
    ordersPerHour: 30,
    onDemandPerMinute: 10,
    onDemandBurst: 5,
    onDemandHostIntervalMs: 60_000,
    concurrency: 2,
    requestTimeoutMs: 30_000,
    orderTimeoutMs: 180_000,
  });
  t.ok(Object.isFrozen(acme));
});

t.test('[acme] every key', async (t) => {
  const dir = tree(t, { 'etc/ca/pebble.pem': PEM });
  const file = path.join(dir, 'etc/petrel.toml');
  const acme = node(
    acmeText(
      'email = "ops@example.com"',
      'ca_file = "ca/pebble.pem"',
      'challenges = ["http-01"]',
      'renew_fraction = 0.5',
      'renew_jitter = "10m"',
      'backoff_min = "30s"',
      'backoff_max = 7200000',
      'orders_per_hour = 100',
      'on_demand_per_minute = 0.5',
      'on_demand_burst = 1',
      'on_demand_host_interval = 0',
      'concurrency = 4',
      'request_timeout = "10s"',
      'order_timeout = "5m"',
      '[acme.eab]',
      'kid = "kid-1"',
      'hmac_key = "c2VjcmV0LWhtYWMta2V5"',
    ),
    {},
    file,
  ).acme;
  t.same(acme, {
    directoryUrl: 'https://ca.example.com/dir',
    email: 'ops@example.com',
    termsAgreed: true,
    eab: { kid: 'kid-1', hmacKey: 'c2VjcmV0LWhtYWMta2V5' },
    caFile: path.join(dir, 'etc/ca/pebble.pem'),
    challenges: ['http-01'],
    renewFraction: 0.5,
    renewJitterMs: 600_000,
    backoffMinMs: 30_000,
    backoffMaxMs: 7_200_000,
    ordersPerHour: 100,
    onDemandPerMinute: 0.5,
    onDemandBurst: 1,
    onDemandHostIntervalMs: 0,
    concurrency: 4,
    requestTimeoutMs: 10_000,
    orderTimeoutMs: 300_000,
  });
  t.ok(Object.isFrozen(acme!.eab) && Object.isFrozen(acme!.challenges));

  const absolute = node(acmeText(`ca_file = "${path.join(dir, 'etc/ca/pebble.pem')}"`)).acme;
  t.equal(absolute!.caFile, path.join(dir, 'etc/ca/pebble.pem'), 'an absolute ca_file stays as written');

  const fromEnv = node(acmeText('[acme.eab]', 'kid = "k"', 'hmac_key_env = "EAB_HMAC"'), { EAB_HMAC: 'aG1hYw' }).acme;
  t.same(fromEnv!.eab, { kid: 'k', hmacKey: 'aG1hYw' }, 'hmac_key_env is read at load time');
});

t.test('the node reference documents [acme] at its defaults', async (t) => {
  const reference = await loadNodeConfig(path.join(ROOT, 'config/examples/node-reference.toml'), { env: {} });
  t.same(reference.acme, {
    ...ACME_DEFAULTS,
    directoryUrl: 'https://acme-staging-v02.api.letsencrypt.org/directory',
    termsAgreed: true,
    email: 'ops@example.com',
  });
});

t.test('[acme] refusals name key and line', async (t) => {
  const bad = (text: string, key: string, line: number, reason: RegExp, env: Env = {}): void =>
    throwsConfig(t, () => node(text, env), { file: NODE_FILE, key, line, reason });

  bad('region = "x"\n\n[acme]\nterms_agreed = true', 'acme.directory_url', 3, /missing required key/);
  bad('[acme]\ndirectory_url = "http://ca.example.com/dir"\nterms_agreed = true', 'acme.directory_url', 2, /must be an https:\/\/ URL \(RFC 8555 §6\.1\), got http:/);
  bad('[acme]\ndirectory_url = "ca.example.com"\nterms_agreed = true', 'acme.directory_url', 2, /not a URL: "ca\.example\.com"/);
  bad('[acme]\ndirectory_url = 443\nterms_agreed = true', 'acme.directory_url', 2, /expected a string, got the integer 443/);
  bad('[acme]\ndirectory_url = "https://ca.example.com/dir"\nterms_agreed = false', 'acme.terms_agreed', 3, /terms of service must be agreed to/);
  bad('[acme]\ndirectory_url = "https://ca.example.com/dir"', 'acme.terms_agreed', 1, /set it to true/);
  bad('[acme]\ndirectory_url = "https://ca.example.com/dir"\nterms_agreed = "yes"', 'acme.terms_agreed', 3, /expected true or false/);
  bad(acmeText('email = "ops at example.com"'), 'acme.email', 4, /not an email address: "ops at example\.com"/);
  bad(acmeText('challenges = ["tls-alpn-01", "dns-01"]'), 'acme.challenges', 4, /unsupported type "dns-01"/);
  bad(acmeText('challenges = ["http-01", "http-01"]'), 'acme.challenges', 4, /lists a type twice/);
  bad(acmeText('challenges = []'), 'acme.challenges', 4, /at least one challenge type/);
  bad(acmeText('challenges = "http-01"'), 'acme.challenges', 4, /expected a list of strings/);
  bad(acmeText('renew_fraction = 1'), 'acme.renew_fraction', 4, /between 0 and 1 \(exclusive\), got 1/);
  bad(acmeText('renew_fraction = 0'), 'acme.renew_fraction', 4, /between 0 and 1 \(exclusive\), got 0/);
  bad(acmeText('renew_fraction = 1.5'), 'acme.renew_fraction', 4, /must be between 0 and 1, got 1\.5/);
  bad(acmeText('renew_jitter = "soon"'), 'acme.renew_jitter', 4, /invalid duration "soon"/);
  bad(acmeText('renew_jitter = "-1s"'), 'acme.renew_jitter', 4, /invalid duration/);
  bad(acmeText('backoff_min = "10m"', 'backoff_max = "5m"'), 'acme.backoff_max', 5, /must not be below backoff_min$/);
  bad(acmeText('backoff_max = "30s"'), 'acme.backoff_max', 4, /must not be below backoff_min/, {});
  bad(acmeText('backoff_min = "0s"'), 'acme.backoff_min', 4, /greater than zero/);
  bad(acmeText('orders_per_hour = 0'), 'acme.orders_per_hour', 4, /must be at least 1, got 0/);
  bad(acmeText('orders_per_hour = 1.5'), 'acme.orders_per_hour', 4, /expected an integer/);
  bad(acmeText('on_demand_per_minute = 0'), 'acme.on_demand_per_minute', 4, /must be a positive number, got 0/);
  bad(acmeText('on_demand_per_minute = inf'), 'acme.on_demand_per_minute', 4, /must be a positive number, got Infinity/);
  bad(acmeText('on_demand_burst = 0'), 'acme.on_demand_burst', 4, /must be at least 1/);
  bad(acmeText('on_demand_host_interval = -1'), 'acme.on_demand_host_interval', 4, /must not be negative/);
  bad(acmeText('concurrency = 0'), 'acme.concurrency', 4, /must be at least 1/);
  bad(acmeText('request_timeout = 0'), 'acme.request_timeout', 4, /greater than zero/);
  bad(acmeText('order_timeout = "2h"', 'request_timeout = "1x"'), 'acme.request_timeout', 5, /invalid duration "1x"/);
  bad(acmeText('renew_fractoin = 0.5'), 'acme.renew_fractoin', 4, /unknown key; did you mean "renew_fraction"\?/);
  bad(acmeText('dns_provider = "x"'), 'acme.dns_provider', 4, /unknown key; .*known keys here: .*directory_url/);
  bad('acme = "https://ca.example.com/dir"', 'acme', 1, /expected a table, got the string/);

  // [acme.eab]
  const eab = (...lines: string[]): string => acmeText('[acme.eab]', ...lines);
  bad(eab('kid = "k"', 'hmac_key_env = "PETREL_EAB"'), 'acme.eab.hmac_key_env', 6, /environment variable PETREL_EAB is not set/);
  bad(eab('kid = "k"', 'hmac_key_env = "PETREL_EAB"'), 'acme.eab.hmac_key_env', 6, /environment variable PETREL_EAB is empty/, { PETREL_EAB: '' });
  bad(eab('kid = "k"', 'hmac_key_env = "PETREL_EAB"'), 'acme.eab.hmac_key_env', 6, /the value of PETREL_EAB must be the base64url HMAC key/, { PETREL_EAB: 'not base64!' });
  bad(eab('kid = "k"', 'hmac_key_env = "1X"'), 'acme.eab.hmac_key_env', 6, /is not valid: use letters, digits and underscores/);
  bad(eab('kid = "k"', 'hmac_key = "a b"'), 'acme.eab.hmac_key', 6, /must be the base64url HMAC key the CA issued/);
  bad(eab('kid = "k"', 'hmac_key = "aG1hYw"', 'hmac_key_env = "PETREL_EAB"'), 'acme.eab.hmac_key_env', 7, /either hmac_key or hmac_key_env, not both/, { PETREL_EAB: 'aG1hYw' });
  bad(eab('kid = "k"'), 'acme.eab.hmac_key', 4, /missing required key: set hmac_key, or hmac_key_env/);
  bad(eab('hmac_key = "aG1hYw"'), 'acme.eab.kid', 4, /missing required key/);
  bad(eab('kid = ""', 'hmac_key = "aG1hYw"'), 'acme.eab.kid', 5, /must be a non-empty string/);
  bad(eab('kid = "k"', 'hmac_key = "aG1hYw"', 'hmac_kye = "x"'), 'acme.eab.hmac_kye', 7, /unknown key; did you mean "hmac_key"\?/);
});

t.test('[acme] ca_file must be a readable PEM file at load time', async (t) => {
  const dir = tree(t, { 'petrel.toml': '', 'apps/.keep': '', 'key.pem': '-----BEGIN PRIVATE KEY-----\n', 'ca/ok.pem': PEM });
  const file = path.join(dir, 'petrel.toml');
  const bad = (caFile: string, reason: RegExp): void =>
    throwsConfig(t, () => node(acmeText(`ca_file = "${caFile}"`), {}, file), { file, key: 'acme.ca_file', line: 4, reason });

  bad('missing.pem', new RegExp(`cannot read ${path.join(dir, 'missing.pem')} \\(ENOENT\\)`));
  bad('ca', /\(EISDIR\)/);
  bad('key.pem', /is not a readable PEM file with the CA's certificates \(no "-----BEGIN CERTIFICATE-----"\)/);
  bad('', /is not valid: give the path of a readable PEM file/);
  t.equal(node(acmeText('ca_file = "ca/ok.pem"'), {}, file).acme!.caFile, path.join(dir, 'ca/ok.pem'));

  // Through the loader and check-config too: the node config's own directory anchors the path.
  fs.writeFileSync(file, `apps_dir = "apps"\n${acmeText('ca_file = "nowhere.pem"')}\n`);
  await rejectsConfig(t, loadConfig(file, { env: {} }), { file, key: 'acme.ca_file', line: 5, reason: /cannot read .*nowhere\.pem \(ENOENT\)/ });
  fs.writeFileSync(file, `apps_dir = "apps"\n${acmeText('ca_file = "ca/ok.pem"', 'challenges = ["http-01"]')}\n`);
  const lines = await checkConfig(file, { env: {} });
  t.ok(lines.includes('acme: https://ca.example.com/dir, challenges http-01'), 'check-config summarises [acme] in one line');
});

// ---- [[certificates]] ----------------------------------------------------------------------------

t.test('[[certificates]] read right', async (t) => {
  const a = app(
    [
      'app = "web"',
      'hostnames = ["example.com", "*.example.com", "*.eu.example.com"]',
      '',
      '[[certificates]]',
      'hostname = "API.Example.com"',
      '',
      '[[certificates]]',
      'hostname = "shop.eu.example.com"',
      'acme = false',
      '',
      '[[certificates]]',
      'hostname = "*.eu.example.com"',
      'acme = false',
    ].join('\n'),
  );
  t.same(a.certificates, [
    { hostname: 'api.example.com', acme: true, source: { file: APP_FILE, line: 4 } },
    { hostname: 'shop.eu.example.com', acme: false, source: { file: APP_FILE, line: 7 } },
    { hostname: '*.eu.example.com', acme: false, source: { file: APP_FILE, line: 11 } },
  ]);
  t.same(a.hostnames, ['example.com', '*.example.com', '*.eu.example.com', 'web.localhost'], 'hostnames are unchanged');
  t.ok(Object.isFrozen(a.certificates) && Object.isFrozen(a.certificates[0]));
  t.same(app('app = "web"').certificates, [], 'none by default');

  const reference = await checkConfig(path.join(ROOT, 'config/examples/app-reference.toml'));
  t.ok(
    reference.includes('  certificates also for: api.reference.example.com (acme), *.reference.example.com (imported)'),
    'check-config lists the extra certificate names',
  );
  t.notOk((await checkConfig(path.join(ROOT, 'config/apps/hello.toml'), { env: {} })).some((l) => l.includes('certificates')));
});

t.test('[[certificates]] refusals name key and line', async (t) => {
  const A = 'app = "web"\nhostnames = ["shop.example.com", "*.example.com"]\n';
  const bad = (text: string, key: string, line: number, reason: RegExp): void => throwsConfig(t, () => app(A + text), { key, line, reason });

  bad('[[certificates]]\nacme = false', 'certificates[0].hostname', 3, /missing required key/);
  bad('[[certificates]]\nhostname = 7', 'certificates[0].hostname', 4, /expected a string, got the integer 7/);
  bad('[[certificates]]\nhostname = "api_x.example.com"', 'certificates[0].hostname', 4, /"api_x\.example\.com" is not a host name/);
  bad('[[certificates]]\nhostname = "*.*.example.com"', 'certificates[0].hostname', 4, /is not a host name/);
  bad('[[certificates]]\nhostname = "api.example.com"\nacme = "no"', 'certificates[0].acme', 5, /expected true or false/);
  bad('[[certificates]]\nhostname = "api.example.com"\nacmee = false', 'certificates[0].acmee', 5, /unknown key; did you mean "acme"\?/);
  bad('certificates = ["api.example.com"]', 'certificates[0]', 3, /expected a table, got the string/);

  // A wildcard needs an imported certificate: ACME wildcards need DNS-01.
  bad('[[certificates]]\nhostname = "*.example.com"', 'certificates[0].acme', 3, /is a wildcard: set acme = false .*DNS-01/);
  bad('[[certificates]]\nhostname = "*.example.com"\nacme = true', 'certificates[0].acme', 5, /DNS-01 challenge, which petrel does not do/);

  // Only names the app answers.
  const notAnswered = /is not one of this app's hostnames \(shop\.example\.com, \*\.example\.com, web\.localhost\)/;
  bad('[[certificates]]\nhostname = "api.example.org"', 'certificates[0].hostname', 4, notAnswered);
  bad('[[certificates]]\nhostname = "a.b.example.com"', 'certificates[0].hostname', 4, notAnswered);
  bad('[[certificates]]\nhostname = "example.com"', 'certificates[0].hostname', 4, notAnswered);
  bad('[[certificates]]\nhostname = "localhost"', 'certificates[0].hostname', 4, notAnswered);
  bad('[[certificates]]\nhostname = "*.a.example.com"\nacme = false', 'certificates[0].hostname', 4, notAnswered);

  // A hostname already gets a certificate.
  bad('[[certificates]]\nhostname = "Shop.example.com"', 'certificates[0].hostname', 4, /"shop\.example\.com" is already in this app's hostnames \(hostnames\[0\], line 2\), and every hostname already gets a certificate/);
  bad('[[certificates]]\nhostname = "web.localhost"\nacme = false', 'certificates[0].hostname', 4, /already in this app's hostnames \(as <app>\.<default_domain>\)/);

  bad(
    '[[certificates]]\nhostname = "api.example.com"\n\n[[certificates]]\nhostname = "www.example.com"\n\n[[certificates]]\nhostname = "API.example.com"\nacme = false',
    'certificates[2].hostname',
    10,
    /"api\.example\.com" is listed twice \(first on line 4\)/,
  );
});

t.test('[[certificates]] across apps', async (t) => {
  const dir = tree(t, {
    'petrel.toml': 'apps_dir = "apps"\n',
    'apps/a.toml': 'app = "a"\nhostnames = ["shop.example.com"]\n',
    'apps/b.toml': 'app = "b"\nhostnames = ["*.example.com"]\n\n[[certificates]]\nhostname = "api.example.com"\n',
  });
  const nodeFile = path.join(dir, 'petrel.toml');
  const bFile = path.join(dir, 'apps/b.toml');
  const config = await loadConfig(nodeFile, { env: {} });
  t.same(config.apps.get('b')!.certificates.map((c) => c.hostname), ['api.example.com']);

  // An exact hostname of another app wins over this app's wildcard: this app never answers it.
  fs.writeFileSync(bFile, 'app = "b"\nhostnames = ["*.example.com"]\n\n[[certificates]]\nhostname = "Shop.example.com"\n');
  await rejectsConfig(t, loadConfig(nodeFile, { env: {} }), {
    file: bFile,
    key: 'certificates[0].hostname',
    line: 5,
    reason: new RegExp(`"shop\\.example\\.com" is a hostname of app "a" \\(${path.join(dir, 'apps/a.toml')}:2\\), which gets that name's traffic`),
  });

  // The file rules make a second app listing the same name also claim the same wildcard hostname,
  // which is reported first; configs built from other sources meet the certificate rule itself.
  fs.writeFileSync(path.join(dir, 'apps/b.toml'), 'app = "b"\nhostnames = ["*.example.com"]\n[[certificates]]\nhostname = "api.example.com"\n');
  fs.writeFileSync(path.join(dir, 'apps/c.toml'), 'app = "c"\nhostnames = ["*.example.com"]\n[[certificates]]\nhostname = "api.example.com"\n');
  await rejectsConfig(t, loadConfig(nodeFile, { env: {} }), {
    file: path.join(dir, 'apps/c.toml'),
    key: 'hostnames[0]',
    line: 2,
    reason: /hostname "\*\.example\.com" is already claimed by app "b"/,
  });
  const b = app('app = "b"\nhostnames = ["*.example.com"]\n[[certificates]]\nhostname = "api.example.com"\n', '/srv/b.toml');
  const c = app('app = "c"\nhostnames = ["*.example.net"]\n[[certificates]]\nhostname = "api.example.net"\n', '/srv/c.toml');
  const sameName = { ...c, certificates: b.certificates };
  throwsConfig(t, () => buildConfig(NODE, [b, sameName]), {
    file: '/srv/c.toml',
    key: 'certificates[0].hostname',
    line: 1,
    reason: /certificate hostname "api\.example\.com" is already listed by app "b" \(\/srv\/b\.toml:4\)/,
  });
});
