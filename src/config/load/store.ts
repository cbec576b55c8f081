// `[store]` of the node config → StoreSettings: the embedded store (the default: this node's app
// files are the config) or NATS JetStream shared by a cluster.
//
// Like acme.ts, this module reads and types the keys and does what needs the loader's context
// (secrets from the environment, paths relative to the config file); the rules between values
// live in resolveNatsConfig (src/store/config.ts), next to the code that relies on them, and its
// refusals are mapped back to the TOML key and line in storeErrors.ts.
//
// NodeConfig.store stays unresolved (defaults of the optional waits not filled in): the daemon
// resolves it when it opens the store, and compares JSON.stringify of the settings across
// reloads, so absent keys are left out rather than present as undefined.


import { resolveNatsConfig } from '../../store/config.ts';
import { StoreError } from '../../store/errors.ts';
import type { StoreSettings } from '../types.ts';
import { readServers } from './natsServers.ts';
import type { Env } from './node.ts';
import type { Section } from './section.ts';
import { failAtStoreKey, type WrittenKeys } from './storeErrors.ts';
import { NATS_DURATIONS, NATS_KEYS } from './storeKeys.ts';
import { ENV_NAME, ENV_NAME_RULE } from './valueRules.ts';

export type NatsSettings = Extract<StoreSettings, { kind: 'nats' }>;

export const STORE_DEFAULTS = Object.freeze({ bucketPrefix: 'petrel', replicas: 1 });

export function readStore(s: Section, configDir: string, env: Env): StoreSettings {
  const kind = s.oneOf('kind', ['embedded', 'nats'] as const);
  return kind === 'nats' ? readNats(s, configDir, env) : readEmbedded(s, kind !== undefined);
}

/**
 * The embedded store has nothing to set: a NATS key here is a config written for a cluster (or a
 * forgotten `kind = "nats"`), and ignoring it would leave the node silently on its own.
 */
function readEmbedded(s: Section, kindWritten: boolean): StoreSettings {
  const natsOnly = NATS_KEYS.filter((key) => s.has(key)).sort((a, b) => s.lineOf(s.at(a)) - s.lineOf(s.at(b)));
  s.finish();
  const first = natsOnly[0];
  if (first !== undefined) {
    const kind = kindWritten ? 'kind = "embedded"' : 'no kind, so the default "embedded"';
    s.fail(first, `only applies to kind = "nats" (this [store] has ${kind}); keys that only apply to nats: ${NATS_KEYS.join(', ')}`);
  }
  return { kind: 'embedded' };
}

function readNats(s: Section, configDir: string, env: Env): NatsSettings {
  const written: WrittenKeys = {};
  const servers = readServers(s);
  const token = readSecret(s, 'token', env, written);
  const user = readNonEmpty(s, 'user');
  const pass = readSecret(s, 'pass', env, written);
  const credsFile = readCredsFile(s, configDir);
  const bucketPrefix = s.string('bucket_prefix') ?? STORE_DEFAULTS.bucketPrefix;
  // 1, 3 or 5 is resolveNatsConfig's rule; only the type is checked here.
  const replicas = s.integer('replicas', 1) ?? STORE_DEFAULTS.replicas;
  const waits: Record<string, number | undefined> = {};
  for (const [field, key] of Object.entries(NATS_DURATIONS)) waits[field] = s.durationMs(key, 'ms');
  const maxPingOut = s.integer('max_ping_out', 1);
  s.finish();
  // A creds file carries its own identity (user JWT and nkey seed); with a token or user/pass as
  // well, which one the server goes by depends on its auth mode, not on this file.
  if (credsFile !== undefined && (token !== undefined || user !== undefined)) {
    s.fail('creds_file', `set creds_file alone: it replaces ${token !== undefined ? written.token : 'user/pass'}`);
  }
  const settings = withoutUndefined({
    kind: 'nats',
    servers,
    token,
    user,
    pass,
    credsFile,
    bucketPrefix,
    replicas,
    ...waits,
    maxPingOut,
  }) as NatsSettings;
  try {
    resolveNatsConfig(settings);
  } catch (error) {
    if (!(error instanceof StoreError) || error.code !== 'invalid') throw error;
    failAtStoreKey(s, error, settings, written);
  }
  return settings;
}

function readNonEmpty(s: Section, key: string): string | undefined {
  const value = s.string(key);
  if (value === '') s.fail(key, 'must not be empty');
  return value;
}

/**
 * `<key>` inline or `<key>_env` naming an environment variable, read now. Unlike admin.token_env,
 * an unset variable is an error: there is no anonymous fallback that would work against a server
 * that wants credentials, and the refusal would only show when the node connects.
 */
function readSecret(s: Section, key: 'token' | 'pass', env: Env, written: WrittenKeys): string | undefined {
  const envKey = `${key}_env`;
  const inline = readNonEmpty(s, key);
  const variable = s.matching(envKey, ENV_NAME, ENV_NAME_RULE);
  if (inline !== undefined && variable !== undefined) s.fail(envKey, `set either ${key} or ${envKey}, not both`);
  if (variable === undefined) {
    if (inline !== undefined) written[key] = key;
    return inline;
  }
  written[key] = envKey;
  const value = env[variable];
  if (value === undefined || value === '') s.fail(envKey, `environment variable ${variable} is ${value === undefined ? 'not set' : 'empty'}`);
  return value;
}

/** `creds_file`: the store reads it at every connect; a key file given by mistake fails now. */
function readCredsFile(s: Section, configDir: string): string | undefined {
  return s.referencedFile('creds_file', configDir, 'a readable NATS .creds file', '-----BEGIN NATS USER JWT-----');
}

function withoutUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
