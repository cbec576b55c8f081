// Load generators, each run pinned to one core and reduced to one RunResult.
//
// Which tool where, and why (measured on the 2-core lab machines):
// - wrk: plain HTTP/1.1 keep-alive and streaming; the most efficient client here, so it leaves
//   the most of core 0 to the origin. Not used over TLS: it sends the IP address as SNI (a
//   proxy that routes by SNI then answers 421 or has no certificate) and, on reconnect, resumes
//   TLS sessions (about half of its "new" connections were resumptions).
// - h2load --h1: TLS keep-alive (it takes --connect-to, so SNI and Host are the real name) and
//   the fixed-rate run (--rps; wrk2 is not packaged in Debian). Percentiles come from its
//   per-request --log-file. Not used for new connections: it resumes sessions on reconnect,
//   and in duration mode it spins instead of reconnecting after `Connection: close`.
// - ab: new TLS connections. Every request is a new connection with a full handshake (ab never
//   offers a session for resumption) and ab takes the SNI from the Host header.

import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const HOST = 'bench.bench.test';
const WRK_SCRIPT = join(import.meta.dirname, 'wrk-report.lua');

export interface RunResult {
  /** Completed 2xx responses (new connections for tls-new) per second. */
  readonly rps: number;
  /** Response bytes per second in MB (10^6 B): for streaming. */
  readonly mbps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  /** Connect, read, write errors and timeouts: anything that did not produce a response. */
  readonly errors: number;
  /** Responses outside 2xx: a proxy answering fast errors must not look fast. */
  readonly non2xx: number;
  readonly seconds: number;
}

export interface Target {
  readonly port: number;
  readonly tls: boolean;
  readonly path: string;
}

interface Exec {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` pinned to `core`, killing it if it overruns the run by far. */
export function pinned(core: number, cmd: readonly string[], timeoutMs: number): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', ['-c', String(core), ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function fail(tool: string, res: Exec, why: string): never {
  throw new Error(`${tool}: ${why} (exit ${res.code})\n${(res.stdout + res.stderr).trim().split('\n').slice(-8).join('\n')}`);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function wrk(core: number, t: Target, connections: number, seconds: number): Promise<RunResult> {
  const url = `http://127.0.0.1:${t.port}${t.path}`;
  const cmd = ['wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', WRK_SCRIPT, '-H', `Host: ${HOST}`, url];
  const res = await pinned(core, cmd, (seconds + 30) * 1000);
  const line = res.stdout.split('\n').find((l) => l.startsWith('BENCH-JSON '));
  if (!line) fail('wrk', res, 'no report line');
  const r = JSON.parse(line.slice('BENCH-JSON '.length)) as Record<string, number>;
  const secs = r.durationUs! / 1e6;
  const ok = r.requests! - r.statusErrors!;
  return {
    rps: ok / secs,
    mbps: r.bytes! / secs / 1e6,
    p50Ms: r.p50Us! / 1000,
    p99Ms: r.p99Us! / 1000,
    requests: r.requests!,
    errors: r.connectErrors! + r.readErrors! + r.writeErrors! + r.timeouts!,
    non2xx: r.statusErrors!,
    seconds: secs,
  };
}

export interface H2loadOptions {
  readonly connections: number;
  readonly seconds: number;
  /** Requests per second per connection (fixed-rate mode); omitted = as fast as possible. */
  readonly rpsPerConnection?: number;
  /** Where the per-request log goes (removed after parsing). */
  readonly logFile: string;
}

export async function h2load(core: number, t: Target, o: H2loadOptions): Promise<RunResult> {
  const url = `${t.tls ? 'https' : 'http'}://${HOST}${t.path}`;
  const cmd = ['h2load', '--h1', '-t1', `-c${o.connections}`, `-D${o.seconds}`, `--connect-to=127.0.0.1:${t.port}`, `--log-file=${o.logFile}`];
  if (o.rpsPerConnection !== undefined) cmd.push(`--rps=${o.rpsPerConnection}`);
  cmd.push(url);
  const res = await pinned(core, cmd, (o.seconds + 30) * 1000);
  const finished = /finished in ([\d.]+)s/.exec(res.stdout);
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(res.stdout);
  if (!finished || !counts) fail('h2load', res, 'no summary');
  const secs = Number(finished[1]);
  // Log columns: start time (µs since epoch), status, µs until the end of the response.
  const log = await readFile(o.logFile, 'utf8').catch(() => '');
  await rm(o.logFile, { force: true });
  const lines = log.split('\n');
  const lat = new Float64Array(lines.length);
  let n = 0;
  let good = 0;
  let bad = 0;
  for (const l of lines) {
    const a = l.indexOf('\t');
    if (a < 0) continue;
    const b = l.indexOf('\t', a + 1);
    const status = Number(l.slice(a + 1, b));
    if (status >= 200 && status < 300) good++;
    else bad++;
    lat[n++] = Number(l.slice(b + 1));
  }
  const sorted = lat.subarray(0, n).sort();
  return {
    rps: good / secs,
    mbps: NaN,
    p50Ms: percentile(sorted, 50) / 1000,
    p99Ms: percentile(sorted, 99) / 1000,
    requests: Number(counts[3]),
    // h2load: "failed" includes HTTP-level failures, "errored" is everything else (timeouts too).
    errors: Number(counts[6]),
    non2xx: bad,
    seconds: secs,
  };
}

export async function abNewTls(core: number, t: Target, concurrency: number, seconds: number): Promise<RunResult> {
  // -t implies -n 50000 and ab allocates its stats array for -n up front, so -n (after -t) is
  // sized for the run; -r keeps ab going after a socket error instead of aborting the run.
  const n = String(seconds * 10_000);
  const url = `https://127.0.0.1:${t.port}${t.path}`;
  const cmd = ['ab', '-q', '-r', '-t', String(seconds), '-n', n, '-c', String(concurrency), '-H', `Host: ${HOST}`, url];
  const res = await pinned(core, cmd, (seconds + 30) * 1000);
  const num = (re: RegExp): number => {
    const m = re.exec(res.stdout);
    return m ? Number(m[1]) : NaN;
  };
  const complete = num(/Complete requests:\s+(\d+)/);
  const secs = num(/Time taken for tests:\s+([\d.]+) seconds/);
  if (!Number.isFinite(complete) || !Number.isFinite(secs)) fail('ab', res, 'no summary');
  const non2xx = num(/Non-2xx responses:\s+(\d+)/) || 0;
  const failed = num(/Failed requests:\s+(\d+)/) || 0;
  return {
    rps: (complete - non2xx) / secs,
    mbps: NaN,
    // ab's percentile table is in whole milliseconds.
    p50Ms: num(/^\s+50%\s+(\d+)/m),
    p99Ms: num(/^\s+99%\s+(\d+)/m),
    requests: complete,
    errors: failed,
    non2xx,
    seconds: secs,
  };
}
