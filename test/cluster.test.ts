// Issue 5 acceptance: several petrel nodes share one state through a real nats-server. An app
// deployed on node 1 serves on node 3 (the time it takes is printed); a Machine stopped through
// node 2's admin API is stopped by its owner; the load the owner publishes changes another
// node's choice; a node that dies stops getting traffic for its Machines and gets it back when
// it returns.

import t, { type Test } from 'tap';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { createSelfSigned } from '../src/tls/selfsigned.ts';
import { requireBinary } from './helpers/deps.ts';
import { startNats } from './helpers/nats.ts';
import { DEMO_MACHINE, adminRequest, get, pollUntil, startOrigin, startPetrel, type Origin, type Petrel } from './helpers/petrel.ts';
import { makeNodeDir, runPetrel, startPetrelProcess } from './helpers/spawn-petrel.ts';
import { freePort } from './helpers/prometheus.ts';

let prefixes = 0;
/** Each test its own buckets, so parallel files and earlier runs never mix. */
function bucketPrefix(): string {
  return `t${process.pid}x${prefixes++}`;
}

function clusterLines(url: string, prefix: string): string {
  return `[store]
kind = "nats"
servers = ["${url}"]
bucket_prefix = "${prefix}"

[cluster]
heartbeat_interval = "100ms"
node_dead_after = "2s"
load_publish_interval = "50ms"
apply_debounce = "10ms"
owner_request_timeout = "20s"
`;
}

interface Lab {
  readonly url: string;
  readonly prefix: string;
}

/** A nats-server of its own (stopped at teardown) and fresh buckets; null when nats-server is missing (skipped). */
async function lab(t: Test): Promise<Lab | null> {
  const bin = requireBinary(t, 'nats-server', 'nats-server');
  if (bin === null) return null;
  const nats = await startNats(t, bin);
  return { url: nats.url, prefix: bucketPrefix() };
}

/** An in-process node of the lab's cluster, stopped at teardown. */
async function node(t: Test, l: Lab, id: string): Promise<Petrel> {
  const p = await startPetrel({ apps: {}, nodeId: id, node: clusterLines(l.url, l.prefix) });
  t.teardown(() => p.stop());
  return p;
}

/** Origins a and b for shopApp(), closed at teardown. */
async function origins(t: Test): Promise<[Origin, Origin]> {
  const [a, b] = [await namedOrigin('origin-a'), await namedOrigin('origin-b')];
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return [a, b];
}

/** Two static Machines (origins a and b), soft limit 1 per Machine. */
function shopApp(a: Origin, b: Origin, owners: [string | null, string | null] = [null, null]): string {
  const owner = (o: string | null) => (o === null ? '' : `node = "${o}"\n`);
  return `app = "shop"
[http_service]
internal_port = ${a.port}
[http_service.concurrency]
type = "requests"
soft_limit = 1
hard_limit = 10
[[machines]]
id = "shop-a"
driver = "static"
address = "127.0.0.1:${a.port}"
${owner(owners[0])}[[machines]]
id = "shop-b"
driver = "static"
address = "127.0.0.1:${b.port}"
${owner(owners[1])}`;
}

/** An origin that names itself and can hold a request (`/hold`, answered by releaseHeld()). */
/** Answers to `/hold` requests, sent when the test calls releaseHeld(). */
const held: (() => void)[] = [];
function releaseHeld(): void {
  for (const answer of held.splice(0)) answer();
}

function namedOrigin(name: string): Promise<Origin> {
  return startOrigin((req, res) => {
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(name);
    };
    if (req.url === '/hold') held.push(answer);
    else answer();
  }, name);
}

/** Public port 80 as bound now: a node starts with no apps, so it binds ports as apps arrive. */
function port80(p: Petrel): number {
  return p.daemon.addresses().get(80)?.port ?? 0;
}

/** The leaf fingerprint a client gets from the node's public port 443 for `servername`. */
function fingerprint(p: Petrel, servername: string): Promise<string> {
  const port = p.daemon.addresses().get(443)?.port ?? 0;
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.on('error', () => resolve(''));
  });
}

async function served(p: Petrel, host: string, path = '/'): Promise<{ status: number; body: string }> {
  const port = port80(p);
  if (port === 0) return { status: 0, body: 'port 80 not bound' };
  const r = await get(port, host, path).catch(() => ({ status: 0, body: '' }));
  return { status: r.status, body: r.body };
}

t.test('three nodes, one nats-server: deploy, ownership, load', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const [a, b] = await origins(t);
  const n1 = await node(t, l, 'n1');
  const n2 = await node(t, l, 'n2');
  const n3 = await node(t, l, 'n3');

  // Deploy on node 1; node 3 serves it soon after.
  t.equal(port80(n3), 0, 'node 3 serves no app yet (no port bound)');
  const t0 = performance.now();
  await n1.daemon.cluster!.deploy(shopApp(a, b));
  await pollUntil(async () => (await served(n3, 'shop.test')).status === 200, 'node 3 to serve the deployed app', 10_000);
  const ms = performance.now() - t0;
  t.pass(`deployed on node 1, served by node 3 after ${ms.toFixed(0)} ms`);
  t.comment(`deploy → live on another node: ${ms.toFixed(1)} ms`);

  // Certificates live in the store too: one imported on node 1 serves on node 3, no restart.
  const pair = createSelfSigned(['shop.test']);
  const imported = await adminRequest(n1.adminPort, 'POST', '/v1/apps/shop/certificates/custom', 'test-token', JSON.stringify({ hostname: 'shop.test', certificate: pair.certPem, private_key: pair.keyPem }));
  t.equal(imported.status, 201, `imported on node 1: ${imported.text.trim().slice(0, 80)}`);
  const wanted = new X509Certificate(pair.certPem).fingerprint256;
  await pollUntil(async () => (await fingerprint(n3, 'shop.test')) === wanted, 'node 3 to serve the certificate imported on node 1', 10_000);
  t.pass('node 3 serves the certificate imported on node 1');

  // Ownership: the deployer (node 1) owns both Machines; the others mirror them.
  t.equal(n1.daemon.manager.get('shop-a')!.owner, null, 'node 1 owns shop-a');
  t.equal(n3.daemon.manager.get('shop-a')!.owner, 'n1', 'node 3 knows node 1 owns it');

  // Load: node 1 holds a request on shop-a (soft limit 1) until the test releases it; once node 1
  // publishes that, node 3 sends everything to shop-b instead of spreading over both.
  const slow = new Promise<number>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: port80(n1), path: '/hold', headers: { host: 'shop.test', 'fly-force-instance-id': 'shop-a' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
  t.teardown(releaseHeld);
  const slotA = () => n3.daemon.manager.get('shop-a')!.slot(a.port);
  await pollUntil(() => slotA().peerLoad === 1, "node 3 to see node 1's load on shop-a", 5000);
  const bodies: string[] = [];
  for (let i = 0; i < 10; i++) bodies.push((await served(n3, 'shop.test')).body);
  t.same(new Set(bodies), new Set(['origin-b']), "node 3's requests all go to shop-b while shop-a is at its soft limit elsewhere");
  releaseHeld();
  t.equal(await slow, 200);
  await pollUntil(() => slotA().peerLoad === 0, 'the load to drop back to zero', 5000);
  t.same(await shopOrigins(n3), ['origin-a', 'origin-b'], 'then both Machines take traffic again');
});

t.test('start/stop asked on any node reach the owner', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const n1 = await node(t, l, 'n1');
  const n2 = await node(t, l, 'n2');
  await n1.daemon.cluster!.deploy(`app = "proc"
[http_service]
internal_port = 8080
[[machines]]
id = "proc-1"
driver = "process"
cmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]
`);
  const owned = () => n1.daemon.manager.get('proc-1');
  const mirror = () => n2.daemon.manager.get('proc-1');
  await pollUntil(() => owned()?.state === 'started' && mirror()?.state === 'started', 'proc-1 started and mirrored on node 2', 20_000);
  t.equal(mirror()!.owner, 'n1');
  t.equal(mirror()!.pid, 0, 'node 2 runs no process for it');

  const stop = await adminRequest(n2.adminPort, 'POST', '/v1/apps/proc/machines/proc-1/stop');
  t.equal(stop.status, 200, `node 2's admin API answers with the owner's result: ${stop.text.trim()}`);
  t.match(stop.json, { ok: true, previous_state: 'started' });
  t.equal(owned()!.state, 'stopped', 'the owner stopped it');
  await pollUntil(() => mirror()!.state === 'stopped', 'node 2 to see it stopped', 5000);
  const view = await adminRequest(n2.adminPort, 'GET', '/v1/apps/proc/machines/proc-1');
  t.match(view.json, { state: 'stopped' }, "node 2's API shows the owner's state");

  // A request on node 2 wakes it through the owner (autostart across nodes).
  const r = await get(port80(n2), 'proc.test', '/');
  t.equal(r.status, 200, `a request on node 2 wakes the Machine on node 1 (${r.body.trim().slice(0, 160)})`);
  t.equal(owned()!.state, 'started');
  t.ok(owned()!.pid > 0, 'the owner runs the process');

  const bad = await adminRequest(n2.adminPort, 'POST', '/v1/apps/proc/machines/nope/stop');
  t.equal(bad.status, 404, 'an unknown Machine: 404 on any node');

  // A Machine created through node 2's API: owned by node 2, known to node 1, destroyed from node 1.
  const create = await adminRequest(n2.adminPort, 'POST', '/v1/apps/proc/machines', 'test-token', JSON.stringify({ name: 'proc-api', config: { init: { cmd: ['node', DEMO_MACHINE] } } }));
  t.equal(create.status, 200, `created through node 2: ${create.text.trim().slice(0, 100)}`);
  t.match(create.json, { id: 'proc-api', state: 'started' });
  const made = () => n2.daemon.manager.get('proc-api');
  const seen1 = () => n1.daemon.manager.get('proc-api');
  t.equal(made()!.owner, null, 'node 2 owns it');
  t.ok(made()!.pid > 0, 'and runs its process');
  await pollUntil(() => seen1()?.owner === 'n2' && seen1()?.state === 'started', 'node 1 to know it, started, owned by node 2', 10_000);
  const dup = await adminRequest(n1.adminPort, 'POST', '/v1/apps/proc/machines', 'test-token', JSON.stringify({ name: 'proc-api', config: { init: { cmd: ['node', DEMO_MACHINE] } } }));
  t.equal(dup.status, 400, 'the same id through another node: 400');
  const pid = made()!.pid;
  const fileMachine = await adminRequest(n1.adminPort, 'DELETE', '/v1/apps/proc/machines/proc-1?force=true');
  t.equal(fileMachine.status, 409, 'a Machine from the app file cannot be destroyed through the API');
  const running = await adminRequest(n1.adminPort, 'DELETE', '/v1/apps/proc/machines/proc-api');
  t.equal(running.status, 412, 'a running one needs force');
  const del = await adminRequest(n1.adminPort, 'DELETE', '/v1/apps/proc/machines/proc-api?force=true');
  t.equal(del.status, 200, `destroyed through node 1: ${del.text.trim()}`);
  if (del.status !== 200) {
    // What node 1 was doing meanwhile (seen once on a heavily loaded machine).
    const recent = n1.log.lines.filter((l) => l['c'] !== 'access').slice(-40);
    t.comment(recent.map((l) => JSON.stringify(l)).join('\n'));
  }
  await pollUntil(() => made() === undefined && seen1() === undefined, 'both nodes to drop it', 10_000);
  await pollUntil(() => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, 'its process (on node 2) to be gone', 10_000);
  t.pass("the owner stopped the process");
});

/**
 * Node 1 a real process (so it can be killed or frozen), node 2 in-process; shop's Machine a
 * owned by node 1, b by node 2, and node 2 routing to both. `start1` starts (again) node 1.
 */
async function processAndPeer(t: Test, l: Lab) {
  const [a, b] = await origins(t);
  const dir1 = makeNodeDir(t, { apps: {}, nodeId: 'n1', node: clusterLines(l.url, l.prefix) });
  const start1 = () => startPetrelProcess(t, { args: ['start', '--config', dir1.configPath] });
  const p1 = await start1();
  const n2 = await node(t, l, 'n2');
  await n2.daemon.cluster!.deploy(shopApp(a, b, ['n1', 'n2']));
  const mA = () => n2.daemon.manager.get('shop-a')!;
  await pollUntil(() => n2.daemon.manager.get('shop-a')?.routable === true, "node 2 to route to node 1's Machine", 20_000);
  return { start1, p1, n2, mA };
}

/** The origins that answer shop.test through `n` within 40 requests, sorted. */
async function shopOrigins(n: Petrel): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < 40 && seen.size < 2; i++) seen.add((await served(n, 'shop.test')).body);
  return [...seen].sort();
}

t.test('a node that dies stops getting traffic for its Machines, and gets it back', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  // Node 1 is a real process, so it can die the hard way (SIGKILL: no goodbye in the store).
  const setup = await processAndPeer(t, l);
  const { start1, n2, mA } = setup;
  let p1 = setup.p1;
  t.same(await shopOrigins(n2), ['origin-a', 'origin-b'], 'both Machines serve while node 1 lives');

  p1.child.kill('SIGKILL');
  const killedAt = performance.now();
  await pollUntil(() => mA().ownerDown, "node 2 to notice node 1's death", 10_000);
  t.pass(`node 1's Machines taken out after ${(performance.now() - killedAt).toFixed(0)} ms (node_dead_after 2 s)`);
  for (let i = 0; i < 10; i++) t.equal((await served(n2, 'shop.test')).body, 'origin-b', `request ${i}: only the live node's Machine`);

  p1 = await start1();
  t.teardown(() => p1.child.kill('SIGKILL'));
  await pollUntil(() => !mA().ownerDown && mA().routable, 'node 1 to be back', 20_000);
  t.same(await shopOrigins(n2), ['origin-a', 'origin-b'], "node 1's Machine serves again once it beats");
});

t.test('a node that was frozen (SIGSTOP) does not call its live peers dead when it wakes', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const { p1, n2, mA } = await processAndPeer(t, l);
  t.teardown(() => p1.child.kill('SIGKILL'));

  // Frozen past node_dead_after (2 s): its own timers all fire late at once when it wakes, before
  // it has read the heartbeats that queued up meanwhile.
  p1.child.kill('SIGSTOP');
  await pollUntil(() => mA().ownerDown, 'node 2 to notice the frozen node', 10_000);
  await new Promise((r) => setTimeout(r, 1000));
  p1.child.kill('SIGCONT');
  await pollUntil(() => !mA().ownerDown, 'node 2 to hear node 1 again', 10_000);
  await new Promise((r) => setTimeout(r, 1000)); // several liveness passes on node 1
  const flaps = p1.logs().filter((l) => l['msg'] === 'node stopped heart-beating: not routing to its Machines');
  t.same(flaps, [], 'node 1 never declared node 2 dead');
  t.same(await shopOrigins(n2), ['origin-a', 'origin-b'], 'both Machines serve again');
});

t.test('a reload that changes [cluster] timings re-arms the heartbeat', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const n1 = await node(t, l, 'n1');
  const beats: number[] = [];
  const unwatch = n1.daemon.cluster!.store.watch('nodes', (ev) => {
    if (ev.type === 'put' && ev.entry.key === 'n1') beats.push(performance.now());
  });
  t.teardown(unwatch);
  const count = async (ms: number) => {
    const from = beats.length;
    await new Promise((r) => setTimeout(r, ms));
    return beats.length - from;
  };
  const fast = await count(2000);
  t.ok(fast >= 8, `heartbeat_interval 100 ms: ${fast} beats in 2 s`);

  const text = readFileSync(n1.configPath, 'utf8');
  writeFileSync(n1.configPath, text.replace('heartbeat_interval = "100ms"', 'heartbeat_interval = "1s"').replace('node_dead_after = "2s"', 'node_dead_after = "4s"'));
  t.ok((await n1.daemon.reload()).ok, 'reloaded');
  t.ok(n1.log.lines.some((x) => x['msg'] === 'cluster timings changed' && x['heartbeat_interval_ms'] === 1000), 'logged');
  const slow = await count(2500);
  t.ok(slow <= 4, `heartbeat_interval 1 s after the reload: ${slow} beats in 2.5 s`);
});

t.test('petrel apps deploy/list/show/destroy with the cluster store (the real CLI)', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const origin = await namedOrigin('origin-cli');
  t.teardown(() => origin.close());
  // The CLI reads the node config for the admin address and token: node 1 runs as a process
  // with a fixed admin port, node 2 in this process.
  const adminPort = await freePort();
  const dir1 = makeNodeDir(t, { apps: {}, nodeId: 'n1', node: clusterLines(l.url, l.prefix), admin: `127.0.0.1:${adminPort}` });
  const p1 = await startPetrelProcess(t, { args: ['start', '--config', dir1.configPath] });
  t.teardown(() => p1.child.kill('SIGTERM'));
  const n2 = await node(t, l, 'n2');
  const cli = (...args: string[]) => runPetrel(t, ['apps', ...args, '--config', dir1.configPath]);

  const file = `${dir1.dir}/web.toml`;
  writeFileSync(file, `app = "web"\nhostnames = ["web.example.com"]\n[http_service]\ninternal_port = ${origin.port}\n[[machines]]\nid = "web-1"\ndriver = "static"\naddress = "127.0.0.1:${origin.port}"\n`);
  const deployed = await cli('deploy', file);
  t.equal(deployed.code, 0, `deploy: ${deployed.stdout.trim()} ${deployed.stderr.trim()}`);
  t.match(deployed.stdout, /deployed app web/);
  await pollUntil(async () => (await served(n2, 'web.example.com')).body === 'origin-cli', 'node 2 to serve the app deployed with the CLI on node 1', 10_000);

  const list = await cli('list');
  t.equal(list.code, 0);
  t.match(list.stdout, /web/);
  const show = await cli('show', 'web');
  t.equal(show.code, 0);
  t.match(show.stdout, /web\.example\.com/);
  t.match(show.stdout, /app = "web"/, 'show prints the stored app file');

  writeFileSync(`${dir1.dir}/bad.toml`, 'app = "bad"\n[http_service]\ninternal_port = "x"\n');
  const bad = await cli('deploy', `${dir1.dir}/bad.toml`);
  t.equal(bad.code, 1, 'an invalid file is refused before anything is sent');
  t.match(bad.stderr, /bad\.toml:3: http_service\.internal_port/);
  t.notOk(await n2.daemon.cluster!.store.get('apps', 'bad'), 'and nothing reached the store');

  const gone = await cli('destroy', 'web', '--yes');
  t.equal(gone.code, 0, `destroy: ${gone.stdout.trim()} ${gone.stderr.trim()}`);
  await pollUntil(async () => (await served(n2, 'web.example.com')).status !== 200, 'node 2 to stop serving the destroyed app', 10_000);
  const again = await cli('show', 'web');
  t.equal(again.code, 1, 'show of a destroyed app fails');
  t.match(again.stderr, /PA02/);
});

t.test('bad input through the store: malformed documents and requests are refused, nothing else changes', async (t) => {
  const l = await lab(t);
  if (l === null) return;
  const [a, b] = await origins(t);
  const n1 = await node(t, l, 'n1');
  const n2 = await node(t, l, 'n2');
  await n1.daemon.cluster!.deploy(shopApp(a, b));
  await pollUntil(async () => (await served(n2, 'shop.test')).status === 200, 'node 2 to serve shop', 10_000);
  const store = n2.daemon.cluster!.store;

  // Owner requests: anything that can publish on the subject can send one.
  const bad: unknown[] = [null, 'stop', { app: 'shop', id: 'shop-a' }, { app: 'shop', id: 'shop-a', action: 'explode' }, { app: 'shop', id: 5, action: 'stop' }, { app: 'shop', id: 'shop-a', action: 'stop', body: [] }];
  for (const req of bad) {
    const r = await store.request<{ status: number; body: { error: { code: string } } }>('machines.n1', req, 5000);
    t.equal(r.status, 400, `owner request ${JSON.stringify(req)}: 400`);
    t.equal(r.body.error.code, 'PA08');
  }
  const unknown = await store.request<{ status: number }>('machines.n1', { app: 'shop', id: 'nope', action: 'stop' }, 5000);
  t.equal(unknown.status, 404, 'an unknown Machine: 404');
  t.equal(n1.daemon.manager.get('shop-a')!.state, 'started', 'nothing was stopped');

  // Documents written by something other than petrel, or a broken app file.
  await store.put('apps', 'junk', { hello: 'world' });
  await store.put('apps', 'broken', { name: 'broken', config: 'app = "broken"\n[http_service]\ninternal_port = "x"\n', deployedBy: 'n1', deployedAt: Date.now() });
  await store.put('machines', 'shop-a', { id: 'shop-a', state: 'exploded' });
  store.publish('load.n9', { node: 'n9', full: true, loads: { 'shop-a': { 8080: 'lots' } } });
  await pollUntil(() => n1.log.lines.some((l) => String(l['msg']).startsWith('left out of the cluster config')), 'node 1 to report the broken app', 10_000);
  t.ok(n1.log.lines.some((l) => String(l['msg']).includes('malformed app document')), 'the malformed document is reported');
  t.equal((await served(n1, 'shop.test')).status, 200, 'node 1 still serves shop');
  t.equal((await served(n2, 'shop.test')).status, 200, 'node 2 still serves shop');
  t.equal(n2.daemon.manager.get('shop-a')!.state, 'started', 'a malformed Machine record changes nothing');
  // Node 1's own load on shop-a (the request just served) may still be on its way: wait for the
  // real value; the malformed message must not have left anything behind.
  await pollUntil(() => n2.daemon.manager.get('shop-a')!.slot(a.port).peerLoad === 0, "node 1's load on shop-a back to 0 on node 2", 10_000);
  t.pass('a malformed load message changes nothing');
  const deploy = await adminRequest(n1.adminPort, 'POST', '/v1/apps', 'test-token', JSON.stringify({ config: 'app = "x"\n[http_service]\ninternal_port = 0\n' }));
  t.equal(deploy.status, 422, 'a deploy of an invalid file: 422');
  t.match(deploy.json, { error: { code: 'PA19', key: 'http_service.internal_port', line: 3 } });
});
