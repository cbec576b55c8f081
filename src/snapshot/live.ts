// Live, mutable per-app and per-service state that must survive reloads (connection counts,
// queues of requests waiting for capacity). Snapshots hold references to these objects; the
// registry hands out the same object for the same key across snapshot builds.

import type { MachineSlot } from '../machines/runtime.ts';

/** A request waiting for a Machine below its hard limit (spec section 3, point 5). */
export class Waiter {
  readonly enqueuedAt: number;
  readonly deadline: number;
  resolve: ((slot: MachineSlot | null) => void) | null;
  /** Slots tried already by this request (connect retries), excluded from selection. */
  readonly exclude: readonly MachineSlot[];
  constructor(now: number, timeoutMs: number, exclude: readonly MachineSlot[], resolve: (slot: MachineSlot | null) => void) {
    this.enqueuedAt = now;
    this.deadline = now + timeoutMs;
    this.resolve = resolve;
    this.exclude = exclude;
  }
}

export class ServiceLive {
  readonly key: string;
  /** FIFO of waiters; bounded by limits.queueLength at enqueue time. */
  readonly queue: Waiter[];
  constructor(key: string) {
    this.key = key;
    this.queue = [];
  }
}

export class AppLive {
  readonly name: string;
  /** Client connections currently routed to this app on this node. */
  connections: number;
  constructor(name: string) {
    this.name = name;
    this.connections = 0;
  }
}

export class LiveRegistry {
  private readonly apps = new Map<string, AppLive>();
  private readonly services = new Map<string, ServiceLive>();

  app(name: string): AppLive {
    let a = this.apps.get(name);
    if (a === undefined) {
      a = new AppLive(name);
      this.apps.set(name, a);
    }
    return a;
  }

  service(app: string, internalPort: number): ServiceLive {
    const key = `${app}:${internalPort}`;
    let s = this.services.get(key);
    if (s === undefined) {
      s = new ServiceLive(key);
      this.services.set(key, s);
    }
    return s;
  }
}
