// `npm run bench`: petrel against direct-to-origin and nginx, in one run, same pinning for all.
// See bench/README.md for how to run it and read the report.
//
//   BENCH_DURATION=10     seconds per measured run
//   BENCH_ROUNDS=3        runs per scenario and contender, interleaved (direct, nginx, petrel, ...)
//   BENCH_WARMUP=2        seconds of load per contender before the first scenario (0 = none)
//   BENCH_ONLY=h1-small,tls-new          scenarios to run (default: all)
//   BENCH_CONTENDERS=direct,nginx,petrel contenders to run (default: all)

import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ensureDebianPackages, type Dep } from '../test/helpers/deps.ts';
import { freePort } from '../test/helpers/prometheus.ts';
import { markdown, type Kind, type Run, type ScenarioResult } from './report.ts';
import {
  coreBusySeconds,
  prepareWorkdir,
  removeWorkdir,
  startNginxProxy,
  startOrigin,
  startPetrel,
  treeCpuSeconds,
  type Contender,
  type Workdir,
} from './servers.ts';
import { abNewTls, h2load, wrk, type RunResult } from './tools.ts';

const BENCH_DEPS: readonly Dep[] = [
  { binary: 'taskset', pkg: 'util-linux' },
  { binary: 'nginx', pkg: 'nginx' },
  { binary: 'wrk', pkg: 'wrk' },
  { binary: 'h2load', pkg: 'nghttp2-client' },
  { binary: 'ab', pkg: 'apache2-utils' },
  { binary: 'openssl', pkg: 'openssl' },
];

// Load generator and origin share core 0; the proxy under test has core 1 to itself.
const LOAD_CORE = 0;
const PROXY_CORE = 1;

interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly kind: Kind;
  readonly params: string;
  run(c: Contender, seconds: number, scratch: string): Promise<RunResult>;
}

const SCENARIOS: readonly Scenario[] = [
  {
    id: 'h1-small',
    title: 'HTTP/1.1 keep-alive, 64 B body',
    kind: 'throughput',
    params: 'wrk -t1 -c50, GET /64',
    run: (c, s) => wrk(LOAD_CORE, { port: c.httpPort, tls: false, path: '/64' }, 50, s),
  },
  {
    id: 'h1-16k',
    title: 'HTTP/1.1 keep-alive, 16 KiB body',
    kind: 'throughput',
    params: 'wrk -t1 -c50, GET /16k',
    run: (c, s) => wrk(LOAD_CORE, { port: c.httpPort, tls: false, path: '/16k' }, 50, s),
  },
  {
    id: 'tls-keepalive',
    title: 'HTTPS keep-alive (HTTP/1.1 over TLS), 64 B body',
    kind: 'throughput',
    params: 'h2load --h1 -t1 -c50, SNI and Host bench.bench.test, GET /64',
    run: (c, s, scratch) =>
      h2load(LOAD_CORE, { port: c.httpsPort, tls: true, path: '/64' }, { connections: 50, seconds: s, logFile: join(scratch, 'h2load.log') }),
  },
  {
    id: 'tls-new',
    title: 'new TLS connections: full handshake + one request per connection, 64 B body',
    kind: 'connections',
    params: 'ab -c16 (no keep-alive, no session resumption), RSA-2048 certificate, GET /64',
    run: (c, s) => abNewTls(LOAD_CORE, { port: c.httpsPort, tls: true, path: '/64' }, 16, s),
  },
  {
    id: 'stream-1m',
    title: '1 MiB responses streamed over HTTP/1.1 keep-alive',
    kind: 'stream',
    params: 'wrk -t1 -c8, GET /1m; MB = 10^6 bytes of response',
    run: (c, s) => wrk(LOAD_CORE, { port: c.httpPort, tls: false, path: '/1m' }, 8, s),
  },
  {
    id: 'fixed-rate',
    title: 'fixed 2,000 req/s over 8 keep-alive connections, 64 B body: latency',
    kind: 'fixed-rate',
    params: 'h2load --h1 -t1 -c8 --rps=250 (per connection), GET /64',
    run: (c, s, scratch) =>
      h2load(LOAD_CORE, { port: c.httpPort, tls: false, path: '/64' }, { connections: 8, rpsPerConnection: 250, seconds: s, logFile: join(scratch, 'h2load.log') }),
  },
];

function envInt(name: string, def: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

function envList(name: string, valid: readonly string[]): string[] {
  const raw = process.env[name];
  if (!raw) return [...valid];
  const list = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = list.filter((x) => !valid.includes(x));
  if (unknown.length) {
    console.error(`${name}: unknown ${unknown.join(', ')}; valid: ${valid.join(', ')}`);
    process.exit(2);
  }
  return valid.filter((v) => list.includes(v));
}

function version(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '?';
}

function summary(r: RunResult, kind: Kind, cpu: number | null): string {
  const main = kind === 'stream' ? `${r.mbps.toFixed(0)} MB/s` : `${Math.round(r.rps).toLocaleString('en-US')} ${kind === 'connections' ? 'conn/s' : 'req/s'}`;
  const c = cpu === null ? '' : `  proxy cpu ${((cpu * 1e6) / Math.max(1, r.requests)).toFixed(1)} µs/req`;
  const bad = r.errors || r.non2xx ? `  ⚠ ${r.errors} errors ${r.non2xx} non-2xx` : '';
  return `${main.padStart(14)}  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms${c}${bad}`;
}

async function main(): Promise<void> {
  const seconds = envInt('BENCH_DURATION', 10, 1);
  const rounds = envInt('BENCH_ROUNDS', 3, 1);
  const warmup = envInt('BENCH_WARMUP', 2, 0);
  const scenarios = SCENARIOS.filter((s) => envList('BENCH_ONLY', SCENARIOS.map((x) => x.id)).includes(s.id));
  const wanted = envList('BENCH_CONTENDERS', ['direct', 'nginx', 'petrel']);

  const missing = ensureDebianPackages(BENCH_DEPS, (l) => console.log(`bench: ${l}`));
  if (missing.length) {
    console.error(`bench: cannot run without ${missing.map((d) => d.binary).join(', ')}`);
    process.exit(1);
  }
  if (availableParallelism() < 2) {
    console.error('bench: needs 2 CPUs (load generator + origin on one, the proxy alone on the other)');
    process.exit(1);
  }

  const loadStart = loadavg()[0]!;
  if (loadStart > 0.5) {
    console.log(`bench: load average ${loadStart.toFixed(2)}: other work is running and will skew absolute numbers (see "core 1 other busy %")`);
  }
  const w: Workdir = await prepareWorkdir();
  const scratch = w.dir;
  const contenders: Contender[] = [];
  const skipped: string[] = [];
  const stopAll = async (): Promise<void> => {
    for (const c of contenders.reverse()) await c.stop().catch(() => {});
    await removeWorkdir(w);
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));

  try {
    const origin = await startOrigin(w, LOAD_CORE, { http: await freePort(), https: await freePort() });
    contenders.push(origin);
    const starters: Record<string, () => Promise<Contender>> = {
      nginx: async () => startNginxProxy(w, PROXY_CORE, { http: await freePort(), https: await freePort() }, origin.httpPort),
      petrel: async () => startPetrel(w, PROXY_CORE, { http: await freePort(), https: await freePort(), admin: await freePort() }, origin.httpPort),
    };
    const active: Contender[] = wanted.includes('direct') ? [origin] : [];
    for (const name of ['nginx', 'petrel'].filter((n) => wanted.includes(n))) {
      try {
        const c = await starters[name]!();
        contenders.push(c);
        active.push(c);
        console.log(`bench: ${name} started (http ${c.httpPort}, https ${c.httpsPort})`);
      } catch (err) {
        const why = (err as Error).message;
        skipped.push(`${name}: ${why.split('\n')[0]}`);
        console.log(`bench: SKIPPING ${name}: it did not start: ${why}`);
      }
    }
    if (active.length === 0) throw new Error('no contender started');

    if (warmup > 0) {
      // JIT, pools and TLS session state settle before anything is recorded.
      for (const c of active) {
        console.log(`bench: warm-up ${c.name} (${warmup} s http + ${warmup} s https)`);
        await wrk(LOAD_CORE, { port: c.httpPort, tls: false, path: '/64' }, 50, warmup).catch(() => {});
        await h2load(LOAD_CORE, { port: c.httpsPort, tls: true, path: '/64' }, { connections: 50, seconds: warmup, logFile: join(scratch, 'warm.log') }).catch(() => {});
      }
    }

    const results: ScenarioResult[] = [];
    for (const s of scenarios) {
      const runs: Record<string, (Run | string)[]> = {};
      for (const c of active) runs[c.name] = [];
      for (let round = 1; round <= rounds; round++) {
        for (const c of active) {
          const tag = `[${s.id} ${round}/${rounds}] ${c.name.padEnd(6)}`;
          if (!c.alive()) {
            runs[c.name]!.push('contender exited');
            console.log(`${tag}  contender is no longer running`);
            continue;
          }
          try {
            const cpu0 = c.pid === null ? null : await treeCpuSeconds(c.pid);
            const core0 = await coreBusySeconds(PROXY_CORE);
            const t0 = performance.now();
            const r = await s.run(c, seconds, scratch);
            const wall = (performance.now() - t0) / 1000;
            const coreBusy = (await coreBusySeconds(PROXY_CORE)) - core0;
            const cpu = c.pid === null || cpu0 === null ? null : (await treeCpuSeconds(c.pid)) - cpu0;
            const other = Math.max(0, ((coreBusy - (cpu ?? 0)) / wall) * 100);
            runs[c.name]!.push({ ...r, proxyCpuSeconds: cpu, proxyCoreOtherPct: other });
            console.log(`${tag}  ${summary(r, s.kind, cpu)}  core ${PROXY_CORE} other ${other.toFixed(0)} %`);
          } catch (err) {
            runs[c.name]!.push((err as Error).message);
            console.log(`${tag}  FAILED: ${(err as Error).message}`);
          }
        }
      }
      results.push({ id: s.id, title: s.title, kind: s.kind, params: s.params, runs });
    }

    const now = new Date();
    const meta = {
      date: now.toISOString(),
      lines: [
        `Node ${process.version} (harness and petrel), ${cpus()[0]?.model ?? '?'} × ${cpus().length}, Linux ${release()}`,
        `tools: ${version('wrk', ['-v']).split(' [')[0]}, ${version('h2load', ['--version'])}, ` +
          `ab ${/Version ([\d.]+)/.exec(version('ab', ['-V']))?.[1] ?? '?'}, ${version('nginx', ['-v']).replace('nginx version: ', '')}, ` +
          `${version('openssl', ['version']).split(' (')[0]}`,
        `pinning: load generator and origin (nginx, static files) on core ${LOAD_CORE}; the proxy alone on core ${PROXY_CORE} (taskset)`,
        `${rounds} runs of ${seconds} s per scenario and contender, interleaved (${active.map((c) => c.name).join(', ')}, ...); warm-up ${warmup} s per contender`,
        'TLS: the same RSA-2048 certificate for every contender, SNI bench.bench.test; nginx: worker_processes 1, upstream keepalive 64',
        `load average (1 min) at start ${loadStart.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)} (other work on the machine skews absolute numbers)`,
        ...skipped.map((s) => `skipped: ${s}`),
      ],
    };
    const md = markdown(meta, ['direct', 'nginx', 'petrel'].filter((n) => wanted.includes(n)), results);
    const outDir = join(import.meta.dirname, 'out');
    await mkdir(outDir, { recursive: true });
    const stamp = now.toISOString().replace(/[:.]/g, '-');
    await writeFile(join(outDir, `${stamp}.md`), md);
    await writeFile(join(outDir, `${stamp}.json`), `${JSON.stringify({ meta, results }, null, 2)}\n`);
    console.log(`\n${md}\nbench: written bench/out/${stamp}.md and .json`);
  } finally {
    await stopAll();
  }
}

await main();
