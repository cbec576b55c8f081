// The in-process store: the default for a single node, and the way to run several "nodes" in one
// process in tests. State lives in an EmbeddedHub; each EmbeddedStore is one node's handle on it
// (its own watches, subscriptions and servers, released by close()), so two handles on one hub
// behave like two nodes on one NATS cluster. Nothing is persisted: with the embedded store the
// config files stay authoritative and are loaded into it at start.

import { parse, readReply, replyError, replyOk, serialize } from './codec.ts';
import { Disposers } from './disposers.ts';
import { StoreError } from './errors.ts';
import { checkCollection, checkKey, checkRevision, checkSubject, checkTimeout, matchSubject } from './keys.ts';
import { tryLock, unlock } from './locks.ts';
import { Sink } from './sink.ts';
import type {
  ClusterStore,
  Collection,
  Entry,
  LockResult,
  StoreLog,
  StoreStatus,
  Unsubscribe,
  WatchEvent,
  WatchListener,
} from './types.ts';

interface Coll {
  readonly docs: Map<string, Entry>;
  /** Grows with every write and delete, like a NATS KV bucket's stream sequence. */
  revision: number;
  readonly watchers: Set<Sink<WatchEvent>>;
  /**
   * Revision of each key's delete, like the delete marker NATS keeps: compare-and-set against
   * it succeeds there, so it does here.
   */
  readonly deleted: Map<string, number>;
}

function checkCurrent(c: Coll, name: Collection, key: string, expected: number): void {
  const current = c.docs.get(key)?.revision ?? c.deleted.get(key);
  if (current !== expected) {
    throw new StoreError('conflict', `${name}/${key} is at revision ${current ?? 'none'}, not ${expected}`);
  }
}

interface Message {
  readonly text: string;
  readonly subject: string;
}

interface Subscriber {
  readonly pattern: string;
  readonly sink: Sink<Message>;
}

type Handler = (data: unknown, subject: string) => unknown;

interface Server {
  readonly pattern: string;
  readonly handler: Handler;
}

/** Expected state of a key for a conditional write. */
type Expect = { readonly kind: 'any' } | { readonly kind: 'absent' } | { readonly kind: 'revision'; readonly revision: number };

const ANY: Expect = { kind: 'any' };
const ABSENT: Expect = { kind: 'absent' };

/** Shared state behind one or more EmbeddedStore handles. Inputs are validated by the handles. */
export class EmbeddedHub {
  readonly #colls = new Map<Collection, Coll>();
  readonly #subscribers = new Set<Subscriber>();
  readonly #servers: Server[] = [];
  #next = 0;

  #coll(name: Collection): Coll {
    let c = this.#colls.get(name);
    if (c === undefined) {
      c = { docs: new Map(), revision: 0, watchers: new Set(), deleted: new Map() };
      this.#colls.set(name, c);
    }
    return c;
  }

  get(name: Collection, key: string): Entry | null {
    return this.#coll(name).docs.get(key) ?? null;
  }

  write(name: Collection, key: string, text: string, expect: Expect): number {
    const c = this.#coll(name);
    const cur = c.docs.get(key);
    if (expect.kind === 'absent' && cur !== undefined) throw new StoreError('conflict', `${name}/${key} exists`);
    if (expect.kind === 'revision') checkCurrent(c, name, key, expect.revision);
    const entry: Entry = Object.freeze({ key, value: parse(text), revision: ++c.revision });
    c.docs.set(key, entry);
    c.deleted.delete(key);
    for (const w of c.watchers) w.push({ type: 'put', entry });
    return entry.revision;
  }

  remove(name: Collection, key: string, expectedRevision: number | undefined): void {
    const c = this.#coll(name);
    if (expectedRevision !== undefined) checkCurrent(c, name, key, expectedRevision);
    if (!c.docs.delete(key)) return;
    const revision = ++c.revision;
    c.deleted.set(key, revision);
    for (const w of c.watchers) w.push({ type: 'delete', key, revision });
  }

  list(name: Collection): Map<string, Entry> {
    const docs = this.#coll(name).docs;
    return new Map([...docs.keys()].sort().map((k) => [k, docs.get(k)!]));
  }

  watch(name: Collection, sink: Sink<WatchEvent>): Unsubscribe {
    const c = this.#coll(name);
    sink.push({ type: 'sync', entries: this.list(name) });
    c.watchers.add(sink);
    return () => c.watchers.delete(sink);
  }

  publish(subject: string, text: string): void {
    for (const s of this.#subscribers) if (matchSubject(s.pattern, subject)) s.sink.push({ text, subject });
  }

  subscribe(sub: Subscriber): Unsubscribe {
    this.#subscribers.add(sub);
    return () => this.#subscribers.delete(sub);
  }

  serve(server: Server): Unsubscribe {
    this.#servers.push(server);
    return () => {
      const i = this.#servers.indexOf(server);
      if (i >= 0) this.#servers.splice(i, 1);
    };
  }

  /** One server for `subject`, taking turns like a NATS queue group. */
  responder(subject: string): Handler | null {
    const matching = this.#servers.filter((s) => matchSubject(s.pattern, subject));
    if (matching.length === 0) return null;
    return matching[this.#next++ % matching.length]!.handler;
  }
}

export interface EmbeddedOptions {
  /** Share one hub between handles to simulate several nodes; a new hub when omitted. */
  readonly hub?: EmbeddedHub;
  readonly log?: StoreLog;
  /** Default for request() (ms). */
  readonly requestTimeoutMs?: number;
}

const SILENT: StoreLog = { info() {}, warn() {}, error() {} };

export class EmbeddedStore implements ClusterStore {
  readonly kind = 'embedded' as const;
  readonly hub: EmbeddedHub;
  readonly #log: StoreLog;
  readonly #requestTimeoutMs: number;
  readonly #disposers = new Disposers();
  #closed = false;

  constructor(opts: EmbeddedOptions = {}) {
    this.hub = opts.hub ?? new EmbeddedHub();
    this.#log = opts.log ?? SILENT;
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
  }

  #check(coll?: string, key?: unknown): void {
    if (this.#closed) throw new StoreError('closed', 'store is closed');
    if (coll !== undefined) checkCollection(coll);
    if (key !== undefined) checkKey(key);
  }

  async get<T = unknown>(coll: Collection, key: string): Promise<Entry<T> | null> {
    this.#check(coll, key);
    return this.hub.get(coll, key) as Entry<T> | null;
  }

  async put(coll: Collection, key: string, value: unknown): Promise<number> {
    this.#check(coll, key);
    return this.hub.write(coll, key, serialize(value), ANY);
  }

  async create(coll: Collection, key: string, value: unknown): Promise<number> {
    this.#check(coll, key);
    return this.hub.write(coll, key, serialize(value), ABSENT);
  }

  async update(coll: Collection, key: string, value: unknown, expectedRevision: number): Promise<number> {
    this.#check(coll, key);
    checkRevision(expectedRevision);
    return this.hub.write(coll, key, serialize(value), { kind: 'revision', revision: expectedRevision });
  }

  async delete(coll: Collection, key: string, expectedRevision?: number): Promise<void> {
    this.#check(coll, key);
    if (expectedRevision !== undefined) checkRevision(expectedRevision);
    this.hub.remove(coll, key, expectedRevision);
  }

  async keys(coll: Collection): Promise<string[]> {
    this.#check(coll);
    return [...this.hub.list(coll).keys()];
  }

  async list<T = unknown>(coll: Collection): Promise<Map<string, Entry<T>>> {
    this.#check(coll);
    return this.hub.list(coll) as Map<string, Entry<T>>;
  }

  watch<T = unknown>(coll: Collection, listener: WatchListener<T>): Unsubscribe {
    this.#check(coll);
    const sink = new Sink<WatchEvent>(listener as WatchListener, (err) => this.#log.error({ err, coll }, 'store watch listener threw'));
    const off = this.hub.watch(coll, sink);
    return this.#disposers.track(() => {
      sink.stop();
      off();
    });
  }

  tryLock(name: string, owner: string, ttlMs: number): Promise<LockResult> {
    return tryLock(this, name, owner, ttlMs);
  }

  unlock(name: string, owner: string): Promise<boolean> {
    return unlock(this, name, owner);
  }

  publish(subject: string, data: unknown): void {
    this.#check();
    checkSubject(subject, false);
    this.hub.publish(subject, serialize(data, 'message'));
  }

  subscribe<T = unknown>(subject: string, handler: (data: T, subject: string) => void): Unsubscribe {
    this.#check();
    checkSubject(subject, true);
    const sink = new Sink<Message>(
      (m) => handler(parse(m.text) as T, m.subject),
      (err) => this.#log.error({ err, subject }, 'store subscriber threw'),
    );
    const off = this.hub.subscribe({ pattern: subject, sink });
    return this.#disposers.track(() => {
      sink.stop();
      off();
    });
  }

  async request<T = unknown>(subject: string, data: unknown, timeoutMs?: number): Promise<T> {
    this.#check();
    checkSubject(subject, false);
    const ms = checkTimeout(timeoutMs ?? this.#requestTimeoutMs);
    const text = serialize(data, 'request');
    const handler = this.hub.responder(subject);
    if (handler === null) throw new StoreError('no-responder', `no responder for ${subject}`);
    // The handler runs on a later tick, as it would on another node.
    const answer = (async (): Promise<string> => {
      await Promise.resolve();
      try {
        return replyOk(await handler(parse(text), subject));
      } catch (err) {
        return replyError(err);
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreError('timeout', `no reply on ${subject} within ${ms} ms`)), ms);
    });
    try {
      return readReply(await Promise.race([answer, expired]), subject) as T;
    } finally {
      clearTimeout(timer);
    }
  }

  serve<T = unknown>(subject: string, handler: (data: T, subject: string) => unknown): Unsubscribe {
    this.#check();
    checkSubject(subject, true);
    return this.#disposers.track(this.hub.serve({ pattern: subject, handler: handler as Handler }));
  }

  connected(): boolean {
    return !this.#closed;
  }

  onStatus(_listener: (status: StoreStatus) => void): Unsubscribe {
    this.#check();
    // In process there is no connection to lose: nothing to report, ever.
    return () => {};
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#disposers.disposeAll();
  }
}
