// What every data-plane handler shares: the snapshot holder, loggers, metrics and the set of
// open connections (for graceful shutdown). Made once at start-up.

import type { MachineSlot } from '../machines/runtime.ts';
import type { Loggers } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import type { SnapshotHolder } from '../snapshot/holder.ts';
import type { ServiceRoute } from '../snapshot/snapshot.ts';
import { ChallengeBook } from '../tls/challenges.ts';
import { release } from './capacity.ts';

export class ProxyContext {
  readonly holder: SnapshotHolder;
  readonly log: Loggers;
  readonly metrics: Metrics;
  /** Open HTTP/1.x client connections, so a drain can close the idle ones at once. */
  readonly h1Conns: Set<{ drainIdle(): void }>;
  /** Public port -> the port actually bound (differs when remapped or bound to port 0). */
  readonly boundPorts: Map<number, number>;
  /** Set when shutdown begins: keep-alive connections close after their current request. */
  draining: boolean;
  /** ACME challenge answers (HTTP-01 on plain ports, TLS-ALPN-01 on TLS ports). */
  challenges: ChallengeBook;
  /**
   * A handshake for a configured app's name found no certificate: the control plane may order
   * one (on-demand ACME). Never waits; the handshake carries on with the default certificate.
   */
  onCertMiss: ((hostname: string) => void) | null;

  constructor(holder: SnapshotHolder, log: Loggers, metrics: Metrics) {
    this.holder = holder;
    this.log = log;
    this.metrics = metrics;
    this.h1Conns = new Set();
    this.boundPorts = new Map();
    this.draining = false;
    this.challenges = new ChallengeBook();
    this.onCertMiss = null;
  }

  releaseSlot(slot: MachineSlot, route: ServiceRoute): void {
    release(slot, route);
  }
}
