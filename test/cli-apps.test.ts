// `petrel apps ...` as an operator runs it: the real binary against a running petrel process
// (embedded store), and against a recording stand-in for the admin API where a test must see
// exactly what was sent, or that nothing was.

import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { cleanEnv, makeNodeDir, runPetrel, startPetrelProcess, staticAppText, type NodeDir } from './helpers/spawn-petrel.ts';
import { freePort } from './helpers/prometheus.ts';


interface Recorded {
  readonly method: string;
  readonly url: string;
  readonly authorization: string | undefined;
  readonly body: string;
}

/** An admin API stand-in on loopback that records requests and answers `reply`. */
async function fakeAdmin(t: Test, reply: { status: number; body: unknown }): Promise<{ port: number; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, body });
      res.writeHead(reply.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(reply.body));
    });
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { port, requests };
}

/** A node dir whose admin listener is `address`; `admin` replaces the token line. */
function nodeDirAt(t: Test, address: string, admin?: string): NodeDir {
  const nd = makeNodeDir(t, { apps: {}, admin: address });
  if (admin !== undefined) writeFileSync(nd.configPath, readFileSync(nd.configPath, 'utf8').replace('token = "test-token"', admin));
  return nd;
}

const web = staticAppText('web', [{ id: 'web-1', port: 9 }], 'hostnames = ["www.example.com"]');

t.test('help lists the apps commands', async (t) => {
  const r = await runPetrel(t, ['help']);
  t.match(r.stdout, /apps deploy FILE/);
  t.match(r.stdout, /apps destroy NAME \[--yes\]/);
  const apps = await runPetrel(t, ['apps']);
  t.equal(apps.code, 2, 'apps without a command is a usage error');
  t.match(apps.stderr, /usage: petrel apps <command>/);
});

t.test('against a running petrel with the embedded store', async (t) => {
  const adminPort = await freePort();
  const nd = makeNodeDir(t, { apps: { web, api: staticAppText('api', [{ id: 'api-1', port: 9 }]) }, admin: `127.0.0.1:${adminPort}` });
  await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });
  const apps = (args: string[], env?: Record<string, string | undefined>) => runPetrel(t, ['apps', ...args], { env: cleanEnv(env) });

  t.test('list: an aligned table, the node config found through --config or $PETREL_CONFIG', async (t) => {
    const expected = [
      'NAME  MACHINES  CONNECTIONS  HOSTNAMES',
      'api   1         0            api.test',
      'web   1         0            www.example.com, web.test',
    ];
    const r = await apps(['list', '--config', nd.configPath]);
    t.equal(r.code, 0, r.stderr);
    t.same(r.stdout.split('\n').sort((a, b) => (a.startsWith('NAME') ? -1 : b.startsWith('NAME') ? 1 : a < b ? -1 : 1)), expected);
    t.equal(r.stderr, '');
    const viaEnv = await apps(['list'], { PETREL_CONFIG: nd.configPath });
    t.equal(viaEnv.code, 0, viaEnv.stderr);
    t.equal(viaEnv.stdout.split('\n').length, 3);
  });

  t.test('show: the summary, then the app file', async (t) => {
    const r = await apps(['show', 'web', '--config', nd.configPath]);
    t.equal(r.code, 0, r.stderr);
    const head = r.stdout.split('\n\n', 1)[0]!;
    t.same(head.split('\n'), [
      'app web',
      '  hostnames: www.example.com, web.test',
      '  machines: 1',
      '  primary region: tst',
      '  store: embedded',
      `  file: ${nd.appPath('web')}`,
    ]);
    // runPetrel joins the output lines, so the file's last newline is not there.
    t.equal(r.stdout.slice(head.length + 2), web.trimEnd(), 'the TOML text as the file reads');
  });

  t.test('deploy of a valid file: exit 1 with the PA18 message, the app file unchanged', async (t) => {
    const file = path.join(nd.dir, 'web-v2.toml');
    writeFileSync(file, web.replace('www.example.com', 'v2.example.com'));
    const r = await apps(['deploy', file, '--config', nd.configPath]);
    t.equal(r.code, 1);
    t.equal(r.stderr, `petrel: PA18 the embedded store reads app files from ${path.join(nd.dir, 'apps')}: edit the file there and reload`);
    t.equal(r.stdout, '');
    t.equal(readFileSync(nd.appPath('web'), 'utf8'), web);
  });

  t.test('destroy --yes: exit 1 with the PA18 message', async (t) => {
    const r = await apps(['destroy', 'web', '--yes', '--config', nd.configPath]);
    t.equal(r.code, 1);
    t.equal(r.stderr, `petrel: PA18 the embedded store reads app files from ${path.join(nd.dir, 'apps')}: remove ${nd.appPath('web')} and reload`);
  });

  t.test('the token through token_env, from the real environment', async (t) => {
    const cli = nodeDirAt(t, `127.0.0.1:${adminPort}`, 'token_env = "CLI_APPS_TEST_TOKEN"');
    const ok = await apps(['list', '--config', cli.configPath], { CLI_APPS_TEST_TOKEN: 'test-token' });
    t.equal(ok.code, 0, ok.stderr);
    const wrong = await apps(['list', '--config', cli.configPath], { CLI_APPS_TEST_TOKEN: 'not-it' });
    t.equal(wrong.code, 1);
    t.match(wrong.stderr, /^petrel: PA01 missing or wrong bearer token \(is the token in the node config the one the daemon at 127\.0\.0\.1:\d+ was started with\?\)$/);
  });
});

t.test('deploy of an invalid file: exit 1 with file:line and key, nothing sent', async (t) => {
  const admin = await fakeAdmin(t, { status: 201, body: {} });
  const nd = nodeDirAt(t, `127.0.0.1:${admin.port}`);
  const file = path.join(nd.dir, 'bad.toml');
  writeFileSync(file, 'app = "bad"\n[http_service]\ninternal_port = 8080\nforce_htps = true\n');
  const r = await runPetrel(t, ['apps', 'deploy', file, '--config', nd.configPath]);
  t.equal(r.code, 1);
  const [first, second] = r.stderr.split('\n');
  t.match(first, `${file}:4: http_service.force_htps: unknown key`);
  t.equal(second, 'petrel: the app file is invalid; nothing was deployed');
  t.same(admin.requests, [], 'nothing reached the admin API');
});

t.test('deploy of a valid file: sends the text with its name, prints the node\'s summary', async (t) => {
  const admin = await fakeAdmin(t, { status: 201, body: { name: 'web', hostnames: ['www.example.com', 'web.test', 'x.test'], machines: 2 } });
  const nd = nodeDirAt(t, `127.0.0.1:${admin.port}`);
  const file = path.join(nd.dir, 'web.toml');
  writeFileSync(file, web);
  const r = await runPetrel(t, ['apps', 'deploy', file, '--config', nd.configPath]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'deployed app web (3 hostnames, 2 Machines)');
  t.equal(admin.requests.length, 1);
  const sent = admin.requests[0]!;
  t.equal(sent.method, 'POST');
  t.equal(sent.url, '/v1/apps');
  t.equal(sent.authorization, 'Bearer test-token');
  t.same(JSON.parse(sent.body), { name: 'web', config: web });
});

t.test('destroy without --yes and no terminal: refused, nothing sent', async (t) => {
  const admin = await fakeAdmin(t, { status: 200, body: {} });
  const nd = nodeDirAt(t, `127.0.0.1:${admin.port}`);
  const r = await runPetrel(t, ['apps', 'destroy', 'web', '--config', nd.configPath]);
  t.equal(r.code, 2);
  t.equal(r.stderr, 'petrel: not destroying app web: stdin is not a terminal to ask on; pass --yes');
  t.same(admin.requests, []);
  const yes = await runPetrel(t, ['apps', 'destroy', 'web', '--yes', '--config', nd.configPath]);
  t.equal(yes.code, 0, yes.stderr);
  t.equal(yes.stdout, 'destroyed app web');
  t.same(admin.requests.map((q) => `${q.method} ${q.url}`), ['DELETE /v1/apps/web']);
});

t.test('daemon not running: a clear error', async (t) => {
  const port = await freePort();
  const nd = nodeDirAt(t, `127.0.0.1:${port}`);
  const r = await runPetrel(t, ['apps', 'list', '--config', nd.configPath]);
  t.equal(r.code, 1);
  t.equal(r.stderr, `petrel: cannot reach petrel's admin API at 127.0.0.1:${port}: ECONNREFUSED (is the daemon running?)`);
});

t.test('a node config the CLI cannot use: the admin listener on port 0', async (t) => {
  const nd = nodeDirAt(t, '127.0.0.1:0');
  const zero = await runPetrel(t, ['apps', 'list', '--config', nd.configPath]);
  t.equal(zero.code, 1);
  t.match(zero.stderr, /binds port 0 .*give \[admin\] address a fixed port/);
});
