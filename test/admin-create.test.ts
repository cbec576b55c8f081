// Create and destroy `process` Machines through the admin API (issue 3 scope 3), in the Fly
// Machines API's shapes: a created Machine starts, takes traffic, survives reloads, and is
// destroyed only when stopped (or forced); Machines an app file defines cannot be destroyed from
// the API; every bad body gets 400 PA08 with a reason and changes nothing.

import t from 'tap';
import { DEMO_MACHINE, adminRequest, demoApp, get, startPetrel } from './helpers/petrel.ts';

const APP = demoApp('web', { machines: ['web-file'], concurrency: 'type = "requests"\nsoft_limit = 10' });

interface MachineView {
  id: string;
  state: string;
  region: string;
  error?: { code: string; reason: string };
}

const body = (o: unknown) => JSON.stringify(o);
const createBody = (name: string, extra: Record<string, unknown> = {}) =>
  body({ name, region: 'tst', config: { init: { cmd: ['node', DEMO_MACHINE] }, env: { GREETING: 'hi' } }, ...extra });

t.test('create, serve, reload, destroy', async (t) => {
  const p = await startPetrel({ apps: { web: APP } });
  t.teardown(() => p.stop());
  const api = (method: string, path: string, b?: string) => adminRequest(p.adminPort, method, `/v1/apps/web/machines${path}`, 'test-token', b);

  const created = await api('POST', '', createBody('web-api'));
  t.equal(created.status, 200, created.text);
  const view = created.json as MachineView;
  t.equal(view.id, 'web-api');
  t.equal(view.state, 'started', 'started by the create');
  t.equal(view.region, 'tst');

  // It takes traffic like any other Machine: stop the file one and every request lands on it.
  t.equal((await api('POST', '/web-file/stop')).status, 200);
  // Requests wait (bounded) while the new Machine passes its first check.
  const r = await get(p.httpPort, 'web.test', '/');
  t.equal(r.status, 200);
  t.match(r.body, /web-api/, 'answered by the API-made Machine');

  const list = (await api('GET', '')).json as MachineView[];
  t.same(list.map((m) => m.id).sort(), ['web-api', 'web-file'], 'listed with the file Machine');

  // A reload re-reads the files; the API-made Machine stays, same process.
  const pid = p.daemon.manager.get('web-api')!.pid;
  const reload = await adminRequest(p.adminPort, 'POST', '/v1/reload');
  t.equal(reload.status, 200, reload.text);
  t.equal(p.daemon.manager.get('web-api')?.pid, pid, 'still running after a reload, untouched');

  const dup = await api('POST', '', createBody('web-api'));
  t.equal(dup.status, 400);
  t.match((dup.json as MachineView).error, { code: 'PA08', reason: /already exists/ });

  const running = await api('DELETE', '/web-api');
  t.equal(running.status, 412, 'a running Machine is not destroyed without force');
  t.match((running.json as MachineView).error, { code: 'PA13' });
  const fileOne = await api('DELETE', '/web-file?force=true');
  t.equal(fileOne.status, 409, 'a Machine from an app file cannot be destroyed from the API');
  t.match((fileOne.json as MachineView).error, { code: 'PA12', reason: /web\.toml/ });
  const badForce = await api('DELETE', '/web-api?force=yes');
  t.equal(badForce.status, 400);

  const forced = await api('DELETE', '/web-api?force=true');
  t.equal(forced.status, 200, forced.text);
  t.equal(p.daemon.manager.get('web-api'), undefined, 'gone from the registry');
  t.notOk(pid > 0 && alive(pid), 'its process is gone');
  t.equal((await api('GET', '/web-api')).status, 404);
  t.equal((await adminRequest(p.adminPort, 'POST', '/v1/reload')).status, 200);
  t.equal(p.daemon.manager.get('web-api'), undefined, 'and a reload does not bring it back');
});

t.test('skip_launch, generated ids, stop then destroy', async (t) => {
  const p = await startPetrel({ apps: { web: APP } });
  t.teardown(() => p.stop());
  const api = (method: string, path: string, b?: string) => adminRequest(p.adminPort, method, `/v1/apps/web/machines${path}`, 'test-token', b);
  const made = await api('POST', '', body({ skip_launch: true, config: { init: { cmd: ['node', DEMO_MACHINE] }, stop_config: { signal: 'SIGTERM', timeout: '2s' } } }));
  t.equal(made.status, 200, made.text);
  const v = made.json as MachineView;
  t.match(v.id, /^[0-9a-f]{14}$/, 'a Fly-style generated id');
  t.equal(v.state, 'created', 'skip_launch: registered, not started');
  const m = p.daemon.manager.get(v.id)!;
  t.equal(m.config.killSignal, 'SIGTERM');
  t.equal(m.config.killTimeoutMs, 2000);
  t.equal((await api('POST', `/${v.id}/start`)).status, 200);
  t.equal(m.state, 'started');
  t.equal((await api('POST', `/${v.id}/stop`)).status, 200);
  const gone = await api('DELETE', `/${v.id}`);
  t.equal(gone.status, 200, 'a stopped Machine is destroyed without force');
  t.equal(m.state, 'destroyed');
});

t.test('bad create bodies: 400 PA08 with a reason, nothing created', async (t) => {
  const p = await startPetrel({ apps: { web: APP } });
  t.teardown(() => p.stop());
  const cases: [string, string, RegExp][] = [
    ['not JSON', '{"name":', /malformed JSON/],
    ['an array', '[1]', /JSON object/],
    ['no config', body({ name: 'x1' }), /config is required/],
    ['an image, no command', body({ config: { image: 'nginx:latest' } }), /init\.cmd is required/],
    ['an empty command', body({ config: { init: { cmd: [] } } }), /non-empty list/],
    ['a command that is not strings', body({ config: { init: { cmd: ['node', 3] } } }), /cmd\[1\]/],
    ['a bad name', body({ name: 'Web_1', config: { init: { cmd: ['node'] } } }), /name must be/],
    ['a bad region', body({ region: 'AMS!', config: { init: { cmd: ['node'] } } }), /region/],
    ['a reserved variable', body({ config: { init: { cmd: ['node'] }, env: { PORT: '1' } } }), /PORT is set by petrel/],
    ['a bad variable name', body({ config: { init: { cmd: ['node'] }, env: { '1X': 'a' } } }), /not a valid variable name/],
    ['a non-string variable', body({ config: { init: { cmd: ['node'] }, env: { A: 1 } } }), /config\.env\.A/],
    ['a bad signal', body({ config: { init: { cmd: ['node'] }, stop_config: { signal: 'SIGSEGV' } } }), /stop_config\.signal/],
    ['a bad timeout', body({ config: { init: { cmd: ['node'] }, stop_config: { timeout: 'soon' } } }), /stop_config\.timeout/],
    ['skip_launch not a boolean', body({ skip_launch: 'yes', config: { init: { cmd: ['node'] } } }), /skip_launch/],
  ];
  for (const [what, b, reason] of cases) {
    const r = await adminRequest(p.adminPort, 'POST', '/v1/apps/web/machines', 'test-token', b);
    t.equal(r.status, 400, `${what}: 400`);
    t.match((r.json as MachineView).error, { code: 'PA08', reason }, `${what}: says why`);
  }
  t.equal(p.daemon.manager.all().length, 1, 'nothing was created');
  const noApp = await adminRequest(p.adminPort, 'POST', '/v1/apps/nope/machines', 'test-token', createBody('x2'));
  t.equal(noApp.status, 404);
  const noToken = await adminRequest(p.adminPort, 'POST', '/v1/apps/web/machines', null, createBody('x3'));
  t.equal(noToken.status, 401, 'no token: 401');
  const badToken = await adminRequest(p.adminPort, 'DELETE', '/v1/apps/web/machines/web-file?force=true', 'wrong', '');
  t.equal(badToken.status, 401, 'wrong token: 401');
  t.equal(p.daemon.manager.all().length, 1, 'and touched nothing');
  t.equal(p.daemon.manager.get('web-file')!.state !== 'destroyed', true);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
