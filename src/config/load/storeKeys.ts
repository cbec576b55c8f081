// The `[store]` keys of kind = "nats" and the StoreSettings fields they fill, shared by the reader
// (store.ts) and the mapping of resolveNatsConfig's refusals back to keys (storeErrors.ts).

/** Field → key of the waits; their defaults are NATS_DEFAULTS in src/store/config.ts. */
export const NATS_DURATIONS = {
  connectTimeoutMs: 'connect_timeout',
  opTimeoutMs: 'op_timeout',
  requestTimeoutMs: 'request_timeout',
  pingIntervalMs: 'ping_interval',
  reconnectMinMs: 'reconnect_min',
  reconnectMaxMs: 'reconnect_max',
  watchCheckMs: 'watch_check',
} as const;

/** Every StoreSettings field of kind "nats" → its key under `[store]`. */
export const NATS_FIELDS: Readonly<Record<string, string>> = {
  servers: 'servers',
  token: 'token',
  user: 'user',
  pass: 'pass',
  credsFile: 'creds_file',
  bucketPrefix: 'bucket_prefix',
  replicas: 'replicas',
  ...NATS_DURATIONS,
  maxPingOut: 'max_ping_out',
};

/** Every key that only means something with kind = "nats" (token_env and pass_env included). */
export const NATS_KEYS: readonly string[] = [
  'servers',
  'token',
  'token_env',
  'user',
  'pass',
  'pass_env',
  'creds_file',
  'bucket_prefix',
  'replicas',
  ...Object.values(NATS_DURATIONS),
  'max_ping_out',
];
