// Prometheus metrics, defined once at start-up with bounded labels (app, status class, code,
// outcome, Machine id). The hot path only touches pre-resolved label children held by AppMetrics,
// so a request costs a few property reads and increments, never a label lookup.

import client from 'prom-client';

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** Seconds; covers sub-millisecond proxying up to the 60 s default response timeout. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface MachineStateSource {
  /** Each Machine's app and state, read at scrape time only. */
  forEachMachineState(fn: (app: string, state: string) => void): void;
}

export interface MachineLoadSource {
  /** Current concurrency per Machine, read at scrape time only. */
  forEachMachineLoad(fn: (app: string, machine: string, load: number) => void): void;
}

export interface CertificateSource {
  /** Every configured host name and its certificate's notAfter (ms), read at scrape time only. */
  forEachCertificate(fn: (hostname: string, notAfterMs: number) => void): void;
}

/** ACME order outcomes (AcmeManager onOrder): a fixed set, so the label stays bounded. */
export const ACME_OUTCOMES = ['valid', 'invalid', 'error', 'rate-limited'] as const;

/** Pre-resolved children for one app: made when a snapshot is built, reused across reloads. */
export class AppMetrics {
  readonly app: string;
  readonly responses: client.Counter.Internal[]; // indexed by status / 100 - 1
  readonly responseSeconds: client.Histogram.Internal<string>;
  readonly connections: client.Gauge.Internal<string>;
  readonly retries: client.Counter.Internal;
  readonly queueWait: client.Histogram.Internal<string>;
  readonly wake: client.Histogram.Internal<string>;
  constructor(m: Metrics, app: string) {
    this.app = app;
    this.responses = STATUS_CLASSES.map((c) => m.responses.labels(app, c));
    this.responseSeconds = m.responseSeconds.labels(app);
    this.connections = m.connections.labels(app);
    this.retries = m.retries.labels(app);
    this.queueWait = m.queueWait.labels(app);
    this.wake = m.wake.labels(app);
    // Export every series from the start ("avoid missing metrics"): rate() over a series that
    // appears only at its first event misses that event.
    for (const c of this.responses) c.inc(0);
    this.retries.inc(0);
    m.responseSeconds.zero({ app });
    m.queueWait.zero({ app });
    m.wake.zero({ app });
  }
  response(status: number, seconds: number): void {
    const i = ((status / 100) | 0) - 1;
    if (i >= 0 && i < 5) this.responses[i]!.inc();
    this.responseSeconds.observe(seconds);
  }
}

/** A counter on the node's registry (every petrel counter is defined this way). */
function counter<L extends string>(reg: client.Registry[], name: string, help: string, labelNames: readonly L[]): client.Counter<L> {
  return new client.Counter({ name, help, labelNames, registers: reg });
}

function histogram<L extends string>(reg: client.Registry[], name: string, help: string, labelNames: readonly L[], buckets: number[]): client.Histogram<L> {
  return new client.Histogram({ name, help, labelNames, buckets, registers: reg });
}

export class Metrics {
  readonly registry: client.Registry;
  readonly responses: client.Counter<'app' | 'status_class'>;
  readonly responseSeconds: client.Histogram<'app'>;
  readonly connections: client.Gauge<'app'>;
  readonly retries: client.Counter<'app'>;
  readonly queueWait: client.Histogram<'app'>;
  readonly wake: client.Histogram<'app'>;
  readonly errors: client.Counter<'app' | 'code'>;
  readonly reloads: client.Counter<'outcome'>;
  readonly tlsErrors: client.Counter<'code'>;
  readonly machineConcurrency: client.Gauge<'app' | 'machine'>;
  readonly machineTransitions: client.Counter<'app' | 'state'>;
  readonly machineStarts: client.Counter<'app' | 'kind'>;
  readonly machineStops: client.Counter<'app' | 'kind'>;
  readonly machines: client.Gauge<'app' | 'state'>;
  readonly checkFailures: client.Counter<'app'>;
  readonly acmeOrders: client.Counter<'outcome'>;
  readonly certExpiry: client.Gauge<'hostname'>;
  /** Set by the daemon once certificates are loaded; read at scrape time. */
  certificates: CertificateSource | null;
  readonly storeConnected: client.Gauge;
  /** The cluster store's connection, read at scrape time; null: the embedded store (always 1). */
  store: { connected(): boolean } | null;
  private readonly apps: Map<string, AppMetrics>;

  constructor(source: MachineLoadSource, states?: MachineStateSource) {
    const registry = new client.Registry();
    this.registry = registry;
    client.collectDefaultMetrics({ register: registry });
    const reg = [registry];
    this.responses = counter(reg, 'petrel_http_responses_total', 'HTTP responses sent to clients, by app and status class', ['app', 'status_class'] as const);
    this.responseSeconds = histogram(reg, 'petrel_http_response_seconds', 'Time from request head received to response complete', ['app'] as const, LATENCY_BUCKETS);
    this.connections = new client.Gauge({
      name: 'petrel_connections_active',
      help: 'Client connections open, by app (connections not yet routed count as app="_unrouted")',
      labelNames: ['app'],
      registers: reg,
    });
    this.retries = counter(reg, 'petrel_upstream_retries_total', 'Failed connects to a Machine retried on another Machine', ['app'] as const);
    this.queueWait = histogram(reg, 'petrel_queue_wait_seconds', 'Time requests waited in the queue because every Machine was at its hard limit', ['app'] as const, LATENCY_BUCKETS);
    this.wake = new client.Histogram({
      name: 'petrel_wake_seconds',
      help: 'Time requests waited for a sleeping Machine to be woken and ready (autostart)',
      labelNames: ['app'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: reg,
    });
    this.machineStarts = counter(reg, 'petrel_machine_starts_total', 'Machine starts by kind: cold (from stopped, failed or created) or resume (from suspended)', ['app', 'kind'] as const);
    this.machineStops = counter(reg, 'petrel_machine_stops_total', 'Machine stops by kind: stop or suspend', ['app', 'kind'] as const);
    this.machines = new client.Gauge({
      name: 'petrel_machines',
      help: 'Machines by app and state',
      labelNames: ['app', 'state'],
      registers: reg,
      collect() {
        if (states === undefined) return;
        this.reset();
        const counts = new Map<string, number>();
        states.forEachMachineState((app, state) => {
          const k = `${app}\u0000${state}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        });
        for (const [k, n] of counts) {
          const [app, state] = k.split('\u0000') as [string, string];
          this.labels(app, state).set(n);
        }
      },
    });
    this.errors = counter(reg, 'petrel_proxy_errors_total', 'Proxy-made errors by stable error code', ['app', 'code'] as const);
    this.reloads = counter(reg, 'petrel_config_reloads_total', 'Configuration reloads by outcome (success, failure)', ['outcome'] as const);
    this.tlsErrors = counter(reg, 'petrel_tls_handshake_errors_total', 'TLS handshakes that failed, by error code', ['code'] as const);
    this.machineConcurrency = new client.Gauge({
      name: 'petrel_machine_concurrency',
      help: 'In-flight requests or connections per Machine (per its services concurrency type)',
      labelNames: ['app', 'machine'],
      registers: reg,
      collect() {
        this.reset();
        source.forEachMachineLoad((app, machine, load) => this.labels(app, machine).set(load));
      },
    });
    this.machineTransitions = counter(reg, 'petrel_machine_transitions_total', 'Machine state transitions, by app and the state entered', ['app', 'state'] as const);
    this.checkFailures = counter(reg, 'petrel_machine_check_failures_total', 'Machines that went from passing to failing their service checks', ['app'] as const);
    this.reloads.labels('success').inc(0);
    this.reloads.labels('failure').inc(0);
    this.acmeOrders = counter(reg, 'petrel_acme_orders_total', 'ACME orders by outcome (valid, invalid, error, rate-limited: waiting for the hourly cap)', ['outcome'] as const);
    for (const o of ACME_OUTCOMES) this.acmeOrders.labels(o).inc(0);
    this.certificates = null;
    const self = this;
    this.certExpiry = new client.Gauge({
      name: 'petrel_cert_expiry_seconds',
      help: 'Seconds until the certificate served for a configured host name expires (negative: expired)',
      labelNames: ['hostname'],
      registers: reg,
      collect() {
        this.reset();
        const now = Date.now();
        self.certificates?.forEachCertificate((hostname, notAfter) => this.labels(hostname).set((notAfter - now) / 1000));
      },
    });
    this.store = null;
    this.storeConnected = new client.Gauge({
      name: 'petrel_store_connected',
      help: 'Whether this node reaches its cluster store (1) or serves from the last known state (0); the embedded store is always 1',
      registers: reg,
      collect() {
        this.set(self.store === null || self.store.connected() ? 1 : 0);
      },
    });
    this.apps = new Map();
  }

  /** Children for an app; called by the snapshot builder, never per request. */
  forApp(app: string): AppMetrics {
    let a = this.apps.get(app);
    if (a === undefined) {
      a = new AppMetrics(this, app);
      this.apps.set(app, a);
    }
    return a;
  }

  /** Drop series of apps that left the config so label sets stay bounded over many reloads. */
  retainApps(names: ReadonlySet<string>): void {
    for (const app of this.apps.keys()) {
      if (names.has(app) || app === UNROUTED) continue;
      this.apps.delete(app);
      for (const c of STATUS_CLASSES) this.responses.remove(app, c);
      this.responseSeconds.remove(app);
      this.connections.remove(app);
      this.retries.remove(app);
      this.queueWait.remove(app);
      this.wake.remove(app);
    }
  }
}

/** Label used for connections and errors that never reached an app (unknown host, bad request). */
export const UNROUTED = '_unrouted';
