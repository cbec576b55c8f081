// `static` driver: a Machine that something else runs (another host, a container, a dev server).
// petrel only learns where it is; it never starts, stops or suspends anything, so "stop" is a
// pure state change made by the manager and the Machine is back the moment it is "started".

import type { AppConfig } from '../../config/types.ts';
import { parseAddress } from '../ports.ts';
import type { MachineDriver, MachineRuntime } from '../runtime.ts';

/** The internal port `address` stands for: the app's first service (fly.toml's default 8080 without one). */
export function primaryInternalPort(app: AppConfig): number {
  return app.services[0]?.internalPort ?? 8080;
}

export class StaticDriver implements MachineDriver {
  readonly kind = 'static' as const;
  readonly canSuspend = false;

  async start(m: MachineRuntime, app: AppConfig): Promise<void> {
    if (m.config.address === null) throw new Error(`static Machine ${m.id} has no address`);
    const { host, port } = parseAddress(m.config.address);
    m.host = host;
    // Only the primary service is remapped; other services of a static Machine are reached on
    // their own internal port number at the same host (MachineSlot.port falls back to it).
    m.ports.clear();
    m.ports.set(primaryInternalPort(app), port);
    m.pid = 0;
  }

  async stop(_m: MachineRuntime): Promise<void> {}

  async suspend(m: MachineRuntime): Promise<void> {
    throw new Error(`Machine ${m.id}: the static driver cannot suspend`);
  }

  async resume(m: MachineRuntime): Promise<void> {
    throw new Error(`Machine ${m.id}: the static driver cannot suspend, so there is nothing to resume`);
  }
}
