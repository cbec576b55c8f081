// The admin API's Machine operations, carried out by the Machine manager (control plane).

import type { MachineManager } from '../machines/manager.ts';
import type { MachineRuntime } from '../machines/runtime.ts';
import { IllegalTransitionError } from '../machines/states.ts';
import { apiError, type ApiReply, type MachineAction, type MachinesBackend } from './machinesApi.ts';

/** A Machine in the shape of the Fly Machines API where one exists, plus petrel's live fields. */
export function machineJson(m: MachineRuntime): Record<string, unknown> {
  return {
    id: m.id,
    name: m.id,
    instance_id: m.id,
    region: m.region,
    state: m.state,
    cordoned: m.cordoned,
    driver: m.driver,
    private_ip: m.host,
    ports: Object.fromEntries(m.ports),
    checks: Object.fromEntries([...m.slots.values()].map((s) => [String(s.internalPort), { healthy: s.healthy, load: s.load }])),
    pid: m.pid || undefined,
    last_error: m.lastError || undefined,
  };
}

export function makeMachinesBackend(manager: MachineManager, routingChanged: () => void): MachinesBackend {
  const find = (app: string, id: string): MachineRuntime | null => {
    const m = manager.get(id);
    return m !== undefined && m.app === app ? m : null;
  };
  return {
    machine(app, id) {
      const m = find(app, id);
      return m === null ? null : machineJson(m);
    },

    async action(app, id, action: MachineAction): Promise<ApiReply> {
      const m = find(app, id)!;
      const previous = m.state;
      try {
        switch (action) {
          case 'start':
            await manager.start(id);
            return { status: 200, body: { previous_state: previous } };
          case 'stop':
            await manager.stop(id);
            return { status: 200, body: { ok: true, previous_state: previous } };
          case 'suspend':
            await manager.suspend(id);
            return { status: 200, body: { ok: true, previous_state: previous } };
          case 'cordon':
            m.cordoned = true;
            return { status: 200, body: { ok: true } };
          case 'uncordon':
            m.cordoned = false;
            // Capacity may have appeared for requests waiting in a queue.
            routingChanged();
            return { status: 200, body: { ok: true } };
        }
      } catch (err) {
        if (err instanceof IllegalTransitionError) return apiError(409, 'PA06', err.message);
        const reason = err instanceof Error ? err.message : String(err);
        // Refusals the manager explains (a driver that cannot suspend, a node shutting down).
        if (/cannot suspend|shutting down|not suspended/.test(reason)) return apiError(409, 'PA06', reason);
        return apiError(500, 'PA10', `${action} failed: ${reason}`);
      }
    },

    wait(app, id, state, timeoutMs): Promise<ApiReply> {
      const m = find(app, id)!;
      if (m.state === state) return Promise.resolve({ status: 200, body: { ok: true, state } });
      return new Promise((resolve) => {
        const off = manager.onTransition((t, _from, to) => {
          if (t !== m || to !== state) return;
          done({ status: 200, body: { ok: true, state } });
        });
        const timer = setTimeout(() => done(apiError(408, 'PA11', `Machine ${id} did not reach ${state} within ${timeoutMs / 1000} s (it is ${m.state})`)), timeoutMs);
        function done(r: ApiReply): void {
          clearTimeout(timer);
          off();
          resolve(r);
        }
      });
    },
  };
}
