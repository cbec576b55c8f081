// Keep-alive pools of upstream HTTP/1.1 connections, one per Machine address. LIFO reuse keeps
// the hottest sockets busy and lets the idle tail time out. Pools live outside snapshots, so a
// reload does not drop warm connections.

import type net from 'node:net';

export interface Pooled {
  readonly socket: net.Socket;
  /** Whether the pooled socket may be handed out (false once it closed or misbehaved). */
  reusable: boolean;
  idleSince: number;
}

export class AddressPool<T extends Pooled> {
  readonly key: string;
  readonly idle: T[];
  /** Dropped from Pools (unused for the idle timeout): a connection still out just closes. */
  removed: boolean;
  /** Last take() or put(), for dropping pools of addresses nobody uses any more. */
  lastUsed: number;
  constructor(key: string) {
    this.key = key;
    this.idle = [];
    this.removed = false;
    this.lastUsed = 0;
  }
  take(now: number): T | null {
    this.lastUsed = now;
    const idle = this.idle;
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.reusable && !c.socket.destroyed) return c;
    }
    return null;
  }
  /** Returns false when the pool is full: the caller closes the connection instead. */
  put(c: T, maxIdle: number, now: number): boolean {
    if (this.removed || this.idle.length >= maxIdle) return false;
    this.lastUsed = now;
    c.idleSince = now;
    this.idle.push(c);
    return true;
  }
  remove(c: T): void {
    const i = this.idle.indexOf(c);
    if (i !== -1) this.idle.splice(i, 1);
  }
}

export class Pools<T extends Pooled> {
  private readonly byKey = new Map<string, AddressPool<T>>();
  get(host: string, port: number): AddressPool<T> {
    const key = `${host}:${port}`;
    let p = this.byKey.get(key);
    if (p === undefined) {
      p = new AddressPool<T>(key);
      this.byKey.set(key, p);
    }
    return p;
  }
  /**
   * Closes idle connections older than `maxIdleMs`; called from a slow control-plane timer.
   * Pools left empty are dropped, so addresses of Machines that moved (a process Machine
   * restarts on new ports) do not pile up.
   */
  expire(now: number, maxIdleMs: number): void {
    for (const [key, p] of this.byKey) {
      if (p.idle.length === 0 && now - p.lastUsed > maxIdleMs) {
        p.removed = true;
        this.byKey.delete(key);
        continue;
      }
      const idle = p.idle;
      let j = 0;
      for (let i = 0; i < idle.length; i++) {
        const c = idle[i]!;
        if (c.reusable && !c.socket.destroyed && now - c.idleSince < maxIdleMs) idle[j++] = c;
        else c.socket.destroy();
      }
      idle.length = j;
    }
  }
  closeAll(): void {
    for (const p of this.byKey.values()) {
      for (const c of p.idle) c.socket.destroy();
      p.idle.length = 0;
    }
  }
}
