import t, { type Test } from 'tap';
import type { AppConfig } from '../src/config/types.ts';
import { MachineManager } from '../src/machines/manager.ts';
import { MachineRuntime, type MachineState } from '../src/machines/runtime.ts';
import { canTransition, IllegalTransitionError, TRANSITIONS } from '../src/machines/states.ts';
import {
  appConfig,
  canConnect,
  captureLogger,
  config,
  demoMachine,
  get,
  machineConfig,
  startServer,
  staticMachine,
  waitFor,
} from './helpers/machines-fixtures.ts';

const STATES = Object.keys(TRANSITIONS) as MachineState[];

function manager(t: Test, level: 'silent' | 'debug' = 'debug'): { mgr: MachineManager; cap: ReturnType<typeof captureLogger>; seen: string[] } {
  const cap = captureLogger(level);
  const mgr = new MachineManager({ logger: cap.logger });
  const seen: string[] = [];
  mgr.onTransition((m, from, to) => seen.push(`${m.id}:${from}>${to}`));
  t.teardown(() => mgr.stopAll(2000));
  return { mgr, cap, seen };
}

async function listening(m: MachineRuntime, port = 8080): Promise<void> {
  await waitFor(() => canConnect(m.host, m.slot(port).port, 500), 10_000, `${m.id} to listen`);
}

t.test('state table', async (t) => {
  const m = new MachineRuntime(machineConfig({ id: 'm-1' }));
  const { mgr } = manager(t);
  t.throws(() => mgr.transition(m, 'started'), {
    name: 'IllegalTransitionError',
    message: 'Machine m-1: illegal state transition created -> started (from created only starting, destroying is allowed)',
    machine: 'm-1',
    from: 'created',
    to: 'started',
  });
  t.equal(m.state, 'created', 'a refused transition changes nothing');
  for (const to of STATES) t.notOk(canTransition('destroyed', to), `destroyed -> ${to} refused`);
  // Every state is reachable from created and every non-final state can reach destroyed.
  const reach = (from: MachineState): Set<MachineState> => {
    const seen = new Set<MachineState>([from]);
    const q = [from];
    while (q.length > 0) for (const n of TRANSITIONS[q.shift()!]) if (!seen.has(n)) (seen.add(n), q.push(n));
    return seen;
  };
  t.same(reach('created').size, STATES.length, 'every state reachable');
  for (const s of STATES) t.ok(reach(s).has('destroyed'), `${s} can end destroyed`);
  t.ok(new IllegalTransitionError('x', 'stopped', 'started') instanceof Error);
  mgr.transition(m, 'starting');
  mgr.transition(m, 'started');
  t.ok(m.startedAt > 0, 'startedAt stamped');
  t.throws(() => mgr.transition(m, 'suspended'), /started -> suspended/);
});

t.test('reconcile: add, unchanged, change, remove', async (t) => {
  const srv = await startServer((_q, s) => s.end('static'));
  t.teardown(() => srv.close());
  const { mgr, seen, cap } = manager(t);
  const a1 = appConfig({ name: 'hello', machines: [demoMachine('p1'), demoMachine('p2'), staticMachine('s1', `127.0.0.1:${srv.port}`)] });

  const r1 = await mgr.reconcile(config([a1]));
  t.same(r1, { added: ['p1', 'p2', 's1'], removed: [], restarted: [], unchanged: [] });
  for (const id of ['p1', 'p2', 's1']) t.equal(mgr.get(id)!.state, 'started', `${id} started`);
  t.same(seen.filter((s) => s.startsWith('p1:')), ['p1:created>starting', 'p1:starting>started']);
  const p1 = mgr.get('p1')!;
  const p2 = mgr.get('p2')!;
  const s1 = mgr.get('s1')!;
  await listening(p1);
  await listening(p2);
  t.equal((await get(s1.host, s1.slot(8080).port, '/')).body, 'static');
  const slot = p1.slot(8080);
  slot.load = 3; // a live counter the data plane owns
  const pid1 = p1.pid;
  const pid2 = p2.pid;

  // Reload: p1 unchanged (equal, freshly built objects), p2 changed env, s1 removed, p3 added.
  const a2 = appConfig({
    name: 'hello',
    fingerprint: 'v2',
    machines: [demoMachine('p1'), demoMachine('p2', { env: new Map([['X', '1']]) }), demoMachine('p3')],
  });
  seen.length = 0;
  const r2 = await mgr.reconcile(config([a2]));
  t.same(r2, { added: ['p3'], removed: ['s1'], restarted: ['p2'], unchanged: ['p1'] });
  t.equal(mgr.get('p1'), p1, 'unchanged: same runtime object');
  t.equal(p1.slot(8080), slot, 'same slot object');
  t.equal(slot.load, 3, 'counters survive');
  t.equal(p1.pid, pid1, 'same process');
  t.equal(p1.config, a2.machines[0], 'config reference refreshed');
  t.equal(mgr.get('p2'), p2, 'changed: same runtime object, restarted in place');
  t.not(p2.pid, pid2, 'new process');
  t.equal(p2.state, 'started');
  t.same(seen.filter((s) => s.startsWith('p2:')), ['p2:started>stopping', 'p2:stopping>stopped', 'p2:stopped>starting', 'p2:starting>started']);
  t.equal(mgr.get('s1'), undefined, 'removed from the registry');
  t.equal(s1.state, 'destroyed');
  t.ok(await canConnect('127.0.0.1', srv.port), 'a static Machine is only forgotten, not touched');
  t.equal(mgr.get('p3')!.state, 'started');
  t.ok(cap.messages().includes('Machines reconciled'));

  // Kill settings are applied in place: no restart for them.
  const a3 = appConfig({
    name: 'hello',
    machines: [demoMachine('p1', { killTimeoutMs: 1234 }), demoMachine('p2', { env: new Map([['X', '1']]) }), demoMachine('p3')],
  });
  const r3 = await mgr.reconcile(config([a3]));
  t.same(r3.unchanged, ['p1', 'p2', 'p3']);
  t.equal(p1.config.killTimeoutMs, 1234);

  // A region change makes a new runtime (id/app/region/driver are fixed for a runtime's life).
  const p3 = mgr.get('p3')!;
  const a4 = appConfig({ name: 'hello', machines: [demoMachine('p1'), demoMachine('p2', { env: new Map([['X', '1']]) }), demoMachine('p3', { region: 'fra' })] });
  const r4 = await mgr.reconcile(config([a4]));
  t.same(r4.restarted, ['p3']);
  t.not(mgr.get('p3'), p3, 'new runtime object');
  t.equal(p3.state, 'destroyed', 'old runtime destroyed');
  t.equal(mgr.get('p3')!.region, 'fra');
  t.equal(mgr.get('p3')!.state, 'started');

  // App services change: process Machines get new ports, so they restart.
  const a5: AppConfig = { ...a4, services: [{ ...a4.services[0]!, internalPort: 9000 }] };
  const r5 = await mgr.reconcile(config([a5]));
  t.same([...r5.restarted].sort(), ['p1', 'p2', 'p3']);
  t.ok(p1.ports.has(9000), 'port allocated for the new internal port');
  await listening(p1, 9000);
});

t.test('exits: kill -9 fails the Machine, a clean exit stops it', async (t) => {
  const { mgr, cap } = manager(t);
  const quitter = machineConfig({ id: 'q1', cmd: ['node', '-e', 'setTimeout(() => process.exit(0), 200)'] });
  await mgr.reconcile(config([appConfig({ name: 'hello', machines: [demoMachine('k1'), quitter] })]));
  const k1 = mgr.get('k1')!;
  await listening(k1);
  process.kill(k1.pid, 'SIGKILL');
  // The acceptance: the data plane stops routing to it at once (no check interval needed).
  await waitFor(() => k1.state === 'failed', 10_000, 'k1 failed');
  t.notOk(k1.routable);
  t.equal(k1.lastError, 'process killed by SIGKILL');
  t.ok(cap.lines.some((l) => l.machine === 'k1' && l.level === 40 && String(l.msg).includes('Machine failed')), 'logged at warn');
  const q1 = mgr.get('q1')!;
  await waitFor(() => q1.state === 'stopped', 5000, 'q1 stopped');
  t.equal(q1.lastError, 'process exited with code 0');
  // A failed Machine can be started again.
  await mgr.start('k1');
  t.equal(k1.state, 'started');
  t.ok(k1.pid > 0);
});

t.test('bad cmd: failed with a clear lastError, no crash', async (t) => {
  const { mgr } = manager(t);
  const r = await mgr.reconcile(
    config([appConfig({ name: 'hello', machines: [machineConfig({ id: 'bad', cmd: ['/nonexistent/app'] }), demoMachine('good')] })]),
  );
  t.same(r.added, ['bad', 'good']);
  const bad = mgr.get('bad')!;
  t.equal(bad.state, 'failed');
  t.match(bad.lastError, /Machine bad: cannot start "\/nonexistent\/app": .*ENOENT/);
  t.equal(mgr.get('good')!.state, 'started', 'one bad Machine does not stop the others');
  await t.rejects(mgr.start('bad'), /ENOENT/);
  t.equal(bad.state, 'failed');
  const noAddr = machineConfig({ id: 'noaddr', driver: 'static' });
  await mgr.reconcile(config([appConfig({ name: 'hello', machines: [noAddr] })]));
  t.equal(mgr.get('noaddr')!.state, 'failed');
  t.match(mgr.get('noaddr')!.lastError, /static Machine noaddr has no address/);
});

t.test('suspend and resume through the manager', async (t) => {
  const srv = await startServer((_q, s) => s.end('x'));
  t.teardown(() => srv.close());
  const { mgr, seen } = manager(t);
  await mgr.reconcile(config([appConfig({ name: 'hello', machines: [demoMachine('z1'), staticMachine('s1', `127.0.0.1:${srv.port}`)] })]));
  const z1 = mgr.get('z1')!;
  await listening(z1);
  seen.length = 0;
  await mgr.suspend('z1');
  t.equal(z1.state, 'suspended');
  await mgr.resume('z1');
  t.equal(z1.state, 'started');
  t.same(seen, ['z1:started>suspending', 'z1:suspending>suspended', 'z1:suspended>starting', 'z1:starting>started']);
  t.equal((await get(z1.host, z1.slot(8080).port, '/healthz')).body, 'ok');
  await t.rejects(mgr.suspend('s1'), /the static driver cannot suspend; stop it instead/);
  t.equal(mgr.get('s1')!.state, 'started', 'refused suspend changes nothing');
  // A suspended Machine stops cleanly (the kill signal is delivered once continued).
  await mgr.suspend('z1');
  await mgr.stop('z1');
  t.equal(z1.state, 'stopped');
  t.equal(z1.pid, 0);
  await t.rejects(mgr.resume('z1'), /is stopped, not suspended/);
});

t.test('concurrent starts share one start', async (t) => {
  const { mgr, seen } = manager(t);
  await mgr.reconcile(config([appConfig({ name: 'hello', machines: [demoMachine('w1')] })]));
  await mgr.stop('w1');
  seen.length = 0;
  const a = mgr.start('w1');
  const b = mgr.start('w1');
  t.equal(a, b, 'same promise');
  await Promise.all([a, b]);
  t.same(seen, ['w1:stopped>starting', 'w1:starting>started'], 'one start');
  await t.rejects(mgr.start('nope'), /unknown Machine nope/);
  await t.rejects(mgr.stop('nope'), /unknown Machine nope/);
});

t.test('stopAll stops process Machines, leaves static ones, refuses new starts', async (t) => {
  const srv = await startServer((_q, s) => s.end('x'));
  t.teardown(() => srv.close());
  const { mgr } = manager(t);
  await mgr.reconcile(
    config([
      appConfig({
        name: 'hello',
        machines: [
          demoMachine('a1'),
          // Ignores its kill signal: the shutdown deadline (shorter than kill_timeout) forces it.
          machineConfig({ id: 'stubborn', cmd: ['node', '-e', "process.on('SIGINT', () => {}); setInterval(() => {}, 1000)"], killTimeoutMs: 60_000 }),
          staticMachine('s1', `127.0.0.1:${srv.port}`),
        ],
      }),
    ]),
  );
  await listening(mgr.get('a1')!);
  await new Promise((r) => setTimeout(r, 200)); // let the stubborn child install its handler
  const t0 = performance.now();
  await mgr.stopAll(500);
  const ms = performance.now() - t0;
  t.ok(ms < 3000, `bounded by the deadline (${Math.round(ms)} ms)`);
  t.equal(mgr.get('a1')!.state, 'stopped');
  t.equal(mgr.get('stubborn')!.state, 'stopped');
  t.equal(mgr.get('s1')!.state, 'started', 'static left alone');
  await t.rejects(mgr.start('a1'), /shutting down/);
  await t.rejects(mgr.reconcile(config([])), /shutting down/);
});

t.test('a throwing transition listener does not break the state machine', async (t) => {
  const { mgr, cap } = manager(t);
  mgr.onTransition(() => {
    throw new Error('boom');
  });
  await mgr.reconcile(config([appConfig({ name: 'hello', machines: [demoMachine('l1')] })]));
  t.equal(mgr.get('l1')!.state, 'started');
  t.ok(cap.messages().includes('Machine transition listener threw'));
});
