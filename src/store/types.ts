// The cluster store: what every node shares (apps, Machines, nodes, certificates, ACME state,
// locks) and how nodes talk to each other (publish/subscribe, request/reply). Two
// implementations pass one conformance suite (test/helpers/store-conformance.ts): `embedded`
// (in process, a hub several handles can share) and `nats` (JetStream KV + core NATS).
//
// Choices, and why:
// - Fixed collections, not free-form bucket names: the NATS implementation opens one KV bucket
//   per collection at start-up, so a typo is a type error rather than a new bucket.
// - Values are JSON documents. Writes take `unknown` (serialised with JSON.stringify, refused with
//   `invalid` when that yields nothing or more than MAX_VALUE_BYTES) because typed records declared
//   as interfaces do not fit a recursive Json type. Reads return deep-frozen values typed by a
//   generic that is NOT checked: callers that cannot trust the writer validate. Both
//   implementations go through the same JSON round trip, so neither hands out shared mutable
//   objects and a test on the embedded store sees what NATS would deliver.
// - Keys are natural strings (hostnames like `*.example.com`, app names, Machine ids); the NATS
//   implementation encodes them for KV (src/store/keys.ts). Both refuse the same bad keys.
// - Revisions are numbers that grow with every write to a collection (NATS: the stream
//   sequence). Compare-and-set (`update`, `delete` with a revision) is how callers avoid lost
//   updates; locks are built on it.
// - Watches deliver one `sync` with the whole collection, then `put`/`delete` in order, always
//   asynchronously. After an outage the NATS implementation re-lists and delivers only the
//   differences as ordinary put/delete events, so a consumer has one code path and converges
//   without a restart.

export const COLLECTIONS = ['apps', 'machines', 'nodes', 'certs', 'acme', 'challenges', 'locks'] as const;
export type Collection = (typeof COLLECTIONS)[number];

/** Longest accepted key, in UTF-8 bytes (a 253-character hostname fits). */
export const MAX_KEY_BYTES = 256;
/** Largest accepted value, in UTF-8 bytes of its JSON (NATS refuses messages over 1 MiB). */
export const MAX_VALUE_BYTES = 512 * 1024;

export interface Entry<T = unknown> {
  readonly key: string;
  /** Deep-frozen. */
  readonly value: T;
  readonly revision: number;
}

export type WatchEvent<T = unknown> =
  /** The whole collection as it was when the watch started (first event, exactly once). */
  | { readonly type: 'sync'; readonly entries: ReadonlyMap<string, Entry<T>> }
  | { readonly type: 'put'; readonly entry: Entry<T> }
  /** Only for keys the watcher had seen. */
  | { readonly type: 'delete'; readonly key: string; readonly revision: number };

export type WatchListener<T = unknown> = (event: WatchEvent<T>) => void;

export interface StoreStatus {
  readonly connected: boolean;
  /** Date.now() when the transition was seen. */
  readonly at: number;
  /** Which server was lost or regained, or why (for the log line). */
  readonly detail: string;
}

export interface LockResult {
  readonly acquired: boolean;
  /** The holder after this call: `owner` when acquired, else whoever holds it. */
  readonly owner: string;
  /** When the holder's claim lapses (epoch ms); comparable only across nodes with synced clocks. */
  readonly expiresAt: number;
}

export type Unsubscribe = () => void;

/** The part of a pino logger the store uses (so tests can pass anything shaped like it). */
export interface StoreLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The keyed-document half, which locks are built on. */
export interface DocumentStore {
  get<T = unknown>(coll: Collection, key: string): Promise<Entry<T> | null>;
  /** Writes unconditionally; the new revision. */
  put(coll: Collection, key: string, value: unknown): Promise<number>;
  /** Writes only if the key does not exist (or was deleted); else `conflict`. */
  create(coll: Collection, key: string, value: unknown): Promise<number>;
  /** Writes only if the key's current revision is `expectedRevision`; else `conflict`. */
  update(coll: Collection, key: string, value: unknown, expectedRevision: number): Promise<number>;
  /** Deleting an absent key succeeds; with `expectedRevision`, a stale one is a `conflict`. */
  delete(coll: Collection, key: string, expectedRevision?: number): Promise<void>;
  /** Sorted. */
  keys(coll: Collection): Promise<string[]>;
  /** In key order. */
  list<T = unknown>(coll: Collection): Promise<Map<string, Entry<T>>>;
}

export interface ClusterStore extends DocumentStore {
  readonly kind: 'embedded' | 'nats';

  /**
   * The listener gets a `sync` with the whole collection, then the puts/deletes in revision
   * order, never synchronously from the call that caused it. A key's intermediate values may be
   * skipped (NATS keeps one value per key: one replaced before it was delivered is gone), never
   * the newest one. Listener exceptions are logged, not propagated.
   */
  watch<T = unknown>(coll: Collection, listener: WatchListener<T>): Unsubscribe;

  /**
   * Takes or renews the named lock for `ttlMs`: succeeds when free, expired, or already held by
   * `owner` (renewal). Built on create/compare-and-set with the expiry in the value, because
   * NATS 2.9 KV has no per-key TTL.
   */
  tryLock(name: string, owner: string, ttlMs: number): Promise<LockResult>;
  /** Releases the lock if `owner` holds it; true when it did. Anyone else's call is a no-op. */
  unlock(name: string, owner: string): Promise<boolean>;

  /**
   * Fire and forget to every subscriber of `subject` (dot-separated tokens of
   * `[-_=/A-Za-z0-9]`; use subjectToken() for natural strings). Throws `unavailable` while
   * disconnected rather than dropping silently; a message in flight when the connection drops
   * is lost (publish what changed, often, and a lost one is soon superseded).
   */
  publish(subject: string, data: unknown): void;
  /** `subject` may use `*` (one token) and `>` (the rest) as wildcards. */
  subscribe<T = unknown>(subject: string, handler: (data: T, subject: string) => void): Unsubscribe;
  /**
   * One answer from one server of `subject`. Fails with `no-responder` (nobody serves it),
   * `timeout`, `remote` (the handler threw; its message and code travel back), `unavailable`.
   */
  request<T = unknown>(subject: string, data: unknown, timeoutMs?: number): Promise<T>;
  /** Answers requests on `subject` (wildcards allowed); with several servers, one answers. */
  serve<T = unknown>(subject: string, handler: (data: T, subject: string) => unknown): Unsubscribe;

  /** Whether writes can reach the backend now. */
  connected(): boolean;
  /**
   * Called once per transition (never repeatedly while a reconnect keeps failing); only later
   * transitions, so read connected() for the state now. The embedded store never transitions.
   */
  onStatus(listener: (status: StoreStatus) => void): Unsubscribe;
  /** Idempotent; afterwards every call fails with `closed`. */
  close(): Promise<void>;
}
