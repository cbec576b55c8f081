// Autostop (spec section 5), control plane. Every `autostop_interval`, for each app with
// `auto_stop_machines` = stop|suspend and each region: excess = running - (over_soft + 1); an
// idle Machine (no load for `autostop_idle`) is stopped or suspended when there is excess, or when
// it is the region's only one; at most one per region per pass; never below the region's minimum
// (`min_machines_running` in the primary region, `min_machines_running_per_region` anywhere).
// The stop itself is the shared stop sequence (stopSequence.ts): cordon, drain, WebSocket Close
// frames, stop or suspend, uncordon (so autostart can wake it again).

import type { Logger } from '../observe/log.ts';
import type { SnapshotHolder } from '../snapshot/holder.ts';
import type { AppConfig } from '../config/types.ts';
import type { AppRoute, ServiceRoute } from '../snapshot/snapshot.ts';
import type { MachineManager } from './manager.ts';
import type { MachineRuntime } from './runtime.ts';
import { stopSequence, type StopMode } from './stopSequence.ts';

/**
 * A Machine serves every service of its app, so the app's services decide together: any service
 * with auto_stop_machines turns it on (`off` is also the default, so it cannot veto), `suspend`
 * wins over `stop` (the gentler of the two), and a region's minimum is the largest any service
 * asks for.
 */
export function autostopMode(app: AppConfig): StopMode | null {
  let mode: StopMode | null = null;
  for (const svc of app.services) {
    if (svc.autoStopMachines === 'suspend') return 'suspend';
    if (svc.autoStopMachines === 'stop') mode = 'stop';
  }
  return mode;
}

export function regionMinimum(app: AppConfig, region: string): number {
  let min = 0;
  for (const svc of app.services) {
    const n = svc.minMachinesPerRegion.get(region) ?? (region === app.primaryRegion ? svc.minMachinesRunning : 0);
    if (n > min) min = n;
  }
  return min;
}

export class Autostop {
  private readonly manager: MachineManager;
  private readonly holder: SnapshotHolder;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | null;
  private running: Promise<void> | null;
  private closed: boolean;

  constructor(manager: MachineManager, holder: SnapshotHolder, log: Logger) {
    this.manager = manager;
    this.holder = holder;
    this.log = log;
    this.timer = null;
    this.running = null;
    this.closed = false;
  }

  /** Starts the loop; the period is re-read from the current snapshot before every pass. */
  start(): void {
    this.arm();
  }

  private arm(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      void this.pass().finally(() => this.arm());
    }, this.holder.current.limits.autostopIntervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    await this.running;
  }

  /** One pass over every app and region (also called directly by tests). */
  pass(): Promise<void> {
    this.running ??= this.doPass().finally(() => (this.running = null));
    return this.running;
  }

  private async doPass(): Promise<void> {
    const snap = this.holder.current;
    const now = performance.now();
    const work: Promise<void>[] = [];
    for (const app of snap.apps.values()) {
      const mode = autostopMode(app.config);
      if (mode === null) continue;
      const byRegion = new Map<string, MachineRuntime[]>();
      for (const m of this.manager.all()) {
        // Only the owner stops a Machine: it alone sees every request (its own and, through the
        // published loads, the other nodes').
        if (m.app !== app.config.name || m.driver === 'static' || m.owner !== null) continue;
        let list = byRegion.get(m.region);
        if (list === undefined) byRegion.set(m.region, (list = []));
        list.push(m);
      }
      for (const [region, machines] of byRegion) {
        const pick = this.choose(app, region, machines, now, snap.limits.autostopIdleMs);
        if (pick !== null) work.push(this.stop(pick, mode, snap.limits.stopDrainTimeoutMs));
      }
    }
    await Promise.all(work);
  }

  /** The Machine this pass stops in one region, or null. */
  private choose(app: AppRoute, region: string, machines: MachineRuntime[], now: number, idleMs: number): MachineRuntime | null {
    const running = machines.filter((m) => m.state === 'started' && !m.cordoned);
    if (running.length === 0) return null;
    const routes = [...app.byPort.values()];
    const overSoft = running.filter((m) => atOrAboveSoft(m, routes)).length;
    const excess = running.length - (overSoft + 1);
    if (running.length <= regionMinimum(app.config, region)) return null;
    const idle = running.filter((m) => m.totalLoad() === 0 && now - m.lastActivity >= idleMs);
    if (idle.length === 0) return null;
    // A lone Machine goes only when idle (it is, here); several only when there is excess.
    if (running.length > 1 && excess <= 0) return null;
    idle.sort((a, b) => a.lastActivity - b.lastActivity);
    return idle[0]!;
  }

  private async stop(m: MachineRuntime, mode: StopMode, drainMs: number): Promise<void> {
    try {
      const done = await stopSequence(this.manager, m, mode, drainMs);
      this.log.info({ machine: m.id, app: m.app, kind: done }, `autostop: Machine ${done === 'suspend' ? 'suspended' : 'stopped'}`);
    } catch (err) {
      this.log.warn({ machine: m.id, app: m.app, err: err instanceof Error ? err.message : String(err) }, 'autostop: could not stop the Machine');
    }
  }
}

function atOrAboveSoft(m: MachineRuntime, routes: readonly ServiceRoute[]): boolean {
  for (const r of routes) {
    const s = m.slots.get(r.service.internalPort);
    if (s !== undefined && s.load + s.peerLoad >= r.softLimit) return true;
  }
  return false;
}
