// Autostart (spec section 5, issue 3 groundwork): a request that finds no started Machine wakes a
// sleeping one and is held until it is ready; a burst wakes only as many Machines as its
// concurrency needs; with auto_start_machines = false it gets 503 at once.

import t from 'tap';
import { DEMO_MACHINE, get, metricValue, scrapeMetrics, startPetrel } from './helpers/petrel.ts';
import { waitFor } from './helpers/machines-fixtures.ts';

function app(name: string, machines: number, extra: string): string {
  let s = `app = "${name}"
[http_service]
internal_port = 8080
${extra}
[http_service.concurrency]
type = "requests"
soft_limit = 50
[[http_service.checks]]
path = "/healthz"
interval = "1s"
timeout = "1s"
grace_period = "10s"
`;
  for (let i = 1; i <= machines; i++) s += `[[machines]]\nid = "${name}-${i}"\ndriver = "process"\ncmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]\n`;
  return s;
}

t.test('a stopped Machine is woken by a request, which is held until it is ready', async (t) => {
  const p = await startPetrel({ apps: { wake: app('wake', 1, 'auto_start_machines = true'), off: app('off', 1, 'auto_start_machines = false') } });
  t.teardown(() => p.stop());
  const m = p.daemon.manager.get('wake-1')!;
  const off = p.daemon.manager.get('off-1')!;
  await waitFor(() => m.slot(8080).healthy && off.slot(8080).healthy, 20_000, 'both ready');
  await p.daemon.manager.stop('wake-1');
  await p.daemon.manager.stop('off-1');
  t.equal(m.state, 'stopped');

  const r = await get(p.httpPort, 'wake.test', '/woken');
  t.equal(r.status, 200, 'served by the woken Machine');
  t.equal((JSON.parse(r.body) as { machine: string }).machine, 'wake-1');
  t.equal(m.state, 'started');
  const line = p.log.access().find((l) => l['path'] === '/woken');
  t.ok((line?.['wake_ms'] as number) > 0, `the access log shows the wake time (${String(line?.['wake_ms'])} ms)`);

  const metrics = await scrapeMetrics(p.adminPort);
  t.equal(metricValue(metrics, 'petrel_machine_starts_total', { app: 'wake', kind: 'cold' }), 2, 'two cold starts: boot and wake');
  t.equal(metricValue(metrics, 'petrel_machine_stops_total', { app: 'wake', kind: 'stop' }), 1);
  t.equal(metricValue(metrics, 'petrel_wake_seconds_count', { app: 'wake' }), 1, 'one request waited for a wake');
  t.equal(metricValue(metrics, 'petrel_machines', { app: 'wake', state: 'started' }), 1);
  t.equal(metricValue(metrics, 'petrel_machines', { app: 'off', state: 'stopped' }), 1);

  const refused = await get(p.httpPort, 'off.test', '/');
  t.equal(refused.status, 503, 'auto_start_machines = false: no wake');
  t.match(refused.body, /^PR01 /);
  t.equal(off.state, 'stopped');
});

t.test('a burst against stopped Machines starts only as many as its concurrency needs', async (t) => {
  const p = await startPetrel({ apps: { burst: app('burst', 4, '') }, limits: 'queue_length = 200' });
  t.teardown(() => p.stop());
  const ms = [1, 2, 3, 4].map((i) => p.daemon.manager.get(`burst-${i}`)!);
  await waitFor(() => ms.every((m) => m.slot(8080).healthy), 30_000, 'all ready');
  for (const m of ms) await p.daemon.manager.stop(m.id);
  t.ok(ms.every((m) => m.state === 'stopped'), 'all four stopped');

  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => get(p.httpPort, 'burst.test', `/r${i}`)));
  t.equal(replies.filter((r) => r.status === 200).length, 100, 'all 100 requests succeed');
  const started = ms.filter((m) => m.state === 'started').length;
  t.ok(started >= 1 && started <= 2, `100 requests with soft_limit 50 started ${started} Machine(s), at most 2`);
});

t.test('without checks, a process Machine takes traffic once it accepts connections (no cold-start 502)', async (t) => {
  const plain = `app = "nochk"
[http_service]
internal_port = 8080
[[machines]]
id = "nochk-1"
driver = "process"
cmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]
`;
  const p = await startPetrel({ apps: { nochk: plain } });
  t.teardown(() => p.stop());
  // Right after start the Machine is still booting: the request waits for it.
  const first = await get(p.httpPort, 'nochk.test', '/boot');
  t.equal(first.status, 200, 'a request during boot is served once the Machine listens');
  await p.daemon.manager.stop('nochk-1');
  const woken = await get(p.httpPort, 'nochk.test', '/wake');
  t.equal(woken.status, 200, 'a woken Machine without checks is used once it accepts connections');
  const codes = p.log.access().map((l) => l['code']);
  t.notOk(codes.includes('PC01'), 'no connect-refused errors on the way');
});
