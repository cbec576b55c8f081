// The petrel command line as an operator runs it: `node bin/petrel.js <command>`, exit codes,
// and what it prints. Every process is a real child; configs live in temp dirs.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { ROOT, makeNodeDir, runPetrel, staticAppText } from './helpers/spawn-petrel.ts';

function tempDir(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'petrel-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A port held by this test process for the duration of the test. */
function holdPort(t: Test): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer((s) => s.destroy());
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  });
}

t.test('help prints the usage and exits 0', async (t) => {
  for (const arg of ['help', '--help', '-h']) {
    const r = await runPetrel(t, [arg]);
    t.equal(r.code, 0, `${arg}: exit 0`);
    t.match(r.stdout, /usage: petrel <command>/, `${arg}: usage on stdout`);
    t.match(r.stdout, /start \[--config PATH\]/);
    t.match(r.stdout, /check-config/);
    t.equal(r.stderr, '', `${arg}: nothing on stderr`);
  }
});

t.test('no command: usage and exit 2', async (t) => {
  const r = await runPetrel(t, []);
  t.equal(r.code, 2);
  t.match(r.stdout + r.stderr, /usage: petrel/);
});

t.test('unknown command: exit 2, names it, prints the usage on stderr', async (t) => {
  const r = await runPetrel(t, ['frobnicate']);
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command frobnicate/);
  t.match(r.stderr, /usage: petrel/);
});

t.test('check-config of the embedded default config: exit 0 and OK', async (t) => {
  const r = await runPetrel(t, ['check-config', 'config/petrel.toml'], { cwd: ROOT });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^OK$/m, 'prints OK');
  t.match(r.stdout, /app hello/, 'describes the demo app');
  t.match(r.stdout, /machine hello-1/);
  t.match(r.stdout, /machine hello-2/);
  t.equal(r.stderr, '');
});

t.test('check-config of the demo app file alone: exit 0 and OK', async (t) => {
  const r = await runPetrel(t, ['check-config', 'config/apps/hello.toml'], { cwd: ROOT });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^OK$/m);
});

t.test('check-config of a bad app file: exit 1, stderr names file:line and the key path', async (t) => {
  const dir = tempDir(t);
  const cases: { name: string; text: string; line: number; key: string; reason: RegExp }[] = [
    {
      name: 'unknown key',
      text: 'app = "bad"\n\n[http_service]\ninternal_port = 8080\nforce_htps = true\n',
      line: 5,
      key: 'http_service.force_htps',
      reason: /unknown key/,
    },
    {
      name: 'wrong type',
      text: 'app = "bad"\n[http_service]\ninternal_port = "8080"\n',
      line: 3,
      key: 'http_service.internal_port',
      reason: /integer/,
    },
    {
      name: 'bad duration',
      text: 'app = "bad"\n[http_service]\ninternal_port = 8080\n\n[[http_service.checks]]\npath = "/healthz"\ninterval = "10 parsecs"\n',
      line: 7,
      key: 'http_service.checks[0].interval',
      reason: /duration/,
    },
  ];
  for (const c of cases) {
    const file = path.join(dir, `${c.name.replace(/ /g, '-')}.toml`);
    writeFileSync(file, c.text);
    const r = await runPetrel(t, ['check-config', file]);
    t.equal(r.code, 1, `${c.name}: exit 1`);
    t.ok(r.stderr.includes(`${file}:${c.line}`), `${c.name}: stderr names ${file}:${c.line}\n${r.stderr}`);
    t.ok(r.stderr.includes(c.key), `${c.name}: stderr names the key path ${c.key}`);
    t.match(r.stderr, c.reason, `${c.name}: says what is wrong`);
    t.notMatch(r.stdout, /^OK$/m, `${c.name}: no OK`);
  }
});

t.test('check-config of a node config whose app file is bad: exit 1 naming the app file', async (t) => {
  const nd = makeNodeDir(t, { apps: { web: 'app = "web"\n[http_service]\ninternal_port = 8080\nsoft_limit = 3\n' } });
  const r = await runPetrel(t, ['check-config', nd.configPath]);
  t.equal(r.code, 1);
  t.ok(r.stderr.includes(`${nd.appPath('web')}:4`), r.stderr);
  t.ok(r.stderr.includes('http_service.soft_limit'), r.stderr);
});

t.test('check-config of a missing file: exit 1 naming it', async (t) => {
  const missing = path.join(tempDir(t), 'nope.toml');
  const r = await runPetrel(t, ['check-config', missing]);
  t.equal(r.code, 1);
  t.ok(r.stderr.includes(missing), r.stderr);
});

t.test('start with a missing config file: exit 1 with a clear message', async (t) => {
  const missing = path.join(tempDir(t), 'missing', 'petrel.toml');
  const r = await runPetrel(t, ['start', '--config', missing]);
  t.equal(r.code, 1);
  t.match(r.stderr, /cannot start/);
  t.ok(r.stderr.includes(missing), `names the file: ${r.stderr}`);
  t.match(r.stderr, /cannot read|ENOENT|not found|no such file/i, 'says why');
  t.notMatch(r.stdout, /petrel started/);
});

t.test('start with --config and no path: exit 2', async (t) => {
  const r = await runPetrel(t, ['start', '--config']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--config needs a path/);
});

t.test('start with an invalid app file: exit 1 naming file:line and key', async (t) => {
  const nd = makeNodeDir(t, { apps: { web: 'app = "web"\n[http_service]\ninternal_port = 8080\nbogus = 1\n' } });
  const r = await runPetrel(t, ['start', '--config', nd.configPath]);
  t.equal(r.code, 1);
  t.ok(r.stderr.includes(`${nd.appPath('web')}:4`), r.stderr);
  t.ok(r.stderr.includes('http_service.bogus'), r.stderr);
  t.notMatch(r.stdout, /petrel started/);
});

t.test('start when a listen port is taken: exit 1 naming the address', async (t) => {
  const taken = await holdPort(t);
  const nd = makeNodeDir(t, {
    apps: { web: staticAppText('web', [{ id: 'm1', port: 9 }]) },
    listen80: `127.0.0.1:${taken}`,
  });
  const r = await runPetrel(t, ['start', '--config', nd.configPath]);
  t.equal(r.code, 1, r.stderr);
  t.ok(r.stderr.includes(`127.0.0.1:${taken}`), `names the address: ${r.stderr}`);
  t.match(r.stderr, /EADDRINUSE|in use/i, 'says why');
  t.notMatch(r.stdout, /petrel started/);
});

t.test('start when the admin port is taken: exit 1 naming the address', async (t) => {
  const taken = await holdPort(t);
  const nd = makeNodeDir(t, {
    apps: { web: staticAppText('web', [{ id: 'm1', port: 9 }]) },
    admin: `127.0.0.1:${taken}`,
  });
  const r = await runPetrel(t, ['start', '--config', nd.configPath]);
  t.equal(r.code, 1, r.stderr);
  t.ok(r.stderr.includes(`127.0.0.1:${taken}`), `names the address: ${r.stderr}`);
  t.notMatch(r.stdout, /petrel started/);
});
