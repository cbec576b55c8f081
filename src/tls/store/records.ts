// Shape checks of the records a certificate store keeps (issuance state, ACME account, pair
// metadata): the same for every implementation, for what callers put and what is read back
// from disk or the cluster, where anything may have been edited or truncated.
import { createPrivateKey } from 'node:crypto';
import type { AcmeAccountRecord, CertMeta, IssuanceState } from './certStore.ts';

export const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStrOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

/** Returns the problem with `m` as certificate metadata, or null when it is some. */
export function metaProblem(m: unknown): string | null {
  const v = m as Partial<Record<keyof CertMeta, unknown>> | null;
  if (v === null || typeof v !== 'object') return 'not an object';
  if (!Array.isArray(v.names) || !v.names.every((n) => typeof n === 'string')) return 'names must be a list of strings';
  if (typeof v.issuer !== 'string') return 'issuer must be a string';
  if (typeof v.fingerprint256 !== 'string') return 'fingerprint256 must be a string';
  if (!isNum(v.notBefore) || !isNum(v.notAfter) || !isNum(v.storedAt)) return 'notBefore, notAfter and storedAt must be numbers';
  return null;
}

export function copyMeta(m: CertMeta): CertMeta {
  const { issuer, notBefore, notAfter, fingerprint256, storedAt } = m;
  return Object.freeze({ names: Object.freeze([...m.names]), issuer, notBefore, notAfter, fingerprint256, storedAt });
}

/** Returns the problem with `s` as an issuance state, or null when it is one. */
export function stateProblem(s: unknown): string | null {
  const v = s as Partial<Record<keyof IssuanceState, unknown>> | null;
  if (v === null || typeof v !== 'object') return 'not an object';
  if (v.status !== 'pending' && v.status !== 'active' && v.status !== 'failed') return 'status must be pending, active or failed';
  if (!isStrOrNull(v.lastError)) return 'lastError must be a string or null';
  if (!isNum(v.failures) || !Number.isInteger(v.failures) || v.failures < 0) return 'failures must be an integer >= 0';
  if (v.nextAttemptAt !== null && !isNum(v.nextAttemptAt)) return 'nextAttemptAt must be a number or null';
  if (!isNum(v.updatedAt)) return 'updatedAt must be a number';
  return null;
}

export function copyState(s: IssuanceState): IssuanceState {
  const { hostname, status, lastError, failures, nextAttemptAt, updatedAt } = s;
  return Object.freeze({ hostname, status, lastError, failures, nextAttemptAt, updatedAt });
}

/** Returns the problem with `a` as an account record, or null when it is one. */
export function accountProblem(a: unknown): string | null {
  const v = a as Partial<Record<keyof AcmeAccountRecord, unknown>> | null;
  if (v === null || typeof v !== 'object') return 'not an object';
  if (typeof v.directoryUrl !== 'string' || !/^https?:\/\//.test(v.directoryUrl) || !URL.canParse(v.directoryUrl)) return 'directoryUrl must be an http(s) URL';
  if (typeof v.accountKeyPem !== 'string') return 'accountKeyPem must be a PEM string';
  try {
    createPrivateKey(v.accountKeyPem);
  } catch (err) {
    return `accountKeyPem is not a readable unencrypted PEM private key (${(err as Error).message})`;
  }
  if (!isStrOrNull(v.accountUrl)) return 'accountUrl must be a string or null';
  if (!isStrOrNull(v.email)) return 'email must be a string or null';
  if (!isNum(v.createdAt)) return 'createdAt must be a number';
  return null;
}

export function copyAccount(a: AcmeAccountRecord): AcmeAccountRecord {
  const { directoryUrl, accountKeyPem, accountUrl, email, createdAt } = a;
  return Object.freeze({ directoryUrl, accountKeyPem, accountUrl, email, createdAt });
}

/** How much of the ACME order log a store keeps: the cap is hourly, a day is plenty. */
export const ORDER_LOG_KEEP_MS = 24 * 3600_000;
