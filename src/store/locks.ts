// Locks with expiry on top of create/compare-and-set, shared by both stores. NATS 2.9 KV has no
// per-key TTL, so the expiry lives in the value and an expired lock is taken over with a
// compare-and-set on the revision we read: of two nodes racing for it, exactly one update wins.
// Expiry compares wall clocks of different nodes, so clock skew must stay well below the TTLs
// used (ACME issuance locks hold for minutes; NTP keeps skew at milliseconds).

import { StoreError, isStoreError } from './errors.ts';
import type { DocumentStore, LockResult } from './types.ts';

interface LockDoc {
  readonly owner: string;
  readonly expiresAt: number;
}

// Each conflict means another node changed the lock between our read and write; after a few the
// honest answer is "someone else is busy with it".
const ATTEMPTS = 3;

function asLock(value: unknown): LockDoc | null {
  const v = value as Partial<LockDoc> | null;
  return typeof v?.owner === 'string' && typeof v.expiresAt === 'number' ? (v as LockDoc) : null;
}

function checkOwner(owner: unknown): asserts owner is string {
  if (typeof owner !== 'string' || owner.length === 0) throw new StoreError('invalid', 'lock owner must be a non-empty string');
}

export async function tryLock(store: DocumentStore, name: string, owner: string, ttlMs: number): Promise<LockResult> {
  checkOwner(owner);
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new StoreError('invalid', 'lock ttlMs must be a positive number');
  let seen: LockDoc | null = null;
  for (let i = 0; i < ATTEMPTS; i++) {
    const cur = await store.get('locks', name);
    const expiresAt = Date.now() + ttlMs;
    const mine: LockDoc = { owner, expiresAt };
    try {
      if (cur === null) {
        await store.create('locks', name, mine);
        return { acquired: true, owner, expiresAt };
      }
      // A value that is not a lock (written by hand or an older version) is treated as expired.
      seen = asLock(cur.value);
      if (seen === null || seen.owner === owner || seen.expiresAt <= Date.now()) {
        await store.update('locks', name, mine, cur.revision);
        return { acquired: true, owner, expiresAt };
      }
      return { acquired: false, owner: seen.owner, expiresAt: seen.expiresAt };
    } catch (err) {
      if (!isStoreError(err, 'conflict')) throw err;
    }
  }
  return { acquired: false, owner: seen?.owner ?? '', expiresAt: seen?.expiresAt ?? 0 };
}

export async function unlock(store: DocumentStore, name: string, owner: string): Promise<boolean> {
  checkOwner(owner);
  const cur = await store.get('locks', name);
  if (cur === null || asLock(cur.value)?.owner !== owner) return false;
  try {
    // With the revision we read: if it expired and someone took it over meanwhile, theirs stays.
    await store.delete('locks', name, cur.revision);
    return true;
  } catch (err) {
    if (isStoreError(err, 'conflict')) return false;
    throw err;
  }
}
