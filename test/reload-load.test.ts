// Acceptance (issue 2): "Reload under load (wrk running): zero non-2xx responses, zero socket
// errors; a broken config file on reload changes nothing and the admin reply names file, key and
// line." petrel runs as a real process; wrk drives it; reloads come both ways (SIGHUP and
// POST /v1/reload) while the app file is rewritten between them.

import { writeFileSync, readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { requireBinary } from './helpers/deps.ts';
import {
  adminReload,
  makeNodeDir,
  request,
  startOrigin,
  startPetrelProcess,
  startWrk,
  staticAppText,
  type NodeDir,
  type Origin,
  type PetrelProcess,
  sleep,
  until,
} from './helpers/spawn-petrel.ts';

/** The app file with a harmless change: `n` extra hostnames alias-0.test .. alias-(n-1).test. */
function webApp(originPort: number, aliases: number): string {
  const names = Array.from({ length: aliases }, (_, i) => `"alias-${i}.test"`);
  return staticAppText('web', [{ id: 'web-1', port: originPort }], aliases > 0 ? `hostnames = [${names.join(', ')}]` : '');
}

async function setup(t: Test): Promise<{ origin: Origin; nd: NodeDir; p: PetrelProcess }> {
  const origin = await startOrigin(t, 'web-origin');
  const nd = makeNodeDir(t, { apps: { web: webApp(origin.port, 0) } });
  const p = await startPetrelProcess(t, { args: ['start', '--config', nd.configPath] });
  const first = await request(p.httpPort, { host: 'web.test' });
  t.equal(first.status, 200, 'serving before the test');
  return { origin, nd, p };
}

async function reloadCounts(adminPort: number): Promise<{ ok: number; bad: number }> {
  const body = (await request(adminPort, { path: '/metrics' })).body;
  const ok = /^petrel_config_reloads_total\{outcome="success"\} (\d+)/m.exec(body);
  const bad = /^petrel_config_reloads_total\{outcome="failure"\} (\d+)/m.exec(body);
  return { ok: ok ? Number(ok[1]) : 0, bad: bad ? Number(bad[1]) : 0 };
}

/**
 * SIGHUP, then wait for petrel's verdict. It is read from the reload counters on /metrics: the
 * 'config reloaded' log line may sit in petrel's stdout buffer (see spawn-petrel.ts).
 */
async function sighupReload(p: PetrelProcess): Promise<'reloaded' | 'refused' | 'no verdict'> {
  const before = await reloadCounts(p.adminPort);
  p.signal('SIGHUP');
  let after = before;
  const done = await until(async () => {
    after = await reloadCounts(p.adminPort);
    return after.ok + after.bad > before.ok + before.bad;
  }, 20_000, 10);
  if (!done) return 'no verdict';
  return after.ok > before.ok ? 'reloaded' : 'refused';
}

async function metric(adminPort: number, re: RegExp): Promise<number | null> {
  const r = await request(adminPort, { path: '/metrics' });
  const m = re.exec(r.body);
  return m ? Number(m[1]) : null;
}

t.test('reload under load: SIGHUP and POST /v1/reload while wrk runs, zero errors', async (t) => {
  const wrk = requireBinary(t, 'wrk', 'wrk');
  if (!wrk) return;
  const { origin, nd, p } = await setup(t);

  // wrk runs until the reloads are done (SIGINT: it prints its summary and exits 0), so every
  // reload happens under load however slow a loaded machine makes them; -d is only a backstop.
  const run = startWrk(t, wrk, ['-t1', '-c8', '-d120s', '-H', 'Host: web.test', `http://127.0.0.1:${p.httpPort}/`]);
  let wrkDone = false;
  void run.done.then(() => (wrkDone = true));
  // Reload only once load is flowing.
  const flowing = await waitUntil(() => origin.received >= 100 || wrkDone);
  t.ok(flowing && !wrkDone, 'wrk traffic reaches the origin');

  const before = origin.received;
  let reloadsDuringLoad = 0;
  let sighups = 0;
  let adminCalls = 0;
  let aliases = 0;
  const problems: string[] = [];
  // Twelve reloads, alternating SIGHUP and the admin call, each after rewriting the app file.
  for (let i = 0; i < 12 && !wrkDone; i++) {
    aliases++;
    nd.writeApp('web', webApp(origin.port, aliases));
    if (i % 2 === 0) {
      sighups++;
      const verdict = await sighupReload(p);
      if (verdict !== 'reloaded') problems.push(`SIGHUP #${sighups}: ${verdict}`);
    } else {
      adminCalls++;
      const r = await adminReload(p.adminPort);
      if (r.status !== 200 || r.json['ok'] !== true) problems.push(`POST /v1/reload #${adminCalls}: ${r.status} ${JSON.stringify(r.json)}`);
    }
    if (!wrkDone) reloadsDuringLoad++;
    await sleep(150);
  }
  const servedDuringReloads = origin.received - before;
  run.child.kill('SIGINT');
  const res = await run.done;
  t.same(problems, [], 'every reload under load succeeded');
  t.equal(reloadsDuringLoad, 12, `reloads finished while wrk was running: ${reloadsDuringLoad} (${sighups} SIGHUP, ${adminCalls} admin)`);
  t.comment(`wrk: ${res.requests} requests; origin served ${servedDuringReloads} during the ${reloadsDuringLoad} reloads`);
  t.equal(res.code, 0, 'wrk exited 0');
  t.ok(res.requests > 0, `wrk completed requests: ${res.requests}`);
  t.notOk(res.non2xxLine, `no "Non-2xx or 3xx responses" line (${res.non2xx})\n${res.output}`);
  t.same(res.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors\n${res.output}`);

  // The reloads took effect: the last alias routes; the successes were counted.
  const last = await request(p.httpPort, { host: `alias-${aliases - 1}.test` });
  t.equal(last.status, 200, 'the hostname added by the last reload routes');
  t.equal(await metric(p.adminPort, /^petrel_config_reloads_total\{outcome="success"\} (\d+)/m), sighups + adminCalls, 'reload successes counted');
  t.ok(p.running, 'petrel still running');
  t.same(p.stderr.filter((l) => /refused|failed|error/i.test(l)), [], 'nothing on stderr about failures');
});

t.test('a broken config on reload changes nothing; the admin reply names file, key and line', async (t) => {
  const wrk = requireBinary(t, 'wrk', 'wrk');
  if (!wrk) return;
  const { origin, nd, p } = await setup(t);
  const good = readFileSync(nd.appPath('web'), 'utf8');
  const goodNode = readFileSync(nd.configPath, 'utf8');

  // Start from a successful reload that adds a hostname, to have something to lose.
  nd.writeApp('web', webApp(origin.port, 1));
  const ok = await adminReload(p.adminPort);
  t.equal(ok.status, 200);
  t.equal((await request(p.httpPort, { host: 'alias-0.test' })).status, 200, 'alias-0.test routes');

  const run = startWrk(t, wrk, ['-t1', '-c8', '-d3s', '-H', 'Host: web.test', `http://127.0.0.1:${p.httpPort}/`]);
  await waitUntil(() => origin.received >= 100);

  const broken: { name: string; file: string; text: string; key: string; line: number }[] = [
    {
      // Wrong type on line 4; the same edit also drops the alias, which must not take effect.
      name: 'app file, wrong type',
      file: nd.appPath('web'),
      text: `app = "web"\n[http_service]\ninternal_port = ${origin.port}\nforce_https = "yes"\n[[machines]]\nid = "web-1"\ndriver = "static"\naddress = "127.0.0.1:${origin.port}"\n`,
      key: 'http_service.force_https',
      line: 4,
    },
    {
      name: 'app file, unknown key',
      file: nd.appPath('web'),
      text: webApp(origin.port, 0).replace('[http_service]\n', '[http_service]\nforce_htps = true\n'),
      key: 'http_service.force_htps',
      line: 0, // computed below
    },
    {
      name: 'node config, bad duration',
      file: nd.configPath,
      text: goodNode.replace('[limits]\n', '[limits]\nidle_timeout = "forever"\n'),
      key: 'limits.idle_timeout',
      line: 0,
    },
  ];
  for (const b of broken) if (b.line === 0) b.line = b.text.split('\n').findIndex((l) => l.startsWith(b.key.split('.').pop()!)) + 1;

  for (const b of broken) {
    // The good app file is restored before each case, so only one file is broken at a time.
    nd.writeApp('web', webApp(origin.port, 1));
    writeFileSync(nd.configPath, goodNode);
    writeFileSync(b.file, b.text);

    const r = await adminReload(p.adminPort);
    t.equal(r.status, 422, `${b.name}: POST /v1/reload answers 422`);
    t.equal(r.json['ok'], false, `${b.name}: ok false`);
    const err = (r.json['error'] ?? {}) as Record<string, unknown>;
    t.equal(err['file'], b.file, `${b.name}: error.file`);
    t.equal(err['key'], b.key, `${b.name}: error.key`);
    t.equal(err['line'], b.line, `${b.name}: error.line`);
    t.type(err['reason'], 'string', `${b.name}: error.reason says why: ${String(err['reason'])}`);

    const from = p.stderr.length;
    const verdict = await sighupReload(p);
    t.equal(verdict, 'refused', `${b.name}: SIGHUP reload refused`);
    const line = await p.waitForStderr(/reload refused/, 20_000, from);
    t.ok(line.includes(b.file) && line.includes(b.key) && line.includes(`:${b.line}:`), `${b.name}: stderr names file, key and line: ${line}`);

    // Nothing changed: the alias from the last good config still routes, the app still serves.
    t.equal((await request(p.httpPort, { host: 'web.test' })).status, 200, `${b.name}: web.test still 200`);
    t.equal((await request(p.httpPort, { host: 'alias-0.test' })).status, 200, `${b.name}: alias-0.test (old config) still 200`);
  }

  const res = await run.done;
  t.ok(res.requests > 0, `wrk completed ${res.requests} requests across the refused reloads`);
  t.notOk(res.non2xxLine, `no non-2xx responses\n${res.output}`);
  t.same(res.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 }, `no socket errors\n${res.output}`);

  t.equal(await metric(p.adminPort, /^petrel_config_reloads_total\{outcome="failure"\} (\d+)/m), broken.length * 2, 'refusals counted');

  // Fixing the file makes the next reload succeed again.
  writeFileSync(nd.configPath, goodNode);
  nd.writeApp('web', good);
  const fixed = await adminReload(p.adminPort);
  t.equal(fixed.status, 200, 'reload after the fix succeeds');
  t.equal((await request(p.httpPort, { host: 'alias-0.test' })).status, 404, 'and now the alias is gone (the good file had none)');
  t.ok(p.running);
});

/** Polls `test` until true; false after 15 s (a safety net, not an assertion of speed). */
function waitUntil(test: () => boolean): Promise<boolean> {
  return until(test, 15_000, 10);
}
