// A local copy of one KV bucket, kept current by a KV watch and shared by every watcher of that
// collection on this node. It is what lets a node keep serving from the last known state while
// NATS is unreachable, and it resynchronises after every reconnect.
//
// Why not just hand the KV watch to callers:
// - The KV watch has no "end of initial listing" signal a caller can rely on (`isUpdate` is
//   also true for the first change on an empty bucket). We read the stream's last sequence first:
//   the listing is complete once an entry at or past it arrived (LastPerSubject delivers in
//   sequence order and the newest message is always kept), or at once when the bucket is empty.
// - After a disconnect the server-side ordered consumer may be gone (a restarted server, a dead
//   cluster member) and the client only recreates it after missed heartbeats (10 s or more). We
//   stop the watch on disconnect and, once reconnected, list the bucket again and emit only the
//   differences, so consumers converge without a restart and without special cases.
// - While connected, a watch can still stall: when the server holding its consumer dies (a
//   cluster losing the stream leader), the client's own recovery sometimes did not resume
//   delivery within 40 s in our tests. A watchdog compares the stream's last sequence with the last revision the
//   watch delivered every `watchCheckMs`; behind and not moving means stalled, and the watch is
//   restarted (list again, emit the differences).
// - A watch can skip a key's intermediate values: the bucket keeps one value per key, and a
//   value replaced before the server got to deliver it is gone, so the consumer moves on to the
//   next message (seen in our suite: revision 51 never delivered, 52 replaced it). The newest
//   value of every key is always delivered (a delete or purge is a message of its own), so the
//   mirror converges without a re-list.

import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { parse } from './codec.ts';
import { StoreError } from './errors.ts';
import { decodeKey } from './keys.ts';
import type { Sink } from './sink.ts';
import type { Collection, Entry, StoreLog, WatchEvent } from './types.ts';

/** What a mirror needs from the store that owns the connection. */
export interface MirrorHost {
  readonly log: StoreLog;
  connected(): boolean;
  /** Resolves once connected (at once if connected), or when the store closes. */
  whenConnected(): Promise<void>;
  /** `p`, or a rejection as soon as the connection is lost or `timeoutMs` passes. */
  guard<T>(what: string, p: Promise<T>, timeoutMs?: number): Promise<T>;
  readonly opTimeoutMs: number;
  /** How often the watchdog compares the stream with what the watch delivered. */
  readonly watchCheckMs: number;
}

/** A bucket's contents: live entries, plus the revisions of delete markers seen. */
interface Listing {
  readonly entries: Map<string, Entry>;
  readonly deleted: Map<string, number>;
}

function sorted(map: ReadonlyMap<string, Entry>): Map<string, Entry> {
  return new Map([...map.keys()].sort().map((k) => [k, map.get(k)!]));
}

/** The natural key and decoded entry of a watch entry; null for keys or values we never write. */
function decode(e: KvWatchEntry, log: StoreLog, coll: Collection): { key: string; entry: Entry | null } | null {
  const key = decodeKey(e.key);
  if (key === null) {
    log.warn({ coll, rawKey: e.key }, 'cluster store: ignoring a key petrel did not write');
    return null;
  }
  if (e.operation !== 'PUT') return { key, entry: null };
  try {
    return { key, entry: Object.freeze({ key, value: parse(e.string()), revision: e.revision }) };
  } catch (err) {
    log.warn({ coll, key, err }, 'cluster store: ignoring a value that is not JSON');
    return null;
  }
}

function apply(l: Listing, e: KvWatchEntry, log: StoreLog, coll: Collection): void {
  const d = decode(e, log, coll);
  if (d === null) return;
  if (d.entry === null) {
    l.entries.delete(d.key);
    l.deleted.set(d.key, e.revision);
  } else {
    l.entries.set(d.key, d.entry);
    l.deleted.delete(d.key);
  }
}

/**
 * Opens a watch of the whole bucket (one consumer instead of a get per key) and says at which
 * revision its initial listing is complete (0: the bucket is empty, complete at once).
 */
async function openListing(
  host: MirrorHost,
  kv: KV,
  what: string,
): Promise<{ last: number; seq: number; iter: QueuedIterator<KvWatchEntry> }> {
  const st = await host.guard(what, kv.status());
  const { messages, last_seq } = st.streamInfo.state;
  const pending = kv.watch({ key: '>' });
  try {
    // `seq` is the stream's position even when the bucket is empty (a purged bucket keeps it).
    return { last: messages === 0 ? 0 : last_seq, seq: last_seq, iter: await host.guard(what, pending) };
  } catch (err) {
    // The watch may still open after we gave up on it: close it then.
    pending.then((it) => it.stop(), () => {});
    throw err;
  }
}

/** The bucket's current contents (for list/keys when no mirror is synced). */
export async function listOnce(host: MirrorHost, kv: KV, coll: Collection): Promise<Map<string, Entry>> {
  const what = `list ${coll}`;
  const { last, iter } = await openListing(host, kv, what);
  const l: Listing = { entries: new Map(), deleted: new Map() };
  if (last === 0) {
    iter.stop();
    return l.entries;
  }
  const collect = (async (): Promise<void> => {
    for await (const e of iter) {
      apply(l, e, host.log, coll);
      if (e.revision >= last) return;
    }
    throw new StoreError('unavailable', `${what}: the watch ended before the listing was complete`);
  })();
  try {
    await host.guard(what, collect, host.opTimeoutMs);
  } finally {
    iter.stop();
  }
  return sorted(l.entries);
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;
// Behind the stream at one check: give in-flight deliveries this long before calling it a stall.
const STALL_GRACE_MS = 500;

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Mirror {
  readonly #coll: Collection;
  readonly #kv: KV;
  readonly #host: MirrorHost;
  readonly #sinks = new Set<Sink<WatchEvent>>();
  #cache = new Map<string, Entry>();
  #synced = false;
  #iter: QueuedIterator<KvWatchEntry> | null = null;
  #stopped = false;
  #wake: (() => void) | null = null;
  /** The stream position the current watch has reached (any key, any operation). */
  #delivered = 0;
  /** Counts watch sessions, so the watchdog only restarts the one it judged. */
  #sessions = 0;
  #listing = true;
  #sessionStart = 0;
  readonly #watchdog: NodeJS.Timeout;
  #checking = false;
  /** Watchdog restarts since the watch last completed a listing: only the first is logged. */
  #stallRestarts = 0;

  constructor(coll: Collection, kv: KV, host: MirrorHost) {
    this.#coll = coll;
    this.#kv = kv;
    this.#host = host;
    this.#watchdog = setInterval(() => void this.#check(), host.watchCheckMs);
    this.#watchdog.unref();
    void this.#run();
  }

  /** Whether the cache holds a complete listing (from now or from before an outage). */
  get synced(): boolean {
    return this.#synced;
  }

  get cache(): ReadonlyMap<string, Entry> {
    return this.#cache;
  }

  get size(): number {
    return this.#sinks.size;
  }

  add(sink: Sink<WatchEvent>): void {
    // Queued before any later change (Sink keeps order), so the new watcher starts consistent.
    if (this.#synced) sink.push({ type: 'sync', entries: sorted(this.#cache) });
    this.#sinks.add(sink);
  }

  remove(sink: Sink<WatchEvent>): void {
    this.#sinks.delete(sink);
  }

  /** The connection was lost: end this watch; the loop starts a fresh one after reconnecting. */
  interrupt(): void {
    this.#iter?.stop();
    this.#wake?.();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#watchdog);
    for (const s of this.#sinks) s.stop();
    this.#sinks.clear();
    this.interrupt();
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      if (!this.#host.connected()) {
        await this.#host.whenConnected();
        continue;
      }
      try {
        if (await this.#session()) failures = 0;
      } catch (err) {
        if (this.#stopped) break;
        this.#host.log.warn({ err, coll: this.#coll }, 'cluster store: watch failed; retrying');
      }
      // A watch that ended while still connected (consumer deleted, server error) is retried
      // with a growing pause, so a persistent failure does not spin.
      if (!this.#stopped && this.#host.connected()) {
        failures++;
        await this.#sleep(Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(failures - 1, 8)));
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => {
      this.#wake = null;
    });
  }

  /** One watch from listing to its end; true if it got as far as a complete listing. */
  async #session(): Promise<boolean> {
    const { last, seq, iter } = await openListing(this.#host, this.#kv, `watch ${this.#coll}`);
    this.#iter = iter;
    this.#sessions++;
    this.#delivered = seq;
    this.#listing = true;
    this.#sessionStart = Date.now();
    if (this.#stopped || !this.#host.connected()) {
      iter.stop();
      return false;
    }
    let listing: Listing | null = { entries: new Map(), deleted: new Map() };
    if (last === 0) {
      this.#listed(listing, last);
      listing = null;
    }
    for await (const e of iter) {
      this.#delivered = Math.max(this.#delivered, e.revision);
      if (listing !== null) {
        apply(listing, e, this.#host.log, this.#coll);
        if (e.revision >= last) {
          this.#listed(listing, last);
          listing = null;
        }
      } else {
        this.#change(e);
      }
    }
    return listing === null;
  }

  /** Restarts a watch that is behind the stream and not moving (see the header). */
  async #check(): Promise<void> {
    if (this.#checking || this.#stopped || !this.#host.connected()) return;
    if (this.#listing) {
      // A listing that never completes is a stall too (it has no other timeout).
      if (this.#iter !== null && Date.now() - this.#sessionStart > this.#host.opTimeoutMs + this.#host.watchCheckMs) {
        if (this.#stallRestarts++ === 0) this.#host.log.warn({ coll: this.#coll }, 'cluster store: watch listing stalled; restarting it');
        this.#iter.stop();
      }
      return;
    }
    this.#checking = true;
    try {
      const session = this.#sessions;
      const seen = this.#delivered;
      const st = await this.#host.guard(`check ${this.#coll}`, this.#kv.status(), this.#host.opTimeoutMs);
      if (st.streamInfo.state.last_seq <= seen) return;
      await delay(STALL_GRACE_MS);
      if (this.#stopped || session !== this.#sessions || this.#delivered !== seen) return;
      // While a cluster elects a new stream leader the restarts repeat every check (5-9 s seen):
      // one line when it starts, one when the watch delivers again.
      if (this.#stallRestarts++ === 0) {
        this.#host.log.warn({ coll: this.#coll, delivered: seen, stream: st.streamInfo.state.last_seq }, 'cluster store: watch stalled; restarting it');
      }
      this.#iter?.stop();
    } catch {
      // JetStream not answering: there is nothing to compare with, and writes fail too.
    } finally {
      this.#checking = false;
    }
  }

  /** A complete listing: the first one is the watchers' `sync`; later ones become differences. */
  #listed(l: Listing, last: number): void {
    this.#listing = false;
    if (this.#stallRestarts > 0) {
      this.#host.log.info({ coll: this.#coll, restarts: this.#stallRestarts }, 'cluster store: watch delivering again');
      this.#stallRestarts = 0;
    }
    const fresh = sorted(l.entries);
    if (!this.#synced) {
      this.#cache = fresh;
      this.#synced = true;
      for (const s of this.#sinks) s.push({ type: 'sync', entries: fresh });
      return;
    }
    const events: WatchEvent[] = [];
    for (const [key, entry] of fresh) {
      if (this.#cache.get(key)?.revision !== entry.revision) events.push({ type: 'put', entry });
    }
    for (const key of this.#cache.keys()) {
      // A key purged without a marker has no revision of its own; `last` is newer than any it had.
      if (!fresh.has(key)) events.push({ type: 'delete', key, revision: l.deleted.get(key) ?? last });
    }
    this.#cache = fresh;
    if (events.length > 0) {
      this.#host.log.info({ coll: this.#coll, changes: events.length }, 'cluster store: watch resynchronised');
    }
    for (const ev of events) for (const s of this.#sinks) s.push(ev);
  }

  #change(e: KvWatchEntry): void {
    const d = decode(e, this.#host.log, this.#coll);
    if (d === null) return;
    let ev: WatchEvent;
    if (d.entry !== null) {
      this.#cache.set(d.key, d.entry);
      ev = { type: 'put', entry: d.entry };
    } else {
      // Deleting an absent key still writes a marker; watchers only hear of keys they knew.
      if (!this.#cache.delete(d.key)) return;
      ev = { type: 'delete', key: d.key, revision: e.revision };
    }
    for (const s of this.#sinks) s.push(ev);
  }
}
