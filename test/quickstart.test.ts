// The README's promise to a newcomer: `npm start` (here: `node bin/petrel.js start`, no --config)
// runs the embedded default config (config/petrel.toml + config/apps/hello.toml) on the fixed
// ports 8080, 8443 and 9091, with two `process` demo Machines, and curl reaches them over HTTP,
// HTTPS and HTTP/2 at hello.localhost (curl resolves *.localhost to loopback by itself).
//
// Fixed ports: this is the only suite that binds them. A lock file in the temp dir keeps two
// copies of this suite (two test runs in the same tree or on the same machine) from running at
// once; if a port is taken by anything else, the suite skips and says which one.

import { execFile } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { requireBinary } from './helpers/deps.ts';
import { ROOT, cleanEnv, pidAlive, request, sleep, startPetrelProcess, until } from './helpers/spawn-petrel.ts';

const PORTS: { host: string; port: number; what: string }[] = [
  { host: '0.0.0.0', port: 8080, what: 'http' },
  { host: '0.0.0.0', port: 8443, what: 'https' },
  { host: '127.0.0.1', port: 9091, what: 'admin' },
];
const LOCK = path.join(os.tmpdir(), 'petrel-quickstart-test.lock');

/** Takes the lock (waiting up to `waitMs` for another live holder); false if it stays taken. */
async function lock(waitMs: number): Promise<boolean> {
  const end = Date.now() + waitMs;
  for (;;) {
    try {
      const fd = openSync(LOCK, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = 0;
    try {
      holder = Number(readFileSync(LOCK, 'utf8'));
    } catch {
      continue; // released between our open and read: try again
    }
    if (!Number.isInteger(holder) || holder <= 0 || !pidAlive(holder)) {
      // A holder that died without releasing (killed test run): the lock is stale.
      try {
        unlinkSync(LOCK);
      } catch {
        // someone else removed it first
      }
      continue;
    }
    if (Date.now() > end) return false;
    await sleep(250);
  }
}

function unlock(): void {
  try {
    if (readFileSync(LOCK, 'utf8') === String(process.pid)) unlinkSync(LOCK);
  } catch {
    // already gone
  }
}

/** Null when free, else the error code of binding it. */
function portBusy(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(null)));
  });
}

interface Curl {
  readonly code: number | null;
  readonly statusLine: string;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly stderr: string;
}

function curl(bin: string, args: string[]): Promise<Curl> {
  return new Promise((resolve) => {
    execFile(bin, ['-sS', '-i', '--max-time', '30', ...args], { encoding: 'utf8', timeout: 40_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
      const cut = stdout.indexOf('\r\n\r\n');
      const headText = cut === -1 ? stdout : stdout.slice(0, cut);
      const body = cut === -1 ? '' : stdout.slice(cut + 4);
      const [statusLine = '', ...lines] = headText.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const m = /^HTTP\/[\d.]+ (\d{3})/.exec(statusLine);
      resolve({ code, statusLine, status: m ? Number(m[1]) : 0, headers, body, stderr });
    });
  });
}

interface DemoAnswer {
  machine: string;
  app: string;
  region: string;
  headers: Record<string, string>;
}

t.test('quickstart: petrel start on the embedded default config, then curl', async (t) => {
  const curlBin = requireBinary(t, 'curl', 'curl');
  if (!curlBin) return;
  if (!(await lock(60_000))) {
    t.plan(0, `another copy of this suite holds ${LOCK} (it binds the fixed ports 8080, 8443, 9091)`);
    return;
  }
  t.teardown(unlock);
  for (const p of PORTS) {
    const busy = await portBusy(p.host, p.port);
    if (busy !== null) {
      t.plan(0, `port ${p.port} (${p.what}, from config/petrel.toml) is busy on this machine (${busy}): skipping the quickstart check`);
      return;
    }
  }

  // As a newcomer runs it: repo root, no --config, no PETREL_* in the environment.
  const p = await startPetrelProcess(t, { args: ['start'], cwd: ROOT, env: cleanEnv() });
  t.same(
    [p.httpPort, p.httpsPort, p.adminPort],
    [8080, 8443, 9091],
    'binds 8080 (http), 8443 (https) and 9091 (admin)',
  );
  const human = p.stderr.join('\n');
  t.match(human, /curl http:\/\/hello\.localhost:8080\//, 'the start-up lines say where to point curl (http)');
  t.match(human, /curl -k https:\/\/hello\.localhost:8443\//, '... and https');
  const tokenMatch = /Authorization: Bearer ([A-Za-z0-9_-]+)'/.exec(human);
  t.ok(tokenMatch, 'the generated admin token is shown once');

  // The demo Machines' pids, to check they are gone after the shutdown.
  let pids: number[] = [];
  if (tokenMatch) {
    const list = await request(9091, { path: '/v1/apps/hello/machines', headers: { authorization: `Bearer ${tokenMatch[1]}` } });
    t.equal(list.status, 200, 'admin lists the demo Machines');
    const machines = JSON.parse(list.body) as { id: string; pid?: number }[];
    t.same(machines.map((m) => m.id).sort(), ['hello-1', 'hello-2'], 'two demo Machines');
    pids = machines.map((m) => m.pid ?? 0).filter((n) => n > 0);
    t.equal(pids.length, 2, `both run as processes: ${pids.join(', ')}`);
  }
  // Recorded pids: killed on teardown if petrel left them behind.
  t.teardown(() => {
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  });

  const check = (label: string, r: Curl, proto: 'http' | 'https', via: string): void => {
    t.equal(r.code, 0, `${label}: curl exit 0 ${r.stderr}`);
    t.equal(r.status, 200, `${label}: 200 (${r.statusLine})`);
    t.equal(r.headers['server'], 'petrel', `${label}: server: petrel`);
    t.match(r.headers['fly-request-id'] ?? '', /^[0-9A-Z]{26}-local$/, `${label}: fly-request-id <ULID>-local`);
    t.match(r.headers['via'] ?? '', /petrel/, `${label}: via`);
    let a: DemoAnswer | null = null;
    try {
      a = JSON.parse(r.body) as DemoAnswer;
    } catch {
      t.fail(`${label}: the body is the demo Machine's JSON: ${r.body.slice(0, 200)}`);
      return;
    }
    t.ok(['hello-1', 'hello-2'].includes(a.machine), `${label}: answered by ${a.machine}`);
    t.equal(a.app, 'hello');
    t.equal(a.region, 'local');
    const h = a.headers;
    t.equal(h['fly-client-ip'], '127.0.0.1', `${label}: Fly-Client-IP`);
    t.match(h['x-forwarded-for'] ?? '', /127\.0\.0\.1$/, `${label}: X-Forwarded-For ends with the peer`);
    t.equal(h['x-forwarded-proto'], proto, `${label}: X-Forwarded-Proto ${proto}`);
    t.equal(h['x-forwarded-ssl'], proto === 'https' ? 'on' : 'off', `${label}: X-Forwarded-SSL`);
    t.ok(h['x-forwarded-port'], `${label}: X-Forwarded-Port`);
    t.ok(h['fly-forwarded-port'], `${label}: Fly-Forwarded-Port`);
    t.equal(h['fly-region'], 'local', `${label}: Fly-Region`);
    t.match(h['fly-request-id'] ?? '', /^[0-9A-Z]{26}-local$/, `${label}: Fly-Request-Id reaches the Machine`);
    t.equal(h['fly-request-id'], r.headers['fly-request-id'], `${label}: same request id both ways`);
    t.equal(h['via'], via, `${label}: Via ${via}`);
    t.equal(h['host'], proto === 'http' ? 'hello.localhost:8080' : 'hello.localhost:8443', `${label}: Host as the client sent it`);
  };

  // config/apps/hello.toml promises "a Machine receives traffic ... after a start, only once
  // [its check] has passed: no cold-start 502s". A newcomer who runs curl the moment the start-up
  // lines appear must get the demo's answer, not a 502 (Machine not listening yet) or a 503 (all
  // Machines out of routing until their next check).
  const first = await curl(curlBin, ['http://hello.localhost:8080/']);
  t.equal(first.status, 200, `curl right after start-up: 200 (${first.statusLine}: ${first.body.trim().slice(0, 120)})`);

  // The rest checks the answers themselves, once both Machines are past their check grace
  // period (1 s in hello.toml) and in routing.
  await sleep(1200);
  const settled = await until(async () => {
    if (!tokenMatch) return true;
    const r = await request(9091, { path: '/v1/apps/hello/machines', headers: { authorization: `Bearer ${tokenMatch[1]}` } });
    const ms = JSON.parse(r.body) as { checks: Record<string, { healthy: boolean }> }[];
    return ms.length === 2 && ms.every((m) => Object.values(m.checks).every((c) => c.healthy));
  }, 20_000, 100);
  t.ok(settled, 'both demo Machines pass their checks');

  const plain = await curl(curlBin, ['http://hello.localhost:8080/']);
  check('http', plain, 'http', '1.1 petrel');
  const tls = await curl(curlBin, ['-k', '--http1.1', 'https://hello.localhost:8443/']);
  check('https', tls, 'https', '1.1 petrel');
  const h2 = await curl(curlBin, ['-k', '--http2', 'https://hello.localhost:8443/']);
  t.match(h2.statusLine, /^HTTP\/2 /, 'curl --http2 negotiated HTTP/2');
  check('http/2', h2, 'https', '2 petrel');

  // Both demo Machines take traffic (least loaded with random ties): a few requests see both.
  const seen = new Set<string>();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const r = await request(8080, { host: 'hello.localhost' });
    if (r.status === 200) seen.add((JSON.parse(r.body) as DemoAnswer).machine);
  }
  t.same([...seen].sort(), ['hello-1', 'hello-2'], 'both demo Machines answer');

  t.equal((await request(9091, { path: '/healthz' })).status, 200, 'admin /healthz');
  t.equal((await request(9091, { path: '/readyz' })).status, 200, 'admin /readyz');
  t.match((await request(9091, { path: '/metrics' })).body, /petrel_http_responses_total\{[^}]*app="hello"/, 'admin /metrics counts the responses');

  p.signal('SIGTERM');
  const exit = await p.waitExit(40_000);
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0');
  for (const pid of pids) t.notOk(pidAlive(pid), `demo Machine process ${pid} is gone`);
});
