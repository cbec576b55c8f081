// The admin API's Machine operations, carried out by the Machine manager (control plane).

import type { AppConfig } from '../config/types.ts';
import type { MachineManager } from '../machines/manager.ts';
import type { MachineRuntime } from '../machines/runtime.ts';
import { IllegalTransitionError } from '../machines/states.ts';
import { stopSequence } from '../machines/stopSequence.ts';
import { isStoreError } from '../store/errors.ts';
import { CreateBodyError, readCreateBody, type CreateRequest } from './machineCreate.ts';
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

/** What the Machines backend needs from the daemon besides the manager. */
export interface MachinesBackendDeps {
  readonly manager: MachineManager;
  /** Capacity may have appeared: wake queued requests. */
  routingChanged(): void;
  /** `stop_drain_timeout` of the current snapshot. */
  drainMs(): number;
  nodeRegion(): string;
  /** The app's config as currently applied, or undefined. */
  app(name: string): AppConfig | undefined;
  /** Created through the API (so the API may destroy it), as opposed to defined in an app file. */
  isApiMachine(id: string): boolean;
  /** Adds the Machine to the applied config and reconciles; starts it unless skipLaunch. */
  addMachine(req: CreateRequest): Promise<void>;
  /** Removes an API-made Machine from the applied config; the reconcile stops and destroys it. */
  removeMachine(id: string): Promise<void>;
}

function failure(action: string, err: unknown): ApiReply {
  if (err instanceof IllegalTransitionError) return apiError(409, 'PA06', err.message);
  // Cluster store: an id someone else took first, or a store that cannot be reached.
  if (isStoreError(err, 'conflict')) return apiError(400, 'PA08', `${action} refused: the id is already taken in the cluster store`);
  if (isStoreError(err)) return apiError(503, 'PA17', `${action} failed: cluster store: ${err.message}`);
  const reason = err instanceof Error ? err.message : String(err);
  // Refusals the manager explains (a driver that cannot suspend, a node shutting down).
  if (/cannot suspend|shutting down|not suspended/.test(reason)) return apiError(409, 'PA06', reason);
  return apiError(500, 'PA10', `${action} failed: ${reason}`);
}

export function makeMachinesBackend(deps: MachinesBackendDeps): MachinesBackend {
  const { manager } = deps;
  const find = (app: string, id: string): MachineRuntime | null => {
    const m = manager.get(id);
    return m !== undefined && m.app === app ? m : null;
  };
  return {
    machines(app) {
      if (deps.app(app) === undefined) return null;
      return manager
        .all()
        .filter((m) => m.app === app)
        .map(machineJson);
    },

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
          case 'suspend': {
            // The same sequence as autostop: cordon, drain, WebSocket Close frames, then stop.
            if (action === 'suspend' && !manager.driver(m).canSuspend) {
              return apiError(409, 'PA06', `Machine ${id}: the ${m.driver} driver cannot suspend; stop it instead`);
            }
            await stopSequence(manager, m, action, deps.drainMs());
            return { status: 200, body: { ok: true, previous_state: previous } };
          }
          case 'cordon':
            m.cordoned = true;
            return { status: 200, body: { ok: true } };
          case 'uncordon':
            m.cordoned = false;
            // Capacity may have appeared for requests waiting in a queue.
            deps.routingChanged();
            return { status: 200, body: { ok: true } };
        }
      } catch (err) {
        return failure(action, err);
      }
    },

    async create(app, body): Promise<ApiReply> {
      const appConfig = deps.app(app)!;
      let req: CreateRequest;
      try {
        req = readCreateBody(body, appConfig, deps.nodeRegion(), (id) => manager.get(id) !== undefined);
      } catch (err) {
        if (err instanceof CreateBodyError) return apiError(400, 'PA08', err.message);
        throw err;
      }
      try {
        await deps.addMachine(req);
      } catch (err) {
        return failure('create', err);
      }
      const m = manager.get(req.machine.id);
      return { status: 200, body: m === undefined ? { id: req.machine.id } : machineJson(m) };
    },

    async destroy(app, id, force): Promise<ApiReply> {
      const m = find(app, id)!;
      if (!deps.isApiMachine(id)) {
        return apiError(409, 'PA12', `Machine ${id} is defined in ${m.config.source.file}; remove it there and reload`);
      }
      // Fly refuses to destroy a running Machine unless forced.
      if (!force && (m.state === 'started' || m.state === 'starting' || m.state === 'suspended')) {
        return apiError(412, 'PA13', `Machine ${id} is ${m.state}; stop it first or pass force=true`);
      }
      try {
        await deps.removeMachine(id);
      } catch (err) {
        return failure('destroy', err);
      }
      return { status: 200, body: { ok: true } };
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
