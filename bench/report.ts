// Turns the runs into the markdown report: median (min-max) per contender, ratios from medians
// measured in the same run (absolute numbers drift ±30 % between runs on these machines, ratios
// hold), the issue's targets, and every run that saw errors or non-2xx responses.

import type { RunResult } from './tools.ts';

export type Kind = 'throughput' | 'connections' | 'stream' | 'fixed-rate';

export interface Run extends RunResult {
  /** CPU seconds the proxy process tree used during the run; null for direct. */
  readonly proxyCpuSeconds: number | null;
  /** Busy time of the proxy's core not spent by the proxy, % of the run (other work, kernel). */
  readonly proxyCoreOtherPct: number;
}

export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  readonly kind: Kind;
  readonly params: string;
  /** Runs per contender, in the order they ran; a failed run is an error message. */
  readonly runs: Record<string, (Run | string)[]>;
}

export interface Meta {
  readonly date: string;
  readonly lines: readonly string[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

interface Metric {
  readonly label: string;
  readonly get: (r: Run) => number;
  /** Show petrel/direct and petrel/nginx ratios of the medians (throughput metrics). */
  readonly ratio?: boolean;
  /** Show petrel − direct and nginx − direct of the medians, in µs (added latency). */
  readonly addedUs?: boolean;
  /** Show petrel's CPU over nginx's (how much more each request costs petrel). */
  readonly cpuRatio?: boolean;
}

// CPU per request is the proxy's cost whatever limits the run's throughput (a load generator
// that tops out first hides it from req/s, not from this).
const cpuPerReq: Metric = {
  label: 'proxy CPU µs/req',
  cpuRatio: true,
  get: (r) => (r.proxyCpuSeconds === null || r.requests === 0 ? NaN : (r.proxyCpuSeconds * 1e6) / r.requests),
};
const p50: Metric = { label: 'p50 ms', get: (r) => r.p50Ms };
// Includes the kernel's loopback and softirq work not charged to the proxy, so a few % is normal;
// tens of % mean something else ran on the proxy's core and the run's numbers are suspect.
const otherLoad: Metric = { label: 'core 1 other busy %', get: (r) => r.proxyCoreOtherPct };
const p99: Metric = { label: 'p99 ms', get: (r) => r.p99Ms };

const METRICS: Record<Kind, Metric[]> = {
  throughput: [{ label: 'req/s', get: (r) => r.rps, ratio: true }, p50, p99, cpuPerReq, otherLoad],
  connections: [{ label: 'new conns/s', get: (r) => r.rps, ratio: true }, p50, p99, { ...cpuPerReq, label: 'proxy CPU µs/conn' }, otherLoad],
  stream: [{ label: 'MB/s', get: (r) => r.mbps, ratio: true }, { label: 'req/s', get: (r) => r.rps }, p50, p99, cpuPerReq, otherLoad],
  'fixed-rate': [
    { label: 'achieved req/s', get: (r) => r.rps },
    { ...p50, addedUs: true },
    { ...p99, addedUs: true },
    cpuPerReq,
    { label: 'proxy CPU %', get: (r) => (r.proxyCpuSeconds === null ? NaN : (r.proxyCpuSeconds / r.seconds) * 100) },
    otherLoad,
  ],
};

function okRuns(runs: (Run | string)[] | undefined): Run[] {
  return (runs ?? []).filter((r): r is Run => typeof r !== 'string');
}

function med(s: ScenarioResult, contender: string, m: Metric): number {
  const xs = okRuns(s.runs[contender]).map(m.get).filter(Number.isFinite);
  return xs.length ? median(xs) : NaN;
}

function cell(s: ScenarioResult, contender: string, m: Metric): string {
  const runs = s.runs[contender];
  if (runs === undefined) return 'skipped';
  const xs = okRuns(runs).map(m.get).filter(Number.isFinite);
  if (xs.length === 0) return okRuns(runs).length ? '–' : 'failed';
  const dirty = okRuns(runs).some((r) => r.errors > 0 || r.non2xx > 0) ? ' ⚠' : '';
  const spread = xs.length > 1 ? ` (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})` : '';
  return `${fmt(median(xs))}${spread}${dirty}`;
}

const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '–');
const added = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) ? `${a - b >= 0 ? '+' : ''}${Math.round((a - b) * 1000)} µs` : '–');

export interface Target {
  readonly text: string;
  readonly check: (results: ScenarioResult[]) => { value: string; met: boolean | null };
}

function byId(results: ScenarioResult[], id: string): ScenarioResult | undefined {
  return results.find((s) => s.id === id);
}

function ratioTarget(id: string, metricLabel: string, min: number, text: string): Target {
  return {
    text,
    check: (results) => {
      const s = byId(results, id);
      const m = METRICS[s?.kind ?? 'throughput'].find((x) => x.label === metricLabel);
      if (!s || !m) return { value: 'not run', met: null };
      const r = med(s, 'petrel', m) / med(s, 'nginx', m);
      return Number.isFinite(r) ? { value: `${r.toFixed(2)}x`, met: r >= min } : { value: 'pending', met: null };
    },
  };
}

function addedTarget(label: 'p50 ms' | 'p99 ms', maxUs: number, text: string): Target {
  return {
    text,
    check: (results) => {
      const s = byId(results, 'fixed-rate');
      const m = label === 'p50 ms' ? p50 : p99;
      if (!s) return { value: 'not run', met: null };
      const d = (med(s, 'petrel', m) - med(s, 'direct', m)) * 1000;
      const n = (med(s, 'nginx', m) - med(s, 'direct', m)) * 1000;
      const ref = Number.isFinite(n) ? ` (nginx ${n >= 0 ? '+' : ''}${Math.round(n)} µs)` : '';
      return Number.isFinite(d) ? { value: `+${Math.round(d)} µs${ref}`, met: d <= maxUs } : { value: `pending${ref}`, met: null };
    },
  };
}

// The issue's targets (issue 2, Benchmarks).
export const TARGETS: readonly Target[] = [
  ratioTarget('h1-small', 'req/s', 0.4, 'HTTP/1.1 keep-alive 64 B: petrel ≥ 0.4x nginx req/s'),
  addedTarget('p50 ms', 300, 'fixed 2,000 req/s: added p50 over direct ≤ +300 µs'),
  addedTarget('p99 ms', 2000, 'fixed 2,000 req/s: added p99 over direct ≤ +2 ms'),
  ratioTarget('tls-new', 'new conns/s', 0.7, 'new TLS connections/s: petrel ≥ 0.7x nginx'),
  ratioTarget('stream-1m', 'MB/s', 0.7, '1 MiB streaming: petrel ≥ 0.7x nginx MB/s'),
];

export function markdown(meta: Meta, contenders: readonly string[], results: ScenarioResult[]): string {
  const out: string[] = [`# petrel bench, ${meta.date}`, '', ...meta.lines.map((l) => `- ${l}`), ''];
  out.push(
    'Cells: median of the runs (min–max). ⚠: a run had errors or non-2xx responses (listed below).',
    'Ratios are of the medians; on CPU rows "CPU 2.00x" means petrel spends twice the CPU per request nginx does.',
    '',
  );
  out.push(`| scenario | metric | ${contenders.join(' | ')} | petrel/direct | petrel/nginx |`);
  out.push(`|---|---|${contenders.map(() => '---:').join('|')}|---:|---:|`);
  for (const s of results) {
    METRICS[s.kind].forEach((m, i) => {
      const cells = contenders.map((c) => cell(s, c, m));
      let r1 = '';
      let r2 = '';
      if (m.ratio) {
        r1 = ratio(med(s, 'petrel', m), med(s, 'direct', m));
        r2 = ratio(med(s, 'petrel', m), med(s, 'nginx', m));
      } else if (m.cpuRatio) {
        r2 = `CPU ${ratio(med(s, 'petrel', m), med(s, 'nginx', m))}`;
      } else if (m.addedUs) {
        // Added latency over direct: the proxy's own cost at a load every contender sustains.
        r1 = `petrel ${added(med(s, 'petrel', m), med(s, 'direct', m))}`;
        r2 = `nginx ${added(med(s, 'nginx', m), med(s, 'direct', m))}`;
      }
      out.push(`| ${i === 0 ? `**${s.id}**` : ''} | ${m.label} | ${cells.join(' | ')} | ${r1} | ${r2} |`);
    });
  }

  out.push('', '## Targets (issue 2)', '', '| target | measured | met |', '|---|---|---|');
  for (const t of TARGETS) {
    const { value, met } = t.check(results);
    out.push(`| ${t.text} | ${value} | ${met === null ? '–' : met ? 'yes' : 'no'} |`);
  }

  out.push('', '## Scenarios', '');
  for (const s of results) out.push(`- **${s.id}**: ${s.title}. ${s.params}`);

  const problems: string[] = [];
  for (const s of results) {
    for (const [c, runs] of Object.entries(s.runs)) {
      runs.forEach((r, i) => {
        if (typeof r === 'string') problems.push(`${s.id} ${c} run ${i + 1}: failed: ${r.split('\n')[0]}`);
        else if (r.errors > 0 || r.non2xx > 0) problems.push(`${s.id} ${c} run ${i + 1}: ${r.errors} errors, ${r.non2xx} non-2xx of ${r.requests}`);
      });
    }
  }
  if (problems.length) out.push('', '## Runs with problems', '', ...problems.map((p) => `- ${p}`));
  return `${out.join('\n')}\n`;
}
