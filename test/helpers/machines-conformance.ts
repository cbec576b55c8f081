// One conformance suite every MachineDriver passes (architecture habit 10). A driver case says
// how to build the driver and one Machine for it; the suite drives it through start, stop and
// suspend with real sockets.

import http from 'node:http';
import type { Test } from 'tap';
import type { AppConfig, MachineConfig } from '../../src/config/types.ts';
import { MachineRuntime, type DriverEvents, type MachineDriver } from '../../src/machines/runtime.ts';
import { canConnect, get, sleep, waitFor } from './machines-fixtures.ts';

export interface Exited {
  readonly m: MachineRuntime;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface DriverCase {
  readonly name: string;
  make(events: DriverEvents): MachineDriver;
  /** One Machine of this driver and its app; anything it needs (a server) is up already. */
  machine(t: Test): Promise<{ mc: MachineConfig; app: AppConfig }>;
  /** Whether the driver runs the Machine itself (so stop makes it unreachable). */
  readonly ownsProcess: boolean;
}

function recorder(): { events: DriverEvents; exits: Exited[] } {
  const exits: Exited[] = [];
  return { events: { exited: (m, code, signal) => void exits.push({ m, code, signal }) }, exits };
}

interface Started {
  readonly d: MachineDriver;
  readonly m: MachineRuntime;
  readonly app: AppConfig;
  readonly port: number;
  readonly exits: Exited[];
}

async function started(t: Test, c: DriverCase): Promise<Started> {
  const { events, exits } = recorder();
  const d = c.make(events);
  const { mc, app } = await c.machine(t);
  const m = new MachineRuntime(mc);
  await d.start(m, app);
  // The driver does not change state: the manager does. Mirror it so teardown knows to stop.
  m.state = 'started';
  t.teardown(async () => {
    if (m.state === 'started' || m.state === 'suspended') await d.stop(m, { timeoutMs: 2000 });
  });
  const port = m.slot(app.services[0]!.internalPort).port;
  // start() resolves once launched, not once listening (readiness is the checker's job).
  await waitFor(() => canConnect(m.host, port, 500), 10_000, `${m.id} to listen on ${m.host}:${port}`);
  return { d, m, app, port, exits };
}

export function driverConformance(t: Test, c: DriverCase): void {
  t.test(`${c.name}: start makes the Machine reachable at host:slot(port).port`, async (t) => {
    const { m, port } = await started(t, c);
    t.ok(port > 0, 'a real port');
    const r = await get(m.host, port, '/');
    t.equal(r.status, 200);
  });

  t.test(`${c.name}: stop`, async (t) => {
    const { d, m, port, exits } = await started(t, c);
    await d.stop(m);
    m.state = 'stopped';
    if (c.ownsProcess) {
      t.notOk(await canConnect(m.host, port), 'nothing listens after stop');
      t.equal(m.pid, 0, 'pid cleared');
    } else {
      t.ok(await canConnect(m.host, port), 'a static Machine is never really stopped');
    }
    t.same(exits, [], 'an exit we asked for is not reported as an event');
    // Stopping again is harmless.
    await d.stop(m);
  });

  t.test(`${c.name}: restart after stop`, async (t) => {
    const { d, m, app, port } = await started(t, c);
    await d.stop(m);
    m.state = 'stopped';
    await d.start(m, app);
    m.state = 'started';
    const port2 = m.slot(app.services[0]!.internalPort).port;
    await waitFor(() => canConnect(m.host, port2, 500), 10_000, 'restarted Machine to listen');
    t.equal((await get(m.host, port2, '/')).status, 200);
    if (!c.ownsProcess) t.equal(port2, port, 'static address unchanged');
  });

  t.test(`${c.name}: suspend and resume`, async (t) => {
    const { d, m, port } = await started(t, c);
    if (!d.canSuspend) {
      await t.rejects(d.suspend(m), /cannot suspend/);
      return;
    }
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    t.equal((await get(m.host, port, '/', agent)).status, 200);
    await d.suspend(m);
    m.state = 'suspended';
    // A frozen process accepts nothing: the request waits in the socket.
    let answered = false;
    const pending = get(m.host, port, '/?during-suspend', agent).then((r) => {
      answered = true;
      return r;
    });
    await sleep(300);
    t.notOk(answered, 'no answer while suspended');
    await d.resume(m);
    m.state = 'started';
    const r1 = await pending;
    t.equal(r1.status, 200, 'the request made during suspension is answered after resume');
    t.ok(r1.reused, 'on the same keep-alive connection');
    const r2 = await get(m.host, port, '/', agent);
    t.equal(r2.status, 200);
    t.ok(r2.reused, 'the keep-alive connection still works after resume');
  });
}
