// Machines and their service checks seen through a real daemon (issue 2 acceptance): a killed
// process Machine stops getting traffic and no request fails meanwhile, a static Machine failing
// its HTTP check leaves routing and comes back when it passes again, and a shutdown stops the
// Machine processes petrel started.

import t from 'tap';
import { waitFor } from './helpers/machines-fixtures.ts';
import { DEMO_MACHINE, adminRequest, get, startOrigin, startPetrel, type Petrel } from './helpers/petrel.ts';

const LIMITS = 'shutdown_timeout = "3s"';

function processApp(name: string, ids: string[], interval = '500ms'): string {
  return `app = "${name}"
kill_timeout = 3

[http_service]
internal_port = 8080

[http_service.concurrency]
type = "requests"
soft_limit = 20

[[http_service.checks]]
method = "GET"
path = "/healthz"
interval = "${interval}"
timeout = "2s"
grace_period = "1s"

${ids.map((id) => `[[machines]]\nid = "${id}"\ndriver = "process"\ncmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]\n`).join('\n')}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Waits until every named Machine has passed all its checks (the demo app is listening). */
async function allPassing(p: Petrel, ids: string[], internalPort: number): Promise<void> {
  await waitFor(
    () =>
      ids.every((id) => {
        const m = p.daemon.manager.get(id);
        return m !== undefined && m.state === 'started' && p.daemon.health.passing(m, internalPort);
      }),
    30_000,
    `${ids.join(', ')} passing their checks`,
  );
}

interface MachineView {
  id: string;
  state: string;
  pid?: number;
  last_error?: string;
  checks: Record<string, { healthy: boolean; load: number }>;
}

async function machines(p: Petrel, app: string): Promise<MachineView[]> {
  const r = await adminRequest(p.adminPort, 'GET', `/v1/apps/${app}/machines`);
  if (r.status !== 200) throw new Error(`machines list: ${r.status} ${r.text}`);
  return r.json as MachineView[];
}

async function hello(p: Petrel, app: string, pathName = '/'): Promise<{ status: number; machine: string | null; body: string }> {
  const r = await get(p.httpPort, `${app}.test`, pathName);
  let machine: string | null = null;
  if (r.status === 200) machine = (JSON.parse(r.body) as { machine: string }).machine;
  return { status: r.status, machine, body: r.body };
}

t.test('process Machines: SIGKILL one, requests keep succeeding and go to the survivor; shutdown stops the rest', async (t) => {
  const p = await startPetrel({ apps: { hello: processApp('hello', ['hello-1', 'hello-2']) }, limits: LIMITS });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await p.stop();
  });
  await allPassing(p, ['hello-1', 'hello-2'], 8080);

  const pids = ['hello-1', 'hello-2'].map((id) => p.daemon.manager.get(id)!.pid);
  t.ok(pids.every((pid) => pid > 0 && alive(pid)), `both Machine processes run (${pids.join(', ')})`);

  // Warm up: both Machines answer (and leave pooled keep-alive connections behind).
  const seen = new Set<string>();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const r = await hello(p, 'hello');
    t.equal(r.status, 200, `warm-up request ${i}`);
    if (r.machine !== null) seen.add(r.machine);
  }
  t.same([...seen].sort(), ['hello-1', 'hello-2'], 'both Machines serve before the kill');

  const victim = 'hello-1';
  const victimPid = pids[0]!;
  process.kill(victimPid, 'SIGKILL');

  // From the kill on, no request may fail: connect failures are retried on the other Machine.
  const after: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await hello(p, 'hello', `/after-kill-${i}`);
    t.equal(r.status, 200, `request ${i} after the kill succeeds (${r.body.slice(0, 60)})`);
    if (r.machine !== null) after.push(r.machine);
  }
  await waitFor(() => p.daemon.manager.get(victim)!.state === 'failed', 20_000, `${victim} to be failed`);
  await waitFor(() => !alive(victimPid), 20_000, 'the killed process to be gone');

  // Once it is known dead, every request goes to the survivor.
  for (let i = 0; i < 20; i++) {
    const r = await hello(p, 'hello', `/settled-${i}`);
    t.equal(r.status, 200);
    t.equal(r.machine, 'hello-2', `settled request ${i} on the survivor`);
  }
  const onVictim = p.log.access().filter((l) => l['machine'] === victim && String(l['path']).startsWith('/settled-'));
  t.equal(onVictim.length, 0, 'no settled request was logged on the dead Machine');
  const failedAfterKill = p.log.access().filter((l) => String(l['path']).startsWith('/after-kill-') && l['status'] !== 200);
  t.same(failedAfterKill, [], 'no failed request in the access log after the kill');

  const list = await machines(p, 'hello');
  const dead = list.find((m) => m.id === victim);
  const live = list.find((m) => m.id === 'hello-2');
  t.equal(dead?.state, 'failed', 'admin API shows the killed Machine as failed');
  t.match(dead?.last_error ?? '', /SIGKILL/, 'and says why');
  t.equal(live?.state, 'started');
  t.equal(live?.pid, pids[1]);

  // Shutdown stops the Machine processes petrel started.
  stopped = true;
  await p.stop();
  t.notOk(alive(pids[1]!), 'the surviving Machine process is gone after shutdown');
  t.equal(p.daemon.manager.get('hello-2')!.state, 'stopped');
});

t.test('process Machines are stopped on shutdown (both running)', async (t) => {
  const p = await startPetrel({ apps: { hello: processApp('hello', ['hello-a', 'hello-b']) }, limits: LIMITS });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await p.stop();
  });
  await allPassing(p, ['hello-a', 'hello-b'], 8080);
  const pids = ['hello-a', 'hello-b'].map((id) => p.daemon.manager.get(id)!.pid);
  t.ok(pids.every((pid) => alive(pid)));
  t.equal((await hello(p, 'hello')).status, 200);
  stopped = true;
  await p.stop();
  for (const pid of pids) t.notOk(alive(pid), `pid ${pid} gone`);
  const log = p.log.lines.filter((l) => l['msg'] === 'Machine stopped').map((l) => l['machine']);
  t.same(log.sort(), ['hello-a', 'hello-b'], 'each stop logged');
});

t.test('a static Machine failing its HTTP check gets no traffic, and gets it again once it recovers', async (t) => {
  let sickHealthy = true;
  const sick = await startOrigin((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(sickHealthy ? 200 : 500);
      res.end(sickHealthy ? 'ok' : 'broken');
      return;
    }
    res.end('sick');
  }, 'sick');
  const good = await startOrigin((_req, res) => res.end(_req.url === '/healthz' ? 'ok' : 'good'), 'good');
  const app = `app = "web"

[http_service]
internal_port = 8080

[[http_service.checks]]
path = "/healthz"
interval = "500ms"
timeout = "2s"
grace_period = "0s"

[[machines]]
id = "sick"
driver = "static"
address = "127.0.0.1:${sick.port}"

[[machines]]
id = "good"
driver = "static"
address = "127.0.0.1:${good.port}"
`;
  const p = await startPetrel({ apps: { web: app }, limits: LIMITS });
  t.teardown(async () => {
    await p.stop();
    await sick.close();
    await good.close();
  });
  await allPassing(p, ['sick', 'good'], 8080);
  const slot = p.daemon.manager.get('sick')!.slots.get(8080)!;

  /** Sends requests until one lands on `want` (random among equals), at most `max`. */
  async function until(want: string, max: number): Promise<string[]> {
    const got: string[] = [];
    for (let i = 0; i < max; i++) {
      const r = await get(p.httpPort, 'web.test', '/');
      t.equal(r.status, 200);
      got.push(r.body);
      if (r.body === want) break;
    }
    return got;
  }
  t.equal((await until('sick', 60)).at(-1), 'sick', 'the sick Machine serves while it passes');

  sickHealthy = false;
  await waitFor(() => !slot.healthy, 20_000, 'the failing check to take the Machine out of routing');
  const healthRequestsBefore = sick.requests.filter((r) => r.url !== '/healthz').length;
  for (let i = 0; i < 30; i++) {
    const r = await get(p.httpPort, 'web.test', '/');
    t.equal(r.status, 200);
    t.equal(r.body, 'good', `request ${i} avoids the failing Machine`);
  }
  t.equal(sick.requests.filter((r) => r.url !== '/healthz').length, healthRequestsBefore, 'no traffic reached it');
  const view = (await machines(p, 'web')).find((m) => m.id === 'sick');
  t.equal(view?.checks['8080']?.healthy, false, 'admin API shows the failing check');
  t.equal(view?.state, 'started', 'still started: only out of routing');

  sickHealthy = true;
  await waitFor(() => slot.healthy, 20_000, 'the passing check to bring the Machine back');
  t.equal((await until('sick', 60)).at(-1), 'sick', 'the recovered Machine gets traffic again');
  t.equal((await machines(p, 'web')).find((m) => m.id === 'sick')?.checks['8080']?.healthy, true);
});

t.test('every Machine failing its checks: 503 PR01, and traffic resumes when one recovers', async (t) => {
  let healthy = true;
  const origin = await startOrigin((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(healthy ? 200 : 503);
      res.end();
      return;
    }
    res.end('only');
  });
  const p = await startPetrel({
    apps: {
      web: `app = "web"
[http_service]
internal_port = 8080
[[http_service.checks]]
path = "/healthz"
interval = "500ms"
timeout = "2s"
grace_period = "0s"
[[machines]]
id = "only"
driver = "static"
address = "127.0.0.1:${origin.port}"
`,
    },
    limits: LIMITS,
  });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  await allPassing(p, ['only'], 8080);
  const slot = p.daemon.manager.get('only')!.slots.get(8080)!;
  t.equal((await get(p.httpPort, 'web.test', '/')).status, 200);
  healthy = false;
  await waitFor(() => !slot.healthy, 20_000, 'check failing');
  const r = await get(p.httpPort, 'web.test', '/');
  t.equal(r.status, 503);
  t.match(r.body, /^PR01 /, 'no healthy Machine');
  healthy = true;
  await waitFor(() => slot.healthy, 20_000, 'check passing again');
  t.equal((await get(p.httpPort, 'web.test', '/')).status, 200);
});

t.test('a Machine whose app dies but whose process lives on: connect failures are retried, then its check takes it out', async (t) => {
  // The Machine process is a shell that runs the demo app and then sleeps: killing the app
  // leaves the Machine `started` with nothing listening, which only the check (and connect
  // failures) can reveal, exactly the acceptance scenario "connect failures before that are retried".
  const shellApp = (id: string) =>
    `[[machines]]\nid = "${id}"\ndriver = "process"\ncmd = ["sh", "-c", ${JSON.stringify(`${JSON.stringify(process.execPath)} ${JSON.stringify(DEMO_MACHINE)}; exec sleep 600`)}]\n`;
  const app = `app = "hello"
kill_signal = "SIGTERM"
kill_timeout = 3

[http_service]
internal_port = 8080

[http_service.concurrency]
type = "requests"
soft_limit = 20

[[http_service.checks]]
path = "/healthz"
interval = "500ms"
timeout = "2s"
grace_period = "1s"

${shellApp('shell-1')}
${shellApp('shell-2')}`;
  const p = await startPetrel({ apps: { hello: app }, limits: LIMITS });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await p.stop();
  });
  await allPassing(p, ['shell-1', 'shell-2'], 8080);
  const shellPid = p.daemon.manager.get('shell-1')!.pid;
  const { readFileSync } = await import('node:fs');
  const children = readFileSync(`/proc/${shellPid}/task/${shellPid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  t.equal(children.length, 1, 'the shell runs one child: the demo app');
  const appPid = children[0]!;
  for (let i = 0; i < 10; i++) t.equal((await hello(p, 'hello')).status, 200, `warm-up ${i}`);

  process.kill(appPid, 'SIGKILL');
  await waitFor(() => !alive(appPid), 20_000, 'the app process to be gone');
  const slot = p.daemon.manager.get('shell-1')!.slots.get(8080)!;
  // Until the check notices, requests that pick shell-1 fail to connect and are retried.
  let n = 0;
  while (slot.healthy && n < 500) {
    const r = await hello(p, 'hello', `/window-${n}`);
    t.equal(r.status, 200, `request ${n} in the detection window succeeds`);
    t.equal(r.machine, 'shell-2', 'answered by the live Machine');
    n++;
  }
  await waitFor(() => !slot.healthy, 20_000, 'the check to take shell-1 out of routing');
  t.equal(p.daemon.manager.get('shell-1')!.state, 'started', 'the Machine itself is still started (its process lives)');
  const windowLines = p.log.access().filter((l) => String(l['path']).startsWith('/window-'));
  const retried = windowLines.filter((l) => (l['retries'] as number) > 0);
  t.comment(`${windowLines.length} requests in the detection window, ${retried.length} retried after a failed connect`);
  for (const l of retried) t.equal(l['machine'], 'shell-2', 'a retried request ends on the live Machine');

  for (let i = 0; i < 20; i++) {
    const r = await hello(p, 'hello', `/settled-${i}`);
    t.equal(r.status, 200);
    t.equal(r.machine, 'shell-2');
  }
  const settledRetries = p.log.access().filter((l) => String(l['path']).startsWith('/settled-') && (l['retries'] as number) > 0);
  t.same(settledRetries, [], 'after one check interval no request even needs a retry');

  const pids = ['shell-1', 'shell-2'].map((id) => p.daemon.manager.get(id)!.pid);
  stopped = true;
  await p.stop();
  for (const pid of pids) t.notOk(alive(pid), `Machine process ${pid} stopped at shutdown`);
});
