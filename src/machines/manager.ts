// Control plane for this node's Machines: owns the MachineRuntime registry, moves Machines through
// the state table of states.ts, and reconciles the registry with each new config.
//
// Every operation on one Machine runs in that Machine's serial queue, so a reload restart, an
// admin stop and (next issue) an autostart or autostop never interleave half-way. A driver's
// `exited` event is the one exception: it is news about the world, applied at once (the data plane
// must stop routing to a dead process now, not after a queued operation finishes).

import type { Logger } from 'pino';
import type { AppConfig, Config, MachineConfig } from '../config/types.ts';
import { createDrivers, driverFor, type DriverFactory, type DriverRegistry } from './drivers/index.ts';
import { internalPorts } from './drivers/process.ts';
import { primaryInternalPort } from './drivers/static.ts';
import { MachineRuntime, type MachineDriver, type MachineState, type StopOptions } from './runtime.ts';
import { assertTransition, IllegalTransitionError } from './states.ts';

export type TransitionListener = (m: MachineRuntime, from: MachineState, to: MachineState) => void;
export type ReconcileListener = (config: Config) => void;

export interface ReconcileResult {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Launch settings changed: stopped and started again (a new runtime object when app/region/driver changed). */
  readonly restarted: readonly string[];
  /** Same runtime object, counters and process kept. */
  readonly unchanged: readonly string[];
}

export interface ReconcileOptions {
  /** New Machines to register without starting (the API's `skip_launch`): they stay `created`. */
  readonly skipStart?: ReadonlySet<string>;
}

export interface ManagerOptions {
  readonly logger: Logger;
  /** Builds the driver registry; defaults to the real drivers. */
  readonly drivers?: DriverFactory;
  /**
   * Cluster store: which node runs a Machine's driver (null: this node). Other nodes' Machines
   * are registered here too (the data plane routes to them) but driven through `remote`.
   */
  readonly ownerOf?: (mc: MachineConfig) => string | null;
  /** Forwards start/stop/suspend of another node's Machine to its owner. */
  readonly remote?: MachineDriver;
}

/** What the owner reports about one of its Machines (the cluster store's Machine record). */
export interface MirroredState {
  readonly state: MachineState;
  readonly host: string;
  /** internal port → port on host */
  readonly ports: ReadonlyMap<number, number>;
  /** internal port → checks passing */
  readonly healthy: ReadonlyMap<number, boolean>;
  readonly lastError: string;
}

const noop = (): void => {};

/** Reads state afresh: TypeScript's narrowing cannot know an await or transition() changed it. */
const stateOf = (m: MachineRuntime): MachineState => m.state;

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function unknownMachine(id: string): Error {
  return new Error(`unknown Machine ${id}`);
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `process killed by ${signal}` : `process exited with code ${code}`;
}

/**
 * What a Machine is launched from. Two configs with the same key need no restart. Kill settings
 * and source positions are left out on purpose: they only matter at the next stop, so a reload
 * that changes them updates the runtime in place instead of bouncing a healthy Machine.
 */
export function launchKey(mc: MachineConfig, app: AppConfig): string {
  const env = [...mc.env].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  // The app parts a driver bakes into the running Machine: ports it allocates or maps, and the
  // env it sets (PRIMARY_REGION).
  const appPart = mc.driver === 'process' ? [internalPorts(app), app.primaryRegion] : [primaryInternalPort(app)];
  return JSON.stringify([mc.driver, mc.address, mc.cmd, mc.api, mc.cwd, env, appPart]);
}

/** Fields fixed for a runtime's lifetime (readonly on MachineRuntime): changing one means a new runtime. */
function sameIdentity(m: MachineRuntime, mc: MachineConfig, owner: string | null): boolean {
  return m.app === mc.app && m.region === mc.region && m.driver === mc.driver && m.owner === owner;
}

export class MachineManager {
  private readonly logger: Logger;
  private readonly drivers: DriverRegistry;
  private readonly ownerOf: (mc: MachineConfig) => string | null;
  private readonly remote: MachineDriver | null;
  private readonly machines = new Map<string, MachineRuntime>();
  private apps: ReadonlyMap<string, AppConfig> = new Map();
  private readonly keys = new WeakMap<MachineRuntime, string>();
  private readonly ops = new Map<MachineRuntime, Promise<void>>();
  /** Single flight: concurrent start() calls for one Machine share one promise. */
  private readonly starts = new Map<MachineRuntime, Promise<void>>();
  private readonly transitionListeners: TransitionListener[] = [];
  private readonly reconcileListeners: ReconcileListener[] = [];
  private reconciling: Promise<unknown> = Promise.resolve();
  private closing = false;

  constructor(opts: ManagerOptions) {
    this.logger = opts.logger;
    this.ownerOf = opts.ownerOf ?? (() => null);
    this.remote = opts.remote ?? null;
    const factory = opts.drivers ?? createDrivers;
    this.drivers = factory({
      logger: opts.logger,
      events: { exited: (m, code, signal) => this.onExited(m, code, signal) },
    });
  }

  get(id: string): MachineRuntime | undefined {
    return this.machines.get(id);
  }

  /** A copy, so callers may stop or destroy while iterating. */
  all(): MachineRuntime[] {
    return [...this.machines.values()];
  }

  /** The app config the registry was last reconciled with. */
  appConfig(name: string): AppConfig | undefined {
    return this.apps.get(name);
  }

  driver(m: MachineRuntime): MachineDriver {
    if (m.owner !== null) {
      if (this.remote === null) throw new Error(`Machine ${m.id} belongs to node ${m.owner} and no cluster store is connected`);
      return this.remote;
    }
    return driverFor(this.drivers, m.driver);
  }

  /**
   * Another node's Machine as its owner reports it (cluster store). The owner went through the
   * state table; here the state is copied, with the same listeners told, unless an operation
   * this node forwarded is still in flight (its answer sets the state).
   */
  mirror(m: MachineRuntime, r: MirroredState): void {
    if (m.owner === null || m.state === 'destroyed') return;
    m.host = r.host;
    m.ports = new Map(r.ports);
    m.lastError = r.lastError;
    for (const [port, healthy] of r.healthy) {
      const s = m.slot(port);
      s.healthy = healthy;
      s.warming = false;
    }
    if (this.ops.has(m) || m.state === r.state) return;
    const from = m.state;
    m.state = r.state;
    if (r.state === 'started') {
      m.startedAt = performance.now();
      m.lastActivity = m.startedAt;
    }
    this.logger.debug({ machine: m.id, owner: m.owner, from, to: r.state }, 'Machine state (owner)');
    this.notify(m, from, r.state);
  }

  /** Called synchronously after every state change; returns an unsubscribe function. */
  onTransition(cb: TransitionListener): () => void {
    this.transitionListeners.push(cb);
    return () => {
      const i = this.transitionListeners.indexOf(cb);
      if (i >= 0) this.transitionListeners.splice(i, 1);
    };
  }

  /** Called after each reconcile has settled (the health checker rebuilds checks of changed apps). */
  onReconcile(cb: ReconcileListener): () => void {
    this.reconcileListeners.push(cb);
    return () => {
      const i = this.reconcileListeners.indexOf(cb);
      if (i >= 0) this.reconcileListeners.splice(i, 1);
    };
  }

  /**
   * The only place `state` is written. Throws IllegalTransitionError (naming Machine, from, to)
   * for a move the table of states.ts does not allow.
   */
  transition(m: MachineRuntime, to: MachineState): void {
    const from = m.state;
    assertTransition(m.id, from, to);
    m.state = to;
    if (to === 'started') {
      m.startedAt = performance.now();
      // An idle timer (autostop) counts from the start, not from a request long ago.
      m.lastActivity = m.startedAt;
    }
    this.logger.debug({ machine: m.id, app: m.app, from, to }, 'Machine state');
    this.notify(m, from, to);
  }

  private notify(m: MachineRuntime, from: MachineState, to: MachineState): void {
    for (const cb of this.transitionListeners) {
      try {
        cb(m, from, to);
      } catch (e) {
        this.logger.error({ err: e, machine: m.id, from, to }, 'Machine transition listener threw');
      }
    }
  }

  /**
   * Makes the registry match `config`: creates and starts new Machines, stops and destroys removed
   * ones, restarts those whose launch settings changed, leaves the rest untouched. Individual
   * failures do not reject (the Machine goes to `failed` with lastError); reconciles run one at a
   * time.
   */
  reconcile(config: Config, opts: ReconcileOptions = {}): Promise<ReconcileResult> {
    const run = this.reconciling.then(() => this.doReconcile(config, opts.skipStart));
    this.reconciling = run.then(noop, noop);
    return run;
  }

  start(id: string): Promise<void> {
    const m = this.machines.get(id);
    return m === undefined ? Promise.reject(unknownMachine(id)) : this.startMachine(m);
  }

  /** Starts (or resumes) `m`; concurrent calls share one start. Rejects when the start failed. */
  startMachine(m: MachineRuntime): Promise<void> {
    const pending = this.starts.get(m);
    if (pending !== undefined) return pending;
    const p = this.serial(m, () => this.doStart(m));
    this.starts.set(m, p);
    const clear = (): void => {
      if (this.starts.get(m) === p) this.starts.delete(m);
    };
    p.then(clear, clear);
    return p;
  }

  async stop(id: string, opts?: StopOptions): Promise<void> {
    const m = this.must(id);
    return this.serial(m, () => this.doStop(m, opts));
  }

  /** Rejects for drivers that cannot suspend; the caller (autostop) then stops instead. */
  async suspend(id: string): Promise<void> {
    const m = this.must(id);
    return this.serial(m, () => this.doSuspend(m));
  }

  async resume(id: string): Promise<void> {
    const m = this.must(id);
    if (m.state !== 'suspended') throw new Error(`Machine ${id} is ${m.state}, not suspended`);
    return this.startMachine(m);
  }

  async destroy(id: string): Promise<void> {
    const m = this.must(id);
    return this.serial(m, () => this.doDestroy(m));
  }

  /**
   * Graceful shutdown: stops every Machine this node runs (not `static` ones: something else owns
   * them), each forced at the earlier of its kill_timeout and the deadline. Refuses starts from
   * here on. Resolves by about deadlineMs plus the drivers' SIGKILL grace.
   */
  async stopAll(deadlineMs: number): Promise<void> {
    this.closing = true;
    const deadline = performance.now() + deadlineMs;
    const ops: Promise<void>[] = [];
    for (const m of this.machines.values()) {
      // Only Machines this node runs itself: static ones, those of a Machines API and other
      // nodes' belong to someone else (other nodes may be routing to them).
      if (m.driver !== 'process' || m.owner !== null) continue;
      const op = this.serial(m, () =>
        this.doStop(m, { timeoutMs: Math.min(m.config.killTimeoutMs, Math.max(0, deadline - performance.now())) }),
      );
      ops.push(op.catch((e) => this.logger.error({ err: e, machine: m.id }, 'Machine did not stop cleanly')));
    }
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, deadlineMs + 3000);
    });
    try {
      await Promise.race([Promise.all(ops), limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  // --- internals ---------------------------------------------------------------------------

  private must(id: string): MachineRuntime {
    const m = this.machines.get(id);
    if (m === undefined) throw unknownMachine(id);
    return m;
  }

  /** Runs fn after every earlier operation on m, whatever their outcome. */
  private serial<T>(m: MachineRuntime, fn: () => Promise<T>): Promise<T> {
    const prev = this.ops.get(m) ?? Promise.resolve();
    const next = prev.then(fn);
    const tail = next.then(noop, noop);
    this.ops.set(m, tail);
    void tail.then(() => {
      if (this.ops.get(m) === tail) this.ops.delete(m);
    });
    return next;
  }

  private async doReconcile(config: Config, skipStart: ReadonlySet<string> | undefined): Promise<ReconcileResult> {
    if (this.closing) throw new Error('Machine manager is shutting down; reconcile refused');
    this.apps = config.apps;
    const wanted = new Map<string, { mc: MachineConfig; app: AppConfig }>();
    for (const app of config.apps.values()) {
      for (const mc of app.machines) {
        const dup = wanted.get(mc.id);
        if (dup !== undefined) {
          // The loader should have refused this; never run two processes under one id.
          this.logger.error({ machine: mc.id, apps: [dup.app.name, app.name] }, 'duplicate Machine id; keeping the first');
          continue;
        }
        wanted.set(mc.id, { mc, app });
      }
    }

    const added: string[] = [];
    const removed: string[] = [];
    const restarted: string[] = [];
    const unchanged: string[] = [];
    const ops: Promise<unknown>[] = [];

    for (const [id, m] of this.machines) {
      if (wanted.has(id)) continue;
      removed.push(id);
      // Another node's Machine is its owner's to stop; here it only leaves the registry.
      ops.push(this.serial(m, () => (m.owner !== null ? this.forget(m) : this.doDestroy(m))));
    }

    for (const [id, { mc, app }] of wanted) {
      const key = launchKey(mc, app);
      const owner = this.ownerOf(mc);
      const m = this.machines.get(id);
      if (m === undefined) {
        added.push(id);
        const fresh = this.create(mc, key, owner);
        // Another node's Machine runs (or sleeps) as its owner decides: never started from here.
        if (owner === null && skipStart?.has(id) !== true) ops.push(this.startMachine(fresh));
      } else if (m.owner !== null && owner !== null && sameIdentity(m, mc, owner)) {
        // Its owner restarts it when its launch settings change; here only the config follows.
        unchanged.push(id);
        this.keys.set(m, key);
        m.config = mc;
      } else if (!sameIdentity(m, mc, owner)) {
        // id, app, region and driver are readonly on the runtime (the data plane may hold it in
        // other apps' snapshots): replace the object. The old one is stopped before the new one
        // starts so one id never runs twice.
        restarted.push(id);
        const old = m;
        const fresh = this.create(mc, key, owner);
        // Start the new one even if the old one could not be stopped: its ports are fresh.
        const destroyed = this.serial(old, () => (old.owner !== null ? this.forget(old) : this.doDestroy(old))).catch(noop);
        ops.push(destroyed.then(() => (owner === null ? this.startMachine(fresh) : undefined)));
      } else if (this.keys.get(m) !== key) {
        restarted.push(id);
        this.keys.set(m, key);
        ops.push(this.serial(m, () => this.doRestart(m, mc)));
      } else {
        unchanged.push(id);
        m.config = mc;
      }
    }

    const results = await Promise.allSettled(ops);
    for (const r of results) {
      // Already logged and recorded on the Machine; nothing else to do.
      if (r.status === 'rejected') this.logger.debug({ err: r.reason }, 'reconcile operation failed');
    }
    this.logger.info(
      { added: added.length, removed: removed.length, restarted: restarted.length, unchanged: unchanged.length },
      'Machines reconciled',
    );
    for (const cb of this.reconcileListeners) {
      try {
        cb(config);
      } catch (e) {
        this.logger.error({ err: e }, 'reconcile listener threw');
      }
    }
    return { added, removed, restarted, unchanged };
  }

  private create(mc: MachineConfig, key: string, owner: string | null = null): MachineRuntime {
    const m = new MachineRuntime(mc, owner);
    this.machines.set(mc.id, m);
    this.keys.set(m, key);
    return m;
  }

  private async doStart(m: MachineRuntime): Promise<void> {
    if (this.closing) throw new Error(`Machine ${m.id}: not starting, the node is shutting down`);
    if (m.state === 'started') return;
    if (m.state !== 'created' && m.state !== 'stopped' && m.state !== 'failed' && m.state !== 'suspended') {
      throw new IllegalTransitionError(m.id, m.state, 'starting');
    }
    const app = this.apps.get(m.app);
    if (app === undefined) throw new Error(`Machine ${m.id}: app ${m.app} is not configured`);
    const driver = this.driver(m);
    const resuming = m.state === 'suspended';
    this.transition(m, 'starting');
    const t0 = performance.now();
    try {
      if (resuming) await driver.resume(m);
      else await driver.start(m, app);
    } catch (e) {
      m.lastError = errMessage(e);
      if (stateOf(m) === 'starting') this.transition(m, 'failed');
      this.logger.error({ machine: m.id, app: m.app, err: m.lastError }, resuming ? 'Machine failed to resume' : 'Machine failed to start');
      throw e;
    }
    if (stateOf(m) !== 'starting') {
      // Overtaken by an exit event between launch and here (the process died at once).
      throw new Error(`Machine ${m.id} ${m.state} while starting: ${m.lastError}`);
    }
    this.transition(m, 'started');
    this.logger.info(
      { machine: m.id, app: m.app, pid: m.pid || undefined, ms: Math.round(performance.now() - t0) },
      resuming ? 'Machine resumed' : 'Machine started',
    );
  }

  private async doStop(m: MachineRuntime, opts?: StopOptions): Promise<void> {
    // Nothing runs in these states: stopping is already done.
    if (m.state === 'created' || m.state === 'stopped' || m.state === 'failed' || m.state === 'destroyed') return;
    if (m.state !== 'started' && m.state !== 'suspended') throw new IllegalTransitionError(m.id, m.state, 'stopping');
    this.transition(m, 'stopping');
    try {
      await this.driver(m).stop(m, opts);
    } catch (e) {
      m.lastError = errMessage(e);
      if (stateOf(m) === 'stopping') this.transition(m, 'failed');
      this.logger.error({ machine: m.id, app: m.app, err: m.lastError }, 'Machine failed to stop');
      throw e;
    }
    this.transition(m, 'stopped');
    this.logger.info({ machine: m.id, app: m.app }, 'Machine stopped');
  }

  private async doSuspend(m: MachineRuntime): Promise<void> {
    const driver = this.driver(m);
    if (!driver.canSuspend) throw new Error(`Machine ${m.id}: the ${driver.kind} driver cannot suspend; stop it instead`);
    if (m.state === 'suspended') return;
    if (m.state !== 'started') throw new IllegalTransitionError(m.id, m.state, 'suspending');
    this.transition(m, 'suspending');
    try {
      await driver.suspend(m);
    } catch (e) {
      m.lastError = errMessage(e);
      if (stateOf(m) === 'suspending') this.transition(m, 'failed');
      this.logger.error({ machine: m.id, app: m.app, err: m.lastError }, 'Machine failed to suspend');
      throw e;
    }
    // An exit event may have moved it to `failed` meanwhile; that one stands.
    if (stateOf(m) !== 'suspending') return;
    this.transition(m, 'suspended');
    this.logger.info({ machine: m.id, app: m.app }, 'Machine suspended');
  }

  private async doRestart(m: MachineRuntime, mc: MachineConfig): Promise<void> {
    // A Machine asleep on purpose (stopped or suspended by autostop or an operator) picks up the
    // new config at its next start instead of being woken by a reload.
    const asleep = m.state === 'stopped' || m.state === 'suspended';
    await this.doStop(m);
    m.config = mc;
    if (!asleep) await this.doStart(m);
  }

  /** Drops another node's Machine from the registry without touching it. */
  private async forget(m: MachineRuntime): Promise<void> {
    const from = m.state;
    m.state = 'destroyed';
    if (this.machines.get(m.id) === m) this.machines.delete(m.id);
    this.notify(m, from, 'destroyed');
  }

  private async doDestroy(m: MachineRuntime): Promise<void> {
    if (m.state === 'destroyed') return;
    await this.doStop(m);
    this.transition(m, 'destroying');
    this.transition(m, 'destroyed');
    if (this.machines.get(m.id) === m) this.machines.delete(m.id);
    this.logger.info({ machine: m.id, app: m.app }, 'Machine destroyed');
  }

  /** DriverEvents.exited: the process ended without being asked to. */
  private onExited(m: MachineRuntime, code: number | null, signal: NodeJS.Signals | null): void {
    const from = m.state;
    const why = describeExit(code, signal);
    if (from !== 'starting' && from !== 'started' && from !== 'suspending' && from !== 'suspended') {
      this.logger.debug({ machine: m.id, state: from, code, signal }, 'exit of a Machine that was not running; ignored');
      return;
    }
    m.lastError = why;
    // Only a clean exit of a Machine that had fully started counts as a stop; dying while starting
    // or while frozen is a failure whatever the code.
    const clean = code === 0 && signal === null && from === 'started';
    this.transition(m, clean ? 'stopped' : 'failed');
    if (clean) this.logger.info({ machine: m.id, app: m.app, code }, 'Machine exited on its own');
    else this.logger.warn({ machine: m.id, app: m.app, code, signal }, `Machine failed: ${why}`);
  }
}
