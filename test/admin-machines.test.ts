// The Machines-API-shaped admin endpoints: get one Machine, stop/start/suspend/cordon/uncordon
// it, wait for a state; routing follows; bad input gets 4xx with a code and changes nothing.

import t from 'tap';
import { DEMO_MACHINE, adminRequest, get, startOrigin, startPetrel } from './helpers/petrel.ts';
import { waitFor } from './helpers/machines-fixtures.ts';

t.test('Machine actions through the admin API, and routing follows them', async (t) => {
  const origin = await startOrigin(undefined, 'static');
  const app = `app = "ops"
[http_service]
internal_port = 8080
[[http_service.checks]]
path = "/healthz"
interval = "200ms"
timeout = "1s"
grace_period = "5s"
[[machines]]
id = "ops-proc"
driver = "process"
cmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]
[[machines]]
id = "ops-static"
driver = "static"
address = "127.0.0.1:${origin.port}"
`;
  // The static origin answers /healthz with its echo JSON (200), so both Machines pass.
  const p = await startPetrel({ apps: { ops: app } });
  t.teardown(async () => {
    await p.stop();
    await origin.close();
  });
  const api = (method: string, path: string, body?: string, token: string | null = 'test-token') => adminRequest(p.adminPort, method, `/v1/apps/ops/machines${path}`, token, body);
  const served = async (n: number) => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const r = await get(p.httpPort, 'ops.test', '/');
      t.equal(r.status, 200);
      const j = JSON.parse(r.body) as { machine?: string; name?: string };
      seen.add(j.machine ?? j.name ?? '?');
    }
    return seen;
  };
  const proc = p.daemon.manager.get('ops-proc')!;
  await waitFor(() => proc.slot(8080).healthy, 20_000, 'process Machine ready');

  const one = await api('GET', '/ops-proc');
  t.equal(one.status, 200);
  t.match(one.json, { id: 'ops-proc', name: 'ops-proc', state: 'started', region: 'tst', driver: 'process' });

  t.equal((await api('POST', '/ops-proc/cordon')).status, 200);
  t.same([...(await served(6))], ['static'], 'a cordoned Machine gets no traffic');
  t.equal((await api('POST', '/ops-proc/uncordon')).status, 200);

  const stop = await api('POST', '/ops-proc/stop');
  t.equal(stop.status, 200);
  t.match(stop.json, { ok: true, previous_state: 'started' });
  t.equal((await api('GET', '/ops-proc/wait?state=stopped&timeout=10')).status, 200, 'wait: already stopped');
  t.same([...(await served(4))], ['static'], 'a stopped Machine gets no traffic');

  const waiting = api('GET', '/ops-proc/wait?state=started&timeout=20');
  const start = await api('POST', '/ops-proc/start');
  t.equal(start.status, 200);
  t.match(start.json, { previous_state: 'stopped' });
  t.equal((await waiting).status, 200, 'wait returns once the Machine is started');
  await waitFor(() => proc.slot(8080).healthy, 20_000, 'ready again');

  t.equal((await api('POST', '/ops-proc/suspend')).status, 200);
  t.equal(proc.state, 'suspended');
  t.same([...(await served(4))], ['static'], 'a suspended Machine gets no traffic');
  const resumed = await api('POST', '/ops-proc/start');
  t.match(resumed.json, { previous_state: 'suspended' }, 'start resumes a suspended Machine');
  t.equal(proc.state, 'started');

  // Bad input: 4xx with a code, nothing changes.
  const before = proc.state;
  t.match(await api('GET', '/nope'), { status: 404, json: { error: { code: 'PA03' } } }, 'unknown Machine');
  t.match(await api('GET', '/ops-proc/wait?state=sleeping'), { status: 400, json: { error: { code: 'PA07' } } }, 'unknown state');
  t.match(await api('GET', '/ops-proc/wait?state=started&timeout=9999'), { status: 400, json: { error: { code: 'PA07' } } }, 'timeout out of range');
  t.match(await api('POST', '/ops-proc/stop', '{not json'), { status: 400, json: { error: { code: 'PA08' } } }, 'malformed JSON');
  t.match(await api('POST', '/ops-proc/stop', '[1,2]'), { status: 400, json: { error: { code: 'PA08' } } }, 'JSON that is not an object');
  t.match(await api('POST', '/ops-static/suspend'), { status: 409, json: { error: { code: 'PA06' } } }, 'a static Machine cannot suspend');
  t.match(await api('POST', '/ops-proc/stop', undefined, 'wrong'), { status: 401, json: { error: { code: 'PA01' } } }, 'wrong token');
  t.match(await api('GET', '/ops-proc/start'), { status: 405 }, 'actions are POST only');
  t.equal(proc.state, before, 'none of that changed the Machine');
  const timeout = await api('GET', '/ops-static/wait?state=stopped&timeout=1');
  t.match(timeout, { status: 408, json: { error: { code: 'PA11' } } }, 'wait times out with 408');
});
