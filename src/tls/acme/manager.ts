// The ACME manager: which host names need a certificate, when to order or renew, and what each
// one's status is. It orders through AcmeClient, keeps its schedule in the certificate store so
// that a restart carries on where it stopped, and tells the daemon when a certificate is stored
// (onCertificate: rebuild the cert table) and how each order ended (onOrder: metrics).
//
// - Every configured host name (no wildcards: they need DNS-01) gets a certificate, unless a
//   custom certificate covers it (custom wins, spec section 7).
// - Renewal at notBefore + renewFraction × lifetime ± jitter. The old certificate keeps serving
//   until the new one is stored: a pair is replaced whole, never deleted first.
// - Failure: status `failed`, lastError, next attempt after an exponential, capped backoff
//   (or the CA's Retry-After when longer). One log line per attempt: a dead CA costs one line
//   per backoff step, never a flood.
// - At most `ordersPerHour` orders reach the CA per rolling hour (counted in the store, so
//   restarts count too); past it, names wait with a status that says so.
// - An issuance lock per name in the store (`acme:<name>`): two nodes never order the same name.
// - One timer for the whole schedule (the earliest due name), at most `concurrency` orders at once.
// - requestOnDemand() is what a handshake for a name without a certificate calls: synchronous,
//   never waits, and only names of configured apps are ever considered, so random SNI names
//   never reach the CA.

import { hostname as osHostname } from 'node:os';
import type { CertStore, IssuanceState, StoredCert } from '../store/certStore.ts';
import { inspectPair, namesCover } from '../store/inspect.ts';
import { AcmeClient, AcmeOrderError, type ChallengePublisher, type OrderOutcome } from './client.ts';
import type { AcmeSettings } from './config.ts';
import { acmeName, Entry, lookupKey, view, type AcmeHostStatus } from './entry.ts';
import { backoffDelay, renewalAt, TokenBucket } from './schedule.ts';

export type { AcmeHostStatus, AcmeStatusValue } from './entry.ts';

export interface AcmeLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AcmeManagerOptions {
  readonly settings: AcmeSettings;
  readonly store: CertStore;
  /** Where challenge answers go (a ChallengeSync, which also feeds the listeners' ChallengeBook). */
  readonly challenges: ChallengePublisher;
  /** Host names of the configured apps; called at start and on reconcile(). */
  readonly hostnames: () => Iterable<string>;
  /** A custom certificate outside the store (certs/ directory) covers this name. */
  readonly hasCustom?: (hostname: string) => boolean;
  /** A certificate this manager ordered was stored: rebuild the cert table. */
  readonly onCertificate?: (hostname: string) => void;
  /** Each order's outcome, and `rate-limited` once each time a name starts waiting for the hourly cap. */
  readonly onOrder?: (outcome: OrderOutcome) => void;
  readonly log: AcmeLogger;
  /** Owner name for the issuance locks. Default `<os hostname>:<pid>`. */
  readonly nodeId?: string;
  /** An AcmeClient to use instead of one made from `settings` at start(). */
  readonly client?: AcmeClient;
  readonly now?: () => number;
}

export type OnDemandResult = 'queued' | 'not-configured' | 'backoff' | 'rate-limited' | 'active';
export type IssuanceRequestResult = 'queued' | 'running' | 'not-configured';

const HOUR_MS = 3_600_000;
// Past the hourly cap, look again this often: one store read, no CA contact, no log line.
const CAP_RECHECK_MS = 60_000;
// Another node holds the name's lock: look again this often (its certificate may be stored then).
const LOCK_RECHECK_MS = 30_000;
// setTimeout's ceiling (~24.8 days); a later renewal simply re-arms when this fires.
const MAX_TIMER_MS = 2 ** 31 - 1;

const sourceOf = (e: Entry): Entry['source'] => e.source;

export class AcmeManager {
  readonly #s: AcmeSettings;
  readonly #store: CertStore;
  readonly #publisher: ChallengePublisher;
  readonly #hostnames: () => Iterable<string>;
  readonly #hasCustom: (hostname: string) => boolean;
  readonly #onCertificate: (hostname: string) => void;
  readonly #onOrder: (outcome: OrderOutcome) => void;
  readonly #log: AcmeLogger;
  readonly #nodeId: string;
  readonly #now: () => number;
  readonly #bucket: TokenBucket;
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  #client: AcmeClient | null;
  #ownsClient: boolean;
  #timer: NodeJS.Timeout | null = null;
  #kickPending = false;
  #running = 0;
  // Orders started but not yet recorded in the store: the cap counts them too, so that two
  // concurrent attempts cannot both take the last slot.
  #reserved = 0;
  #unwatch: (() => void) | null = null;
  #started = false;
  #stopped = false;

  constructor(opts: AcmeManagerOptions) {
    this.#s = opts.settings;
    this.#store = opts.store;
    this.#publisher = opts.challenges;
    this.#hostnames = opts.hostnames;
    this.#hasCustom = opts.hasCustom ?? (() => false);
    this.#onCertificate = opts.onCertificate ?? (() => {});
    this.#onOrder = opts.onOrder ?? (() => {});
    this.#log = opts.log;
    this.#nodeId = opts.nodeId ?? `${osHostname()}:${process.pid}`;
    this.#now = opts.now ?? Date.now;
    this.#bucket = new TokenBucket(this.#s.onDemandPerMinute, this.#s.onDemandBurst, this.#now());
    this.#client = opts.client ?? null;
    this.#ownsClient = opts.client === undefined;
  }

  /** Reads the store, schedules every name that needs an order, and starts the timer. */
  async start(): Promise<void> {
    if (this.#started) throw new Error('AcmeManager already started');
    this.#started = true;
    this.#client ??= await AcmeClient.create(this.#s, this.#store, this.#log);
    if (this.#stopped) return; // stop() came first: subscribe to nothing
    this.#unwatch = this.#store.watch((change) => {
      // Another node's certificate, or an operator's import through the admin API.
      if (change.kind === 'cert') {
        const e = this.#entries.get(change.hostname);
        if (e !== undefined && !e.running) {
          this.#refresh(e).then(
            () => this.#arm(),
            (err: unknown) => this.#log.warn({ hostname: e.hostname, err: (err as Error).message }, 'acme: stored certificate not readable'),
          );
        }
      }
    });
    await this.#add(this.#wanted());
    const pending = [...this.#entries.values()].filter((e) => e.nextAttemptAt !== null && e.nextAttemptAt <= this.#now()).length;
    this.#log.info({ directoryUrl: this.#s.directoryUrl, hostnames: this.#entries.size, due: pending }, 'acme manager started');
    this.#tick();
  }

  /** After a reload: adds new names, drops removed ones, re-checks custom certificates. */
  async reconcile(): Promise<void> {
    if (!this.#started || this.#stopped) return;
    const wanted = this.#wanted();
    for (const h of this.#entries.keys()) if (!wanted.has(h)) this.#entries.delete(h);
    const known = [...this.#entries.values()].filter((e) => !e.running);
    await this.#add(new Set([...wanted].filter((h) => !this.#entries.has(h))));
    for (const e of known) {
      // The timer may have started its order meanwhile; the order refreshes it itself.
      if (!e.running) await this.#refresh(e);
    }
    this.#tick();
  }

  /**
   * A handshake for `hostname` found no certificate. Never waits: at most it queues an order
   * that runs in the background while this handshake carries on with the default certificate.
   */
  requestOnDemand(hostname: string): OnDemandResult {
    // Only valid names ever become entries, so one map lookup settles any other name.
    const e = this.#entries.get(lookupKey(hostname));
    if (e === undefined || this.#stopped) return 'not-configured';
    const now = this.#now();
    if (e.status === 'active' && (e.source === 'custom' || (e.notAfter !== null && e.notAfter > now))) return 'active';
    if (e.running) return 'queued';
    if (e.waitingFor !== null) return e.capNoticed ? 'rate-limited' : 'queued';
    if (e.nextAttemptAt !== null && e.nextAttemptAt <= now) return 'queued';
    if (e.status === 'failed' && e.nextAttemptAt !== null) return 'backoff';
    if (now - e.lastOnDemandAt < this.#s.onDemandHostIntervalMs) return 'backoff';
    if (!this.#bucket.take(now)) return 'rate-limited';
    e.lastOnDemandAt = now;
    e.nextAttemptAt = now;
    this.#kick();
    return 'queued';
  }

  /** Admin API: order now, whatever the schedule and backoff say (the hourly cap still holds). */
  requestIssuance(hostname: string): IssuanceRequestResult {
    const e = this.#entries.get(lookupKey(hostname));
    if (e === undefined || this.#stopped) return 'not-configured';
    if (e.running) return 'running';
    e.forced = true;
    e.nextAttemptAt = this.#now();
    this.#kick();
    return 'queued';
  }

  status(hostname: string): AcmeHostStatus | null {
    const e = this.#entries.get(lookupKey(hostname));
    return e === undefined ? null : view(e);
  }

  statusAll(): AcmeHostStatus[] {
    return [...this.#entries.values()].sort((a, b) => (a.hostname < b.hostname ? -1 : 1)).map(view);
  }

  /**
   * Cancels the timer and abandons orders in flight (their challenge answers are removed and no
   * failure is recorded: the next start orders again). Call before closing the store.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#unwatch?.();
    this.#unwatch = null;
    this.#abort.abort(new Error('acme manager stopping'));
    await Promise.allSettled([...this.#inflight]);
    if (this.#ownsClient) this.#client?.close();
  }

  // ---- schedule

  #wanted(): Set<string> {
    const out = new Set<string>();
    for (const raw of this.#hostnames()) {
      const name = acmeName(raw);
      if (name !== null) out.add(name);
    }
    return out;
  }

  /** New entries for `names`, from the store: certificates first, then the saved schedule. */
  async #add(names: ReadonlySet<string>): Promise<void> {
    if (names.size === 0) return;
    const states = new Map((await this.#store.listStates()).map((s) => [s.hostname, s]));
    for (const name of names) {
      const e = new Entry(name);
      const saved = states.get(name);
      if (saved !== undefined) {
        e.failures = saved.failures;
        e.lastError = saved.lastError;
      }
      await this.#refresh(e, saved ?? null);
      this.#entries.set(name, e);
    }
  }

  /**
   * Brings `e` in line with the store: custom certificate, ACME certificate, or none. `saved`
   * (at start) is the persisted schedule, honoured so that a restart neither re-orders nor
   * forgets a backoff.
   */
  async #refresh(e: Entry, saved: IssuanceState | null = null): Promise<void> {
    const now = this.#now();
    if (await this.#customCovers(e.hostname)) {
      const custom = await this.#store.getCert(e.hostname, 'custom');
      e.source = 'custom';
      e.status = 'active';
      e.issuer = custom?.meta.issuer ?? null;
      e.notAfter = custom?.meta.notAfter ?? null;
      e.nextAttemptAt = null;
      e.waitingFor = null;
      return;
    }
    const cert = await this.#store.getCert(e.hostname, 'acme');
    if (cert !== null && cert.meta.notAfter > now) {
      const changed = cert.meta.fingerprint256 !== e.fingerprint;
      this.#adopt(e, cert);
      if (saved !== null && saved.nextAttemptAt !== null) {
        e.status = saved.status === 'failed' ? 'failed' : 'active';
        e.nextAttemptAt = saved.nextAttemptAt;
      } else if (changed || e.nextAttemptAt === null) {
        // A certificate we did not know (another node's): earlier failures no longer matter.
        e.status = 'active';
        e.nextAttemptAt = this.#renewalOf(cert);
        if (changed) {
          e.failures = 0;
          e.lastError = null;
        }
      }
      return;
    }
    // No usable certificate: a saved failure's backoff holds, anything else is due now.
    e.source = null;
    e.issuer = null;
    e.notAfter = null;
    e.fingerprint = null;
    if (saved !== null && saved.status === 'failed' && saved.nextAttemptAt !== null) {
      e.status = 'failed';
      e.nextAttemptAt = saved.nextAttemptAt;
    } else if (e.status !== 'failed' || e.nextAttemptAt === null) {
      e.status = e.status === 'failed' ? 'failed' : 'pending';
      e.nextAttemptAt = now;
    }
  }

  #adopt(e: Entry, cert: StoredCert): void {
    // Whatever it waited for (another node's lock) is moot once a certificate is in place.
    if (cert.meta.fingerprint256 !== e.fingerprint) e.waitingFor = null;
    e.source = 'acme';
    e.issuer = cert.meta.issuer;
    e.notAfter = cert.meta.notAfter;
    e.fingerprint = cert.meta.fingerprint256;
  }

  #renewalOf(cert: StoredCert): number {
    return renewalAt(cert.meta.notBefore, cert.meta.notAfter, this.#s.renewFraction, this.#s.renewJitterMs);
  }

  async #customCovers(hostname: string): Promise<boolean> {
    if (this.#hasCustom(hostname)) return true;
    if ((await this.#store.getCert(hostname, 'custom')) !== null) return true;
    const dot = hostname.indexOf('.');
    if (dot <= 0) return false;
    const wildcard = await this.#store.getCert(`*${hostname.slice(dot)}`, 'custom');
    return wildcard !== null && namesCover(wildcard.meta.names, hostname);
  }

  /** Runs the due names soon, outside the caller's stack (a handshake, an admin request). */
  #kick(): void {
    if (this.#kickPending || !this.#started) return;
    this.#kickPending = true;
    setImmediate(() => {
      this.#kickPending = false;
      this.#tick();
    });
  }

  /** Starts due names up to the concurrency limit, then arms the timer for the next one. */
  #tick(): void {
    if (this.#stopped) return;
    const now = this.#now();
    const due = [...this.#entries.values()]
      .filter((e) => !e.running && e.nextAttemptAt !== null && e.nextAttemptAt <= now)
      .sort((a, b) => (a.nextAttemptAt ?? 0) - (b.nextAttemptAt ?? 0));
    for (const e of due) {
      if (this.#running >= this.#s.concurrency) break;
      this.#launch(e);
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    // All slots busy: the next completion ticks; a timer now would only spin on past-due names.
    if (this.#stopped || this.#running >= this.#s.concurrency) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const e of this.#entries.values()) {
      if (!e.running && e.nextAttemptAt !== null && e.nextAttemptAt < earliest) earliest = e.nextAttemptAt;
    }
    if (earliest === Number.POSITIVE_INFINITY) return;
    const delay = Math.min(Math.max(0, earliest - this.#now()), MAX_TIMER_MS);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#tick();
    }, delay);
    // The daemon's listeners keep the process alive; the schedule alone must not.
    this.#timer.unref();
  }

  #launch(e: Entry): void {
    e.running = true;
    this.#running++;
    const run = this.#attempt(e)
      .catch((err: unknown) => {
        // #attempt handles its own failures; this is a bug or a store that broke mid-way.
        this.#log.error({ hostname: e.hostname, err: (err as Error).message }, 'acme: issuance attempt crashed');
        // Still due, it would be relaunched at once, and crash again, in a loop.
        const now = this.#now();
        if (e.nextAttemptAt !== null && e.nextAttemptAt <= now) e.nextAttemptAt = now + this.#s.backoffMaxMs;
      })
      .finally(() => {
        e.running = false;
        this.#running--;
        this.#inflight.delete(run);
        this.#tick();
      });
    this.#inflight.add(run);
  }

  // ---- one attempt

  async #attempt(e: Entry): Promise<void> {
    const forced = e.forced;
    e.forced = false;
    // Recomputed below: the cap or the lock may have cleared since.
    e.waitingFor = null;
    const failBefore = async (err: unknown): Promise<void> => {
      // A store failure before any order: back off like a failed order, but it is no order.
      await this.#fail(e, (err as Error).message, null, null);
    };

    try {
      const before = e.fingerprint;
      await this.#refresh(e);
      if (e.source === 'custom') return;
      // Someone else (another node) stored a certificate meanwhile: no order needed.
      if (!forced && e.source === 'acme' && e.fingerprint !== before && e.nextAttemptAt !== null && e.nextAttemptAt > this.#now()) return;
    } catch (err) {
      return failBefore(err);
    }

    const dir = this.#s.directoryUrl;
    let used: number;
    try {
      used = (await this.#store.ordersSince(dir, this.#now() - HOUR_MS)) + this.#reserved;
    } catch (err) {
      return failBefore(err);
    }
    if (used >= this.#s.ordersPerHour) {
      const next = this.#now() + CAP_RECHECK_MS;
      e.waitingFor = `hourly order cap reached: ${used} of ${this.#s.ordersPerHour} orders in the last hour (ordersPerHour); checking again at ${new Date(next).toISOString()}`;
      e.nextAttemptAt = next;
      if (!e.capNoticed) {
        e.capNoticed = true;
        this.#log.warn({ hostname: e.hostname, used, cap: this.#s.ordersPerHour }, 'acme order waits for the hourly cap');
        this.#notify(() => this.#onOrder('rate-limited'));
      }
      return;
    }

    // Reserved in the same synchronous step as the check above: a concurrent attempt that
    // read the same count now sees this one.
    this.#reserved++;
    let placed = false;
    const lock = `acme:${e.hostname}`;
    let locked: boolean;
    try {
      locked = await this.#store.tryLock(lock, this.#nodeId, this.#s.orderTimeoutMs + 60_000);
    } catch (err) {
      this.#reserved--;
      return failBefore(err);
    }
    if (!locked) {
      this.#reserved--;
      e.waitingFor = 'another node holds the issuance lock for this name';
      e.nextAttemptAt = this.#now() + LOCK_RECHECK_MS;
      this.#log.debug({ hostname: e.hostname }, 'acme: issuance lock held elsewhere');
      return;
    }

    e.capNoticed = false;
    try {
      // Another node may have finished its whole order between our check above and taking the
      // lock: look again now that nobody else can be ordering this name.
      if (!forced) {
        const before = e.fingerprint;
        try {
          await this.#refresh(e);
        } catch (err) {
          return await failBefore(err);
        }
        // Read afresh: the narrowing from the first check above does not survive the await.
        const source = sourceOf(e);
        if (source === 'custom' || (source === 'acme' && e.fingerprint !== before && e.nextAttemptAt !== null && e.nextAttemptAt > this.#now())) {
          e.waitingFor = null;
          return;
        }
      }
      const started = this.#now();
      try {
        const issued = await this.#client!.issueOne(e.hostname, this.#s.challenges, this.#publisher, this.#abort.signal);
        placed = true;
        await this.#succeed(e, issued.chainPem, issued.keyPem, issued.challenge, started);
      } catch (err) {
        if (err instanceof AcmeOrderError) placed = err.placed;
        if (this.#stopped) {
          // Abandoned: no failure recorded, the next start orders again.
          this.#log.debug({ hostname: e.hostname }, 'acme order abandoned: stopping');
          return;
        }
        if (err instanceof AcmeOrderError) await this.#fail(e, err.message, err.outcome, err.retryAfterMs);
        else await this.#fail(e, `storing the certificate: ${(err as Error).message}`, 'error', null);
      }
    } finally {
      // Recorded before the reservation is released, so the count never dips in between.
      if (placed) await this.#store.recordOrder(dir, this.#now()).catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, 'acme: order not recorded'));
      this.#reserved--;
      await this.#store.unlock(lock, this.#nodeId).catch(() => {});
    }
  }

  async #succeed(e: Entry, chainPem: string, keyPem: string, challenge: string | null, started: number): Promise<void> {
    const meta = inspectPair(chainPem, keyPem, { hostname: e.hostname, now: this.#now() });
    const cert: StoredCert = { hostname: e.hostname, source: 'acme', chainPem, keyPem, meta };
    await this.#store.putCert(cert);
    this.#adopt(e, cert);
    e.status = 'active';
    e.failures = 0;
    e.lastError = null;
    e.nextAttemptAt = this.#renewalOf(cert);
    await this.#persist(e);
    this.#log.info(
      {
        hostname: e.hostname,
        outcome: 'valid',
        challenge,
        issuer: meta.issuer,
        notAfter: new Date(meta.notAfter).toISOString(),
        renewAt: new Date(e.nextAttemptAt).toISOString(),
        ms: this.#now() - started,
      },
      'acme certificate issued',
    );
    this.#notify(() => this.#onCertificate(e.hostname));
    this.#notify(() => this.#onOrder('valid'));
  }

  async #fail(e: Entry, message: string, outcome: OrderOutcome | null, retryAfterMs: number | null): Promise<void> {
    e.failures++;
    let delay = backoffDelay(e.failures, this.#s.backoffMinMs, this.#s.backoffMaxMs);
    if (retryAfterMs !== null && retryAfterMs > delay) delay = retryAfterMs;
    e.status = 'failed';
    e.lastError = message;
    e.nextAttemptAt = this.#now() + delay;
    await this.#persist(e);
    this.#log.warn(
      {
        hostname: e.hostname,
        outcome: outcome ?? 'error',
        err: message,
        failures: e.failures,
        retryInMs: delay,
        nextAttemptAt: new Date(e.nextAttemptAt).toISOString(),
      },
      outcome === null ? 'acme issuance attempt failed before ordering' : 'acme order failed',
    );
    if (outcome !== null) this.#notify(() => this.#onOrder(outcome));
  }

  /** A callback's bug must not be taken for a failed order, nor stop the schedule. */
  #notify(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'acme: callback threw');
    }
  }

  async #persist(e: Entry): Promise<void> {
    try {
      await this.#store.putState({
        hostname: e.hostname,
        status: e.status,
        lastError: e.lastError,
        failures: e.failures,
        nextAttemptAt: e.nextAttemptAt,
        updatedAt: this.#now(),
      });
    } catch (err) {
      // The schedule still runs from memory; only a restart would lose it.
      this.#log.warn({ hostname: e.hostname, err: (err as Error).message }, 'acme: issuance state not saved');
    }
  }
}
