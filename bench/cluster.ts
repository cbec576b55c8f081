// Cluster propagation (issue 5: "a change made on one node is live on every node within 1 s,
// measure it"). Starts a real nats-server and three petrel nodes in this process, then, N times:
// deploys a new version of an app on node 1 (its response header names the version) and times
// until node 3 answers with that version. Also times a Machine stop asked on node 3 until node 2
// stops routing to it. Prints median, p90 and max; the numbers go to bench/RESULTS.md.
//
//   npm run bench:cluster            (nats-server from Debian: apt-get install nats-server)
//   ROUNDS=50 npm run bench:cluster

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Daemon } from '../src/daemon.ts';
import { freePort } from '../test/helpers/prometheus.ts';

const ROUNDS = Number(process.env['ROUNDS'] ?? 30);


async function startNats(dir: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', path.join(dir, 'nats')], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return { url: `nats://127.0.0.1:${port}`, proc };
    await sleep(50);
  }
  throw new Error('nats-server did not start (is it installed? apt-get install nats-server)');
}

async function startNode(dir: string, id: string, natsUrl: string): Promise<Daemon> {
  const nodeDir = path.join(dir, id);
  mkdirSync(path.join(nodeDir, 'apps'), { recursive: true });
  const config = path.join(nodeDir, 'petrel.toml');
  writeFileSync(
    config,
    `node_id = "${id}"
region = "bench"
default_domain = "bench"
apps_dir = "apps"
certs_dir = "certs"
log_level = "warn"

[store]
kind = "nats"
servers = ["${natsUrl}"]
bucket_prefix = "bench"

[cluster]
heartbeat_interval = "500ms"
node_dead_after = "2s"

[[listen]]
port = 80
address = "127.0.0.1:0"

[[listen]]
port = 443
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"
token = "bench"
`,
  );
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  return Daemon.start({ configPath: config, logDestination: quiet });
}

function version(port: number): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host: 'web.bench' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(String(res.headers['x-version'] ?? '')));
    });
    req.on('error', () => resolve(''));
  });
}

function app(originPort: number, v: number): string {
  return `app = "web"
[http_service]
internal_port = ${originPort}
[http_service.http_options.response.headers]
x-version = "${v}"
[[machines]]
id = "web-1"
driver = "static"
address = "127.0.0.1:${originPort}"
`;
}

/** Polls every millisecond; a bench that hangs helps nobody, so it gives up after 10 s. */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await sleep(1);
  }
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `median ${q(0.5).toFixed(1)} ms, p90 ${q(0.9).toFixed(1)} ms, max ${s[s.length - 1]!.toFixed(1)} ms (n=${s.length})`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'petrel-bench-cluster-'));
  const nats = await startNats(dir);
  const origin = http.createServer((_q, r) => r.end('ok'));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  const originPort = (origin.address() as net.AddressInfo).port;
  const nodes: Daemon[] = [];
  try {
    for (const id of ['n1', 'n2', 'n3']) nodes.push(await startNode(dir, id, nats.url));
    const [n1, n2, n3] = nodes as [Daemon, Daemon, Daemon];
    const port = (d: Daemon) => d.addresses().get(80)?.port ?? 0;

    const deploy: number[] = [];
    for (let v = 1; v <= ROUNDS; v++) {
      const t0 = performance.now();
      await n1.cluster!.deploy(app(originPort, v));
      await until(async () => port(n3) !== 0 && (await version(port(n3))) === String(v), `node 3 to answer with version ${v}`);
      deploy.push(performance.now() - t0);
    }
    console.log(`deploy on node 1 → node 3 answers with it: ${stats(deploy)}`);

    const stop: number[] = [];
    for (let i = 0; i < Math.min(ROUNDS, 20); i++) {
      const m2 = () => n2.manager.get('web-1')!;
      const t0 = performance.now();
      // Asked on node 3, carried out by the owner (node 1), seen by node 2 through the store.
      const r = await fetch(`http://127.0.0.1:${n3.adminPort}/v1/apps/web/machines/web-1/stop`, { method: 'POST', headers: { authorization: 'Bearer bench' } });
      if (r.status !== 200) throw new Error(`stop answered ${r.status}: ${await r.text()}`);
      await until(() => m2().state === 'stopped', 'node 2 to see the Machine stopped');
      stop.push(performance.now() - t0);
      await fetch(`http://127.0.0.1:${n3.adminPort}/v1/apps/web/machines/web-1/start`, { method: 'POST', headers: { authorization: 'Bearer bench' } });
      await until(() => m2().state === 'started', 'node 2 to see the Machine started');
    }
    console.log(`stop asked on node 3 → owner (node 1) stops → node 2 sees it: ${stats(stop)}`);
  } finally {
    for (const d of nodes) await d.shutdown();
    origin.close();
    nats.proc.kill('SIGTERM');
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
