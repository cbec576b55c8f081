// ACME settings: the typed, validated shape the manager runs on, with defaults. The config loader
// maps the TOML section onto AcmeSettingsInput (snake_case keys → these names) and calls
// resolveAcmeSettings; every refusal names the key so the loader can point at the line.

import type { AcmeSettings, ChallengeType } from '../../config/types.ts';

// The shapes live in config/types.ts so that the config loader can produce them.
export type { AcmeSettings, ChallengeType, ExternalAccountBinding } from '../../config/types.ts';
export const CHALLENGE_TYPES: readonly ChallengeType[] = ['tls-alpn-01', 'http-01'];

export type AcmeSettingsInput = Partial<AcmeSettings> & Pick<AcmeSettings, 'directoryUrl'>;

export const ACME_DEFAULTS = Object.freeze({
  email: null,
  termsAgreed: false,
  eab: null,
  caFile: null,
  challenges: Object.freeze(['tls-alpn-01', 'http-01'] as ChallengeType[]),
  renewFraction: 2 / 3,
  renewJitterMs: 3_600_000,
  backoffMinMs: 60_000,
  backoffMaxMs: 3_600_000,
  // Let's Encrypt allows 300 new orders per 3 h per account; a proxy fleet needs far fewer.
  ordersPerHour: 30,
  onDemandPerMinute: 10,
  onDemandBurst: 5,
  onDemandHostIntervalMs: 60_000,
  concurrency: 2,
  requestTimeoutMs: 30_000,
  orderTimeoutMs: 180_000,
}) satisfies Omit<AcmeSettings, 'directoryUrl'>;

/** A refused setting; `key` is the AcmeSettings field. */
export class AcmeConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(`acme ${key}: ${message}`);
    this.name = 'AcmeConfigError';
    this.key = key;
  }
}

function positive(key: string, v: number, integer: boolean): number {
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new AcmeConfigError(key, `must be a positive ${integer ? 'integer' : 'number'}, got ${v}`);
  }
  return v;
}

// Deliberately loose: the CA is the judge of an address; this only catches what cannot be one
// (a space, a comma-separated list, a missing @) before it reaches a `mailto:` URI.
const EMAIL = /^[^\s@,;<>]+@[^\s@,;<>]+\.[^\s@,;<>]+$/;
const BASE64URL = /^[A-Za-z0-9_-]+={0,2}$/;

/** Defaults filled in, every value checked; throws AcmeConfigError. The result is frozen. */
export function resolveAcmeSettings(input: AcmeSettingsInput): AcmeSettings {
  // A key present with `undefined` (an absent TOML key mapped through) takes the default.
  const given = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as AcmeSettingsInput;
  const s = { ...ACME_DEFAULTS, ...given };

  let url: URL;
  try {
    url = new URL(s.directoryUrl);
  } catch {
    throw new AcmeConfigError('directoryUrl', `not a URL: ${JSON.stringify(s.directoryUrl)}`);
  }
  // RFC 8555 §6.1: ACME is HTTPS only.
  if (url.protocol !== 'https:') {
    throw new AcmeConfigError('directoryUrl', `must be an https:// URL (RFC 8555 §6.1), got ${url.protocol}`);
  }
  if (s.termsAgreed !== true) {
    throw new AcmeConfigError(
      'termsAgreed',
      "the CA's terms of service must be agreed to (RFC 8555 §7.3 termsOfServiceAgreed); read them and set it to true",
    );
  }
  if (s.email !== null && !EMAIL.test(s.email)) {
    throw new AcmeConfigError('email', `not an email address: ${JSON.stringify(s.email)}`);
  }
  if (s.eab !== null) {
    if (typeof s.eab.kid !== 'string' || s.eab.kid === '') throw new AcmeConfigError('eab.kid', 'must be a non-empty string');
    if (typeof s.eab.hmacKey !== 'string' || !BASE64URL.test(s.eab.hmacKey)) {
      throw new AcmeConfigError('eab.hmacKey', 'must be the base64url HMAC key the CA issued');
    }
  }
  if (s.caFile !== null && (typeof s.caFile !== 'string' || s.caFile === '')) {
    throw new AcmeConfigError('caFile', 'must be a file path');
  }
  if (s.challenges.length === 0) throw new AcmeConfigError('challenges', 'must name at least one challenge type');
  for (const c of s.challenges) {
    if (!CHALLENGE_TYPES.includes(c)) {
      throw new AcmeConfigError('challenges', `unsupported type ${JSON.stringify(c)} (supported: ${CHALLENGE_TYPES.join(', ')}; DNS-01 is not)`);
    }
  }
  if (new Set(s.challenges).size !== s.challenges.length) throw new AcmeConfigError('challenges', 'lists a type twice');
  if (!(s.renewFraction > 0 && s.renewFraction < 1)) {
    throw new AcmeConfigError('renewFraction', `must be between 0 and 1 (exclusive), got ${s.renewFraction}`);
  }
  if (!(Number.isFinite(s.renewJitterMs) && s.renewJitterMs >= 0)) {
    throw new AcmeConfigError('renewJitterMs', `must be zero or more, got ${s.renewJitterMs}`);
  }
  positive('backoffMinMs', s.backoffMinMs, false);
  positive('backoffMaxMs', s.backoffMaxMs, false);
  if (s.backoffMaxMs < s.backoffMinMs) throw new AcmeConfigError('backoffMaxMs', 'must not be below backoffMinMs');
  positive('ordersPerHour', s.ordersPerHour, true);
  positive('onDemandPerMinute', s.onDemandPerMinute, false);
  positive('onDemandBurst', s.onDemandBurst, true);
  if (!(Number.isFinite(s.onDemandHostIntervalMs) && s.onDemandHostIntervalMs >= 0)) {
    throw new AcmeConfigError('onDemandHostIntervalMs', `must be zero or more, got ${s.onDemandHostIntervalMs}`);
  }
  positive('concurrency', s.concurrency, true);
  positive('requestTimeoutMs', s.requestTimeoutMs, false);
  positive('orderTimeoutMs', s.orderTimeoutMs, false);

  return Object.freeze({
    ...s,
    directoryUrl: url.href,
    eab: s.eab === null ? null : Object.freeze({ kid: s.eab.kid, hmacKey: s.eab.hmacKey }),
    challenges: Object.freeze([...s.challenges]),
  });
}
