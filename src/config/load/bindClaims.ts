// Bind addresses: the node's own listeners are checked against each other when the node config is
// read, and every app's public ports against all of them when the apps are put together.

import type { HostPort } from './valueRules.ts';

/** Bind addresses in use, so two listeners never try to bind the same socket. */
export class BindClaims {
  private readonly byPort = new Map<number, { host: string; owner: string }[]>();

  /** Records the bind; returns the earlier owner's description when it overlaps one. */
  claim(bind: HostPort, owner: string): string | undefined {
    if (bind.port === 0) return undefined; // each port-0 bind gets its own free port
    const claims = this.byPort.get(bind.port) ?? [];
    const clash = claims.find((c) => c.host === bind.host || isAnyHost(c.host) || isAnyHost(bind.host));
    if (clash !== undefined) return clash.owner;
    claims.push({ host: bind.host, owner });
    this.byPort.set(bind.port, claims);
    return undefined;
  }
}

function isAnyHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}
