// The certificate store on the cluster store (spec section 7, issue 5): what every node shares,
// so that a certificate one node ordered serves on all of them, a challenge answer one node
// published is answered by whichever node the CA reaches, and two nodes never order one name.
// Works over any ClusterStore (embedded for one process, NATS for a cluster); the file store
// (fileStore.ts) is the one-node alternative, and both pass test/helpers/cert-store-conformance.ts.
//
// Layout (collection: key → value). Natural keys; the NATS store encodes them for KV:
//
//   certs:      <source>/<hostname>           { hostname, source, chainPem, keyPem, meta }
//   acme:       account/<sha256(directoryUrl)> AcmeAccountRecord
//               state/<hostname>              IssuanceState + storedAt
//               orders/<sha256(directoryUrl)> { directoryUrl, times: [ms, ...] }   (the last day)
//   challenges: http01/<token>                { token, keyAuthorization, storedAt }
//               alpn/<hostname>               { hostname, certPem, keyPem, storedAt }
//   locks:      <name> as given (`acme:<hostname>`), through ClusterStore.tryLock/unlock
//
// Why this shape:
// - A pair is ONE document: a put replaces chain, key and meta together, so no node ever reads a
//   new key with an old chain (the file store needs symlink swaps for the same guarantee).
// - Directory URLs are hashed: a URL holds characters a key would only carry escaped, and the
//   hash keeps the key short; the document repeats the URL, so a read can check it.
// - The order log is one document per directory URL updated with compare-and-set: two nodes
//   recording at once each retry on `conflict` instead of one overwriting the other's order.
// - Lock names are not prefixed: callers already namespace them (`acme:`), and an operator looking
//   at the locks collection sees the name the log lines use.
//
// Everything read back is untrusted (any node, any version, or an operator with the `nats` CLI
// may have written it): shapes are checked with records.ts, keys with validate.ts, and a bad
// record is a CertStoreRecordError naming its key (listings skip it and report it to onWarning).
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreError, isStoreError } from '../../store/errors.ts';
import type { ClusterStore, Collection, Unsubscribe, WatchEvent } from '../../store/types.ts';
import type {
  AcmeAccountRecord,
  AlpnChallenge,
  CertMeta,
  CertStore,
  CertStoreChange,
  IssuanceState,
  StoredCert,
  StoredCertSource,
} from './certStore.ts';
import { CertRejected, describePair, inspectPair } from './inspect.ts';
import { accountProblem, copyAccount, copyMeta, copyState, isNum, metaProblem, ORDER_LOG_KEEP_MS, stateProblem } from './records.ts';
import { checkHostname, checkNonEmpty, checkToken, StoreInputError } from './validate.ts';

// Compare-and-set rounds for the order log. Writes from one handle are serialised, so only other
// nodes compete; each conflict means one of them got through, so this bounds the number of nodes
// recording the same instant rather than any time.
const ORDER_ATTEMPTS = 25;
// deleteCert re-reads when the pair changed between its read and its delete.
const DELETE_ATTEMPTS = 5;

/** A record in the cluster store the certificate store cannot use; `key` is `<collection>/<key>`. */
export class CertStoreRecordError extends Error {
  readonly key: string;
  readonly problem: string;
  constructor(key: string, problem: string) {
    super(`${key}: ${problem}`);
    this.name = 'CertStoreRecordError';
    this.key = key;
    this.problem = problem;
  }
}

/** An entry listCerts/listStates skipped, or a watcher that threw. */
export interface ClusterCertStoreWarning {
  /** `<collection>/<key>`, or the store's description when no record is involved. */
  readonly key: string;
  readonly message: string;
}

export interface ClusterCertStoreOptions {
  /** For logs and status, e.g. `nats:petrel` or `embedded`. */
  readonly description: string;
  /** Close the ClusterStore in close(). Off by default: the daemon shares one store handle. */
  readonly ownsStore?: boolean;
  /** Skipped records and throwing watchers; the store itself never logs. */
  readonly onWarning?: (warning: ClusterCertStoreWarning) => void;
}

// ---- keys

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

export const certKey = (source: StoredCertSource, hostname: string): string => `${source}/${hostname}`;
export const accountKey = (directoryUrl: string): string => `account/${sha256(directoryUrl)}`;
export const stateKey = (hostname: string): string => `state/${hostname}`;
export const ordersKey = (directoryUrl: string): string => `orders/${sha256(directoryUrl)}`;
export const http01Key = (token: string): string => `http01/${token}`;
export const alpnKey = (hostname: string): string => `alpn/${hostname}`;

function checkSource(source: unknown): StoredCertSource {
  if (source !== 'acme' && source !== 'custom') throw new StoreInputError('bad-input', `certificate source must be 'acme' or 'custom', got ${JSON.stringify(source)}`);
  return source;
}

/** The host name of a key `<prefix><hostname>`, or null when the rest is not one we accept. */
function hostAfter(key: string, prefix: string): string | null {
  if (!key.startsWith(prefix)) return null;
  try {
    return checkHostname(key.slice(prefix.length));
  } catch {
    return null;
  }
}

function tokenAfter(key: string, prefix: string): string | null {
  if (!key.startsWith(prefix)) return null;
  try {
    return checkToken(key.slice(prefix.length));
  } catch {
    return null;
  }
}

function sourceAndHost(key: string): { source: StoredCertSource; hostname: string } | null {
  for (const source of ['acme', 'custom'] as const) {
    const hostname = hostAfter(key, `${source}/`);
    if (hostname !== null) return { source, hostname };
  }
  return null;
}

/** What a key of a watched collection stands for, or null for keys this store does not write. */
function changeOf(coll: WatchedCollection, key: string): CertStoreChange | null {
  if (coll === 'certs') {
    const sh = sourceAndHost(key);
    return sh === null ? null : { kind: 'cert', hostname: sh.hostname, source: sh.source };
  }
  if (coll === 'acme') {
    const hostname = hostAfter(key, 'state/');
    return hostname === null ? null : { kind: 'state', hostname };
  }
  const token = tokenAfter(key, 'http01/');
  if (token !== null) return { kind: 'challenge', token };
  const hostname = hostAfter(key, 'alpn/');
  return hostname === null ? null : { kind: 'alpn-challenge', hostname };
}

// ---- record shapes (what is read back is untrusted)

const isStr = (v: unknown): v is string => typeof v === 'string';
type Loose<T> = Partial<Record<keyof T, unknown>> | null;

function certProblem(v: unknown, hostname: string, source: StoredCertSource): string | null {
  const c = v as Loose<StoredCert>;
  if (c === null || typeof c !== 'object') return 'not an object';
  if (c.hostname !== hostname) return `holds the certificate of ${JSON.stringify(c.hostname)}, not ${hostname}`;
  if (c.source !== source) return `holds a ${JSON.stringify(c.source)} certificate, not ${source}`;
  if (!isStr(c.chainPem) || !isStr(c.keyPem)) return 'chainPem and keyPem must be strings';
  const meta = metaProblem(c.meta);
  return meta === null ? null : `meta: ${meta}`;
}

interface OrderLogDoc {
  readonly directoryUrl: string;
  readonly times: readonly number[];
}

function orderTimes(v: unknown, key: string, directoryUrl: string): readonly number[] {
  const o = v as Loose<OrderLogDoc>;
  if (o === null || typeof o !== 'object' || !Array.isArray(o.times) || !o.times.every(isNum)) {
    throw new CertStoreRecordError(key, 'not an order log ({"directoryUrl": url, "times": [ms, ...]})');
  }
  if (o.directoryUrl !== directoryUrl) throw new CertStoreRecordError(key, `holds the orders of ${JSON.stringify(o.directoryUrl)}, not ${directoryUrl}`);
  return o.times;
}

interface Http01Doc {
  readonly token: string;
  readonly keyAuthorization: string;
  readonly storedAt: number;
}

interface AlpnDoc extends AlpnChallenge {
  readonly storedAt: number;
}

// ---- watching

/** The collections whose changes become CertStoreChange events (locks never do). */
type WatchedCollection = 'certs' | 'acme' | 'challenges';
const WATCHED: readonly WatchedCollection[] = ['certs', 'acme', 'challenges'];

// How far apart the clocks of two nodes may be, for the first listing of a watch (see
// #onEvent). Locks assume far less already (skew well below their TTLs); a larger margin only
// costs a few more events for records written just before a node started watching.
const CLOCK_SKEW_MARGIN_MS = 10_000;

interface Subscription {
  off: Unsubscribe;
  /** The ClusterStore delivered the collection's initial `sync`. */
  synced: boolean;
  /** Records stored (by their `storedAt`) at or after this may be newer than the watch. */
  readonly since: number;
  /**
   * Keys written through this handle after the watch began but before its `sync`: mainly for
   * deletes, which leave no record whose `storedAt` the sync could show.
   */
  readonly pending: Set<string>;
}

/** When a record was written, by the writer's clock (the store sets it on every put). */
function storedAtOf(coll: WatchedCollection, key: string, value: unknown): number | null {
  const v = value as { storedAt?: unknown; meta?: { storedAt?: unknown } } | null;
  if (v === null || typeof v !== 'object') return null;
  const at = coll === 'certs' ? v.meta?.storedAt : coll === 'acme' && key.startsWith('state/') ? v.storedAt : null;
  return isNum(at) ? at : null;
}

type Listener = (change: CertStoreChange) => void;


export class ClusterCertStore implements CertStore {
  readonly description: string;
  readonly #store: ClusterStore;
  readonly #ownsStore: boolean;
  readonly #onWarning: (w: ClusterCertStoreWarning) => void;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #listeners = new Set<Listener>();
  readonly #subs = new Map<WatchedCollection, Subscription>();
  /** Challenge keys present in the store, known once `challenges` is synced (for late watchers). */
  #challengeKeys = new Set<string>();
  #closed = false;

  constructor(store: ClusterStore, opts: ClusterCertStoreOptions) {
    this.#store = store;
    this.description = checkNonEmpty(opts.description, 'description');
    this.#ownsStore = opts.ownsStore ?? false;
    this.#onWarning = opts.onWarning ?? (() => {});
  }

  // ---- accounts

  async getAccount(directoryUrl: string): Promise<AcmeAccountRecord | null> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    const key = accountKey(directoryUrl);
    const e = await this.#io('getAccount', () => this.#store.get('acme', key));
    if (e === null) return null;
    const problem = accountProblem(e.value);
    if (problem !== null) throw new CertStoreRecordError(`acme/${key}`, `not an ACME account record: ${problem}`);
    const rec = e.value as AcmeAccountRecord;
    if (rec.directoryUrl !== directoryUrl) throw new CertStoreRecordError(`acme/${key}`, `holds the account of ${rec.directoryUrl}, not ${directoryUrl}`);
    return copyAccount(rec);
  }

  async putAccount(account: AcmeAccountRecord): Promise<void> {
    this.#live();
    const problem = accountProblem(account);
    if (problem !== null) throw new StoreInputError('bad-input', `ACME account refused: ${problem}`);
    const key = accountKey(account.directoryUrl);
    this.#touch('acme', key);
    await this.#io('putAccount', () => this.#store.put('acme', key, copyAccount(account)));
  }

  // ---- certificates

  async getCert(hostname: string, source: StoredCertSource): Promise<StoredCert | null> {
    this.#live();
    checkHostname(hostname);
    checkSource(source);
    const key = certKey(source, hostname);
    const e = await this.#io(`getCert ${hostname} (${source})`, () => this.#store.get('certs', key));
    return e === null ? null : readCert(e.value, key, hostname, source);
  }

  /** Checks the pair (inspectPair, against `hostname` and now); the stored meta is recomputed. */
  async putCert(cert: StoredCert): Promise<void> {
    this.#live();
    if (cert === null || typeof cert !== 'object') throw new StoreInputError('bad-input', 'putCert needs a StoredCert');
    const hostname = checkHostname(cert.hostname);
    const source = checkSource(cert.source);
    const meta = inspectPair(cert.chainPem, cert.keyPem, { hostname });
    const key = certKey(source, hostname);
    const doc: StoredCert = { hostname, source, chainPem: cert.chainPem, keyPem: cert.keyPem, meta };
    this.#touch('certs', key);
    await this.#io(`putCert ${hostname} (${source})`, () => this.#store.put('certs', key, doc));
  }

  async deleteCert(hostname: string, source: StoredCertSource): Promise<boolean> {
    this.#live();
    checkHostname(hostname);
    checkSource(source);
    const key = certKey(source, hostname);
    this.#touch('certs', key);
    return this.#io(`deleteCert ${hostname} (${source})`, async () => {
      for (let attempt = 1; ; attempt++) {
        const cur = await this.#store.get('certs', key);
        if (cur === null) return false;
        try {
          // With the revision read: "true" then means this call removed what it saw.
          await this.#store.delete('certs', key, cur.revision);
          return true;
        } catch (err) {
          if (!isStoreError(err, 'conflict') || attempt >= DELETE_ATTEMPTS) throw err;
        }
      }
    });
  }

  /** Every readable pair; a record that is not one is skipped and reported to onWarning. */
  async listCerts(): Promise<StoredCert[]> {
    this.#live();
    const entries = await this.#io('listCerts', () => this.#store.list('certs'));
    const certs: StoredCert[] = [];
    for (const [key, e] of entries) {
      const sh = sourceAndHost(key);
      if (sh === null) {
        this.#onWarning({ key: `certs/${key}`, message: 'not a key the certificate store writes (<acme|custom>/<hostname>); skipped' });
        continue;
      }
      try {
        certs.push(readCert(e.value, key, sh.hostname, sh.source));
      } catch (err) {
        this.#warnSkip(`certs/${key}`, err);
      }
    }
    return certs;
  }

  // ---- issuance states

  async getState(hostname: string): Promise<IssuanceState | null> {
    this.#live();
    checkHostname(hostname);
    const key = stateKey(hostname);
    const e = await this.#io(`getState ${hostname}`, () => this.#store.get('acme', key));
    return e === null ? null : readState(e.value, key, hostname);
  }

  async putState(state: IssuanceState): Promise<void> {
    this.#live();
    if (state === null || typeof state !== 'object') throw new StoreInputError('bad-input', 'putState needs an IssuanceState');
    const hostname = checkHostname(state.hostname);
    const problem = stateProblem(state);
    if (problem !== null) throw new StoreInputError('bad-input', `issuance state of ${hostname} refused: ${problem}`);
    const key = stateKey(hostname);
    this.#touch('acme', key);
    // storedAt (ours, not the caller's updatedAt) lets a watch that starts late tell what is new.
    const doc = { ...copyState(state), storedAt: Date.now() };
    await this.#io(`putState ${hostname}`, () => this.#store.put('acme', key, doc));
  }

  async deleteState(hostname: string): Promise<boolean> {
    this.#live();
    checkHostname(hostname);
    const key = stateKey(hostname);
    this.#touch('acme', key);
    return this.#io(`deleteState ${hostname}`, async () => {
      for (let attempt = 1; ; attempt++) {
        const cur = await this.#store.get('acme', key);
        if (cur === null) return false;
        try {
          await this.#store.delete('acme', key, cur.revision);
          return true;
        } catch (err) {
          if (!isStoreError(err, 'conflict') || attempt >= DELETE_ATTEMPTS) throw err;
        }
      }
    });
  }

  async listStates(): Promise<IssuanceState[]> {
    this.#live();
    const entries = await this.#io('listStates', () => this.#store.list('acme'));
    const states: IssuanceState[] = [];
    for (const [key, e] of entries) {
      if (!key.startsWith('state/')) continue; // accounts and order logs share the collection
      const hostname = hostAfter(key, 'state/');
      if (hostname === null) {
        this.#onWarning({ key: `acme/${key}`, message: 'not named after a host name; skipped' });
        continue;
      }
      try {
        states.push(readState(e.value, key, hostname));
      } catch (err) {
        this.#warnSkip(`acme/${key}`, err);
      }
    }
    return states;
  }

  // ---- order log

  async recordOrder(directoryUrl: string, at: number): Promise<void> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    if (!isNum(at)) throw new StoreInputError('bad-input', 'order time must be a number (ms since epoch)');
    const key = ordersKey(directoryUrl);
    // Serialised per handle so that this node's own records never conflict with each other;
    // other nodes' are settled by compare-and-set below.
    await this.#serial(key, () =>
      this.#io('recordOrder', async () => {
        for (let attempt = 1; ; attempt++) {
          const cur = await this.#store.get('acme', key);
          // A corrupt log is not overwritten (as in the file store): it throws here.
          const times = cur === null ? [] : orderTimes(cur.value, `acme/${key}`, directoryUrl);
          // The cap is hourly; a day of history is plenty and keeps the document small. Relative
          // to the order being recorded, not the clock, as in the file store.
          const cutoff = at - ORDER_LOG_KEEP_MS;
          const doc: OrderLogDoc = { directoryUrl, times: [...times, at].filter((t) => t >= cutoff) };
          try {
            if (cur === null) await this.#store.create('acme', key, doc);
            else await this.#store.update('acme', key, doc, cur.revision);
            return;
          } catch (err) {
            if (!isStoreError(err, 'conflict') || attempt >= ORDER_ATTEMPTS) throw err;
            // Another node recorded in between: read its version and add ours to it. A random
            // pause so that two nodes that collided do not collide again in lockstep.
            await sleep(Math.random() * 5 * attempt);
          }
        }
      }),
    );
  }

  async ordersSince(directoryUrl: string, since: number): Promise<number> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    const key = ordersKey(directoryUrl);
    const e = await this.#io('ordersSince', () => this.#store.get('acme', key));
    if (e === null) return 0;
    return orderTimes(e.value, `acme/${key}`, directoryUrl).filter((t) => t >= since).length;
  }

  // ---- challenges (shared: the CA may validate through any node)

  async putChallenge(token: string, keyAuthorization: string): Promise<void> {
    this.#live();
    checkToken(token);
    checkNonEmpty(keyAuthorization, 'keyAuthorization');
    const key = http01Key(token);
    // storedAt: an answer left by a node that died mid-order can be recognised as stale.
    const doc: Http01Doc = { token, keyAuthorization, storedAt: Date.now() };
    this.#touch('challenges', key);
    await this.#io('putChallenge', () => this.#store.put('challenges', key, doc));
  }

  async getChallenge(token: string): Promise<string | null> {
    this.#live();
    checkToken(token);
    const key = http01Key(token);
    const e = await this.#io('getChallenge', () => this.#store.get('challenges', key));
    if (e === null) return null;
    const v = e.value as Loose<Http01Doc>;
    if (v === null || typeof v !== 'object' || v.token !== token || !isStr(v.keyAuthorization) || v.keyAuthorization.length === 0) {
      throw new CertStoreRecordError(`challenges/${key}`, 'not an HTTP-01 answer ({"token", "keyAuthorization"})');
    }
    return v.keyAuthorization;
  }

  async deleteChallenge(token: string): Promise<void> {
    this.#live();
    checkToken(token);
    const key = http01Key(token);
    this.#touch('challenges', key);
    await this.#io('deleteChallenge', () => this.#store.delete('challenges', key));
  }

  /** The pair must be readable and matching and name `hostname` (RFC 8737 §3); dates are not checked. */
  async putAlpnChallenge(challenge: AlpnChallenge): Promise<void> {
    this.#live();
    if (challenge === null || typeof challenge !== 'object') throw new StoreInputError('bad-input', 'putAlpnChallenge needs an AlpnChallenge');
    const hostname = checkHostname(challenge.hostname);
    const meta = describePair(challenge.certPem, challenge.keyPem, Date.now());
    if (!meta.names.includes(hostname)) {
      throw new CertRejected('hostname-not-covered', `the TLS-ALPN-01 certificate does not name ${hostname}: its names are ${meta.names.join(', ')}`);
    }
    const key = alpnKey(hostname);
    const doc: AlpnDoc = { hostname, certPem: challenge.certPem, keyPem: challenge.keyPem, storedAt: Date.now() };
    this.#touch('challenges', key);
    await this.#io(`putAlpnChallenge ${hostname}`, () => this.#store.put('challenges', key, doc));
  }

  async getAlpnChallenge(hostname: string): Promise<AlpnChallenge | null> {
    this.#live();
    checkHostname(hostname);
    const key = alpnKey(hostname);
    const e = await this.#io(`getAlpnChallenge ${hostname}`, () => this.#store.get('challenges', key));
    if (e === null) return null;
    const v = e.value as Loose<AlpnDoc>;
    if (v === null || typeof v !== 'object' || v.hostname !== hostname || !isStr(v.certPem) || !isStr(v.keyPem)) {
      throw new CertStoreRecordError(`challenges/${key}`, 'not a TLS-ALPN-01 challenge ({"hostname", "certPem", "keyPem"})');
    }
    return Object.freeze({ hostname, certPem: v.certPem, keyPem: v.keyPem });
  }

  async deleteAlpnChallenge(hostname: string): Promise<void> {
    this.#live();
    checkHostname(hostname);
    const key = alpnKey(hostname);
    this.#touch('challenges', key);
    await this.#io(`deleteAlpnChallenge ${hostname}`, () => this.#store.delete('challenges', key));
  }

  // ---- locks (the cluster store's: exclusive across every node)

  async tryLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.#live();
    checkNonEmpty(name, 'lock name');
    checkNonEmpty(owner, 'lock owner');
    if (!isNum(ttlMs) || ttlMs <= 0) throw new StoreInputError('bad-input', 'lock ttlMs must be a positive number');
    const r = await this.#io(`tryLock ${name}`, () => this.#store.tryLock(name, owner, ttlMs));
    return r.acquired;
  }

  async unlock(name: string, owner: string): Promise<void> {
    this.#live();
    checkNonEmpty(name, 'lock name');
    checkNonEmpty(owner, 'lock owner');
    await this.#io(`unlock ${name}`, () => this.#store.unlock(name, owner));
  }

  // ---- watch, close

  /**
   * Changes made through any handle on the cluster store, this one included, all arriving
   * through the cluster store's watches (one per collection, opened with the first listener and
   * closed with the last). A listener hears of:
   * - every change after watch() was called, given node clocks within CLOCK_SKEW_MARGIN_MS (at
   *   worst twice; records stored up to that margin before it may be reported too; see #onEvent
   *   for the one gap: another node's delete while a NATS watch is still listing);
   * - every challenge answer present when it started: a node that starts, or starts answering,
   *   while another node's order is being validated must learn that answer too (ChallengeSync
   *   only follows events). Certificates and states already stored are not replayed: their
   *   consumers read them at start (listCerts, listStates), and a replay would have every
   *   consumer re-read every stored record on every start.
   */
  watch(listener: Listener): () => void {
    this.#live();
    // A wrapper per call, so that the same function watched twice is unsubscribed once each.
    const entry: Listener = (change) => listener(change);
    const first = this.#listeners.size === 0;
    this.#listeners.add(entry);
    if (first) {
      try {
        this.#subscribe();
      } catch (err) {
        this.#listeners.delete(entry);
        throw this.#wrap('watch', err);
      }
    } else if (this.#subs.get('challenges')?.synced === true) {
      // The others heard of these at the sync; this one starts now.
      const keys = [...this.#challengeKeys];
      queueMicrotask(() => {
        for (const key of keys) {
          const change = changeOf('challenges', key);
          if (change !== null && this.#listeners.has(entry)) this.#deliver(entry, change);
        }
      });
    }
    return () => {
      if (this.#listeners.delete(entry) && this.#listeners.size === 0) this.#unsubscribe();
    };
  }

  /**
   * Stops the watches and waits for order-log writes in progress; any call afterwards rejects
   * with StoreError `closed`. Closes the ClusterStore only when constructed with `ownsStore`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    this.#unsubscribe();
    await Promise.all(this.#queues.values());
    if (this.#ownsStore) await this.#store.close();
  }

  // ---- internals

  #live(): void {
    if (this.#closed) throw new StoreError('closed', `certificate store ${this.description} is closed`);
  }

  /**
   * The cluster store's errors keep their StoreError and code (the admin API maps `unavailable`
   * to 503, retry loops read `retryable`); the message says which certificate store and call.
   */
  #wrap(what: string, err: unknown): unknown {
    if (!(err instanceof StoreError)) return err;
    const why = err.code === 'unavailable' ? `the cluster store is unreachable (${err.message})` : err.message;
    return new StoreError(err.code, `certificate store ${this.description}: ${what}: ${why}`, {
      cause: err,
      ...(err.remoteCode === undefined ? {} : { remoteCode: err.remoteCode }),
    });
  }

  async #io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.#wrap(what, err);
    }
  }

  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#queues.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#queues.set(key, tail);
    void tail.then(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    return run;
  }

  /**
   * Called before a write (not after: the sync could be delivered between the write landing
   * and its promise resolving here, and then neither the sync nor a later event would report it).
   */
  #touch(coll: Collection, key: string): void {
    const sub = this.#subs.get(coll as WatchedCollection);
    if (sub !== undefined && !sub.synced) sub.pending.add(key);
  }

  #subscribe(): void {
    try {
      for (const coll of WATCHED) {
        const sub: Subscription = { off: () => {}, synced: false, since: Date.now() - CLOCK_SKEW_MARGIN_MS, pending: new Set() };
        this.#subs.set(coll, sub);
        sub.off = this.#store.watch(coll, (ev) => this.#onEvent(coll, sub, ev));
      }
    } catch (err) {
      this.#unsubscribe();
      throw err;
    }
  }

  #unsubscribe(): void {
    for (const sub of this.#subs.values()) sub.off();
    this.#subs.clear();
    this.#challengeKeys = new Set();
  }

  #onEvent(coll: WatchedCollection, sub: Subscription, ev: WatchEvent): void {
    if (this.#subs.get(coll) !== sub) return; // a watch already given up
    let keys: Iterable<string>;
    if (ev.type === 'sync') {
      // The sync is the collection when the ClusterStore listed it, which for NATS is some time
      // after watch() was called (at once for the embedded store): a change another node made in
      // between is in the listing and would never be an event. So the listing yields events for
      // challenges (all of them: see watch()), for records stored since the watch began (by
      // their storedAt, with a margin for clock skew), and for keys this handle wrote meanwhile.
      // Older certificates and states are not replayed. What stays unreported: another node's
      // delete inside that window (a delete leaves no record to date).
      sub.synced = true;
      const fresh = new Set(sub.pending);
      sub.pending.clear();
      for (const [key, entry] of ev.entries) {
        const at = storedAtOf(coll, key, entry.value);
        if (coll === 'challenges' || (at !== null && at >= sub.since)) fresh.add(key);
      }
      if (coll === 'challenges') this.#challengeKeys = new Set(ev.entries.keys());
      keys = fresh;
    } else if (ev.type === 'put') {
      if (coll === 'challenges') this.#challengeKeys.add(ev.entry.key);
      keys = [ev.entry.key];
    } else {
      if (coll === 'challenges') this.#challengeKeys.delete(ev.key);
      keys = [ev.key];
    }
    for (const key of keys) {
      const change = changeOf(coll, key);
      if (change === null) continue;
      for (const l of [...this.#listeners]) {
        // A listener unsubscribed by an earlier one in this loop hears nothing more.
        if (this.#listeners.has(l)) this.#deliver(l, change);
      }
    }
  }

  #deliver(l: Listener, change: CertStoreChange): void {
    try {
      l(change);
    } catch (err) {
      // A watcher's bug must not stop the others hearing of the change.
      this.#onWarning({ key: this.description, message: `a watcher threw: ${(err as Error).message}` });
    }
  }

  #warnSkip(key: string, err: unknown): void {
    const message = err instanceof CertStoreRecordError ? err.problem : (err as Error).message;
    this.#onWarning({ key, message: `${message}; skipped` });
  }
}

function readCert(value: unknown, key: string, hostname: string, source: StoredCertSource): StoredCert {
  const problem = certProblem(value, hostname, source);
  if (problem !== null) throw new CertStoreRecordError(`certs/${key}`, `not a stored certificate: ${problem}`);
  const c = value as StoredCert;
  return Object.freeze({ hostname, source, chainPem: c.chainPem, keyPem: c.keyPem, meta: copyMeta(c.meta as CertMeta) });
}

function readState(value: unknown, key: string, hostname: string): IssuanceState {
  const problem = stateProblem(value);
  if (problem !== null) throw new CertStoreRecordError(`acme/${key}`, `not an issuance state: ${problem}`);
  const s = value as IssuanceState;
  if (s.hostname !== hostname) throw new CertStoreRecordError(`acme/${key}`, `holds the state of ${String(s.hostname)}, not ${hostname}`);
  return copyState(s);
}
