// One petrel node in a cluster that shares a store (spec section 6, issue 5). Control plane:
//
// - apps: the deployed app documents are the config. Every node watches them and applies a
//   whole new config (debounced), so a deploy on one node is live on every node.
// - Machines: each is owned by one node (`node = ...` in its entry, else the deployer). The owner
//   runs the driver and writes the Machine's record (state, address, health) on every change;
//   the others mirror it and send start/stop/suspend to the owner (ownerRequests.ts).
// - load: every node publishes, several times a second and only when it changed, how many
//   requests it has in flight per Machine; the others add that up as `slot.peerLoad`, so the
//   soft/hard bands of spec section 3 count the whole cluster's traffic.
// - liveness: heartbeats in `nodes`; a node silent for `node_dead_after` is dead and nobody
//   routes to its Machines until it beats again.
// - the store going away: everything keeps serving from the last state; the store reconnects
//   and its watches resynchronise; status is in /readyz, `petrel_store_connected` and one log
//   line per transition.

import type { ApiReply } from '../admin/machinesApi.ts';
import type { AppConfig, Config, MachineConfig, NodeConfig } from '../config/types.ts';
import type { MachineManager } from '../machines/manager.ts';
import type { MachineRuntime } from '../machines/runtime.ts';
import type { Logger } from '../observe/log.ts';
import { isStoreError } from '../store/errors.ts';
import { subjectToken } from '../store/keys.ts';
import type { ClusterStore, Entry, Unsubscribe, WatchEvent } from '../store/types.ts';
import { assembleConfig, checkDeploy } from './clusterConfig.ts';
import { asOwnerRequest, ownerSubject, type OwnerReply, type OwnerRequest } from './ownerRequests.ts';
import { asAppDoc, asLoadMessage, asMachineDoc, asNodeDoc, olderReport, type AppDoc, type LoadMessage, type MachineDoc, type MachineSpec, type NodeDoc } from './records.ts';

/** A full load message this often, so a node that joined (or missed one) converges. */
const FULL_LOAD_EVERY_MS = 5000;
const LOAD_SUBJECT = 'load';

export interface ClusterHooks {
  /** Applies a whole new config (the daemon serialises it with reloads). */
  apply(config: Config): Promise<void>;
  readonly manager: MachineManager;
  /** Capacity may have appeared: wake queued requests. */
  routingChanged(): void;
  /** Carries out an action on one of this node's Machines (the admin API's local path). */
  ownerAction(req: OwnerRequest): Promise<ApiReply>;
}

export interface ClusterStatus {
  readonly kind: ClusterStore['kind'];
  readonly connected: boolean;
  /** ms since epoch of the last connect/disconnect (or the start). */
  readonly since: number;
  readonly nodes: readonly { readonly id: string; readonly alive: boolean }[];
}

export class ClusterNode {
  readonly store: ClusterStore;
  readonly nodeId: string;
  private node: NodeConfig;
  private readonly log: Logger;
  private hooks: ClusterHooks | null;
  private readonly apps = new Map<string, AppDoc>();
  /** The config last built from the store (what a deploy must fit with). */
  private assembled: Config | null = null;
  private readonly machineDocs = new Map<string, MachineDoc>();
  private readonly nodes = new Map<string, NodeDoc>();
  /** performance.now() when each node's last heartbeat arrived here (clock skew free). */
  private readonly lastSeen = new Map<string, number>();
  private readonly dead = new Set<string>();
  /** performance.now() of the last liveness pass: a late pass means this node itself stalled. */
  private lastLivenessCheck = 0;
  private lastStallForgiven = -Infinity;
  /** node → Machine id → internal port → load, as published by that node. */
  private readonly peerLoads = new Map<string, Map<string, Map<number, number>>>();
  /** What this node last published, to send only changes. */
  private published = new Map<string, string>();
  private lastFullLoad = 0;
  private readonly unsubs: Unsubscribe[] = [];
  private timers: NodeJS.Timeout[] = [];
  private applyTimer: NodeJS.Timeout | null = null;
  private readonly dirtyMachines = new Set<MachineRuntime>();
  /**
   * Changes reported per owned Machine id: a record's `seq`. By id, not runtime: a reconcile may
   * replace the runtime, and its reports must still count up.
   */
  private readonly changes = new Map<string, number>();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly startedAt = Date.now();
  private statusSince = Date.now();
  private closed = false;

  constructor(store: ClusterStore, node: NodeConfig, log: Logger) {
    this.store = store;
    this.node = node;
    this.nodeId = node.nodeId;
    this.log = log;
    this.hooks = null;
  }

  /** Reads the deployed apps once, for the first config. */
  async initialConfig(node: NodeConfig): Promise<Config> {
    this.node = node;
    for (const [name, e] of await this.store.list('apps')) {
      const doc = asAppDoc(e.value);
      if (doc !== null) this.apps.set(name, doc);
    }
    return this.assemble();
  }

  /** The owner of a Machine; null when it is this node's own. */
  ownerOf(mc: MachineConfig): string | null {
    const owner = mc.node ?? this.apps.get(mc.app)?.deployedBy ?? this.nodeId;
    return owner === this.nodeId ? null : owner;
  }

  /** Starts following the store; call once the daemon serves the first config. */
  start(hooks: ClusterHooks): void {
    this.hooks = hooks;
    this.unsubs.push(this.store.watch('apps', (ev) => this.onApps(ev)));
    this.unsubs.push(this.store.watch('machines', (ev) => this.onMachines(ev)));
    this.unsubs.push(this.store.watch('nodes', (ev) => this.onNodes(ev)));
    this.unsubs.push(this.store.subscribe(`${LOAD_SUBJECT}.*`, (data) => this.onLoad(data)));
    this.unsubs.push(this.store.serve(ownerSubject(this.nodeId), (data) => this.onOwnerRequest(data)));
    this.unsubs.push(
      this.store.onStatus((s) => {
        this.statusSince = s.at;
        // The store logs each transition once; here only what this node does about it.
        if (s.connected) {
          this.log.debug({ detail: s.detail }, 'resynchronising with the cluster store');
          // The outage was this node's: peers get a fresh node_dead_after to be heard again
          // instead of being declared dead before their next heartbeat arrives.
          const now = performance.now();
          for (const id of this.lastSeen.keys()) this.lastSeen.set(id, now);
          // What this node owns may have changed while nobody could hear it.
          for (const m of hooks.manager.all()) if (m.owner === null) this.dirtyMachines.add(m);
          this.scheduleFlush();
          void this.heartbeat();
        }
      }),
    );
    this.armTimers();
    void this.heartbeat();
    for (const m of hooks.manager.all()) this.machineChanged(m);
  }

  /** The node config changed (reload): timings and identity other than the id may differ. */
  setNodeConfig(node: NodeConfig): void {
    const [was, now] = [this.node.cluster, node.cluster];
    this.node = node;
    // The other [cluster] settings are read where they are used; these three set timers.
    const retimed =
      was.heartbeatIntervalMs !== now.heartbeatIntervalMs ||
      was.nodeDeadAfterMs !== now.nodeDeadAfterMs ||
      was.loadPublishIntervalMs !== now.loadPublishIntervalMs;
    if (retimed && this.hooks !== null && !this.closed) {
      this.armTimers();
      this.log.info(
        { heartbeat_interval_ms: now.heartbeatIntervalMs, node_dead_after_ms: now.nodeDeadAfterMs, load_publish_interval_ms: now.loadPublishIntervalMs },
        'cluster timings changed',
      );
    }
  }

  /** (Re)starts the periodic work at the configured intervals. */
  private armTimers(): void {
    for (const t of this.timers) clearInterval(t);
    const c = this.node.cluster;
    this.timers = [
      setInterval(() => void this.heartbeat(), c.heartbeatIntervalMs),
      setInterval(() => this.checkLiveness(), livenessPeriod(c.heartbeatIntervalMs, c.nodeDeadAfterMs)),
      setInterval(() => this.publishLoad(), c.loadPublishIntervalMs),
    ];
    for (const t of this.timers) t.unref();
    // A new period: the next pass is not late.
    this.lastLivenessCheck = 0;
  }

  status(): ClusterStatus {
    const nodes = [...this.nodes.keys()].sort().map((id) => ({ id, alive: id === this.nodeId || !this.dead.has(id) }));
    return { kind: this.store.kind, connected: this.store.connected(), since: this.statusSince, nodes };
  }

  // ---- apps ------------------------------------------------------------------------------

  /** Validates and writes an app document; throws ConfigError (bad file) or StoreError. */
  async deploy(text: string, name?: string): Promise<{ app: AppConfig; created: boolean }> {
    const app = checkDeploy(this.node, text, this.assembled?.apps.values() ?? [], name);
    const doc: AppDoc = { name: app.name, config: text, deployedBy: this.nodeId, deployedAt: Date.now() };
    const created = !this.apps.has(app.name);
    await this.store.put('apps', app.name, doc);
    this.log.info({ app: app.name, created }, 'app deployed to the cluster store');
    return { app, created };
  }

  async destroyApp(name: string): Promise<boolean> {
    if (!this.apps.has(name)) return false;
    await this.store.delete('apps', name);
    this.log.info({ app: name }, 'app removed from the cluster store');
    return true;
  }

  appDoc(name: string): AppDoc | undefined {
    return this.apps.get(name);
  }

  private onApps(ev: WatchEvent): void {
    if (ev.type === 'sync') {
      this.apps.clear();
      for (const [k, e] of ev.entries) this.putApp(k, e);
    } else if (ev.type === 'put') this.putApp(ev.entry.key, ev.entry);
    else this.apps.delete(ev.key);
    this.scheduleApply();
  }

  private putApp(key: string, e: Entry): void {
    const doc = asAppDoc(e.value);
    if (doc === null || doc.name !== key) {
      this.log.warn({ app: key, revision: e.revision }, 'ignoring a malformed app document in the cluster store');
      return;
    }
    this.apps.set(key, doc);
  }

  /** The config from the deployed apps as this node knows them now (reload). */
  currentConfig(): Config {
    return this.assemble();
  }

  private assemble(): Config {
    const { config, skipped } = assembleConfig(this.node, this.apps.values(), this.machineDocs.values());
    for (const s of skipped) this.log.error({ app: s.app }, `left out of the cluster config: ${s.reason}`);
    this.assembled = config;
    return config;
  }

  // ---- Machines created through the admin API ---------------------------------------------

  /** Created through the API (its record holds its spec), as opposed to declared in an app file. */
  isApiMachine(id: string): boolean {
    return this.machineDocs.get(id)?.spec !== undefined;
  }

  /**
   * Writes a new API-made Machine owned by this node; every node adds it to its config, and this
   * one starts it. Fails with StoreError `conflict` when the id is taken.
   */
  async createMachine(mc: MachineConfig): Promise<void> {
    const spec: MachineSpec = {
      region: mc.region,
      cmd: [...mc.cmd!],
      cwd: mc.cwd,
      env: Object.fromEntries(mc.env),
      killSignal: mc.killSignal,
      killTimeoutMs: mc.killTimeoutMs,
    };
    // seq 0: the runtime this node creates from it reports from 1 on.
    const doc: MachineDoc = { id: mc.id, app: mc.app, owner: this.nodeId, state: 'created', host: '', ports: {}, healthy: {}, lastError: '', updatedAt: Date.now(), epoch: this.startedAt, seq: 0, spec };
    await this.store.create('machines', mc.id, doc);
    this.log.info({ machine: mc.id, app: mc.app }, 'Machine created in the cluster store');
  }

  /** Removes an API-made Machine everywhere; its owner stops and destroys it. */
  async destroyMachine(id: string): Promise<void> {
    await this.store.delete('machines', id);
    this.log.info({ machine: id }, 'Machine removed from the cluster store');
  }

  private scheduleApply(): void {
    if (this.applyTimer !== null || this.closed) return;
    this.applyTimer = setTimeout(() => {
      this.applyTimer = null;
      const hooks = this.hooks;
      if (hooks === null || this.closed) return;
      hooks.apply(this.assemble()).then(
        () => this.remirrorAll(),
        (err: unknown) => this.log.error({ err }, 'cluster config not applied; the previous one keeps serving'),
      );
    }, this.node.cluster.applyDebounceMs);
  }

  // ---- Machines --------------------------------------------------------------------------

  /** A Machine of this node changed (state, health, address): its record is rewritten soon. */
  machineChanged(m: MachineRuntime): void {
    if (m.owner !== null || this.closed) return;
    this.changes.set(m.id, (this.changes.get(m.id) ?? 0) + 1);
    this.dirtyMachines.add(m);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== null) return;
    // Coalesces a burst (starting → started → healthy) into one write, without delaying routing
    // elsewhere by more than a tick.
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      void this.flushMachines();
    }, 5);
  }

  private async flushMachines(): Promise<void> {
    const batch = [...this.dirtyMachines];
    this.dirtyMachines.clear();
    if (!this.store.connected()) {
      // Written once the store is back (onStatus marks them all dirty again).
      return;
    }
    await Promise.all(
      batch.map(async (m) => {
        try {
          if (m.state === 'destroyed') await this.store.delete('machines', m.id);
          else await this.store.put('machines', m.id, this.machineDoc(m));
        } catch (err) {
          if (!isStoreError(err, 'unavailable')) this.log.warn({ machine: m.id, err: (err as Error).message }, 'Machine record not written');
        }
      }),
    );
  }

  private machineDoc(m: MachineRuntime): MachineDoc {
    const ports: Record<string, number> = {};
    for (const [k, v] of m.ports) ports[String(k)] = v;
    const healthy: Record<string, boolean> = {};
    // A warming slot is not healthy yet as far as other nodes are concerned, nor is one of a
    // Machine that is not started (its flags keep their last value after a stop).
    for (const s of m.slots.values()) healthy[String(s.internalPort)] = m.state === 'started' && s.healthy && !s.warming;
    // An API-made Machine's spec travels with every rewrite of its record.
    const spec = this.machineDocs.get(m.id)?.spec;
    const doc: MachineDoc = {
      id: m.id,
      app: m.app,
      owner: this.nodeId,
      state: m.state,
      host: m.host,
      ports,
      healthy,
      lastError: m.lastError,
      updatedAt: Date.now(),
      epoch: this.startedAt,
      seq: this.changes.get(m.id) ?? 0,
    };
    return spec === undefined ? doc : { ...doc, spec };
  }

  private onMachines(ev: WatchEvent): void {
    if (ev.type === 'sync') {
      const hadSpecs = [...this.machineDocs.values()].some((d) => d.spec !== undefined);
      this.machineDocs.clear();
      for (const [k, e] of ev.entries) {
        const doc = asMachineDoc(e.value);
        if (doc !== null) this.machineDocs.set(k, doc);
      }
      if (hadSpecs || [...this.machineDocs.values()].some((d) => d.spec !== undefined)) this.scheduleApply();
      this.remirrorAll();
    } else if (ev.type === 'put') {
      const doc = asMachineDoc(ev.entry.value);
      if (doc === null) return;
      this.takeRecord(doc);
    } else {
      const before = this.machineDocs.get(ev.key);
      this.machineDocs.delete(ev.key);
      if (before?.spec !== undefined) this.scheduleApply();
    }
  }

  /**
   * An owner's report, from the store or from its reply to a forwarded action: kept and copied
   * onto the runtime unless a newer report of the same owner is already here.
   */
  takeRecord(doc: MachineDoc): void {
    const before = this.machineDocs.get(doc.id);
    if (before !== undefined && olderReport(doc, before)) return;
    this.machineDocs.set(doc.id, doc);
    // A Machine created (or changed) through the API is part of the config.
    if (doc.spec !== undefined && JSON.stringify(doc.spec) !== JSON.stringify(before?.spec)) this.scheduleApply();
    this.remirror(doc.id);
  }

  /** After a new config: runtimes may be new, so copy every record onto them again. */
  private remirrorAll(): void {
    for (const id of this.machineDocs.keys()) this.remirror(id);
    this.applyLiveness();
    this.applyPeerLoads();
  }

  private remirror(id: string): void {
    const hooks = this.hooks;
    const doc = this.machineDocs.get(id);
    if (hooks === null || doc === undefined) return;
    const m = hooks.manager.get(id);
    // Only another node's own report counts (a stale record of a Machine that changed hands is not).
    if (m === undefined || m.owner === null || m.owner !== doc.owner) return;
    const usable = (): boolean => m.routable && [...m.slots.values()].some((sl) => sl.healthy);
    const wasUsable = usable();
    hooks.manager.mirror(m, {
      state: doc.state,
      host: doc.host,
      ports: new Map(Object.entries(doc.ports).map(([k, v]) => [Number(k), v])),
      healthy: new Map(Object.entries(doc.healthy).map(([k, v]) => [Number(k), v])),
      lastError: doc.lastError,
    });
    // Requests may be queued for it (a wake asked from this node): tell them.
    if (!wasUsable && usable()) hooks.routingChanged();
  }

  private async onOwnerRequest(data: unknown): Promise<OwnerReply> {
    const hooks = this.hooks;
    if (hooks === null) return { status: 503, body: { error: { code: 'PA17', reason: 'node is starting' } }, record: null };
    const req = asOwnerRequest(data);
    if (req === null) {
      return { status: 400, body: { error: { code: 'PA08', reason: 'malformed owner request: needs app, id, action (start|stop|suspend|cordon|uncordon) and an object body' } }, record: null };
    }
    const reply = await hooks.ownerAction(req);
    const m = hooks.manager.get(req.id);
    return { status: reply.status, body: reply.body, record: m !== undefined && m.owner === null && m.app === req.app ? this.machineDoc(m) : null };
  }

  // ---- nodes and heartbeats -------------------------------------------------------------

  private async heartbeat(): Promise<void> {
    if (this.closed || !this.store.connected()) return;
    const admin = `${this.node.admin.host}:${this.node.admin.port}`;
    const doc: NodeDoc = { id: this.nodeId, region: this.node.region, location: this.node.location, admin, startedAt: this.startedAt, heartbeatAt: Date.now() };
    try {
      await this.store.put('nodes', this.nodeId, doc);
    } catch (err) {
      // The status listener reports outages once; anything else is worth a line.
      if (!isStoreError(err, 'unavailable') && !isStoreError(err, 'closed')) this.log.warn({ err: (err as Error).message }, 'heartbeat not written');
    }
  }

  private onNodes(ev: WatchEvent): void {
    const now = performance.now();
    if (ev.type === 'sync') {
      for (const [k, e] of ev.entries) {
        const doc = asNodeDoc(e.value);
        if (doc === null) continue;
        this.nodes.set(k, doc);
        // The first sight is the record's own time (wall clock); later ones are arrival times.
        this.lastSeen.set(k, now - Math.max(0, Date.now() - doc.heartbeatAt));
      }
    } else if (ev.type === 'put') {
      const doc = asNodeDoc(ev.entry.value);
      if (doc === null) return;
      this.nodes.set(ev.entry.key, doc);
      this.lastSeen.set(ev.entry.key, now);
    } else {
      // A node that shut down cleanly removes itself: dead at once, no waiting.
      this.nodes.delete(ev.key);
      this.lastSeen.delete(ev.key);
    }
    this.checkLiveness();
  }

  private checkLiveness(): void {
    if (this.hooks === null || this.closed) return;
    // While this node cannot hear the store it cannot tell a dead peer from its own outage:
    // keep routing as before rather than cutting off every other node.
    if (!this.store.connected()) return;
    const now = performance.now();
    const after = this.node.cluster.nodeDeadAfterMs;
    const period = livenessPeriod(this.node.cluster.heartbeatIntervalMs, after);
    const late = this.lastLivenessCheck !== 0 && now - this.lastLivenessCheck > 2 * period;
    this.lastLivenessCheck = now;
    // A late pass means this node itself stalled (frozen, GC, CPU starvation): the heartbeats
    // that arrived meanwhile are unread, and reading the backlog may take a while. This node's
    // stall is no evidence against its peers: each gets a fresh node_dead_after from now, as
    // after a reconnect. At most once per node_dead_after, so a node that is always late still
    // finds a dead peer (within twice node_dead_after).
    if (late && now - this.lastStallForgiven > after) {
      this.lastStallForgiven = now;
      for (const id of this.lastSeen.keys()) this.lastSeen.set(id, now);
      return;
    }
    let changed = false;
    const owners = new Set<string>();
    for (const m of this.hooks.manager.all()) if (m.owner !== null) owners.add(m.owner);
    for (const id of new Set([...owners, ...this.lastSeen.keys()])) {
      if (id === this.nodeId) continue;
      const seen = this.lastSeen.get(id);
      const isDead = seen === undefined || now - seen > after;
      if (isDead === this.dead.has(id)) continue;
      changed = true;
      if (isDead) {
        this.dead.add(id);
        this.peerLoads.delete(id);
        this.log.warn({ node: id, after_ms: after }, 'node stopped heart-beating: not routing to its Machines');
      } else {
        this.dead.delete(id);
        this.log.info({ node: id }, 'node is back: routing to its Machines again');
      }
    }
    if (changed) {
      this.applyLiveness();
      this.applyPeerLoads();
    }
  }

  private applyLiveness(): void {
    const hooks = this.hooks;
    if (hooks === null) return;
    let revived = false;
    for (const m of hooks.manager.all()) {
      if (m.owner === null) continue;
      const down = this.dead.has(m.owner);
      if (m.ownerDown && !down) revived = true;
      m.ownerDown = down;
    }
    if (revived) hooks.routingChanged();
  }

  // ---- load -------------------------------------------------------------------------------

  private publishLoad(): void {
    const hooks = this.hooks;
    if (hooks === null || this.closed || !this.store.connected()) return;
    const now = performance.now();
    const full = now - this.lastFullLoad >= FULL_LOAD_EVERY_MS;
    const current = new Map<string, string>();
    const loads: Record<string, Record<string, number>> = {};
    for (const m of hooks.manager.all()) {
      let any = false;
      const ports: Record<string, number> = {};
      for (const s of m.slots.values()) {
        if (s.load === 0) continue;
        ports[String(s.internalPort)] = s.load;
        any = true;
      }
      const key = any ? JSON.stringify(ports) : '';
      if (any) current.set(m.id, key);
      if (full ? any : (this.published.get(m.id) ?? '') !== key) loads[m.id] = ports;
    }
    // Machines that dropped to zero since the last message are sent as empty maps.
    if (!full) for (const id of this.published.keys()) if (!current.has(id)) loads[id] = {};
    this.published = current;
    if (!full && Object.keys(loads).length === 0) return;
    if (full) this.lastFullLoad = now;
    const msg: LoadMessage = { node: this.nodeId, full, loads };
    try {
      this.store.publish(`${LOAD_SUBJECT}.${subjectToken(this.nodeId)}`, msg);
    } catch {
      // Lost while the store is away; the next full message repairs it.
    }
  }

  private onLoad(data: unknown): void {
    const msg = asLoadMessage(data);
    if (msg === null || msg.node === this.nodeId || this.dead.has(msg.node)) return;
    let byMachine = this.peerLoads.get(msg.node);
    if (byMachine === undefined || msg.full) {
      byMachine = new Map();
      this.peerLoads.set(msg.node, byMachine);
    }
    for (const [id, ports] of Object.entries(msg.loads)) {
      const entries = Object.entries(ports);
      if (entries.length === 0) byMachine.delete(id);
      else byMachine.set(id, new Map(entries.map(([k, v]) => [Number(k), v])));
    }
    this.applyPeerLoads();
  }

  /** slot.peerLoad = the sum of what every other live node last reported. */
  private applyPeerLoads(): void {
    const hooks = this.hooks;
    if (hooks === null) return;
    const sums = new Map<string, Map<number, number>>();
    for (const [node, byMachine] of this.peerLoads) {
      if (this.dead.has(node)) continue;
      for (const [id, ports] of byMachine) {
        let s = sums.get(id);
        if (s === undefined) sums.set(id, (s = new Map()));
        for (const [port, n] of ports) s.set(port, (s.get(port) ?? 0) + n);
      }
    }
    let freed = false;
    for (const m of hooks.manager.all()) {
      const s = sums.get(m.id);
      for (const slot of m.slots.values()) {
        const next = s?.get(slot.internalPort) ?? 0;
        if (next < slot.peerLoad) freed = true;
        // Traffic through other nodes keeps the Machine busy for autostop too.
        if (next > 0) m.lastActivity = performance.now();
        slot.peerLoad = next;
      }
    }
    if (freed) hooks.routingChanged();
  }

  // ---- shutdown ---------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.applyTimer !== null) clearTimeout(this.applyTimer);
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    await this.flushMachines().catch(() => undefined);
    for (const u of this.unsubs) u();
    // Leaving cleanly: the others stop routing to this node's Machines at once.
    if (this.store.connected()) await this.store.delete('nodes', this.nodeId).catch(() => undefined);
    await this.store.close();
  }
}

/** How often liveness is judged: every heartbeat, at least four times per `node_dead_after`. */
function livenessPeriod(heartbeatMs: number, deadAfterMs: number): number {
  return Math.max(50, Math.min(heartbeatMs, deadAfterMs / 4));
}
