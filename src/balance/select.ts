// Machine selection, spec section 3: candidates -> bands -> distance -> load -> random among
// equals. Pure: reads slot fields, allocates nothing, never waits.

import type { MachineSlot } from '../machines/runtime.ts';

export interface SelectInput {
  readonly slots: readonly MachineSlot[];
  readonly softLimit: number;
  readonly hardLimit: number;
  readonly localRegion: string;
}

/** Why nothing was selected: decides between queueing (all busy) and 503 (none usable). */
export const NONE_USABLE = 0;
export const ALL_AT_HARD = 1;

/**
 * Region distance for ordering: the local region first. Multi-region distances (locations,
 * measured RTT) come with the mesh; until then every other region ranks equally behind.
 */
function distance(slot: MachineSlot, localRegion: string): number {
  return slot.machine.region === localRegion ? 0 : 1;
}

function usable(s: MachineSlot, exclude: readonly MachineSlot[] | null): boolean {
  return s.machine.routable && s.healthy && (exclude === null || !exclude.includes(s));
}

/**
 * Picks the best slot, or returns null; `lastReason` then says whether every usable Machine was
 * at its hard limit (queue) or none was usable at all.
 */
export class Selector {
  lastReason: number = NONE_USABLE;

  select(inp: SelectInput, exclude: readonly MachineSlot[] | null): MachineSlot | null {
    const { slots, softLimit, hardLimit, localRegion } = inp;
    let best: MachineSlot | null = null;
    let bestUnder = false;
    let bestDist = 0;
    let bestLoad = 0;
    let ties = 0;
    let sawUsable = false;
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i]!;
      if (!usable(s, exclude)) {
        // A Machine still booting within its grace period is capacity about to appear.
        if (s.warming && s.machine.routable) sawUsable = true;
        continue;
      }
      sawUsable = true;
      const load = s.load + s.peerLoad;
      if (load >= hardLimit) continue;
      const under = load < softLimit;
      const dist = distance(s, localRegion);
      let better: boolean;
      if (best === null) better = true;
      else if (under !== bestUnder) better = under;
      else if (dist !== bestDist) better = dist < bestDist;
      else if (load !== bestLoad) better = load < bestLoad;
      else {
        // Equal on every criterion: reservoir sampling keeps each tie equally likely.
        ties++;
        better = Math.random() * ties < 1;
        if (better) {
          best = s;
        }
        continue;
      }
      if (better) {
        best = s;
        bestUnder = under;
        bestDist = dist;
        bestLoad = load;
        ties = 1;
      }
    }
    if (best === null) this.lastReason = sawUsable ? ALL_AT_HARD : NONE_USABLE;
    return best;
  }
}
