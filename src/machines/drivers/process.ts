// `process` driver: petrel spawns the app's command on this host, one process (group) per Machine.
//
// Each child runs in its own process group (detached: true makes it a session leader), so that
// stop and suspend reach everything the command spawned (a shell wrapper and its app, workers)
// with one kill(-pgid). Suspend is SIGSTOP/SIGCONT: memory and sockets stay, resume is instant.

import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AppConfig } from '../../config/types.ts';
import { allocatePort } from '../ports.ts';
import type { DriverEvents, MachineDriver, MachineRuntime, StopOptions } from '../runtime.ts';
import { LineSink } from './lines.ts';

export interface ProcessDriverOptions {
  readonly logger: Logger;
  readonly events: DriverEvents;
  /** Longest stdout/stderr line logged as is (characters); the rest of the line is dropped. */
  readonly maxLineChars?: number;
  /** How long to wait for the exit after SIGKILL before stop() gives up (process stuck in the kernel). */
  readonly killGraceMs?: number;
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** One spawned process of a Machine. */
class Running {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  exit: Exit | null;
  /** Set by stop(): the exit that follows is ours, not news for the manager. */
  stopping: boolean;
  constructor(child: ChildProcess, pid: number, exited: Promise<Exit>) {
    this.child = child;
    this.pid = pid;
    this.exited = exited;
    this.exit = null;
    this.stopping = false;
  }
}

interface MachineLogs {
  readonly out: Logger;
  readonly err: Logger;
}

/** kill(-pgid): false when the group is already gone. */
function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** The internal ports of an app, in service order, without duplicates. */
export function internalPorts(app: AppConfig): number[] {
  const out: number[] = [];
  for (const s of app.services) if (!out.includes(s.internalPort)) out.push(s.internalPort);
  return out;
}

export class ProcessDriver implements MachineDriver {
  readonly kind = 'process' as const;
  readonly canSuspend = true;
  private readonly logger: Logger;
  private readonly events: DriverEvents;
  private readonly maxLineChars: number;
  private readonly killGraceMs: number;
  private readonly running = new Map<MachineRuntime, Running>();
  /** Child loggers are made once per Machine, not per start or per line. */
  private readonly logs = new WeakMap<MachineRuntime, MachineLogs>();
  private readonly onProcessExit = (): void => this.killAllNow();

  constructor(opts: ProcessDriverOptions) {
    this.logger = opts.logger;
    this.events = opts.events;
    this.maxLineChars = opts.maxLineChars ?? 4096;
    this.killGraceMs = opts.killGraceMs ?? 2000;
  }

  async start(m: MachineRuntime, app: AppConfig): Promise<void> {
    const prev = this.running.get(m);
    if (prev !== undefined) throw new Error(`Machine ${m.id} already has a running process (pid ${prev.pid})`);
    const cmd = m.config.cmd;
    if (cmd === null || cmd.length === 0) throw new Error(`process Machine ${m.id} has no cmd`);
    const cwd = m.config.cwd;
    // spawn reports a missing cwd as ENOENT on the command, which sends people looking for the
    // wrong file; check it first so the error names the directory.
    const st = await stat(cwd).catch(() => null);
    if (st === null || !st.isDirectory()) throw new Error(`Machine ${m.id}: cwd ${cwd} is not a directory`);

    const ports = new Map<number, number>();
    for (const p of internalPorts(app)) ports.set(p, await allocatePort('127.0.0.1'));

    const env: Record<string, string | undefined> = { ...process.env };
    for (const [k, v] of m.config.env) env[k] = v;
    // petrel's own variables win over config env: the app must listen where petrel will connect.
    let first = true;
    for (const [internal, host] of ports) {
      if (first) env.PORT = String(host);
      first = false;
      env[`PETREL_PORT_${internal}`] = String(host);
    }
    env.FLY_APP_NAME = app.name;
    env.FLY_MACHINE_ID = m.id;
    env.FLY_REGION = m.region;
    env.PRIMARY_REGION = app.primaryRegion;
    env.FLY_PROCESS_GROUP = 'app';

    // "node" means the Node running petrel, so demos run on the same Node 24 whatever PATH says.
    const file = cmd[0] === 'node' ? process.execPath : cmd[0]!;
    const child = spawn(file, cmd.slice(1), { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => {
        child.off('spawn', onSpawn);
        reject(new Error(`Machine ${m.id}: cannot start ${JSON.stringify(cmd.join(' '))}: ${e.message}`));
      };
      const onSpawn = (): void => {
        child.off('error', onError);
        resolve();
      };
      child.once('error', onError);
      child.once('spawn', onSpawn);
    });
    const pid = child.pid!;

    let logs = this.logs.get(m);
    if (logs === undefined) {
      const base = this.logger.child({ machine: m.id, app: m.app });
      logs = { out: base.child({ stream: 'stdout' }), err: base.child({ stream: 'stderr' }) };
      this.logs.set(m, logs);
    }
    const out = new LineSink(logs.out, false, this.maxLineChars);
    const err = new LineSink(logs.err, true, this.maxLineChars);
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => out.write(s));
    child.stderr!.on('data', (s: string) => err.write(s));
    child.stdout!.once('end', () => out.flush());
    child.stderr!.once('end', () => err.flush());
    // After spawn, 'error' only reports failed kill() calls; log instead of crashing petrel.
    child.on('error', (e) => this.logger.warn({ machine: m.id, err: e }, 'child process error'));

    let resolveExit!: (e: Exit) => void;
    const r = new Running(child, pid, new Promise<Exit>((res) => (resolveExit = res)));
    child.once('exit', (code, signal) => {
      r.exit = { code, signal };
      if (this.running.get(m) === r) {
        this.running.delete(m);
        if (m.pid === pid) m.pid = 0;
      }
      if (this.running.size === 0) process.off('exit', this.onProcessExit);
      resolveExit(r.exit);
      if (!r.stopping) this.events.exited(m, code, signal);
    });
    if (this.running.size === 0) process.on('exit', this.onProcessExit);
    this.running.set(m, r);

    m.host = '127.0.0.1';
    m.ports.clear();
    for (const [k, v] of ports) m.ports.set(k, v);
    m.pid = pid;
  }

  async stop(m: MachineRuntime, opts?: StopOptions): Promise<void> {
    const r = this.running.get(m);
    if (r === undefined || r.exit !== null) return;
    r.stopping = true;
    const timeoutMs = Math.max(0, opts?.timeoutMs ?? m.config.killTimeoutMs);
    signalGroup(r.pid, m.config.killSignal);
    // A suspended (SIGSTOPped) group keeps the kill signal pending until it is continued.
    signalGroup(r.pid, 'SIGCONT');
    let killTimer: NodeJS.Timeout | undefined;
    let giveUpTimer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        void r.exited.then(() => resolve());
        killTimer = setTimeout(() => {
          this.logger.warn(
            { machine: m.id, pid: r.pid, signal: m.config.killSignal, timeoutMs },
            'Machine did not exit after its kill signal; sending SIGKILL',
          );
          signalGroup(r.pid, 'SIGKILL');
          giveUpTimer = setTimeout(
            () => reject(new Error(`Machine ${m.id}: process ${r.pid} did not exit even after SIGKILL`)),
            this.killGraceMs,
          );
        }, timeoutMs);
      });
    } finally {
      clearTimeout(killTimer);
      clearTimeout(giveUpTimer);
    }
    // The leader is gone; anything it left in its group (a worker, a shell's child) goes too, so
    // a stopped Machine never leaks processes. The group id cannot be reused while members exist.
    signalGroup(r.pid, 'SIGKILL');
  }

  async suspend(m: MachineRuntime): Promise<void> {
    const r = this.alive(m, 'suspend');
    if (!signalGroup(r.pid, 'SIGSTOP')) throw new Error(`Machine ${m.id}: process ${r.pid} is gone, cannot suspend`);
  }

  async resume(m: MachineRuntime): Promise<void> {
    const r = this.alive(m, 'resume');
    if (!signalGroup(r.pid, 'SIGCONT')) throw new Error(`Machine ${m.id}: process ${r.pid} is gone, cannot resume`);
  }

  /** Machines with a live process (for shutdown and tests). */
  runningCount(): number {
    return this.running.size;
  }

  private alive(m: MachineRuntime, op: string): Running {
    const r = this.running.get(m);
    if (r === undefined || r.exit !== null) throw new Error(`Machine ${m.id} has no running process to ${op}`);
    return r;
  }

  /**
   * Last resort when petrel itself exits without stopping its Machines (uncaught exception,
   * process.exit): detached children would otherwise outlive it. Synchronous on purpose, it runs
   * in the process 'exit' event.
   */
  private killAllNow(): void {
    for (const r of this.running.values()) {
      try {
        process.kill(-r.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
