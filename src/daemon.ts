// The control plane's conductor: loads config, runs Machines and their checks, builds and swaps
// snapshots, binds listeners, serves the admin API, reloads and shuts down in order. The data
// plane only ever sees what it publishes through the SnapshotHolder.

import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DestinationStream } from 'pino';
import { AdminServer, type AdminBackend, type ReloadOutcome } from './admin/server.ts';
import { makeMachinesBackend } from './admin/machinesBackend.ts';
import type { ApiReply, MachinesBackend } from './admin/machinesApi.ts';
import { embeddedAppsBackend } from './admin/appsEmbedded.ts';
import { clusterAppsBackend } from './admin/appsCluster.ts';
import type { CreateRequest } from './admin/machineCreate.ts';
import { ApiMachines } from './machines/apiMachines.ts';
import { loadConfig, loadNodeConfig } from './config/load.ts';
import { ClusterNode } from './cluster/node.ts';
import { askOwner, RemoteDriver, type OwnerRequest } from './cluster/ownerRequests.ts';
import { openStore } from './store/config.ts';
import { isStoreError } from './store/errors.ts';
import { ConfigError, type Config } from './config/types.ts';
import { HealthChecker } from './machines/health.ts';
import { MachineManager } from './machines/manager.ts';
import type { DriverFactory } from './machines/drivers/index.ts';
import { makeLoggers, setLevel, type Loggers } from './observe/log.ts';
import { Metrics } from './observe/metrics.ts';
import { kickQueues, setLocalRegion, setWaker } from './proxy/capacity.ts';
import { MachineWaker } from './machines/waker.ts';
import { Autostop } from './machines/autostop.ts';
import { ProxyContext } from './proxy/context.ts';
import { closeH2Agents } from './proxy/h2.ts';
import { upstreamPools } from './proxy/upstream.ts';
import { Listeners } from './proxy/listeners.ts';
import { buildSnapshot } from './snapshot/build.ts';
import { SnapshotHolder } from './snapshot/holder.ts';
import { LiveRegistry } from './snapshot/live.ts';
import type { Snapshot } from './snapshot/snapshot.ts';
import type { CertTable } from './tls/certTable.ts';
import { Certificates } from './tls/certificates.ts';
import { ClusterCertStore } from './tls/store/clusterCertStore.ts';

export interface DaemonOptions {
  readonly configPath: string;
  /** Log destination (tests capture lines); stdout when absent. */
  readonly logDestination?: DestinationStream;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly drivers?: DriverFactory;
}

export class Daemon {
  readonly opts: DaemonOptions;
  /** The applied config: the files' config plus Machines created through the admin API. */
  config: Config;
  /** The config as the files say, before API-made Machines are added. */
  private fileConfig: Config;
  private readonly apiMachines: ApiMachines;
  /** Cluster store: Machines this node created with `skip_launch`, not started by the next apply. */
  private readonly skipLaunch = new Set<string>();
  readonly log: Loggers;
  readonly metrics: Metrics;
  readonly manager: MachineManager;
  readonly health: HealthChecker;
  readonly live: LiveRegistry;
  readonly holder: SnapshotHolder;
  readonly ctx: ProxyContext;
  readonly listeners: Listeners;
  readonly admin: AdminServer;
  readonly adminToken: string;
  readonly autostop: Autostop;
  readonly certificates: Certificates;
  /** The admin API's Machine operations on this node's registry (local; see backend()). */
  private readonly machinesBackend: MachinesBackend;
  /** With a shared store (`[store] kind = "nats"`): this node's part in the cluster; else null. */
  readonly cluster: ClusterNode | null;
  adminPort: number;
  private version: number;
  private reloading: Promise<unknown>;
  private shuttingDown: Promise<void> | null;
  private poolTimer: NodeJS.Timeout | null;

  private constructor(
    opts: DaemonOptions,
    config: Config,
    log: Loggers,
    certificates: Certificates,
    cluster: ClusterNode | null,
    snapshotFactory: (d: Daemon) => Snapshot,
  ) {
    this.opts = opts;
    this.certificates = certificates;
    this.cluster = cluster;
    this.config = config;
    this.fileConfig = config;
    this.apiMachines = new ApiMachines();
    this.log = log;
    this.version = 1;
    this.reloading = Promise.resolve();
    this.shuttingDown = null;
    this.poolTimer = null;
    this.adminPort = 0;
    this.manager = new MachineManager({
      logger: log.machines,
      drivers: opts.drivers,
      ownerOf: cluster === null ? undefined : (mc) => cluster.ownerOf(mc),
      remote:
        cluster === null
          ? undefined
          : new RemoteDriver(cluster.store, () => this.config.node.cluster.ownerRequestTimeoutMs, (record) => cluster.takeRecord(record)),
    });
    this.metrics = new Metrics(
      {
        forEachMachineLoad: (fn) => {
          for (const m of this.manager.all()) fn(m.app, m.id, m.totalLoad());
        },
      },
      { forEachMachineState: (fn) => this.manager.all().forEach((m) => fn(m.app, m.state)) },
    );
    this.health = new HealthChecker({ logger: log.machines });
    this.live = new LiveRegistry();
    this.holder = new SnapshotHolder(snapshotFactory(this));
    this.ctx = new ProxyContext(this.holder, log, this.metrics);
    this.ctx.challenges = certificates.book;
    this.ctx.onCertMiss = (hostname) => certificates.onMiss(hostname);
    this.metrics.certificates = certificates;
    this.metrics.store = cluster === null ? null : cluster.store;
    this.listeners = new Listeners(this.ctx);
    this.machinesBackend = makeMachinesBackend({
      manager: this.manager,
      routingChanged: () => kickQueues(this.routes()),
      drainMs: () => this.holder.current.limits.stopDrainTimeoutMs,
      nodeRegion: () => this.config.node.region,
      app: (name) => this.config.apps.get(name),
      isApiMachine: (id) => (cluster === null ? this.apiMachines.has(id) : cluster.isApiMachine(id)),
      addMachine: (req) => (cluster === null ? this.addMachine(req) : this.addClusterMachine(cluster, req)),
      removeMachine: (id) => (cluster === null ? this.removeMachine(id) : this.removeClusterMachine(cluster, id)),
    });
    this.adminToken = config.node.admin.token || randomBytes(24).toString('base64url');
    this.admin = new AdminServer(this.adminToken, this.metrics, this.backend(), log.admin);
    this.autostop = new Autostop(this.manager, this.holder, log.machines);
  }

  /** Loads config and starts everything; throws ConfigError for a bad config, Error for a bind failure. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const node = await loadNodeConfig(opts.configPath, { env: opts.env });
    const log = makeLoggers(node.logLevel, opts.logDestination);
    let cluster: ClusterNode | null = null;
    let config: Config;
    if (node.store.kind === 'nats') {
      // No previous state to serve from: a node that cannot reach the store at all does not start.
      const store = await openStore({ ...node.store, name: node.nodeId }, log.cluster);
      cluster = new ClusterNode(store, node, log.cluster);
      config = await cluster.initialConfig(node);
      log.cluster.info({ apps: config.apps.size, servers: node.store.servers }, 'cluster store connected; apps read from it');
    } else {
      config = await loadConfig(opts.configPath, { env: opts.env });
    }
    let daemon: Daemon | null = null;
    const shared = cluster === null ? undefined : new ClusterCertStore(cluster.store, { description: `${cluster.store.kind}:${node.nodeId}` });
    const certificates = await Certificates.open(config, log.tls, (outcome) => daemon?.metrics.acmeOrders.labels(outcome).inc(), shared);
    const certs = await certificates.buildTable(config);
    // The first snapshot needs Machines registered; build an empty-handed one, then the real one.
    const d = new Daemon(opts, config, log, certificates, cluster, (self) =>
      buildSnapshot({ version: 0, config, machines: self.manager, metrics: self.metrics, live: self.live, certs }),
    );
    daemon = d;
    d.wire();
    await d.manager.reconcile(config);
    const snap = buildSnapshot({ version: d.version, config, machines: d.manager, metrics: d.metrics, live: d.live, certs });
    setLocalRegion(config.node.region);
    const commit = await d.listeners.prepare(snap);
    d.holder.swap(snap);
    await commit();
    d.adminPort = await d.admin.listen(config.node.admin.host, config.node.admin.port);
    d.poolTimer = setInterval(() => upstreamPools.expire(performance.now(), d.holder.current.limits.upstreamIdleTimeoutMs), 1000);
    d.poolTimer.unref();
    d.autostop.start();
    d.certificates.onChange(() => void d.refreshCertificates());
    // After the listeners: an order may start at once, and the CA validates through them.
    await d.certificates.configure(config);
    d.cluster?.start({
      apply: (c) => d.applyCluster(c),
      manager: d.manager,
      routingChanged: () => kickQueues(d.routes()),
      ownerAction: (req) => d.ownerAction(req),
    });
    return d;
  }

  private wire(): void {
    setWaker(new MachineWaker(this.manager, this.log.machines, () => this.config.node.region));
    this.health.attach(this.manager);
    // The checker logs each change once; here only queues and metrics react to it.
    this.health.onChange((slot, healthy) => {
      if (healthy) kickQueues(this.routes());
      else this.metrics.checkFailures.labels(slot.machine.app).inc();
    });
    this.manager.onTransition((m, from, to) => {
      this.metrics.machineTransitions.labels(m.app, to).inc();
      if (to === 'starting') this.metrics.machineStarts.labels(m.app, from === 'suspended' ? 'resume' : 'cold').inc();
      else if (to === 'stopped' && from === 'stopping') this.metrics.machineStops.labels(m.app, 'stop').inc();
      else if (to === 'suspended') this.metrics.machineStops.labels(m.app, 'suspend').inc();
      if (to === 'started') kickQueues(this.routes());
      this.cluster?.machineChanged(m);
    });
    this.health.onChange((slot) => this.cluster?.machineChanged(slot.machine));
  }

  private *routes() {
    for (const app of this.holder.current.apps.values()) yield* app.byPort.values();
  }

  /** Bound addresses of the public ports, by public port number. */
  addresses(): Map<number, { host: string; port: number }> {
    return this.listeners.addresses();
  }

  /** Whole new snapshot or none: serialised, so two reloads never interleave. */
  reload(): Promise<ReloadOutcome> {
    const run = this.reloading.then(() => this.doReload());
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async doReload(): Promise<ReloadOutcome> {
    let config: Config;
    try {
      config = this.cluster === null ? await loadConfig(this.opts.configPath, { env: this.opts.env }) : await this.clusterReloadConfig();
    } catch (err) {
      this.metrics.reloads.labels('failure').inc();
      if (err instanceof ConfigError) {
        this.log.config.error({ file: err.file, key: err.key, line: err.line }, `reload refused, old config keeps serving: ${err.message}`);
        return { ok: false, version: this.version, error: { file: err.file, key: err.key, line: err.line, reason: err.message } };
      }
      const reason = err instanceof Error ? err.message : String(err);
      this.log.config.error({ err }, 'reload refused, old config keeps serving');
      return { ok: false, version: this.version, error: { file: this.opts.configPath, key: '', line: 0, reason } };
    }
    try {
      const certs = await this.certificates.buildTable(config);
      await this.apply(config, certs);
      // The new config serves already; an ACME problem is reported, not a reason to roll back.
      await this.certificates.configure(this.config).catch((err: unknown) => this.log.tls.error({ err }, 'ACME not reconfigured'));
      this.metrics.reloads.labels('success').inc();
      this.log.config.info({ version: this.version, apps: config.apps.size }, 'config reloaded');
      return { ok: true, version: this.version };
    } catch (err) {
      this.metrics.reloads.labels('failure').inc();
      const reason = err instanceof Error ? err.message : String(err);
      this.log.config.error({ err }, 'reload failed, old config keeps serving');
      return { ok: false, version: this.version, error: { file: this.opts.configPath, key: '', line: 0, reason } };
    }
  }

  /**
   * Applies `fileConfig` plus the API-made Machines: reconcile the Machines, build and publish a
   * whole new snapshot, sync the listeners. Callers serialise through `reloading`.
   */
  private async apply(fileConfig: Config, certs: CertTable, skipStart?: ReadonlySet<string>): Promise<void> {
    const { config, dropped } = this.apiMachines.merge(fileConfig);
    for (const d of dropped) this.log.machines.warn({ machine: d.machine }, `Machine created through the admin API removed: ${d.reason}`);
    await this.manager.reconcile(config, { skipStart });
    const snap = buildSnapshot({ version: this.version + 1, config, machines: this.manager, metrics: this.metrics, live: this.live, certs });
    const commit = await this.listeners.prepare(snap);
    this.version++;
    this.fileConfig = fileConfig;
    this.config = config;
    setLocalRegion(config.node.region);
    setLevel(this.log, config.node.logLevel);
    this.holder.swap(snap);
    await commit();
    kickQueues(this.routes());
  }

  /** Cluster mode: the node config from its file, the apps from the store. */
  private async clusterReloadConfig(): Promise<Config> {
    const node = await loadNodeConfig(this.opts.configPath, { env: this.opts.env });
    if (JSON.stringify(node.store) !== JSON.stringify(this.config.node.store) || node.nodeId !== this.config.node.nodeId) {
      throw new Error('[store] and node_id cannot change on a reload: restart the node to change them');
    }
    this.cluster!.setNodeConfig(node);
    return this.cluster!.currentConfig();
  }

  /** The deployed apps changed in the cluster store: apply them like a reload. */
  private applyCluster(config: Config): Promise<void> {
    const run = this.reloading.then(async () => {
      if (this.shuttingDown !== null) return;
      const certs = await this.certificates.buildTable(config);
      const skip = new Set(this.skipLaunch);
      this.skipLaunch.clear();
      await this.apply(config, certs, skip);
      await this.certificates.configure(this.config).catch((err: unknown) => this.log.tls.error({ err }, 'ACME not reconfigured'));
      this.log.cluster.info({ version: this.version, apps: config.apps.size }, 'cluster config applied');
    });
    this.reloading = run.catch(() => undefined);
    return run;
  }

  /** Another node asks this one (the owner) to act on one of its Machines. */
  private ownerAction(req: OwnerRequest): Promise<ApiReply> {
    const m = this.manager.get(req.id);
    if (m === undefined || m.app !== req.app) return Promise.resolve({ status: 404, body: { error: { code: 'PA03', reason: `no Machine ${req.id} in app ${req.app}` } } });
    if (m.owner !== null) return Promise.resolve({ status: 409, body: { error: { code: 'PA06', reason: `Machine ${req.id} belongs to node ${m.owner}, not ${this.config.node.nodeId}` } } });
    return this.machinesBackend.action(req.app, req.id, req.action, req.body);
  }

  /** Stored certificates changed (issued, renewed, imported, deleted): same routes, new table. */
  private refreshCertificates(): Promise<unknown> {
    const run = this.reloading.then(async () => {
      if (this.shuttingDown !== null) return;
      const table = await this.certificates.buildTable(this.config);
      this.holder.swap(this.holder.current.withCerts(table));
    });
    this.reloading = run.catch((err: unknown) => this.log.tls.error({ err }, 'certificate table not rebuilt; the previous one keeps serving'));
    return this.reloading;
  }

  /** Runs a change of the API-made Machines as one more apply, in line with reloads. */
  private changeMachines(change: () => void, skipStart?: ReadonlySet<string>): Promise<void> {
    const run = this.reloading.then(() => {
      change();
      return this.apply(this.fileConfig, this.holder.current.certs, skipStart);
    });
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async addMachine(req: CreateRequest): Promise<void> {
    await this.changeMachines(() => this.apiMachines.add(req.machine), req.skipLaunch ? new Set([req.machine.id]) : undefined);
    this.log.machines.info({ machine: req.machine.id, app: req.machine.app, region: req.machine.region }, 'Machine created through the admin API');
    const m = this.manager.get(req.machine.id);
    // The reconcile records a failed start on the Machine; the API reports it as a failure.
    if (!req.skipLaunch && m !== undefined && m.state === 'failed') throw new Error(`Machine ${m.id} did not start: ${m.lastError}`);
  }

  /**
   * Cluster store: the Machine goes into the store, owned by this node; every node's next config
   * has it, and this node's reconcile starts it. Answers once it runs here (or failed to start).
   */
  private async addClusterMachine(cluster: ClusterNode, req: CreateRequest): Promise<void> {
    if (req.skipLaunch) this.skipLaunch.add(req.machine.id);
    await cluster.createMachine(req.machine);
    const done = await this.until(() => {
      const m = this.manager.get(req.machine.id);
      return m !== undefined && (req.skipLaunch || m.state === 'started' || m.state === 'failed');
    });
    const m = this.manager.get(req.machine.id);
    if (!done || m === undefined) throw new Error(`Machine ${req.machine.id} was written to the cluster store but has not started here yet`);
    if (m.state === 'failed') throw new Error(`Machine ${m.id} did not start: ${m.lastError}`);
  }

  /** Cluster store: removed everywhere; its owner stops and destroys it. */
  private async removeClusterMachine(cluster: ClusterNode, id: string): Promise<void> {
    await cluster.destroyMachine(id);
    if (!(await this.until(() => this.manager.get(id) === undefined))) throw new Error(`Machine ${id} was removed from the cluster store but is still here`);
  }

  /** Polls `done` until true or the wake timeout (every wait is bounded). */
  private async until(done: () => boolean): Promise<boolean> {
    const deadline = performance.now() + this.holder.current.limits.wakeTimeoutMs;
    while (!done()) {
      if (performance.now() > deadline) return false;
      await sleep(10);
    }
    return true;
  }

  private async removeMachine(id: string): Promise<void> {
    await this.changeMachines(() => this.apiMachines.delete(id));
    this.log.machines.info({ machine: id }, 'Machine destroyed through the admin API');
  }

  /**
   * Graceful shutdown: stop accepting, let in-flight requests finish (keep-alive connections
   * close after their current response), then stop the Machines this node started.
   */
  shutdown(): Promise<void> {
    this.shuttingDown ??= this.doShutdown();
    return this.shuttingDown;
  }

  private async doShutdown(): Promise<void> {
    const limits = this.holder.current.limits;
    const deadline = performance.now() + limits.shutdownTimeoutMs;
    this.ctx.draining = true;
    this.log.root.info({ deadline_ms: limits.shutdownTimeoutMs }, 'shutting down: no new connections, draining in-flight requests');
    await this.listeners.stopAccepting();
    this.listeners.h2.goaway();
    // WebSocket clients get a Close (1001) so they reconnect to another node instead of
    // waiting for a TCP reset at the deadline.
    for (const m of this.manager.all()) for (const t of m.tunnels) t.goAway();
    for (const c of this.ctx.h1Conns) c.drainIdle();
    while (this.listeners.sockets.size > 0 && performance.now() < deadline) {
      await sleep(25);
      for (const c of this.ctx.h1Conns) c.drainIdle();
    }
    const left = this.listeners.sockets.size;
    for (const s of this.listeners.sockets) s.destroy();
    if (left > 0) this.log.root.warn({ connections: left }, 'shutdown deadline reached, closed remaining connections');
    if (this.poolTimer !== null) clearInterval(this.poolTimer);
    upstreamPools.closeAll();
    closeH2Agents();
    this.health.close();
    await this.autostop.close();
    await this.manager.stopAll(Math.max(0, deadline - performance.now()) + 1000);
    await this.admin.close();
    await this.certificates.close();
    await this.cluster?.close();
    this.log.root.info('petrel stopped');
    this.log.flush();
  }

  private backend(): AdminBackend {
    return {
      ready: () => !this.ctx.draining && this.shuttingDown === null,
      readyDetails: () => this.readyDetails(),
      reload: () => this.reload(),
      apps: () =>
        [...this.holder.current.apps.values()].map((a) => ({
          name: a.config.name,
          hostnames: a.config.hostnames,
          machines: a.config.machines.length,
          connections: a.live.connections,
        })),
      app: (name) => this.config.apps.get(name),
      certificates: this.certificates,
      // deploy/show/destroy with the embedded store: the app files are the config.
      ...(this.cluster === null ? embeddedAppsBackend(() => this.config) : clusterAppsBackend(this.cluster, () => this.config)),
      ...this.machinesBackend,
      action: (app, id, action, body) => {
        const m = this.manager.get(id);
        // Another node's Machine: its owner acts, and its answer is the answer.
        if (this.cluster !== null && m !== undefined && m.app === app && m.owner !== null) return this.forward(m.owner, { app, id, action, body });
        return this.machinesBackend.action(app, id, action, body);
      },
    };
  }

  private readyDetails(): string[] {
    if (this.cluster === null) return ['store: embedded (app files in ' + this.config.node.appsDir + ')'];
    const s = this.cluster.status();
    const since = new Date(s.since).toISOString();
    const store = s.connected
      ? `store: ${s.kind} connected since ${since}`
      : `store: ${s.kind} unreachable since ${since}: serving the last known state, writes refused`;
    const nodes = s.nodes.map((n) => `${n.id}${n.alive ? '' : ' (dead)'}`).join(', ');
    return [store, `nodes: ${nodes === '' ? this.config.node.nodeId : nodes}`];
  }

  private async forward(owner: string, req: OwnerRequest): Promise<ApiReply> {
    try {
      const r = await askOwner(this.cluster!.store, owner, req, this.config.node.cluster.ownerRequestTimeoutMs);
      return { status: r.status, body: r.body };
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const status = isStoreError(err, 'timeout') ? 504 : 503;
      return { status, body: { error: { code: 'PA17', reason: `node ${owner} (the Machine's owner) did not answer: ${reason}` } } };
    }
  }
}
