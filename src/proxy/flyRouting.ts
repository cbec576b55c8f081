// Fly's client routing headers (spec section 3): Fly-Force-Instance-Id (that Machine or 503),
// Fly-Prefer-Instance-Id (that Machine if it can take the request, else the usual choice and
// Fly-Preferred-Instance-Unavailable on the forwarded request), Fly-Force-Region (only Machines
// of those regions) and Fly-Prefer-Region (the first listed region with capacity, else the usual
// choice). Read only when a request carries one, so ordinary requests never pay for it.

import type { MachineSlot } from '../machines/runtime.ts';
import type { ServiceRoute } from '../snapshot/snapshot.ts';
import { QUEUE, tryAcquireFrom } from './capacity.ts';
import { E, type ProxyErrorDef } from './errors.ts';
import {
  H_FLY_FORCE_INSTANCE_ID,
  H_FLY_FORCE_REGION,
  H_FLY_PREFER_INSTANCE_ID,
  H_FLY_PREFER_REGION,
  type RequestHead,
} from './http1/index.ts';

export class RoutingPrefs {
  forceInstance: string | null = null;
  preferInstance: string | null = null;
  forceRegions: readonly string[] | null = null;
  preferRegions: readonly string[] | null = null;
  /** Set by acquireWithPrefs when the preferred instance could not take the request. */
  unavailable: string | null = null;
}

function regions(v: string): string[] {
  return v
    .split(',')
    .map((r) => r.trim().toLowerCase())
    .filter((r) => r !== '');
}

export function prefsFromHead(h: RequestHead): RoutingPrefs {
  const p = new RoutingPrefs();
  for (let i = 0; i < h.count; i++) {
    switch (h.kind(i)) {
      case H_FLY_FORCE_INSTANCE_ID:
        p.forceInstance = h.value(i).trim();
        break;
      case H_FLY_PREFER_INSTANCE_ID:
        p.preferInstance = h.value(i).trim();
        break;
      case H_FLY_FORCE_REGION:
        p.forceRegions = regions(h.value(i));
        break;
      case H_FLY_PREFER_REGION:
        p.preferRegions = regions(h.value(i));
        break;
    }
  }
  return p;
}

/** Same, from an HTTP/2 header object; null when the request has none of the headers. */
export function prefsFromHeaders(headers: Record<string, string | string[] | undefined>): RoutingPrefs | null {
  const fi = headers['fly-force-instance-id'];
  const pi = headers['fly-prefer-instance-id'];
  const fr = headers['fly-force-region'];
  const pr = headers['fly-prefer-region'];
  if (fi === undefined && pi === undefined && fr === undefined && pr === undefined) return null;
  const one = (v: string | string[]) => (Array.isArray(v) ? v.join(',') : v).trim();
  const p = new RoutingPrefs();
  if (fi !== undefined) p.forceInstance = one(fi);
  if (pi !== undefined) p.preferInstance = one(pi);
  if (fr !== undefined) p.forceRegions = regions(one(fr));
  if (pr !== undefined) p.preferRegions = regions(one(pr));
  return p;
}

/**
 * Takes capacity as the headers ask. Returns a slot (load taken), an error (a forced target is
 * unavailable: 503 PR09), or null: nothing forced, no preference could be met, go on with the
 * usual selection. A forced target at its hard limit is refused rather than queued: the shared
 * queue would hand the request to whichever Machine frees up first.
 */
export function acquireWithPrefs(route: ServiceRoute, p: RoutingPrefs, exclude: readonly MachineSlot[] | null): MachineSlot | ProxyErrorDef | null {
  const slots = route.slots;
  if (p.forceInstance !== null) {
    const id = p.forceInstance;
    return take(route, slots.filter((s) => s.machine.id === id), exclude) ?? E.INSTANCE_UNAVAILABLE;
  }
  if (p.forceRegions !== null) {
    const want = p.forceRegions;
    return take(route, slots.filter((s) => want.includes(s.machine.region)), exclude) ?? E.INSTANCE_UNAVAILABLE;
  }
  if (p.preferInstance !== null) {
    const id = p.preferInstance;
    const got = take(route, slots.filter((s) => s.machine.id === id), exclude);
    if (got !== null) return got;
    p.unavailable = id;
  }
  if (p.preferRegions !== null) {
    for (const region of p.preferRegions) {
      const got = take(route, slots.filter((s) => s.machine.region === region), exclude);
      if (got !== null) return got;
    }
  }
  return null;
}

function take(route: ServiceRoute, subset: readonly MachineSlot[], exclude: readonly MachineSlot[] | null): MachineSlot | null {
  if (subset.length === 0) return null;
  const got = tryAcquireFrom(route, subset, exclude);
  return got === QUEUE || (got as MachineSlot).machine === undefined ? null : (got as MachineSlot);
}
