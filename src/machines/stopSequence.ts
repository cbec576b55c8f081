// The stop sequence of spec section 5, shared by autostop and the admin API's stop/suspend:
// cordon (no new traffic), wait for in-flight requests (bounded by `stop_drain_timeout`), send
// WebSocket Close frames (1001) and give the clients a moment to close, then stop or suspend. A
// request that arrives meanwhile is routed elsewhere or wakes another Machine, because the
// cordoned Machine is not a candidate. The cordon is lifted afterwards (unless an operator had
// set it) so autostart can wake the Machine again.

import { setTimeout as sleep } from 'node:timers/promises';
import type { MachineManager } from './manager.ts';
import type { MachineRuntime } from './runtime.ts';

const POLL_MS = 25;
/**
 * Clients answer a Close within a round trip; this much is allowed even when the request drain
 * used up `stop_drain_timeout`, so a Close is never sent and cut in the same instant.
 */
const WS_CLOSE_GRACE_MS = 1000;

export type StopMode = 'stop' | 'suspend';


/**
 * Runs the sequence on `m`. Resolves with what was done (`suspend` falls back to `stop` where the
 * driver cannot suspend); rejects with the manager's error (illegal transition, driver failure).
 */
export async function stopSequence(manager: MachineManager, m: MachineRuntime, mode: StopMode, drainMs: number): Promise<StopMode> {
  const wasCordoned = m.cordoned;
  m.cordoned = true;
  try {
    const deadline = performance.now() + drainMs;
    // Every open WebSocket holds one unit of load; those are closed below, not waited for.
    while (m.totalLoad() > m.tunnels.size && performance.now() < deadline) await sleep(POLL_MS);
    if (m.tunnels.size > 0) {
      for (const t of m.tunnels) t.goAway();
      const wsDeadline = Math.max(deadline, performance.now() + WS_CLOSE_GRACE_MS);
      while (m.tunnels.size > 0 && performance.now() < wsDeadline) await sleep(POLL_MS);
      for (const t of [...m.tunnels]) t.abort();
    }
    // What is still running was given the drain time; the stop cuts it.
    const done: StopMode = mode === 'suspend' && manager.driver(m).canSuspend ? 'suspend' : 'stop';
    if (done === 'suspend') await manager.suspend(m.id);
    else await manager.stop(m.id);
    return done;
  } finally {
    m.cordoned = wasCordoned;
  }
}
