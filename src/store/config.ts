// The store's configuration and the one factory the daemon calls. Every wait has a key and a
// default here (architecture habit 5); the TOML loader maps the `[store]` section onto this shape.

import { EmbeddedStore, type EmbeddedHub } from './embedded.ts';
import { StoreError } from './errors.ts';
import { NatsStore } from './nats.ts';
import type { StoreSettings } from '../config/types.ts';
import type { ClusterStore, StoreLog } from './types.ts';

export interface EmbeddedStoreConfig {
  readonly kind: 'embedded';
  readonly requestTimeoutMs?: number;
}

/** The `[store]` settings of the node config (shape and comments in config/types.ts) and the client's name. */
export type NatsStoreConfig = Extract<StoreSettings, { readonly kind: 'nats' }> & {
  /** Client name shown by the server's monitoring (the node id). */
  readonly name?: string;
};

export type StoreConfig = EmbeddedStoreConfig | NatsStoreConfig;

export type ResolvedNatsConfig = Required<Omit<NatsStoreConfig, 'token' | 'user' | 'pass' | 'credsFile'>> &
  Pick<NatsStoreConfig, 'token' | 'user' | 'pass' | 'credsFile'>;

export const NATS_DEFAULTS = Object.freeze({
  name: 'petrel',
  connectTimeoutMs: 5000,
  opTimeoutMs: 5000,
  requestTimeoutMs: 5000,
  // Detects a silently dead server (no RST) within ~10-15 s; a killed one is noticed at once.
  pingIntervalMs: 5000,
  maxPingOut: 2,
  reconnectMinMs: 250,
  reconnectMaxMs: 5000,
  // One stream-info request per watched collection per check; a stall heals within ~2 checks.
  watchCheckMs: 2000,
});

const PREFIX = /^[A-Za-z0-9][-_A-Za-z0-9]{0,31}$/;

export function resolveNatsConfig(cfg: NatsStoreConfig): ResolvedNatsConfig {
  const r: ResolvedNatsConfig = { ...NATS_DEFAULTS, ...stripUndefined(cfg) };
  if (r.servers.length === 0) throw new StoreError('invalid', 'store.servers must list at least one NATS server');
  if (!PREFIX.test(r.bucketPrefix)) {
    throw new StoreError('invalid', 'store.bucket_prefix must be 1-32 characters of [-_A-Za-z0-9], starting with a letter or digit');
  }
  if (![1, 3, 5].includes(r.replicas)) throw new StoreError('invalid', 'store.replicas must be 1, 3 or 5');
  if (r.token !== undefined && r.user !== undefined) throw new StoreError('invalid', 'store: token and user/pass are exclusive');
  if ((r.user === undefined) !== (r.pass === undefined)) throw new StoreError('invalid', 'store: user and pass go together');
  for (const k of ['connectTimeoutMs', 'opTimeoutMs', 'requestTimeoutMs', 'pingIntervalMs', 'maxPingOut', 'reconnectMinMs', 'reconnectMaxMs', 'watchCheckMs'] as const) {
    if (!Number.isFinite(r[k]) || r[k] <= 0) throw new StoreError('invalid', `store.${k} must be a positive number`);
  }
  if (r.reconnectMaxMs < r.reconnectMinMs) throw new StoreError('invalid', 'store.reconnectMaxMs must be >= reconnectMinMs');
  return r;
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * Opens the configured store. For NATS this waits for the first connection and the buckets
 * (bounded by the timeouts) and fails with `unavailable` when it cannot get them: there is no
 * last known state to serve before the first sync. `hub` lets several embedded handles share
 * state (several nodes in one process).
 */
export async function openStore(cfg: StoreConfig, log: StoreLog, hub?: EmbeddedHub): Promise<ClusterStore> {
  if (cfg.kind === 'embedded') {
    return new EmbeddedStore({ log, hub, requestTimeoutMs: cfg.requestTimeoutMs });
  }
  return NatsStore.open(resolveNatsConfig(cfg), log);
}
