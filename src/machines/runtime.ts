// Live Machine state, kept outside the snapshots so that a reload never resets counters.
// The control plane (manager, drivers, health checks) writes these fields; the data plane reads
// `state`, `cordoned`, `host`, slot `healthy` and reads/writes slot `load`.

import type { AppConfig, DriverKind, MachineConfig } from '../config/types.ts';

/** Spec section 5. Only `started` Machines receive traffic. */
export type MachineState =
  | 'created'
  | 'starting'
  | 'started'
  | 'stopping'
  | 'stopped'
  | 'suspending'
  | 'suspended'
  | 'failed'
  | 'destroying'
  | 'destroyed';

/** One Machine as seen by one service (internal port): health and load are per service. */
export class MachineSlot {
  readonly machine: MachineRuntime;
  readonly internalPort: number;
  /** In-flight requests or connections through this node, in the unit of the service's concurrency type. */
  load: number;
  /**
   * What the other nodes of the cluster send this Machine, as they last published it (cluster
   * store). The balancer compares `load + peerLoad` with the limits; only `load` is this node's
   * to increment and release.
   */
  peerLoad: number;
  /** Service checks pass (or the service has none). Written by the health checker. */
  healthy: boolean;
  /**
   * Whether the service has checks. When it does, a freshly started Machine gets traffic only
   * after its checks first pass (no cold-start 502s); see health.ts.
   */
  hasChecks: boolean;
  /**
   * Started, checks not passed yet, still within the grace period: not routable, but worth
   * waiting for, so requests queue (bounded) instead of getting 503 while Machines boot.
   */
  warming: boolean;
  constructor(machine: MachineRuntime, internalPort: number) {
    this.machine = machine;
    this.internalPort = internalPort;
    this.load = 0;
    this.peerLoad = 0;
    this.healthy = true;
    this.hasChecks = false;
    this.warming = false;
  }
  /** The host port this service is reached on (process Machines get allocated ports). */
  get port(): number {
    return this.machine.ports.get(this.internalPort) ?? this.internalPort;
  }
}

export class MachineRuntime {
  readonly id: string;
  readonly app: string;
  readonly region: string;
  readonly driver: DriverKind;
  state: MachineState;
  cordoned: boolean;
  /** Private address the Machine is reached at. */
  host: string;
  /** internal port -> port on `host`. */
  ports: Map<number, number>;
  /** performance.now() when the Machine last became `started`; check grace periods count from it. */
  startedAt: number;
  /** performance.now() of the last request or connection end (autostop reads it). */
  lastActivity: number;
  /** Slots by internal port; created on demand by the snapshot builder and kept across reloads. */
  readonly slots: Map<number, MachineSlot>;
  /** The config this runtime was last started or reconciled from. */
  config: MachineConfig;
  /** Process id for `process` Machines, else 0. */
  pid: number;
  /** Last exit or failure description, for the admin API and logs. */
  lastError: string;
  /**
   * The node that runs this Machine's driver; null: this node. Other nodes' Machines are
   * mirrored from the cluster store and their start/stop/suspend go to the owner.
   */
  readonly owner: string | null;
  /** The owner stopped heart-beating: nobody routes to the Machine until it comes back. */
  ownerDown: boolean;
  /**
   * Open WebSocket tunnels to this Machine (the data plane adds and removes them): the stop
   * sequence sends them a close frame before the Machine goes away.
   */
  readonly tunnels: Set<TunnelHandle>;

  constructor(config: MachineConfig, owner: string | null = null) {
    this.id = config.id;
    this.owner = owner;
    this.ownerDown = false;
    this.app = config.app;
    this.region = config.region;
    this.driver = config.driver;
    this.state = 'created';
    this.cordoned = false;
    this.host = '127.0.0.1';
    this.ports = new Map();
    this.startedAt = 0;
    this.lastActivity = 0;
    this.slots = new Map();
    this.config = config;
    this.pid = 0;
    this.lastError = '';
    this.tunnels = new Set();
  }

  slot(internalPort: number): MachineSlot {
    let s = this.slots.get(internalPort);
    if (s === undefined) {
      s = new MachineSlot(this, internalPort);
      this.slots.set(internalPort, s);
    }
    return s;
  }

  /**
   * In-flight requests/connections over all services, through this node and (cluster store) as
   * the other nodes last reported: the autostop idle test and the stop drain count both.
   */
  totalLoad(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.load + s.peerLoad;
    return n;
  }

  /** Routable at all (health per service is on the slot). */
  get routable(): boolean {
    return this.state === 'started' && !this.cordoned && !this.ownerDown;
  }
}

/** An open WebSocket tunnel, as the stop sequence sees it. */
export interface TunnelHandle {
  /** Sends the client a Close frame (1001 going away) at the next frame boundary. */
  goAway(): void;
  /** Closes both sides now (the bounded wait for a clean close is over). */
  abort(): void;
}

/** Events a driver reports back about a Machine it runs (for example a process exiting on its own). */
export interface DriverEvents {
  exited(m: MachineRuntime, code: number | null, signal: NodeJS.Signals | null): void;
}

export interface StopOptions {
  /** Force after this long instead of the Machine's kill_timeout (a shutdown deadline can be shorter). */
  readonly timeoutMs?: number;
}

/**
 * How a node starts, stops and suspends its Machines. Every driver passes the same conformance
 * suite. Operations resolve when the transition is done (`start`: launched and addresses known,
 * not necessarily listening yet; readiness is the health checker's business).
 */
export interface MachineDriver {
  readonly kind: DriverKind;
  readonly canSuspend: boolean;
  start(m: MachineRuntime, app: AppConfig): Promise<void>;
  /** Graceful stop: kill signal, then force after the kill timeout (or `opts.timeoutMs`). */
  stop(m: MachineRuntime, opts?: StopOptions): Promise<void>;
  suspend(m: MachineRuntime): Promise<void>;
  resume(m: MachineRuntime): Promise<void>;
}
