import t, { type Test } from 'tap';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import forge from 'node-forge';
import type { AppConfig, Check } from '../src/config/types.ts';
import { StaticDriver } from '../src/machines/drivers/static.ts';
import { HealthChecker } from '../src/machines/health.ts';
import { MachineManager } from '../src/machines/manager.ts';
import { allocatePort } from '../src/machines/ports.ts';
import { MachineRuntime } from '../src/machines/runtime.ts';
import {
  appConfig,
  canConnect,
  captureLogger,
  config,
  demoMachine,
  httpCheck,
  serviceConfig,
  sleep,
  startServer,
  staticMachine,
  tcpCheck,
  waitFor,
} from './helpers/machines-fixtures.ts';

interface Backend {
  status: number;
  hits: number;
  readonly seen: Array<{ method: string; url: string; headers: Record<string, unknown> }>;
  readonly port: number;
}

async function backend(t: Test): Promise<Backend> {
  const b = { status: 200, hits: 0, seen: [] as Backend['seen'], port: 0 };
  const srv = await startServer((req, res) => {
    b.hits++;
    b.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (req.url === '/hang') return; // never answers
    res.statusCode = b.status;
    res.end();
  });
  b.port = srv.port;
  t.teardown(() => srv.close());
  return b;
}

function appWith(checks: readonly Check[], o: Partial<AppConfig> = {}): AppConfig {
  return appConfig({ name: 'hello', services: [serviceConfig({ internalPort: 8080, checks })], ...o });
}

/** A started static Machine at 127.0.0.1:port, as the manager would leave it. */
async function startedMachine(port: number, app: AppConfig): Promise<MachineRuntime> {
  const m = new MachineRuntime(staticMachine('h1', `127.0.0.1:${port}`));
  await new StaticDriver().start(m, app);
  m.state = 'started';
  m.startedAt = performance.now();
  return m;
}

function checker(t: Test): { health: HealthChecker; cap: ReturnType<typeof captureLogger> } {
  const cap = captureLogger();
  const health = new HealthChecker({ logger: cap.logger });
  t.teardown(() => health.close());
  return { health, cap };
}

const failingLogs = (cap: ReturnType<typeof captureLogger>): number => cap.messages().filter((s) => s.includes('checks failing')).length;
const healthyLogs = (cap: ReturnType<typeof captureLogger>): number => cap.messages().filter((s) => s.includes('back in routing')).length;

t.test('http check: 500 takes the Machine out within one interval, recovery brings it back', async (t) => {
  const b = await backend(t);
  const { health, cap } = checker(t);
  const app = appWith([httpCheck({ intervalMs: 100, timeoutMs: 300 })]);
  const m = await startedMachine(b.port, app);
  const slot = m.slot(8080);
  health.watch(m, app);
  t.equal(slot.hasChecks, true);
  t.equal(slot.healthy, false, 'no traffic before the checks first pass (no cold-start 502s)');
  t.equal(slot.warming, true, 'but worth waiting for');
  await waitFor(() => health.passing(m, 8080), 10_000, 'first pass');
  await waitFor(() => slot.healthy, 10_000, 'in routing after the first pass');
  t.equal(slot.warming, false);

  b.status = 500;
  const t0 = performance.now();
  await waitFor(() => !slot.healthy, 10_000, 'unhealthy');
  t.comment(`out of routing after ${Math.round(performance.now() - t0)} ms (interval 100 ms)`);
  t.notOk(health.passing(m, 8080));
  await sleep(350);
  t.equal(failingLogs(cap), 1, 'the change is logged once, not every interval');
  const line = cap.lines.find((l) => String(l.msg).includes('checks failing'))!;
  t.match(line, { machine: 'h1', app: 'hello', internalPort: 8080, reason: 'check http failed: HTTP 500' });

  b.status = 302; // 3xx passes
  await waitFor(() => slot.healthy, 10_000, 'healthy again');
  await sleep(250);
  t.equal(healthyLogs(cap), 1, 'recovery logged once');
  t.equal(b.seen[0]!.url, '/healthz');
  t.equal(b.seen[0]!.headers.host, `127.0.0.1:${b.port}`, 'Host defaults to the address');
});

t.test('http check: method, path, headers and Host', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const headers = new Map([
    ['host', 'hello.example'],
    ['x-check', 'yes'],
  ]);
  const app = appWith([httpCheck({ method: 'HEAD', path: '/status?deep=1', headers })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => b.seen.length > 0, 10_000, 'a check request');
  t.match(b.seen[0], { method: 'HEAD', url: '/status?deep=1', headers: { host: 'hello.example', 'x-check': 'yes' } });
});

t.test('http check: a hung Machine fails by timeout', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const app = appWith([httpCheck({ path: '/hang', intervalMs: 100, timeoutMs: 150 })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => !m.slot(8080).healthy, 10_000, 'unhealthy');
  t.pass('hung Machine out of routing');
});

t.test('tcp check on a closed port: unhealthy', async (t) => {
  const { health, cap } = checker(t);
  const port = await allocatePort(); // free, so nothing listens there
  const app = appWith([tcpCheck({ intervalMs: 100 })]);
  const m = await startedMachine(port, app);
  health.watch(m, app);
  await waitFor(() => cap.lines.some((l) => String(l.msg).includes('checks failing')), 5000, 'out of routing');
  t.notOk(m.slot(8080).healthy);
  t.match(cap.lines.find((l) => String(l.msg).includes('checks failing')), { reason: /ECONNREFUSED/ });
});

t.test('tcp check on a listening port: healthy and passing', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const app = appWith([tcpCheck({ intervalMs: 100 })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => health.passing(m, 8080), 10_000, 'passing');
  t.equal(m.slot(8080).healthy, true);
  t.equal(b.hits, 0, 'a TCP check sends no request');
});

t.test('grace period: failures do not end warming until it ends, then out at once', async (t) => {
  const b = await backend(t);
  b.status = 500;
  const { health } = checker(t);
  // A long interval: leaving routing at grace end must not wait for the next check.
  // The grace is long enough that a loaded machine is still inside it after the first check.
  const app = appWith([httpCheck({ intervalMs: 5000, gracePeriodMs: 1500 })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => b.hits > 0, 10_000, 'the first check');
  await sleep(100);
  t.equal(m.slot(8080).warming, true, 'still warming within the grace period despite a failed check');
  t.equal(m.slot(8080).healthy, false, 'not routed before a pass');
  t.notOk(health.passing(m, 8080), 'not passing');
  await waitFor(() => !m.slot(8080).warming, 10_000, 'warming over after grace');
  const since = performance.now() - m.startedAt;
  t.ok(since >= 1500, `warming ended with the grace (${Math.round(since)} ms after start)`);
  t.equal(m.slot(8080).healthy, false, 'out of routing');
});

t.test('grace period: a pass within grace counts', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const app = appWith([httpCheck({ intervalMs: 5000, gracePeriodMs: 300 })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => health.passing(m, 8080), 10_000, 'passing');
  await sleep(400);
  t.equal(m.slot(8080).healthy, true, 'healthy after grace');
});

t.test('services without checks: no check traffic, healthy follows state', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const app = appWith([]);
  const m = await startedMachine(b.port, app);
  m.slot(8080).healthy = false; // whatever it was, no checks means healthy
  health.watch(m, app);
  await sleep(300);
  t.equal(b.hits, 0);
  t.equal(m.slot(8080).hasChecks, false);
  t.equal(m.slot(8080).healthy, true);
  t.equal(health.passing(m, 8080), true);
});

t.test('several checks: healthy only when all pass', async (t) => {
  const b = await backend(t);
  const { health } = checker(t);
  const closed = await allocatePort();
  const app = appWith([httpCheck({ name: 'web' }), tcpCheck({ name: 'other' })]);
  const m = await startedMachine(b.port, app);
  health.watch(m, app);
  await waitFor(() => health.passing(m, 8080), 10_000, 'both passing');
  // Point the Machine at a closed port: both fail, reason names the first failing check.
  m.ports.set(8080, closed);
  await waitFor(() => !m.slot(8080).healthy, 10_000, 'unhealthy');
  t.pass();
});

function selfSigned(): { key: string; cert: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  const attrs = [{ name: 'commonName', value: 'machine.test' }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { key: forge.pki.privateKeyToPem(keys.privateKey), cert: forge.pki.certificateToPem(cert) };
}

t.test('https check: tls_skip_verify', async (t) => {
  const srv = https.createServer(selfSigned(), (_q, s) => s.end('ok'));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const port = (srv.address() as AddressInfo).port;
  const { health, cap } = checker(t);
  const skip = appWith([httpCheck({ protocol: 'https', tlsSkipVerify: true })]);
  const m1 = await startedMachine(port, skip);
  health.watch(m1, skip);
  await waitFor(() => health.passing(m1, 8080), 10_000, 'https passing with skip verify');
  const strict = appWith([httpCheck({ protocol: 'https', tlsSkipVerify: false })]);
  const m2 = await startedMachine(port, strict);
  health.watch(m2, strict);
  await waitFor(() => cap.lines.some((l) => String(l.msg).includes('checks failing')), 5000, 'unhealthy with verification');
  t.notOk(m2.slot(8080).healthy);
  t.match(cap.lines.find((l) => String(l.msg).includes('checks failing')), { reason: /self-signed|certificate/ });
});

t.test('attached to the manager: follows starts, stops, reloads', async (t) => {
  const b = await backend(t);
  const cap = captureLogger();
  const mgr = new MachineManager({ logger: cap.logger });
  const health = new HealthChecker({ logger: cap.logger });
  health.attach(mgr);
  t.teardown(async () => {
    health.close();
    await mgr.stopAll(2000);
  });
  const mc = staticMachine('h1', `127.0.0.1:${b.port}`);
  const v1 = appWith([httpCheck({ path: '/v1', intervalMs: 50 })], { machines: [mc], fingerprint: 'v1' });
  await mgr.reconcile(config([v1]));
  const m = mgr.get('h1')!;
  t.ok(health.watching(m), 'checks run once started');
  await waitFor(() => b.hits >= 2, 10_000, 'checks');

  await mgr.stop('h1');
  t.notOk(health.watching(m), 'checks stop with the Machine');
  await sleep(60);
  const hits = b.hits;
  await sleep(200);
  t.equal(b.hits, hits, 'no check traffic to a stopped Machine');

  await mgr.start('h1');
  await waitFor(() => b.hits > hits, 10_000, 'checks again after start');

  // Same fingerprint (app file unchanged): checks are not rebuilt, even if objects are new.
  const v1again = appWith([httpCheck({ path: '/v1-but-same-fingerprint', intervalMs: 50 })], { machines: [mc], fingerprint: 'v1' });
  await mgr.reconcile(config([v1again]));
  b.seen.length = 0;
  await waitFor(() => b.seen.length >= 2, 10_000, 'two more checks');
  t.ok(b.seen.every((s) => s.url === '/v1'), 'unchanged app: checks untouched');

  // Unhealthy, then a reload that changes the app: rebuilt checks, and no blip to healthy.
  b.status = 500;
  await waitFor(() => !m.slot(8080).healthy, 10_000, 'unhealthy');
  const flips: boolean[] = [];
  health.onChange((_s, healthy) => flips.push(healthy));
  const v2 = appWith([httpCheck({ path: '/v2', intervalMs: 50 })], { machines: [mc], fingerprint: 'v2' });
  await mgr.reconcile(config([v2]));
  t.equal(m.state, 'started', 'a checks-only change does not restart the Machine');
  // A /v1 check already in flight at the reload may still land: wait for the first /v2, then
  // every later check must be /v2.
  await waitFor(() => b.seen.some((s) => s.url === '/v2'), 10_000, 'the first /v2 check');
  b.seen.length = 0;
  await waitFor(() => b.seen.length >= 2, 10_000, 'two more checks');
  t.ok(b.seen.every((s) => s.url === '/v2'), 'changed app: new checks');
  t.same(flips, [], 'stayed unhealthy through the rebuild');
  b.status = 200;
  await waitFor(() => m.slot(8080).healthy, 10_000, 'healthy');
});

t.test('process Machine killed: out of routing at once, checks stop', async (t) => {
  const cap = captureLogger('silent');
  const mgr = new MachineManager({ logger: cap.logger });
  const health = new HealthChecker({ logger: cap.logger });
  health.attach(mgr);
  t.teardown(async () => {
    health.close();
    await mgr.stopAll(2000);
  });
  const app = appWith([httpCheck({ intervalMs: 1000, gracePeriodMs: 2000 })], { machines: [demoMachine('d1'), demoMachine('d2')] });
  await mgr.reconcile(config([app]));
  const d1 = mgr.get('d1')!;
  const d2 = mgr.get('d2')!;
  await waitFor(() => health.passing(d1, 8080) && health.passing(d2, 8080), 10_000, 'both passing');
  process.kill(d1.pid, 'SIGKILL');
  await waitFor(() => d1.state === 'failed', 10_000, 'd1 failed');
  t.notOk(d1.routable, 'not routable before any check interval passed');
  t.notOk(health.watching(d1));
  t.ok(d2.routable && d2.slot(8080).healthy, 'the other Machine still takes traffic');
  t.ok(await canConnect(d2.host, d2.slot(8080).port));
});
