// The certificate store: where certificates, the ACME account and issuance state live so that
// they survive restarts (spec section 7, issue 4). One interface, several implementations: the
// file store under `certs/` (fileStore.ts) for one node, the cluster store (NATS) for many. Every
// implementation passes the one conformance suite in test/helpers/cert-store-conformance.ts.
//
// Control plane only: the data plane never awaits a store. The ACME manager and the certificate
// loader read it and publish what the data plane needs (cert table, challenge answers) in memory.

/** `custom` = imported by an operator (API or a directory under certs/); wins over `acme`. */
export type StoredCertSource = 'acme' | 'custom';

/** What is known about a stored pair without parsing it again (kept next to it as metadata). */
export interface CertMeta {
  /** Lower-case DNS names of the leaf's subjectAltName (wildcards as `*.example.com`). */
  readonly names: readonly string[];
  /** The issuer's common name, else its organisation, else the whole issuer string. */
  readonly issuer: string;
  /** ms since epoch. */
  readonly notBefore: number;
  readonly notAfter: number;
  /** SHA-256 fingerprint of the leaf, `AB:CD:...` like X509Certificate.fingerprint256. */
  readonly fingerprint256: string;
  /** When this pair was written (ms since epoch). */
  readonly storedAt: number;
}

/** One certificate for one hostname: the leaf first, then the intermediates, and its key. */
export interface StoredCert {
  /** Lower-case; `*.example.com` for a wildcard (custom certificates only). */
  readonly hostname: string;
  readonly source: StoredCertSource;
  readonly chainPem: string;
  readonly keyPem: string;
  readonly meta: CertMeta;
}

/**
 * Issuance state of one hostname. On disk (not in memory) so that a restart carries on with the
 * same backoff and renewal schedule instead of ordering again.
 */
export interface IssuanceState {
  readonly hostname: string;
  /** pending: an order is wanted or running; active: a valid ACME certificate is stored;
   *  failed: the last attempt failed and `nextAttemptAt` says when the next one is due. */
  readonly status: 'pending' | 'active' | 'failed';
  readonly lastError: string | null;
  /** Consecutive failures (0 after a success): drives the exponential backoff. */
  readonly failures: number;
  /** ms since epoch of the next order or renewal attempt; null when nothing is scheduled. */
  readonly nextAttemptAt: number | null;
  readonly updatedAt: number;
}

/** The ACME account for one directory URL: created once, then reused. */
export interface AcmeAccountRecord {
  readonly directoryUrl: string;
  /** PEM private key of the account (PKCS#8 or SEC1/PKCS#1 as acme-client accepts). */
  readonly accountKeyPem: string;
  /** The account URL (`kid`) the CA returned; null until the account is registered. */
  readonly accountUrl: string | null;
  readonly email: string | null;
  readonly createdAt: number;
}

/** What changed, for watchers (another node's issuance, an import through the admin API). */
export type CertStoreChange =
  | { readonly kind: 'cert'; readonly hostname: string; readonly source: StoredCertSource }
  | { readonly kind: 'state'; readonly hostname: string }
  | { readonly kind: 'challenge'; readonly token: string }
  | { readonly kind: 'alpn-challenge'; readonly hostname: string };

/** A TLS-ALPN-01 answer: the self-signed certificate with the acmeIdentifier extension. */
export interface AlpnChallenge {
  readonly hostname: string;
  readonly certPem: string;
  readonly keyPem: string;
}

export interface CertStore {
  /** A short name for logs and status (`file:/path/certs`, `nats:bucket`). */
  readonly description: string;

  getAccount(directoryUrl: string): Promise<AcmeAccountRecord | null>;
  putAccount(account: AcmeAccountRecord): Promise<void>;

  /** The stored pair, or null. A pair is written whole or not at all (crash-safe). */
  getCert(hostname: string, source: StoredCertSource): Promise<StoredCert | null>;
  /**
   * Refuses an unusable pair with CertRejected (inspect.ts: inspectPair against `hostname` and
   * now) and a bad host name with StoreInputError (validate.ts). `meta` is recomputed from the
   * pair, `storedAt` being the time of the put; the caller's is ignored.
   */
  putCert(cert: StoredCert): Promise<void>;
  /** true when something was deleted. */
  deleteCert(hostname: string, source: StoredCertSource): Promise<boolean>;
  /** Every readable pair; one that cannot be read is skipped (the store reports it its own way). */
  listCerts(): Promise<StoredCert[]>;

  getState(hostname: string): Promise<IssuanceState | null>;
  putState(state: IssuanceState): Promise<void>;
  deleteState(hostname: string): Promise<boolean>;
  listStates(): Promise<IssuanceState[]>;

  /** Counts ACME orders per account so that the hourly cap holds across restarts. */
  recordOrder(directoryUrl: string, at: number): Promise<void>;
  /** Orders recorded for `directoryUrl` at or after `since` (older entries may be pruned). */
  ordersSince(directoryUrl: string, since: number): Promise<number>;

  /** HTTP-01: `token` → key authorization. Ephemeral; the cluster store shares them. */
  putChallenge(token: string, keyAuthorization: string): Promise<void>;
  getChallenge(token: string): Promise<string | null>;
  deleteChallenge(token: string): Promise<void>;
  /** TLS-ALPN-01: the challenge certificate for a hostname being validated. */
  putAlpnChallenge(challenge: AlpnChallenge): Promise<void>;
  getAlpnChallenge(hostname: string): Promise<AlpnChallenge | null>;
  deleteAlpnChallenge(hostname: string): Promise<void>;

  /**
   * Issuance lock: true when `owner` now holds `name` (it was free, expired, or already
   * `owner`'s), false when someone else holds it. Expiry bounds a crashed holder.
   */
  tryLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  unlock(name: string, owner: string): Promise<void>;

  /**
   * Called after every change this store learns of: those made through this handle, and (cluster
   * store) those made by other nodes. Returns the unsubscribe function.
   */
  watch(listener: (change: CertStoreChange) => void): () => void;

  close(): Promise<void>;
}
