// Taking and giving back Machine capacity: selection, the bounded hard-limit queue (spec
// section 3 point 5) and release. Shared by the HTTP/1.1, HTTP/2 and TCP paths so they count
// load the same way.

import { ALL_AT_HARD, Selector } from '../balance/select.ts';
import type { MachineSlot } from '../machines/runtime.ts';
import type { ServiceRoute } from '../snapshot/snapshot.ts';
import { Waiter } from '../snapshot/live.ts';
import { E, type ProxyErrorDef } from './errors.ts';

const selector = new Selector();

export interface AcquireLimits {
  readonly queueLength: number;
  readonly queueTimeoutMs: number;
}

/** Result of a synchronous attempt: a slot, an error, or `QUEUE` (caller should wait). */
export const QUEUE = 1;

/** Takes a slot now if one is free; increments its load. */
export function tryAcquire(route: ServiceRoute, exclude: readonly MachineSlot[] | null): MachineSlot | ProxyErrorDef | typeof QUEUE {
  return tryAcquireFrom(route, route.slots, exclude);
}

/** tryAcquire among a subset of the route's slots (client routing headers). */
export function tryAcquireFrom(route: ServiceRoute, slots: readonly MachineSlot[], exclude: readonly MachineSlot[] | null): MachineSlot | ProxyErrorDef | typeof QUEUE {
  const inp = inputOf(route);
  inp.slots = slots;
  const s = selector.select(inp, exclude);
  if (s !== null) {
    s.load++;
    return s;
  }
  return selector.lastReason === ALL_AT_HARD ? QUEUE : E.NO_MACHINE;
}

/** The node's region, set by the control plane whenever it publishes a snapshot. */
let localRegion = '';
export function setLocalRegion(region: string): void {
  localRegion = region;
}

function inputOf(route: ServiceRoute) {
  // ServiceRoute already has the fields SelectInput needs except the region; a tiny adapter
  // object per call would allocate, so the selector reads them through this shape.
  regionInput.slots = route.slots;
  regionInput.softLimit = route.softLimit;
  regionInput.hardLimit = route.hardLimit;
  regionInput.localRegion = localRegion;
  return regionInput;
}
const regionInput = { slots: [] as readonly MachineSlot[], softLimit: 0, hardLimit: 0, localRegion: '' };

/**
 * Joins the service's bounded queue. `resolve` is called once, later, with a slot (load
 * already taken) or null (timed out). Returns the Waiter, which the caller cancels with
 * cancelWait() when its client leaves, or E.QUEUE_FULL at once.
 */
export function enqueue(
  route: ServiceRoute,
  exclude: readonly MachineSlot[],
  limits: AcquireLimits,
  now: number,
  resolve: (slot: MachineSlot | null) => void,
  timeoutMs: number = limits.queueTimeoutMs,
): Waiter | ProxyErrorDef {
  const q = route.live.queue;
  if (countLive(q) >= limits.queueLength) return E.QUEUE_FULL;
  const w = new Waiter(now, timeoutMs, exclude, resolve);
  q.push(w);
  queueRoutes.set(route.live, route);
  armQueueTimer(timeoutMs);
  return w;
}

/**
 * How the data plane asks the control plane to wake sleeping Machines (autostart, spec
 * section 5). `wake` starts what `waiting` requests need (never more) and returns at once;
 * the requests wait in the service's queue and are served when a woken Machine becomes ready.
 */
export interface Waker {
  /** True when a Machine of the route is starting (already, or because of this call). */
  wake(route: ServiceRoute, waiting: number): boolean;
}

let waker: Waker | null = null;
export function setWaker(w: Waker | null): void {
  waker = w;
}

/** Asks for a wake for one more waiting request; false when nothing can be woken. */
export function wakeFor(route: ServiceRoute): boolean {
  return waker !== null && route.service.autoStartMachines && waker.wake(route, countLive(route.live.queue) + 1);
}

/** The client left: its place is free at once (the entry is purged by the next sweep). */
export function cancelWait(w: Waiter): void {
  w.resolve = null;
}

function countLive(q: readonly Waiter[]): number {
  let n = 0;
  for (let i = 0; i < q.length; i++) if (q[i]!.resolve !== null) n++;
  return n;
}

/** Promise form of enqueue() for the slower paths (HTTP/2 streams, raw TCP connections). */
export function waitForCapacity(
  route: ServiceRoute,
  exclude: readonly MachineSlot[],
  limits: AcquireLimits,
  now: number,
  timeoutMs: number = limits.queueTimeoutMs,
  timeoutDef: ProxyErrorDef = E.QUEUE_TIMEOUT,
): Promise<MachineSlot | ProxyErrorDef> {
  return new Promise((resolve) => {
    const w = enqueue(route, exclude, limits, now, (slot) => resolve(slot ?? timeoutDef), timeoutMs);
    if (!(w instanceof Waiter)) resolve(w);
  });
}

// The newest route per queue, so a waiter woken after a reload selects from current slots.
const queueRoutes = new Map<ServiceRoute['live'], ServiceRoute>();

/** Gives a slot's capacity back and hands it to the oldest waiter that can use it. */
export function release(slot: MachineSlot, route: ServiceRoute): void {
  slot.load--;
  if (route.live.queue.length !== 0) drainQueue(route);
}

function drainQueue(route: ServiceRoute): void {
  const q = route.live.queue;
  const input = inputOf(queueRoutes.get(route.live) ?? route);
  let i = 0;
  while (i < q.length) {
    const w = q[i]!;
    if (w.resolve === null) {
      q.splice(i, 1);
      continue;
    }
    const s = selector.select(input, w.exclude.length ? w.exclude : null);
    if (s === null) {
      // Nothing free for this waiter; one with exclusions may still block others that have none.
      if (w.exclude.length === 0) return;
      i++;
      continue;
    }
    s.load++;
    q.splice(i, 1);
    const r = w.resolve;
    w.resolve = null;
    r(s);
  }
}

/** Re-checks every queue (capacity may appear without a release: a Machine became healthy). */
export function kickQueues(routes: Iterable<ServiceRoute>): void {
  for (const r of routes) if (r.live.queue.length > 0) drainQueue(r);
}

// One shared timer expires waiters; per-waiter timers would mean a timer per queued request.
let queueTimer: NodeJS.Timeout | null = null;
function armQueueTimer(timeoutMs: number): void {
  if (queueTimer !== null) return;
  const period = Math.max(10, Math.min(250, timeoutMs / 4));
  queueTimer = setInterval(expireWaiters, period);
  queueTimer.unref();
}

function expireWaiters(): void {
  const now = performance.now();
  let any = false;
  for (const live of queueRoutes.keys()) {
    const q = live.queue;
    for (let i = 0; i < q.length; i++) {
      const w = q[i]!;
      if (w.resolve !== null && now >= w.deadline) {
        const r = w.resolve;
        w.resolve = null;
        r(null);
      }
    }
    // Drop resolved waiters in one pass so the queue length reflects live waiters.
    let j = 0;
    for (let i = 0; i < q.length; i++) if (q[i]!.resolve !== null) q[j++] = q[i]!;
    q.length = j;
    if (j > 0) any = true;
    else queueRoutes.delete(live);
  }
  if (!any && queueTimer !== null) {
    clearInterval(queueTimer);
    queueTimer = null;
  }
}
