// One request (or one raw TCP connection) as a fixed-shape object: every field is set in the
// constructor and reset() so V8 keeps one hidden class, and `finish()` runs exactly once,
// success or failure: give back capacity, stamp activity, observe metrics, one access-log line.

import type { MachineSlot } from '../machines/runtime.ts';
import type { Logger } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import { UNROUTED } from '../observe/metrics.ts';
import { writeAccessLine } from '../observe/access.ts';
import type { AppRoute, ServiceRoute, Snapshot } from '../snapshot/snapshot.ts';
import { release } from './capacity.ts';
import type { ProxyErrorDef } from './errors.ts';

export type Proto = 'http/1.1' | 'http/1.0' | 'h2' | 'tcp';

export class Exchange {
  snapshot: Snapshot | null;
  app: AppRoute | null;
  route: ServiceRoute | null;
  slot: MachineSlot | null;
  /** Whether this exchange holds `slot`'s load (per-request concurrency) and must release it. */
  holdsLoad: boolean;
  id: string;
  proto: Proto;
  clientIp: string;
  method: string;
  host: string;
  target: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  startedAt: number;
  queueMs: number;
  wakeMs: number;
  connectMs: number;
  /** Time from start to the first response byte from the Machine. */
  upstreamMs: number;
  retries: number;
  error: ProxyErrorDef | null;
  errorDetail: string;
  finished: boolean;

  constructor() {
    this.snapshot = null;
    this.app = null;
    this.route = null;
    this.slot = null;
    this.holdsLoad = false;
    this.id = '';
    this.proto = 'http/1.1';
    this.clientIp = '';
    this.method = '';
    this.host = '';
    this.target = '';
    this.status = 0;
    this.bytesIn = 0;
    this.bytesOut = 0;
    this.startedAt = 0;
    this.queueMs = 0;
    this.wakeMs = 0;
    this.connectMs = 0;
    this.upstreamMs = 0;
    this.retries = 0;
    this.error = null;
    this.errorDetail = '';
    this.finished = false;
  }

  reset(snapshot: Snapshot, proto: Proto, clientIp: string, now: number): void {
    this.snapshot = snapshot;
    this.app = null;
    this.route = null;
    this.slot = null;
    this.holdsLoad = false;
    this.id = '';
    this.proto = proto;
    this.clientIp = clientIp;
    this.method = '';
    this.host = '';
    this.target = '';
    this.status = 0;
    this.bytesIn = 0;
    this.bytesOut = 0;
    this.startedAt = now;
    this.queueMs = 0;
    this.wakeMs = 0;
    this.connectMs = 0;
    this.upstreamMs = 0;
    this.retries = 0;
    this.error = null;
    this.errorDetail = '';
    this.finished = false;
  }

  fail(def: ProxyErrorDef, detail: string): void {
    if (this.error === null) {
      this.error = def;
      this.errorDetail = detail;
    }
  }
}

/** Runs once per exchange; idempotent so every error path may call it. */
export function finishExchange(x: Exchange, metrics: Metrics, access: Logger): void {
  if (x.finished) return;
  x.finished = true;
  const now = performance.now();
  const slot = x.slot;
  if (slot !== null) {
    slot.machine.lastActivity = now;
    if (x.holdsLoad) {
      x.holdsLoad = false;
      release(slot, x.route!);
    }
  }
  const total = now - x.startedAt;
  const app = x.app;
  if (app !== null && x.status > 0) app.metrics.response(x.status, total / 1000);
  if (app !== null && x.wakeMs > 0) app.metrics.wake.observe(x.wakeMs / 1000);
  if (x.error !== null) metrics.errors.labels(app?.config.name ?? UNROUTED, x.error.code).inc();
  if (!access.isLevelEnabled('info')) return;
  writeAccessLine(access, x, total);
}
