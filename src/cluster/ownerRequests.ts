// Start/stop/suspend/cordon/uncordon of a Machine asked on any node reach its owner as a request
// on `machines.<owner>` and come back with the owner's answer (spec section 6, issue 5 scope 5):
// only the owner runs a Machine's driver, so two nodes never race on one process.

import type { ApiReply, MachineAction } from '../admin/machinesApi.ts';
import type { MachineDriver, MachineRuntime } from '../machines/runtime.ts';
import { subjectToken } from '../store/keys.ts';
import { asMachineDoc, type MachineDoc } from './records.ts';
import type { ClusterStore } from '../store/types.ts';

export interface OwnerRequest {
  readonly app: string;
  readonly id: string;
  readonly action: MachineAction;
  readonly body: Record<string, unknown>;
}

/** The owner's API answer, and its record of the Machine after the action (fresher than the store's yet). */
export interface OwnerReply extends ApiReply {
  readonly record: MachineDoc | null;
}

const ACTIONS: readonly MachineAction[] = ['start', 'stop', 'suspend', 'cordon', 'uncordon'];

/**
 * A request as it arrived from the store, checked: any process that can publish on the subject
 * can send one, so a malformed one gets a 400 answer instead of reaching the manager.
 */
export function asOwnerRequest(v: unknown): OwnerRequest | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const r = v as Record<string, unknown>;
  const body = r['body'] ?? {};
  if (typeof r['app'] !== 'string' || typeof r['id'] !== 'string') return null;
  if (typeof r['action'] !== 'string' || !(ACTIONS as readonly string[]).includes(r['action'])) return null;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null;
  return { app: r['app'], id: r['id'], action: r['action'] as MachineAction, body: body as Record<string, unknown> };
}

export function ownerSubject(nodeId: string): string {
  return `machines.${subjectToken(nodeId)}`;
}

/** Sends an action to the owner; the owner's reply, or throws StoreError (no-responder, timeout, unavailable). */
export function askOwner(store: ClusterStore, owner: string, req: OwnerRequest, timeoutMs: number): Promise<OwnerReply> {
  return store.request<OwnerReply>(ownerSubject(owner), req, timeoutMs);
}

function reasonOf(r: OwnerReply): string {
  const e = (r.body as { error?: { code?: string; reason?: string } } | null)?.error;
  return e === undefined ? `owner answered ${r.status}` : `${e.code ?? ''} ${e.reason ?? ''}`.trim();
}

/**
 * The driver of another node's Machine on this node: what autostart calls when a request here
 * wants a sleeping Machine that another node runs. The owner does the work; the addresses it
 * reports are copied so this node can route at once.
 */
export class RemoteDriver implements MachineDriver {
  readonly kind = 'process' as const;
  // The owner knows whether its driver can; a refusal comes back as an error.
  readonly canSuspend = true;
  private readonly store: ClusterStore;
  private readonly timeoutMs: () => number;
  private readonly adopt: (record: MachineDoc) => void;

  /** `adopt` takes the owner's record from a reply like one from the store (if it is newer). */
  constructor(store: ClusterStore, timeoutMs: () => number, adopt: (record: MachineDoc) => void) {
    this.store = store;
    this.timeoutMs = timeoutMs;
    this.adopt = adopt;
  }

  private async act(m: MachineRuntime, action: MachineAction): Promise<void> {
    const r = await askOwner(this.store, m.owner!, { app: m.app, id: m.id, action, body: {} }, this.timeoutMs());
    if (r.status < 200 || r.status > 299) throw new Error(`node ${m.owner} refused to ${action} Machine ${m.id}: ${reasonOf(r)}`);
    // Address, ports and health as the owner has them now: a started Machine gets new ports and
    // is not ready until the owner says so (routing on a stale health flag gave 502s).
    const record = asMachineDoc(r.record);
    if (record !== null && record.id === m.id) this.adopt(record);
  }

  start(m: MachineRuntime): Promise<void> {
    return this.act(m, 'start');
  }

  stop(m: MachineRuntime): Promise<void> {
    return this.act(m, 'stop');
  }

  suspend(m: MachineRuntime): Promise<void> {
    return this.act(m, 'suspend');
  }

  resume(m: MachineRuntime): Promise<void> {
    return this.act(m, 'start');
  }
}
