import t from 'tap';
import { readFileSync } from 'node:fs';
import { ProcessDriver } from '../src/machines/drivers/process.ts';
import { StaticDriver } from '../src/machines/drivers/static.ts';
import { createDrivers, driverFor } from '../src/machines/drivers/index.ts';
import { allocatePort, parseAddress } from '../src/machines/ports.ts';
import { MachineRuntime, type DriverEvents } from '../src/machines/runtime.ts';
import { driverConformance, type Exited } from './helpers/machines-conformance.ts';
import {
  appConfig,
  canConnect,
  captureLogger,
  demoMachine,
  get,
  machineConfig,
  serviceConfig,
  startServer,
  staticMachine,
  waitFor,
} from './helpers/machines-fixtures.ts';

const quiet = captureLogger('silent').logger;

function recorder(): { events: DriverEvents; exits: Exited[] } {
  const exits: Exited[] = [];
  return { events: { exited: (m, code, signal) => void exits.push({ m, code, signal }) }, exits };
}

driverConformance(t, {
  name: 'static',
  ownsProcess: false,
  make: () => new StaticDriver(),
  machine: async (t) => {
    const srv = await startServer((_req, res) => res.end('{"static":true}\n'));
    t.teardown(() => srv.close());
    return { mc: staticMachine('s1', `127.0.0.1:${srv.port}`), app: appConfig({ name: 'hello' }) };
  },
});

driverConformance(t, {
  name: 'process',
  ownsProcess: true,
  make: (events) => new ProcessDriver({ logger: quiet, events }),
  machine: async () => ({ mc: demoMachine('p1'), app: appConfig({ name: 'hello' }) }),
});

t.test('parseAddress', async (t) => {
  t.same(parseAddress('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  t.same(parseAddress('[::1]:9'), { host: '::1', port: 9 });
  t.same(parseAddress('app.internal:80'), { host: 'app.internal', port: 80 });
  t.throws(() => parseAddress('127.0.0.1'), /expected "host:port"/);
  t.throws(() => parseAddress('h:70000'), /invalid address/);
});

t.test('allocatePort gives a bindable loopback port', async (t) => {
  const p = await allocatePort();
  t.ok(p > 0 && p < 65536);
  const srv = await startServer((_q, s) => s.end());
  t.teardown(() => srv.close());
  t.not(await allocatePort(), srv.port, 'never a port in use');
});

t.test('registry', async (t) => {
  const reg = createDrivers({ logger: quiet, events: recorder().events });
  t.equal(driverFor(reg, 'static').kind, 'static');
  t.equal(driverFor(reg, 'process').kind, 'process');
  t.equal(driverFor(reg, 'process').canSuspend, true);
  t.equal(driverFor(reg, 'static').canSuspend, false);
  t.throws(() => driverFor(new Map(), 'process'), /no Machine driver for kind "process"/);
});

t.test('static: address maps the primary internal port, other services keep theirs', async (t) => {
  const d = new StaticDriver();
  const app = appConfig({
    name: 'two',
    services: [serviceConfig({ internalPort: 3000 }), serviceConfig({ index: 1, internalPort: 5432 })],
  });
  const m = new MachineRuntime(staticMachine('s', '10.0.0.7:4000'));
  await d.start(m, app);
  t.equal(m.host, '10.0.0.7');
  t.equal(m.slot(3000).port, 4000);
  t.equal(m.slot(5432).port, 5432);
  await t.rejects(d.start(new MachineRuntime(machineConfig({ id: 'x', driver: 'static' })), app), /static Machine x has no address/);
});

t.test('process: env, ports, cwd and log lines', async (t) => {
  // Relative script path: resolved against the Machine's cwd (a temp dir tap removes).
  const dir = t.testdir({
    'env.js': `const keys = ['PORT','PETREL_PORT_8080','PETREL_PORT_9090','FLY_APP_NAME','FLY_MACHINE_ID','FLY_REGION','PRIMARY_REGION','FLY_PROCESS_GROUP','GREETING'];
     console.log(JSON.stringify(Object.fromEntries(keys.map((k) => [k, process.env[k]]))));
     console.error('x'.repeat(10000));
     console.log('cwd=' + process.cwd());
     setInterval(() => {}, 1000);`,
  });
  const cap = captureLogger();
  const d = new ProcessDriver({ logger: cap.logger, events: recorder().events, maxLineChars: 400 });
  const app = appConfig({
    name: 'envapp',
    primaryRegion: 'iad',
    services: [serviceConfig({ internalPort: 8080 }), serviceConfig({ index: 1, internalPort: 9090 })],
  });
  const m = new MachineRuntime(
    machineConfig({ id: 'e1', app: 'envapp', region: 'ams', cmd: ['node', 'env.js'], cwd: dir, env: new Map([['GREETING', 'hi'], ['PORT', '1']]) }),
  );
  await d.start(m, app);
  t.teardown(() => d.stop(m));
  t.ok(m.pid > 0, 'pid recorded');
  await waitFor(() => cap.lines.some((l) => String(l.msg).startsWith('cwd=')), 5000, 'the env line');
  const envLine = cap.lines.find((l) => String(l.msg).startsWith('{'))!;
  const env = JSON.parse(String(envLine.msg)) as Record<string, string>;
  t.same(env, {
    PORT: String(m.slot(8080).port),
    PETREL_PORT_8080: String(m.slot(8080).port),
    PETREL_PORT_9090: String(m.slot(9090).port),
    FLY_APP_NAME: 'envapp',
    FLY_MACHINE_ID: 'e1',
    FLY_REGION: 'ams',
    PRIMARY_REGION: 'iad',
    FLY_PROCESS_GROUP: 'app',
    GREETING: 'hi',
  });
  t.not(m.slot(8080).port, m.slot(9090).port, 'one host port per internal port');
  t.equal(envLine.machine, 'e1', 'lines carry the machine id');
  t.equal(envLine.stream, 'stdout');
  t.ok(cap.lines.some((l) => l.msg === `cwd=${dir}`), 'runs in the configured cwd');
  const long = cap.lines.find((l) => l.stream === 'stderr')!;
  t.equal(long.level, 40, 'stderr logged at warn');
  t.equal(String(long.msg).length, 400 + ' [line truncated]'.length, 'long lines are capped');
  t.equal(cap.lines.filter((l) => l.stream === 'stderr').length, 1, 'the rest of the long line is dropped');
});

t.test('process: the demo answers with the Fly variables', async (t) => {
  const d = new ProcessDriver({ logger: quiet, events: recorder().events });
  const m = new MachineRuntime(demoMachine('demo-1', { region: 'fra' }));
  await d.start(m, appConfig({ name: 'hello', primaryRegion: 'ams' }));
  t.teardown(() => d.stop(m));
  const port = m.slot(8080).port;
  await waitFor(() => canConnect(m.host, port, 500), 10_000, 'demo to listen');
  const body = JSON.parse((await get(m.host, port, '/who')).body) as Record<string, unknown>;
  t.match(body, { machine: 'demo-1', app: 'hello', region: 'fra', method: 'GET', url: '/who' });
});

t.test('process: kill -9 is reported as an exit event', async (t) => {
  const { events, exits } = recorder();
  const d = new ProcessDriver({ logger: quiet, events });
  const m = new MachineRuntime(demoMachine('k1'));
  await d.start(m, appConfig({ name: 'hello' }));
  const pid = m.pid;
  process.kill(pid, 'SIGKILL');
  await waitFor(() => exits.length > 0, 5000, 'the exit event');
  t.equal(exits[0]!.m, m);
  t.equal(exits[0]!.signal, 'SIGKILL');
  t.equal(m.pid, 0);
  t.equal(d.runningCount(), 0);
  await d.stop(m); // nothing left to stop: resolves
});

t.test('process: kill_timeout escalates to SIGKILL', async (t) => {
  const cap = captureLogger();
  const d = new ProcessDriver({ logger: cap.logger, events: recorder().events });
  const m = new MachineRuntime(
    machineConfig({
      id: 'stubborn',
      cmd: ['node', '-e', "process.on('SIGINT', () => console.log('ignoring SIGINT')); console.log('ready'); setInterval(() => {}, 1000)"],
      killSignal: 'SIGINT',
      killTimeoutMs: 300,
    }),
  );
  await d.start(m, appConfig({ name: 'hello' }));
  await waitFor(() => cap.messages().includes('ready'), 5000, 'the child to install its handler');
  const t0 = performance.now();
  await d.stop(m);
  const ms = performance.now() - t0;
  t.ok(ms >= 290 && ms < 3000, `stopped after the kill timeout (${Math.round(ms)} ms)`);
  t.ok(cap.messages().includes('ignoring SIGINT'), 'the kill signal was sent first');
  t.ok(cap.messages().some((s) => s.includes('sending SIGKILL')), 'escalation logged');
  t.equal(d.runningCount(), 0);
});

t.test('process: stop takes the whole process group', async (t) => {
  const cap = captureLogger();
  const d = new ProcessDriver({ logger: cap.logger, events: recorder().events });
  // The shell starts a background sleep and then waits: both are in the Machine's group. (SIGTERM:
  // a non-interactive shell starts background jobs with SIGINT ignored.)
  const m = new MachineRuntime(machineConfig({ id: 'grp', cmd: ['sh', '-c', 'sleep 300 & echo "bg=$!"; wait'], killSignal: 'SIGTERM', killTimeoutMs: 3000 }));
  await d.start(m, appConfig({ name: 'hello' }));
  await waitFor(() => cap.messages().some((s) => s.startsWith('bg=')), 5000, 'the background pid');
  const bg = Number(cap.messages().find((s) => s.startsWith('bg='))!.slice(3));
  // A killed child is a zombie until init reaps it (slowly, in some containers): zombie = dead.
  const alive = (pid: number): boolean => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] !== 'Z';
    } catch {
      return false;
    }
  };
  t.ok(alive(bg), 'background child running');
  await d.stop(m);
  await waitFor(() => !alive(bg), 10_000, 'the background child to die');
  t.pass('no process left behind');
});

t.test('process: bad input fails with a clear error', async (t) => {
  const d = new ProcessDriver({ logger: quiet, events: recorder().events });
  const app = appConfig({ name: 'hello' });
  await t.rejects(
    d.start(new MachineRuntime(machineConfig({ id: 'nope', cmd: ['/nonexistent/petrel-app', '--x'] })), app),
    /Machine nope: cannot start "\/nonexistent\/petrel-app --x": .*ENOENT/,
  );
  await t.rejects(d.start(new MachineRuntime(machineConfig({ id: 'nocmd', cmd: null })), app), /process Machine nocmd has no cmd/);
  await t.rejects(
    d.start(new MachineRuntime(machineConfig({ id: 'nocwd', cmd: ['node'], cwd: '/nonexistent/dir' })), app),
    /Machine nocwd: cwd \/nonexistent\/dir is not a directory/,
  );
  t.equal(d.runningCount(), 0);
  await t.rejects(d.suspend(new MachineRuntime(demoMachine('idle'))), /has no running process to suspend/);
});
