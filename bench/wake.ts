// Wake overhead (issue 3's benchmark): time from a request to a stopped (cold start) or
// suspended (resume) Machine to its first response byte, through petrel, against the same
// Machine's own boot-to-listening time measured without petrel. Reports median and p99 of
// petrel's added overhead. Run: `node bench/wake.ts` (BENCH_WAKES=N, default 20).

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { Daemon } from '../src/daemon.ts';
import { freePort } from '../test/helpers/prometheus.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEMO = path.join(ROOT, 'demo', 'hello-machine.ts');
const N = Number(process.env['BENCH_WAKES'] ?? 20);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * (s.length - 1)))]!;
}
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

function firstByte(port: number, host: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      res.once('data', () => resolve(performance.now() - t0));
      res.resume();
    });
    req.on('error', reject);
  });
}


/** The Machine alone: spawn to first answered request, polling every 1 ms like a wake would. */
async function bootToFirstByte(): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, [DEMO], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
  try {
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    await firstByte(port, 'x');
    return performance.now() - t0;
  } finally {
    child.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'petrel-wake-'));
  mkdirSync(path.join(dir, 'apps'));
  const config = path.join(dir, 'petrel.toml');
  writeFileSync(
    config,
    `node_id = "wake"\nregion = "bench"\ndefault_domain = "test"\nlog_level = "warn"\napps_dir = "apps"\ncerts_dir = "certs"\n[[listen]]\nport = 80\naddress = "127.0.0.1:0"\n[[listen]]\nport = 443\naddress = "127.0.0.1:0"\n[admin]\naddress = "127.0.0.1:0"\ntoken = "bench"\n[limits]\nautostop_interval = "1h"\n`,
  );
  writeFileSync(
    path.join(dir, 'apps', 'w.toml'),
    `app = "w"\n[http_service]\ninternal_port = 8080\n[[http_service.checks]]\npath = "/healthz"\ninterval = "10s"\ntimeout = "1s"\ngrace_period = "10s"\n[[machines]]\nid = "w-1"\ndriver = "process"\ncmd = ["node", ${JSON.stringify(DEMO)}]\n`,
  );
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const d = await Daemon.start({ configPath: config, logDestination: sink });
  const port = d.addresses().get(80)!.port;
  const m = d.manager.get('w-1')!;
  while (!m.slot(8080).healthy) await new Promise((r) => setTimeout(r, 20));

  const cold: number[] = [];
  const resume: number[] = [];
  const boot: number[] = [];
  for (let i = 0; i < N; i++) {
    boot.push(await bootToFirstByte());
    await d.manager.stop('w-1');
    cold.push(await firstByte(port, 'w.test'));
    await d.manager.suspend('w-1');
    resume.push(await firstByte(port, 'w.test'));
  }
  await d.shutdown();

  const bootMed = pct(boot, 0.5);
  const over = cold.map((c) => c - bootMed);
  const lines = [
    `wake overhead, ${N} wakes each, Node ${process.version}, ${os.cpus()[0]?.model ?? ''}`,
    `| | median | p99 |`,
    `|---|---:|---:|`,
    `| Machine alone: spawn to first byte | ${fmt(bootMed)} | ${fmt(pct(boot, 0.99))} |`,
    `| through petrel: stopped -> first byte (cold start) | ${fmt(pct(cold, 0.5))} | ${fmt(pct(cold, 0.99))} |`,
    `| petrel's added overhead on a cold start (minus the median boot) | ${fmt(pct(over, 0.5))} | ${fmt(pct(over, 0.99))} |`,
    `| through petrel: suspended -> first byte (resume) | ${fmt(pct(resume, 0.5))} | ${fmt(pct(resume, 0.99))} |`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

await main();
