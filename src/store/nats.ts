// The cluster store on NATS: one JetStream KV bucket per collection (`<prefix>_<collection>`),
// core NATS subjects (`<prefix>.<subject>`) for publish/subscribe and request/reply.
//
// Outage behaviour, and the client behaviours behind it:
// - The client reconnects forever (with our backoff) and reports disconnect/reconnect on its
//   status iterator, plus a `reconnecting` per dial attempt; we report only the transitions.
// - While disconnected the client accepts publishes and requests into its outbound buffer and
//   discards that buffer before each dial, so a KV write would wait for its timeout and fail, or,
//   if issued during the dial that succeeds, land after we reported a failure. We refuse every
//   write at once while disconnected (`unavailable`), and a call pending when the connection
//   drops is rejected at that moment (its outcome is unknown, and the error says so).
// - Reads fall back to the local mirror of a watched collection when the server cannot answer,
//   so a node keeps serving its last known state; unwatched collections are `unavailable`.
// - Watches resynchronise after reconnecting (natsMirror.ts).

import { jetstream } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { parse, serialize } from './codec.ts';
import { Disposers } from './disposers.ts';
import type { ResolvedNatsConfig } from './config.ts';
import { StoreError, isStoreError } from './errors.ts';
import { checkCollection, checkKey, checkRevision, checkSubject, checkTimeout, encodeKey } from './keys.ts';
import { tryLock, unlock } from './locks.ts';
import { LOST, connectionOptions, mapError, reconnectDelay } from './natsConnect.ts';
import { NatsMessaging, type Handler } from './natsMessaging.ts';
import { Mirror, listOnce, type MirrorHost } from './natsMirror.ts';
import { Sink } from './sink.ts';
import {
  COLLECTIONS,
  type ClusterStore,
  type Collection,
  type Entry,
  type LockResult,
  type StoreLog,
  type StoreStatus,
  type Unsubscribe,
  type WatchEvent,
  type WatchListener,
} from './types.ts';

interface Lost {
  readonly promise: Promise<never>;
  readonly reject: (err: unknown) => void;
}

function lostSignal(): Lost {
  let reject!: (err: unknown) => void;
  const promise = new Promise<never>((_, r) => (reject = r));
  promise.catch(() => {}); // nobody may be waiting when the connection drops
  return { promise, reject };
}

export class NatsStore implements ClusterStore {
  readonly kind = 'nats' as const;
  readonly #nc: NatsConnection;
  readonly #cfg: ResolvedNatsConfig;
  readonly #log: StoreLog;
  readonly #kvs = new Map<Collection, KV>();
  readonly #mirrors = new Map<Collection, Mirror>();
  readonly #statusSinks = new Set<Sink<StoreStatus>>();
  readonly #disposers = new Disposers();
  readonly #msg: NatsMessaging;
  readonly #host: MirrorHost;
  #connected = true;
  #closed = false;
  #lost = lostSignal();
  #reconnected = Promise.withResolvers<void>();

  /** Connects, then creates or opens the buckets; `unavailable` when either fails. */
  static async open(cfg: ResolvedNatsConfig, log: StoreLog): Promise<NatsStore> {
    let downSince: number | null = null;
    let nc: NatsConnection;
    try {
      nc = await connect(connectionOptions(cfg, () => reconnectDelay(cfg, (downSince ??= Date.now()))));
    } catch (err) {
      throw isStoreError(err) ? err : new StoreError('unavailable', `cannot connect to NATS ${cfg.servers.join(', ')}: ${(err as Error).message}`, { cause: err });
    }
    const store = new NatsStore(nc, cfg, log, (down) => (downSince = down ? (downSince ?? Date.now()) : null));
    try {
      await store.#openBuckets();
    } catch (err) {
      await store.close();
      throw mapError(err, 'opening the store buckets', 'kv', store.#connected);
    }
    log.info({ servers: cfg.servers, server: nc.getServer(), prefix: cfg.bucketPrefix }, 'cluster store connected');
    return store;
  }

  private constructor(nc: NatsConnection, cfg: ResolvedNatsConfig, log: StoreLog, markDown: (down: boolean) => void) {
    this.#nc = nc;
    this.#cfg = cfg;
    this.#log = log;
    this.#host = {
      log,
      opTimeoutMs: cfg.opTimeoutMs,
      watchCheckMs: cfg.watchCheckMs,
      connected: () => this.#connected && !this.#closed,
      whenConnected: () => this.#reconnected.promise,
      guard: (what, p, timeoutMs) => this.#guard(what, p, timeoutMs),
    };
    this.#msg = new NatsMessaging({
      nc,
      prefix: cfg.bucketPrefix,
      log,
      connected: () => this.connected(),
      checkConnected: (what) => this.#checkConnected(what),
      guard: (what, p) => this.#guard(what, p),
    });
    this.#reconnected.resolve();
    void this.#followStatus(markDown);
  }

  async #openBuckets(): Promise<void> {
    const kvm = new Kvm(jetstream(this.#nc, { timeout: this.#cfg.opTimeoutMs }));
    const opened = await Promise.all(
      COLLECTIONS.map(async (coll) => {
        const bucket = `${this.#cfg.bucketPrefix}_${coll}`;
        // history 1: consumers rebuild from current values; old revisions would only cost disk.
        // allow_direct off: direct gets may be answered by a lagging replica (a node could miss
        // a write another node just made, e.g. during a leader election); reads through the
        // stream leader see every acknowledged write, which compare-and-set callers rely on.
        const kv = await kvm.create(bucket, {
          history: 1,
          replicas: this.#cfg.replicas,
          timeout: this.#cfg.opTimeoutMs,
          allow_direct: false,
        });
        // create() silently opens an existing bucket whatever its settings: say so when they differ.
        const st = await kv.status();
        if (st.replicas !== this.#cfg.replicas) {
          this.#log.warn({ bucket, replicas: st.replicas, configured: this.#cfg.replicas }, 'cluster store bucket keeps its existing replica count');
        }
        return [coll, kv] as const;
      }),
    );
    for (const [coll, kv] of opened) this.#kvs.set(coll, kv);
  }

  async #followStatus(markDown: (down: boolean) => void): Promise<void> {
    for await (const s of this.#nc.status()) {
      if (this.#closed) break;
      switch (s.type) {
        case 'disconnect':
          markDown(true);
          this.#transition(false, s.server);
          break;
        case 'reconnect':
          markDown(false);
          this.#transition(true, s.server);
          break;
        case 'close':
          // Only after a fatal error (e.g. authentication refused twice): no more reconnects.
          this.#transition(false, 'connection closed by the client after a fatal error');
          break;
        case 'ldm':
          this.#log.warn({ server: s.server }, 'cluster store: server entering lame duck mode');
          break;
        case 'error':
          this.#log.warn({ err: s.error }, 'cluster store: server reported an error');
          break;
        case 'slowConsumer':
          this.#log.warn({ subject: s.sub.getSubject(), pending: s.pending }, 'cluster store: slow consumer');
          break;
        default:
          break;
      }
    }
  }

  #transition(connected: boolean, detail: string): void {
    if (connected === this.#connected || this.#closed) return;
    this.#connected = connected;
    if (connected) {
      this.#lost = lostSignal();
      this.#reconnected.resolve();
      this.#log.info({ server: detail }, 'cluster store reconnected');
    } else {
      this.#reconnected = Promise.withResolvers<void>();
      this.#lost.reject(LOST);
      for (const m of this.#mirrors.values()) m.interrupt();
      this.#log.warn({ server: detail }, 'cluster store disconnected; serving the last known state');
    }
    const status: StoreStatus = { connected, at: Date.now(), detail };
    for (const s of this.#statusSinks) s.push(status);
  }

  #guard<T>(what: string, p: Promise<T>, timeoutMs?: number): Promise<T> {
    p.catch(() => {}); // it may settle after we stopped waiting for it
    const racers: Promise<T>[] = [p, this.#lost.promise];
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined) {
      racers.push(
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StoreError('unavailable', `${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      );
    }
    return Promise.race(racers).finally(() => clearTimeout(timer));
  }

  #checkOpen(): void {
    if (this.#closed) throw new StoreError('closed', 'store is closed');
  }

  #checkConnected(what: string): void {
    if (!this.#connected || this.#nc.isClosed()) throw new StoreError('unavailable', `${what}: not connected to NATS`);
  }

  async #kv<T>(coll: Collection, what: string, op: (kv: KV) => Promise<T>): Promise<T> {
    this.#checkConnected(what);
    try {
      return await this.#guard(what, op(this.#kvs.get(coll)!));
    } catch (err) {
      throw mapError(err, what, 'kv', this.#connected);
    }
  }

  /** From the server; from the mirror when the server cannot answer and the mirror is synced. */
  async #read<T>(coll: Collection, what: string, server: () => Promise<T>, cached: (m: Mirror) => T): Promise<T> {
    try {
      return await server();
    } catch (err) {
      const m = this.#mirrors.get(coll);
      if (!isStoreError(err, 'unavailable') || m === undefined || !m.synced) throw err;
      return cached(m);
    }
  }

  async get<T = unknown>(coll: Collection, key: string): Promise<Entry<T> | null> {
    this.#check(coll, key);
    const what = `get ${coll}/${key}`;
    const e = await this.#read(
      coll,
      what,
      async () => {
        const kve = await this.#kv(coll, what, (kv) => kv.get(encodeKey(key)));
        if (kve === null || kve.operation !== 'PUT') return null;
        try {
          return Object.freeze({ key, value: parse(kve.string()), revision: kve.revision });
        } catch (err) {
          throw new StoreError('invalid', `${what}: stored value is not JSON`, { cause: err });
        }
      },
      (m) => m.cache.get(key) ?? null,
    );
    return e as Entry<T> | null;
  }

  async #write(coll: Collection, key: string, verb: string, op: (kv: KV, k: string) => Promise<number>): Promise<number> {
    return this.#kv(coll, `${verb} ${coll}/${key}`, (kv) => op(kv, encodeKey(key)));
  }

  /** Validates everything before looking at the connection, so a bad call is `invalid` even offline. */
  #check(coll: Collection, key: string, expectedRevision?: number): void {
    this.#checkOpen();
    checkCollection(coll);
    checkKey(key);
    if (expectedRevision !== undefined) checkRevision(expectedRevision);
  }

  async put(coll: Collection, key: string, value: unknown): Promise<number> {
    this.#check(coll, key);
    const text = serialize(value);
    return this.#write(coll, key, 'put', (kv, k) => kv.put(k, text));
  }

  async create(coll: Collection, key: string, value: unknown): Promise<number> {
    this.#check(coll, key);
    const text = serialize(value);
    return this.#write(coll, key, 'create', (kv, k) => kv.create(k, text));
  }

  async update(coll: Collection, key: string, value: unknown, expectedRevision: number): Promise<number> {
    this.#check(coll, key, expectedRevision);
    const text = serialize(value);
    return this.#write(coll, key, 'update', (kv, k) => kv.update(k, text, expectedRevision));
  }

  async delete(coll: Collection, key: string, expectedRevision?: number): Promise<void> {
    this.#check(coll, key, expectedRevision);
    await this.#write(coll, key, 'delete', async (kv, k) => {
      await kv.delete(k, expectedRevision === undefined ? undefined : { previousSeq: expectedRevision });
      return 0;
    });
  }

  async list<T = unknown>(coll: Collection): Promise<Map<string, Entry<T>>> {
    this.#checkOpen();
    checkCollection(coll);
    const what = `list ${coll}`;
    const entries = await this.#read(
      coll,
      what,
      () => this.#kv(coll, what, (kv) => listOnce(this.#host, kv, coll)),
      (m) => new Map([...m.cache.keys()].sort().map((k) => [k, m.cache.get(k)!])),
    );
    return entries as Map<string, Entry<T>>;
  }

  async keys(coll: Collection): Promise<string[]> {
    return [...(await this.list(coll)).keys()];
  }

  watch<T = unknown>(coll: Collection, listener: WatchListener<T>): Unsubscribe {
    this.#checkOpen();
    checkCollection(coll);
    const sink = new Sink<WatchEvent>(listener as WatchListener, (err) => this.#log.error({ err, coll }, 'store watch listener threw'));
    let mirror = this.#mirrors.get(coll);
    if (mirror === undefined) {
      mirror = new Mirror(coll, this.#kvs.get(coll)!, this.#host);
      this.#mirrors.set(coll, mirror);
    }
    mirror.add(sink);
    const m = mirror;
    return this.#disposers.track(() => {
      sink.stop();
      m.remove(sink);
      // The last watcher gone: stop following the bucket (and drop its cache).
      if (m.size === 0 && this.#mirrors.get(coll) === m) {
        m.stop();
        this.#mirrors.delete(coll);
      }
    });
  }

  tryLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    return tryLock(this, name, owner, ttlMs);
  }

  unlock(name: string, owner: string): Promise<boolean> {
    return unlock(this, name, owner);
  }

  publish(subject: string, data: unknown): void {
    this.#checkOpen();
    checkSubject(subject, false);
    this.#msg.publish(subject, serialize(data, 'message'));
  }

  subscribe<T = unknown>(subject: string, handler: (data: T, subject: string) => void): Unsubscribe {
    this.#checkOpen();
    checkSubject(subject, true);
    return this.#disposers.track(this.#msg.subscribe(subject, handler as (data: unknown, subject: string) => void));
  }

  async request<T = unknown>(subject: string, data: unknown, timeoutMs?: number): Promise<T> {
    this.#checkOpen();
    checkSubject(subject, false);
    const ms = checkTimeout(timeoutMs ?? this.#cfg.requestTimeoutMs);
    return (await this.#msg.request(subject, serialize(data, 'request'), ms)) as T;
  }

  serve<T = unknown>(subject: string, handler: (data: T, subject: string) => unknown): Unsubscribe {
    this.#checkOpen();
    checkSubject(subject, true);
    return this.#disposers.track(this.#msg.serve(subject, handler as Handler));
  }

  connected(): boolean {
    return this.#connected && !this.#closed;
  }

  onStatus(listener: (status: StoreStatus) => void): Unsubscribe {
    this.#checkOpen();
    const sink = new Sink<StoreStatus>(listener, (err) => this.#log.error({ err }, 'store status listener threw'));
    this.#statusSinks.add(sink);
    return this.#disposers.track(() => {
      sink.stop();
      this.#statusSinks.delete(sink);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#disposers.disposeAll();
    for (const m of this.#mirrors.values()) m.stop();
    this.#mirrors.clear();
    this.#lost.reject(new StoreError('closed', 'store is closed'));
    this.#reconnected.resolve();
    await this.#nc.close().catch(() => {});
  }
}
