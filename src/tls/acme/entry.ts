// One host name as the ACME manager tracks it, and the status the admin API shows for it.
import type { IssuanceState } from '../store/certStore.ts';
import { checkHostname } from '../store/validate.ts';

export type AcmeStatusValue = IssuanceState['status'];

export interface AcmeHostStatus {
  readonly hostname: string;
  /** pending: no certificate yet (an order is due, running or waiting); active: one is stored
   *  and valid; failed: the last attempt failed (an existing certificate still serves). */
  readonly status: AcmeStatusValue;
  /** Where the certificate that serves this name comes from; null when there is none. */
  readonly source: 'acme' | 'custom' | null;
  readonly issuer: string | null;
  /** ms since epoch. */
  readonly notAfter: number | null;
  readonly lastError: string | null;
  /** ms since epoch of the next order or renewal; null when none is planned (custom). */
  readonly nextAttemptAt: number | null;
  readonly failures: number;
  /** Why nothing runs although an order is due: the hourly cap, another node's lock. */
  readonly waitingFor: string | null;
  /** An order for this name is running now. */
  readonly ordering: boolean;
}

/** One host name's schedule and status: one fixed shape, fields set in the constructor. */
export class Entry {
  readonly hostname: string;
  status: AcmeStatusValue = 'pending';
  source: 'acme' | 'custom' | null = null;
  issuer: string | null = null;
  notAfter: number | null = null;
  fingerprint: string | null = null;
  lastError: string | null = null;
  failures = 0;
  nextAttemptAt: number | null = null;
  running = false;
  waitingFor: string | null = null;
  capNoticed = false;
  forced = false;
  lastOnDemandAt = Number.NEGATIVE_INFINITY;

  constructor(hostname: string) {
    this.hostname = hostname;
  }
}

/** Lower-case, no trailing dot: the key of #entries. Cheap, for the handshake path. */
export function lookupKey(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

/** Lower-case, no trailing dot; null for names ACME cannot serve (wildcards, IPs, junk). */
export function acmeName(name: string): string | null {
  let n = name.trim().toLowerCase();
  if (n.endsWith('.')) n = n.slice(0, -1);
  if (n.includes('*')) return null;
  try {
    return checkHostname(n);
  } catch {
    return null;
  }
}

/** A copy for callers: the entry itself stays private to the manager. */
export function view(e: Entry): AcmeHostStatus {
  return {
    hostname: e.hostname,
    status: e.status,
    source: e.source,
    issuer: e.issuer,
    notAfter: e.notAfter,
    lastError: e.lastError,
    nextAttemptAt: e.nextAttemptAt,
    failures: e.failures,
    waitingFor: e.waitingFor,
    ordering: e.running,
  };
}
