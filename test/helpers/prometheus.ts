// A real Prometheus (Debian package) for integration tests: scrapes one target every second so
// a test can assert what an operator's Prometheus would actually see, through PromQL, instead of
// parsing /metrics text by hand. lab.md: first sample queryable ~5 s after start, later ones
// within ~1-1.5 s.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A free TCP port on 127.0.0.1: bind port 0, read the port, close. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no TCP address');
  return addr.port;
}

export interface PrometheusOptions {
  /** `host:port` to scrape, e.g. `127.0.0.1:9091`. */
  readonly target: string;
  /** Default `/metrics`. */
  readonly metricsPath?: string;
  /** Default `prometheus` from PATH (see test/helpers/deps.ts requireBinary). */
  readonly binary?: string;
  /** How long to wait for /-/ready. Default 20 s. */
  readonly readyTimeoutMs?: number;
}

/** One element of an instant-vector result, value parsed to a number. */
export interface Sample {
  readonly metric: Readonly<Record<string, string>>;
  readonly value: number;
}

interface QueryReply {
  status: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

const JOB = 'target';

export class Prometheus {
  readonly url: string;
  readonly #child: ChildProcess;
  readonly #dir: string;
  readonly #log: string[];
  readonly #exited: Promise<unknown>;
  readonly #killOnExit: () => void;

  constructor(url: string, child: ChildProcess, dir: string, log: string[]) {
    this.url = url;
    this.#child = child;
    this.#dir = dir;
    this.#log = log;
    // 'close' comes after 'exit' once stdout/stderr are drained, so logTail() is complete.
    // (events.once would reject on a spawn 'error'; that error is reported by startOnce.)
    this.#exited = new Promise((resolve) => child.once('close', resolve));
    // A test file that crashes must not leave a Prometheus running on the machine.
    this.#killOnExit = () => {
      child.kill('SIGKILL');
    };
    process.once('exit', this.#killOnExit);
  }

  /** The last lines Prometheus wrote, for failure messages. */
  logTail(): string {
    return this.#log.join('\n');
  }

  /**
   * Instant query. Vector results become samples; a scalar becomes one sample with no labels.
   * Throws on a PromQL error (bad expression) so a typo fails loudly instead of waiting.
   */
  async query(expr: string): Promise<Sample[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as QueryReply;
    if (body.status !== 'success' || !body.data) {
      throw new Error(`prometheus query ${expr} failed: ${body.error ?? res.status}`);
    }
    const { resultType, result } = body.data;
    if (resultType === 'vector') {
      return (result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({
        metric: r.metric,
        value: Number(r.value[1]),
      }));
    }
    if (resultType === 'scalar') return [{ metric: {}, value: Number((result as [number, string])[1]) }];
    throw new Error(`prometheus query ${expr}: unsupported result type ${resultType}`);
  }

  /** Polls `expr` until `predicate` holds and returns those samples; throws after `timeoutMs`. */
  async waitFor(expr: string, predicate: (samples: Sample[]) => boolean, timeoutMs = 15_000): Promise<Sample[]> {
    const deadline = Date.now() + timeoutMs;
    let last: Sample[] = [];
    for (;;) {
      last = await this.query(expr);
      if (predicate(last)) return last;
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const up = await this.query(`up{job="${JOB}"}`).catch(() => []);
    throw new Error(
      `prometheus: ${expr} did not match within ${timeoutMs} ms; last result ${JSON.stringify(last)}; ` +
        `up=${JSON.stringify(up)}\n${this.logTail()}`,
    );
  }

  /** Kills Prometheus, waits for it to exit and removes its data directory. */
  async stop(): Promise<void> {
    process.removeListener('exit', this.#killOnExit);
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill('SIGTERM');
      const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5_000);
      await this.#exited;
      clearTimeout(timer);
    }
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** Starts Prometheus scraping `opts.target` every second and resolves once it is ready. */
export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  // freePort() can race with another process taking the port before Prometheus binds it
  // (tap runs test files in parallel): retry on that one failure.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(opts: PrometheusOptions): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-prom-'));
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  // scrape_timeout must not exceed scrape_interval or Prometheus refuses the config.
  await writeFile(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      `  - job_name: ${JOB}`,
      `    metrics_path: ${JSON.stringify(opts.metricsPath ?? '/metrics')}`,
      '    static_configs:',
      `      - targets: [${JSON.stringify(opts.target)}]`,
      '',
    ].join('\n'),
  );
  const child = spawn(
    opts.binary ?? 'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n')) {
      if (line) log.push(line);
    }
    if (log.length > 40) log.splice(0, log.length - 40);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);

  const prom = new Prometheus(`http://127.0.0.1:${port}`, child, dir, log);
  let closed = false;
  child.once('close', () => {
    closed = true;
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  try {
    for (;;) {
      if (closed) {
        throw new Error(`prometheus exited (${child.exitCode ?? child.signalCode}) before ready:\n${prom.logTail()}`);
      }
      const err = await Promise.race([spawnError, new Promise<null>((r) => setTimeout(r, 100, null))]);
      if (err) throw new Error(`prometheus failed to start: ${err.message}`);
      const ok = await fetch(`${prom.url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return prom;
      if (Date.now() > deadline) throw new Error(`prometheus not ready after ${opts.readyTimeoutMs ?? 20_000} ms:\n${prom.logTail()}`);
    }
  } catch (err) {
    await prom.stop();
    throw err;
  }
}
