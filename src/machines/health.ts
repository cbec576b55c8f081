// Service checks (spec section 3, point 1): they decide MachineSlot.healthy, which the balancer reads
// together with `routable`.
//
// Grace period semantics (how the data plane tells "started moments ago" from "passing" without
// knowing about grace): when a Machine becomes `started` its checked slots are set healthy = true
// and checks begin at once. Until a check's grace_period (counted from MachineRuntime.startedAt)
// is over, its failures are ignored; a pass always counts. After it, a slot is healthy only while
// every check's last result passed; a failed result flips it to false. At each grace end the
// slot is re-evaluated, so a Machine that never passed leaves routing right then, not one
// interval later. With grace 0 a Machine is routable from start until its first failed check.
// `passing()` gives the strict answer (every check has passed) for readiness waits.
//
// A check that has not reported yet (just rebuilt by a reload) keeps the slot as it was, so a
// reload never blips a healthy Machine out of routing. Services without checks get no check
// traffic at all: hasChecks = false, healthy = true, and routing follows the Machine state.

import type { Logger } from 'pino';
import type { AppConfig, Check } from '../config/types.ts';
import type { MachineManager } from './manager.ts';
import { httpProbe, tcpProbe } from './probes.ts';
import type { MachineRuntime, MachineSlot } from './runtime.ts';

export type HealthListener = (slot: MachineSlot, healthy: boolean, reason: string) => void;

/** What the checker needs from the manager (a narrow view, so tests can drive it by hand). */
export type HealthSource = Pick<MachineManager, 'onTransition' | 'onReconcile' | 'appConfig' | 'all'>;

export interface HealthOptions {
  readonly logger: Logger;
}

class CheckRun {
  readonly check: Check;
  /** null until the first result of this (re)built check. */
  lastOk: boolean | null;
  lastError: string;
  timer: NodeJS.Timeout | null;
  graceTimer: NodeJS.Timeout | null;
  constructor(check: Check) {
    this.check = check;
    this.lastOk = null;
    this.lastError = '';
    this.timer = null;
    this.graceTimer = null;
  }
}

/** The checks of one service (internal port) of one Machine. */
class SlotWatch {
  readonly slot: MachineSlot;
  readonly runs: CheckRun[];
  constructor(slot: MachineSlot) {
    this.slot = slot;
    this.runs = [];
  }
}

class MachineWatch {
  readonly m: MachineRuntime;
  readonly app: AppConfig;
  readonly slots: SlotWatch[];
  closed: boolean;
  constructor(m: MachineRuntime, app: AppConfig) {
    this.m = m;
    this.app = app;
    this.slots = [];
    this.closed = false;
  }
}

/** Probe period while a started Machine has not passed its checks yet. */
const WARMING_PROBE_MS = 10;
/** How long a process Machine without checks may take to accept its first connection. */
const READINESS_CAP_MS = 30_000;
const READY_CHECKS = 'ready: checks passed after start';

export class HealthChecker {
  private readonly logger: Logger;
  private readonly watches = new Map<MachineRuntime, MachineWatch>();
  private readonly listeners: HealthListener[] = [];

  constructor(opts: HealthOptions) {
    this.logger = opts.logger;
  }

  /**
   * Follows a manager: checks start when a Machine becomes `started`, stop when it leaves that
   * state, and are rebuilt after a reconcile for apps whose fingerprint changed.
   */
  attach(source: HealthSource): () => void {
    const offT = source.onTransition((m, from, to) => {
      // Another node's Machine is checked by its owner; its health comes with its record.
      if (to === 'started' && m.owner === null) {
        const app = source.appConfig(m.app);
        if (app !== undefined) this.watch(m, app);
      } else if (from === 'started') {
        this.unwatch(m);
      }
    });
    const offR = source.onReconcile(() => {
      for (const w of [...this.watches.values()]) {
        const app = source.appConfig(w.m.app);
        if (app === undefined) this.unwatch(w.m);
        else if (app.fingerprint !== w.app.fingerprint) this.watch(w.m, app);
      }
    });
    for (const m of source.all()) {
      const app = source.appConfig(m.app);
      if (m.state === 'started' && m.owner === null && app !== undefined) this.watch(m, app);
    }
    return () => {
      offT();
      offR();
    };
  }

  /** Called on every healthy <-> unhealthy change of a slot (metrics hang here). */
  onChange(cb: HealthListener): void {
    this.listeners.push(cb);
  }

  /**
   * Starts (or rebuilds) the checks of `m` for `app`'s services. A first watch (the Machine just
   * started) sets checked slots healthy for the grace period; a rebuild keeps their current value.
   */
  watch(m: MachineRuntime, app: AppConfig): void {
    const prev = this.watches.get(m);
    if (prev !== undefined) this.closeWatch(prev);
    const w = new MachineWatch(m, app);
    this.watches.set(m, w);
    const byPort = new Map<number, SlotWatch>();
    for (const svc of app.services) {
      let sw = byPort.get(svc.internalPort);
      if (sw === undefined) {
        sw = new SlotWatch(m.slot(svc.internalPort));
        byPort.set(svc.internalPort, sw);
      }
      for (const c of svc.checks) sw.runs.push(new CheckRun(c));
    }
    for (const sw of byPort.values()) {
      sw.slot.hasChecks = sw.runs.length > 0;
      if (sw.runs.length === 0) {
        // No checks: a process Machine just started is ready once it accepts a TCP connection
        // (spec section 5); until then requests wait for it instead of getting 502s.
        if (prev === undefined && m.driver !== 'static') this.awaitListening(w, sw);
        else this.set(w, sw, true, 'service has no checks');
        continue;
      }
      w.slots.push(sw);
      if (prev === undefined) {
        // Just started: no traffic until the checks first pass; requests wait for it meanwhile.
        sw.slot.healthy = false;
        sw.slot.warming = true;
      }
      for (const r of sw.runs) {
        if (m.startedAt + r.check.gracePeriodMs > performance.now()) this.armGrace(w, sw, r);
        void this.run(w, sw, r);
      }
    }
  }

  /** Stops the checks of `m` (it stopped, failed or went away). Slot flags stay as they were. */
  unwatch(m: MachineRuntime): void {
    const w = this.watches.get(m);
    if (w === undefined) return;
    this.closeWatch(w);
    this.watches.delete(m);
  }

  watching(m: MachineRuntime): boolean {
    return this.watches.has(m);
  }

  /**
   * Strict readiness: every check of this service has passed since the last (re)build, grace or
   * not. True for a service without checks. False for a Machine that is not watched.
   */
  passing(m: MachineRuntime, internalPort: number): boolean {
    const w = this.watches.get(m);
    if (w === undefined) return false;
    const sw = w.slots.find((s) => s.slot.internalPort === internalPort);
    return sw === undefined || sw.runs.every((r) => r.lastOk === true);
  }

  /** Stops every check (node shutdown). */
  close(): void {
    for (const w of this.watches.values()) this.closeWatch(w);
    this.watches.clear();
  }

  private closeWatch(w: MachineWatch): void {
    w.closed = true;
    for (const sw of w.slots) {
      for (const r of sw.runs) {
        if (r.timer !== null) clearTimeout(r.timer);
        if (r.graceTimer !== null) clearTimeout(r.graceTimer);
        r.timer = null;
        r.graceTimer = null;
      }
    }
  }

  /**
   * Readiness of a service without checks: TCP connects every WARMING_PROBE_MS until one
   * succeeds. A Machine that never accepts within READINESS_CAP_MS is routed to anyway, so
   * connect errors surface (502 with a code) rather than requests waiting forever.
   */
  private awaitListening(w: MachineWatch, sw: SlotWatch): void {
    const slot = sw.slot;
    slot.healthy = false;
    slot.warming = true;
    const deadline = performance.now() + READINESS_CAP_MS;
    const probe = async (): Promise<void> => {
      if (w.closed) return;
      const failure = await tcpProbe(w.m.host, slot.port, Math.min(1000, READINESS_CAP_MS));
      if (w.closed) return;
      if (failure === null || performance.now() > deadline) {
        slot.warming = false;
        this.set(w, sw, true, failure === null ? 'ready: accepting connections' : `never accepted a connection (${failure}); routing to it anyway`);
        return;
      }
      setTimeout(() => void probe(), WARMING_PROBE_MS).unref();
    };
    void probe();
  }

  /**
   * Re-evaluates the slot when this check's grace ends. Timers count from the event loop's cached
   * clock and can fire a few ms before performance.now() says the grace is over: re-arm then.
   */
  private armGrace(w: MachineWatch, sw: SlotWatch, r: CheckRun): void {
    r.graceTimer = null;
    if (w.closed) return;
    const left = w.m.startedAt + r.check.gracePeriodMs - performance.now();
    if (left <= 0) {
      this.evaluate(w, sw);
      return;
    }
    r.graceTimer = setTimeout(() => this.armGrace(w, sw, r), Math.ceil(left) + 1);
    r.graceTimer.unref();
  }

  private async run(w: MachineWatch, sw: SlotWatch, r: CheckRun): Promise<void> {
    r.timer = null;
    if (w.closed) return;
    const t0 = performance.now();
    const c = r.check;
    // Read the address at probe time: it is the Machine's current one.
    const host = w.m.host;
    const port = sw.slot.port;
    const failure = c.kind === 'tcp' ? await tcpProbe(host, port, c.timeoutMs) : await httpProbe(host, port, c);
    if (w.closed) return;
    r.lastOk = failure === null;
    r.lastError = failure ?? '';
    this.evaluate(w, sw);
    // Next run one interval after this one began, never overlapping (a slow probe delays it).
    // While the Machine boots, probe often so it takes traffic as soon as it is ready.
    const period = sw.slot.warming ? Math.min(c.intervalMs, WARMING_PROBE_MS) : c.intervalMs;
    r.timer = setTimeout(() => void this.run(w, sw, r), Math.max(0, period - (performance.now() - t0)));
    r.timer.unref();
  }

  private evaluate(w: MachineWatch, sw: SlotWatch): void {
    const now = performance.now();
    let failing: CheckRun | null = null;
    let pending = false;
    let graceLeft = false;
    for (const r of sw.runs) {
      if (r.lastOk === true) continue;
      if (now < w.m.startedAt + r.check.gracePeriodMs) {
        // Within the grace period a failure does not count yet: the Machine may still be booting.
        pending = true;
        graceLeft = true;
        continue;
      }
      if (r.lastOk === false) {
        failing = r;
        break;
      }
      pending = true; // no result yet
    }
    const slot = sw.slot;
    const first = slot.warming;
    if (slot.warming) {
      // Warming ends with the first full pass, a failure past the grace, or the end of the grace.
      if (failing === null && pending && graceLeft) return;
      slot.warming = false;
      if (failing === null && pending) {
        this.set(w, sw, false, 'checks did not pass within the grace period', true);
        return;
      }
    }
    // A Machine that never passed was already out of routing: still say once that it failed.
    if (failing !== null) this.set(w, sw, false, `check ${failing.check.name} failed: ${failing.lastError}`, first);
    else if (!pending) this.set(w, sw, true, first ? READY_CHECKS : 'checks passing');
  }

  private set(w: MachineWatch, sw: SlotWatch, healthy: boolean, reason: string, announce = false): void {
    const slot = sw.slot;
    if (slot.healthy === healthy && !announce) return;
    slot.healthy = healthy;
    const fields = { machine: w.m.id, app: w.m.app, internalPort: slot.internalPort, reason };
    if (healthy) this.logger.info(fields, reason.startsWith('ready: ') ? 'Machine service ready; in routing' : 'Machine service healthy; back in routing');
    else this.logger.warn(fields, 'Machine service checks failing; out of routing');
    for (const cb of this.listeners) {
      try {
        cb(slot, healthy, reason);
      } catch (e) {
        this.logger.error({ err: e }, 'health listener threw');
      }
    }
  }
}
