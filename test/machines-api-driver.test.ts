// The machines-api driver against a real Machines-shaped API: another petrel's admin API. Node A
// runs a process Machine; node B drives it through A's API and routes to where A says it is.

import t from 'tap';
import { parseAppConfig, parseNodeConfig } from '../src/config/load.ts';
import { DEMO_MACHINE, get, startPetrel } from './helpers/petrel.ts';
import { waitFor } from './helpers/machines-fixtures.ts';

t.test('start, stop, suspend and wake a Machine through another node\'s Machines API', async (t) => {
  const a = await startPetrel({
    apps: {
      remote: `app = "remote"\n[http_service]\ninternal_port = 8080\n[[machines]]\nid = "r-1"\ndriver = "process"\ncmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]\n`,
    },
  });
  t.teardown(() => a.stop());
  const ra = a.daemon.manager.get('r-1')!;
  await waitFor(() => ra.slot(8080).healthy, 20_000, 'A: Machine ready');

  const front = (token: string) => `app = "front"
[http_service]
internal_port = 8080
[[machines]]
id = "r-1"
driver = "machines-api"
api_url = "http://127.0.0.1:${a.adminPort}/"
api_token = "${token}"
api_app = "remote"
`;
  const b = await startPetrel({ apps: { front: front('test-token') } });
  t.teardown(() => b.stop());
  const rb = b.daemon.manager.get('r-1')!;
  t.equal(rb.state, 'started', 'B: started through the API');
  t.equal(rb.ports.get(8080), ra.ports.get(8080), 'B learned where A runs the Machine');
  await waitFor(() => rb.slot(8080).healthy, 10_000, 'B: ready');

  const r1 = await get(b.httpPort, 'front.test', '/via-api');
  t.equal(r1.status, 200);
  t.equal((JSON.parse(r1.body) as { machine: string }).machine, 'r-1');

  await b.daemon.manager.stop('r-1');
  t.equal(ra.state, 'stopped', 'a stop on B stops the Machine on A');
  const r2 = await get(b.httpPort, 'front.test', '/wake-via-api');
  t.equal(r2.status, 200, 'a request on B wakes it through the API');
  t.equal(ra.state, 'started');
  t.equal(rb.ports.get(8080), ra.ports.get(8080), 'and B follows its new port');

  await b.daemon.manager.suspend('r-1');
  t.equal(ra.state, 'suspended', 'suspend through the API');
  const r3 = await get(b.httpPort, 'front.test', '/resume-via-api');
  t.equal(r3.status, 200, 'and a request resumes it');

  // A wrong token: A refuses, B's Machine is failed with the API's reason, nothing crashes.
  const c = await startPetrel({ apps: { front: front('wrong') } });
  t.teardown(() => c.stop());
  const rc = c.daemon.manager.get('r-1')!;
  t.equal(rc.state, 'failed');
  t.match(rc.lastError, /401/);
});

t.test('machines-api config: url required and checked, no process keys', async (t) => {
  const node = parseNodeConfig('', '/etc/petrel.toml', { env: {} });
  const base = 'app = "x"\n[http_service]\ninternal_port = 8080\n[[machines]]\nid = "m"\ndriver = "machines-api"\n';
  t.throws(() => parseAppConfig(base, '/x.toml', node), { name: 'ConfigError', key: 'machines[0].api_url' }, 'api_url required');
  t.throws(() => parseAppConfig(base + 'api_url = "ftp://x"\n', '/x.toml', node), { name: 'ConfigError', key: 'machines[0].api_url' }, 'http(s) only');
  t.throws(() => parseAppConfig(base + 'api_url = "http://x"\ncmd = "node"\n', '/x.toml', node), { name: 'ConfigError', key: 'machines[0].cmd' }, 'no cmd');
  const ok = parseAppConfig(base + 'api_url = "http://10.0.0.5:9091/"\napi_token_env = "API_TOKEN"\n', '/x.toml', node);
  t.match(ok.machines[0]!.api, { url: 'http://10.0.0.5:9091', tokenEnv: 'API_TOKEN', app: 'x' });
});
