// Autostart (spec section 5), control-plane side: when requests find no started Machine, start
// sleeping ones (stopped, suspended, or failed and startable again), nearest region first, and
// only as many as the waiting requests need: one per soft_limit of waiting requests, counting
// Machines already starting. The data plane holds the requests in the service's queue; the
// health checker (or the start itself, for services without checks) releases them.

import type { Logger } from '../observe/log.ts';
import type { ServiceRoute } from '../snapshot/snapshot.ts';
import type { Waker } from '../proxy/capacity.ts';
import type { MachineManager } from './manager.ts';
import type { MachineRuntime, MachineSlot } from './runtime.ts';

/** A Machine whose start just failed is not retried for this long (no crash-loop storms). */
const FAILED_START_BACKOFF_MS = 5_000;

function asleep(m: MachineRuntime): boolean {
  const st = m.state;
  return st === 'stopped' || st === 'suspended' || st === 'failed' || st === 'created';
}

export class MachineWaker implements Waker {
  private readonly manager: MachineManager;
  private readonly log: Logger;
  private readonly localRegion: () => string;
  private readonly failedAt = new Map<string, number>();

  constructor(manager: MachineManager, log: Logger, localRegion: () => string) {
    this.manager = manager;
    this.log = log;
    this.localRegion = localRegion;
  }

  wake(route: ServiceRoute, waiting: number): boolean {
    const now = performance.now();
    let starting = 0;
    const candidates: MachineSlot[] = [];
    for (const s of route.slots) {
      const m = s.machine;
      if (m.state === 'starting' || (m.state === 'started' && s.warming)) starting++;
      else if (asleep(m) && !m.cordoned && now - (this.failedAt.get(m.id) ?? -Infinity) > FAILED_START_BACKOFF_MS) candidates.push(s);
    }
    const needed = Math.ceil(waiting / Math.max(1, route.softLimit)) - starting;
    if (needed <= 0 || candidates.length === 0) return starting > 0;
    const local = this.localRegion();
    // Nearest first: the local region, then the rest (distances come with the mesh).
    candidates.sort((a, b) => Number(a.machine.region !== local) - Number(b.machine.region !== local));
    const n = Math.min(needed, candidates.length);
    for (let i = 0; i < n; i++) this.start(candidates[i]!.machine);
    return true;
  }

  private start(m: MachineRuntime): void {
    const from = m.state;
    this.log.info({ machine: m.id, app: m.app, from }, 'autostart: waking a Machine for waiting requests');
    this.manager.startMachine(m).catch((err: unknown) => {
      this.failedAt.set(m.id, performance.now());
      this.log.warn({ machine: m.id, app: m.app, err: err instanceof Error ? err.message : String(err) }, 'autostart: the Machine did not start');
    });
  }
}
