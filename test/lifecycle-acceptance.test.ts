// Issue 3 acceptance points not covered elsewhere, through a real petrel with process Machines:
// per-region minimums hold under autostop; a client keep-alive connection whose Machine was
// suspended behind it wakes it and keeps working; a Machine killed mid-request gives that request
// a 502 with a code while the next requests succeed and the daemon keeps running.

import t from 'tap';
import http from 'node:http';
import { KeepAliveConn, demoApp, get, startPetrel } from './helpers/petrel.ts';
import { waitFor } from './helpers/machines-fixtures.ts';

const CONCURRENCY = 'type = "requests"\nsoft_limit = 5';
const regions = (app: string, list: string[]) => list.map((r, i) => [`${app}-${i + 1}`, r] as const);
const LIMITS = 'autostop_interval = "1h"\nautostop_idle = "1ms"';

t.test('autostop keeps per-region minimums (min_machines_running_per_region)', async (t) => {
  // The node is in region "tst" (the primary); two Machines are labelled "fra" with a minimum of 1 there.
  const p = await startPetrel({
    apps: {
      geo: demoApp('geo', {
        service: 'auto_stop_machines = "stop"\nmin_machines_running_per_region = { fra = 1 }',
        concurrency: CONCURRENCY,
        checks: false,
        machines: regions('geo', ['tst', 'tst', 'fra', 'fra']),
      }),
    },
    limits: LIMITS,
  });
  t.teardown(() => p.stop());
  const mgr = p.daemon.manager;
  const all = ['geo-1', 'geo-2', 'geo-3', 'geo-4'].map((id) => mgr.get(id)!);
  await waitFor(() => all.every((m) => m.state === 'started'), 30_000, 'all started');
  const running = (region: string) => all.filter((m) => m.region === region && m.state === 'started').length;

  await p.daemon.autostop.pass();
  t.equal(running('tst'), 1, 'pass 1: one per region stopped (tst)');
  t.equal(running('fra'), 1, 'pass 1: one per region stopped (fra)');
  await p.daemon.autostop.pass();
  t.equal(running('tst'), 0, 'pass 2: the primary region has no minimum here and goes to zero');
  t.equal(running('fra'), 1, 'pass 2: fra keeps its minimum of 1');
  await p.daemon.autostop.pass();
  t.equal(running('fra'), 1, 'and keeps it on every later pass');
});

t.test('a keep-alive client connection survives its Machine being suspended and resumed', async (t) => {
  const p = await startPetrel({
    apps: { nap: demoApp('nap', { service: 'auto_stop_machines = "suspend"', concurrency: CONCURRENCY, checks: false }) },
    limits: LIMITS,
  });
  t.teardown(() => p.stop());
  const m = p.daemon.manager.get('nap-1')!;
  await waitFor(() => m.state === 'started', 30_000, 'started');
  const conn = await KeepAliveConn.open(p.httpPort);
  t.teardown(() => conn.socket.destroy());
  const first = await conn.request('nap.test', '/');
  t.equal(first.status, 200);
  // `requests` concurrency: an idle client connection holds no load, so autostop may suspend.
  await p.daemon.autostop.pass();
  t.equal(m.state, 'suspended', 'suspended while the client connection stays open');
  const pid = m.pid;
  const second = await conn.request('nap.test', '/again');
  t.equal(second.status, 200, 'the next request on the same connection wakes the Machine');
  t.equal(m.state, 'started');
  t.equal(m.pid, pid, 'resumed (same process), not restarted');
  t.notOk(conn.closed, 'on the same client connection');
  const third = await conn.request('nap.test', '/third');
  t.equal(third.status, 200, 'and it keeps working');
});

interface Answer {
  status: number;
  code: string | undefined;
  body: string;
}

function slowRequest(port: number, method: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { host: 'doomed.test', 'content-length': '0' }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: res.headers['x-petrel-error'] as string | undefined, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('a Machine killed mid-request: 502 with a code (or a retry when that is safe); the next ones succeed', async (t) => {
  const ids = ['doomed-1', 'doomed-2', 'doomed-3'];
  const p = await startPetrel({ apps: { doomed: demoApp('doomed', { machines: ids, concurrency: CONCURRENCY, checks: false }) } });
  t.teardown(() => p.stop());
  const mgr = p.daemon.manager;
  await waitFor(() => ids.every((id) => mgr.get(id)!.state === 'started'), 30_000, 'all started');
  const transitions: string[] = [];
  t.teardown(mgr.onTransition((m, from, to) => void transitions.push(`${m.id} ${from}->${to}`)));

  /** Starts a slow request, kills the Machine serving it, returns the answer and the victim. */
  async function killDuring(method: string, path: string): Promise<{ answer: Answer; victim: string }> {
    const answer = slowRequest(p.httpPort, method, path);
    let victim: string | undefined;
    await waitFor(() => {
      victim = ids.find((id) => mgr.get(id)!.slot(8080).load === 1);
      return victim !== undefined;
    }, 20_000, `the ${method} to be in flight`);
    process.kill(mgr.get(victim!)!.pid, 'SIGKILL');
    return { answer: await answer, victim: victim! };
  }

  // Not idempotent: petrel cannot know how far the Machine got, so it must not replay it.
  const post = await killDuring('POST', '/slow?ms=4000');
  t.equal(post.answer.status, 502, 'a POST in flight gets 502');
  t.match(post.answer.code, /^PC\d\d$/, `with an upstream error code (${post.answer.code})`);
  t.match(post.answer.body, post.answer.code ?? 'no code', 'named in the body too');
  const line = p.log.access().find((l) => l['method'] === 'POST' && l['status'] === 502);
  t.equal(line?.['code'], post.answer.code, 'the access log has the 502 with the same code');

  // Idempotent and nothing answered yet: it is replayed on another Machine instead.
  const get2 = await killDuring('GET', '/slow?ms=3000');
  t.equal(get2.answer.status, 200, 'a GET in flight is retried on a live Machine');
  t.not(get2.victim, post.victim);

  for (let i = 0; i < 10; i++) {
    const next = await get(p.httpPort, 'doomed.test', `/after-${i}`);
    t.equal(next.status, 200, `request ${i} after the kills succeeds`);
  }
  const victim = mgr.get(post.victim)!;
  await waitFor(() => transitions.includes(`${victim.id} started->failed`), 20_000, `the killed Machine to be failed (${transitions.join(', ')})`);
  // It is startable again: the admin API (here) or autostart (if a request needed it meanwhile).
  if (victim.state === 'failed') await mgr.start(victim.id);
  t.equal(victim.state, 'started', `a failed Machine starts again (${transitions.join(', ')})`);
});
