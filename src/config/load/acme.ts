// `[acme]` of the node config (spec section 7) → AcmeSettings, or null when the table is absent.
//
// This module reads and types the TOML keys and does what needs the loader's context (paths
// relative to the config file, the environment); defaults and the rules between values live in
// resolveAcmeSettings (src/tls/acme/config.ts), next to the code that relies on them. Its refusals
// name a camelCase field, so they are mapped back to the TOML key here: every error still names
// file, key path and line.


import { AcmeConfigError, resolveAcmeSettings } from '../../tls/acme/config.ts';
import { keyPath } from '../toml.ts';
import type { AcmeSettingsInput, ChallengeType } from '../../tls/acme/config.ts';
import type { AcmeSettings, ExternalAccountBinding } from '../types.ts';
import type { Env } from './node.ts';
import type { Section } from './section.ts';
import { ENV_NAME, ENV_NAME_RULE } from './valueRules.ts';

/** AcmeSettings field (as AcmeConfigError.key names it) → its key (dotted path) under `[acme]`. */
const TOML_KEYS: Readonly<Record<string, string>> = {
  directoryUrl: 'directory_url',
  email: 'email',
  termsAgreed: 'terms_agreed',
  'eab.kid': 'eab.kid',
  'eab.hmacKey': 'eab.hmac_key',
  caFile: 'ca_file',
  challenges: 'challenges',
  renewFraction: 'renew_fraction',
  renewJitterMs: 'renew_jitter',
  backoffMinMs: 'backoff_min',
  backoffMaxMs: 'backoff_max',
  ordersPerHour: 'orders_per_hour',
  onDemandPerMinute: 'on_demand_per_minute',
  onDemandBurst: 'on_demand_burst',
  onDemandHostIntervalMs: 'on_demand_host_interval',
  concurrency: 'concurrency',
  requestTimeoutMs: 'request_timeout',
  orderTimeoutMs: 'order_timeout',
};

interface EabReading {
  readonly eab: ExternalAccountBinding;
  /** The variable the HMAC key came from, so a refused key points at `hmac_key_env`. */
  readonly hmacKeyEnv: string | undefined;
}

export function readAcme(s: Section, configDir: string, env: Env): AcmeSettings | null {
  if (!s.present) return null;
  const eab = readEab(s.section('eab'), env);
  const input: AcmeSettingsInput = {
    directoryUrl: s.require('directory_url', s.string('directory_url')),
    email: s.string('email'),
    termsAgreed: s.boolean('terms_agreed'),
    eab: eab?.eab,
    caFile: readCaFile(s, configDir),
    // Names and duplicates are checked by resolveAcmeSettings, the one list of supported types.
    challenges: s.stringList('challenges') as ChallengeType[] | undefined,
    renewFraction: s.number('renew_fraction', 0, 1),
    // Durations follow [limits]: a bare number is milliseconds. Zero jitter and a zero per-host
    // interval are meaningful (no spreading, no per-host throttle); zero timeouts are not.
    renewJitterMs: s.durationMs('renew_jitter', 'ms', true),
    backoffMinMs: s.durationMs('backoff_min', 'ms'),
    backoffMaxMs: s.durationMs('backoff_max', 'ms'),
    ordersPerHour: s.integer('orders_per_hour', 1),
    onDemandPerMinute: s.number('on_demand_per_minute', 0, Infinity),
    onDemandBurst: s.integer('on_demand_burst', 1),
    onDemandHostIntervalMs: s.durationMs('on_demand_host_interval', 'ms', true),
    concurrency: s.integer('concurrency', 1),
    requestTimeoutMs: s.durationMs('request_timeout', 'ms'),
    orderTimeoutMs: s.durationMs('order_timeout', 'ms'),
  };
  s.finish();
  try {
    return resolveAcmeSettings(input);
  } catch (error) {
    if (!(error instanceof AcmeConfigError)) throw error;
    return failAtKey(s, error, eab?.hmacKeyEnv);
  }
}

/** `[acme.eab]`: `kid` and the HMAC key, inline (`hmac_key`) or from a variable (`hmac_key_env`). */
function readEab(s: Section, env: Env): EabReading | null {
  if (!s.present) return null;
  const kid = s.require('kid', s.string('kid'));
  const inline = s.string('hmac_key');
  const hmacKeyEnv = s.matching('hmac_key_env', ENV_NAME, ENV_NAME_RULE);
  s.finish();
  if (inline !== undefined && hmacKeyEnv !== undefined) s.fail('hmac_key_env', 'set either hmac_key or hmac_key_env, not both');
  if (hmacKeyEnv === undefined) {
    if (inline === undefined) s.fail('hmac_key', 'missing required key: set hmac_key, or hmac_key_env to read it from an environment variable');
    return { eab: { kid, hmacKey: inline }, hmacKeyEnv };
  }
  // Unlike admin.token_env, an unset variable cannot fall back to anything: the CA refuses an
  // account without its binding, and that would only show up at the first order.
  const fromEnv = env[hmacKeyEnv];
  if (fromEnv === undefined || fromEnv === '') {
    s.fail('hmac_key_env', `environment variable ${hmacKeyEnv} is ${fromEnv === undefined ? 'not set' : 'empty'}`);
  }
  return { eab: { kid, hmacKey: fromEnv }, hmacKeyEnv };
}

/**
 * `ca_file`, relative to the config file's directory. Read now, so that a wrong path fails
 * `check-config` and the start instead of the first order, possibly hours later.
 */
function readCaFile(s: Section, configDir: string): string | undefined {
  // The same check the ACME client makes when it starts (client.ts), moved to load time.
  return s.referencedFile('ca_file', configDir, "a readable PEM file with the CA's certificates", '-----BEGIN CERTIFICATE-----');
}

/** Re-throws a resolveAcmeSettings refusal as a ConfigError at the TOML key it is about. */
function failAtKey(s: Section, error: AcmeConfigError, hmacKeyEnv: string | undefined): never {
  const fromEnv = error.key === 'eab.hmacKey' && hmacKeyEnv !== undefined;
  const key = fromEnv ? 'eab.hmac_key_env' : (TOML_KEYS[error.key] ?? error.key);
  // The message reads "acme <field>: <reason>"; the key is named by the ConfigError already, and
  // field names in the reason ("must not be below backoffMinMs") become the keys a user writes.
  let reason = error.message.replace(`acme ${error.key}: `, '');
  for (const [field, tomlKey] of Object.entries(TOML_KEYS)) reason = reason.replace(new RegExp(`\\b${field}\\b`, 'g'), tomlKey);
  if (fromEnv) reason = `the value of ${hmacKeyEnv} ${reason}`;
  // "eab.kid" is two keys deep, not one key with a dot in its name.
  return s.failAt(key.split('.').reduce(keyPath, s.path), reason);
}
