// One ACME account and one order at a time for one host name, on acme-client's building blocks
// (createOrder, getAuthorizations, completeChallenge, finalizeOrder, getCertificate) rather
// than its `auto()`: we choose the challenge type per authorization, publish answers through the
// store so any node can answer, poll with our own abortable waits, and classify the outcome.
//
// The account is created once per directory URL and persisted in the store: its key first (so a
// crash during registration reuses the key, and RFC 8555 §7.3.1 hands back the same account),
// then its URL. Later orders reuse both and never call newAccount again.

import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import * as acme from 'acme-client';
import type { CertStore } from '../store/certStore.ts';
import type { AcmeSettings, ChallengeType } from './config.ts';
import { AcmeHttp, installTransport, OrderTrace } from './transport.ts';

/** Where an order's challenge answers go; resolves once the local listeners can answer. */
export interface ChallengePublisher {
  putHttp01(token: string, keyAuthorization: string): Promise<void>;
  deleteHttp01(token: string): Promise<void>;
  putAlpn(hostname: string, certPem: string, keyPem: string): Promise<void>;
  deleteAlpn(hostname: string): Promise<void>;
}

/** `petrel_acme_orders_total{outcome}`. */
export type OrderOutcome = 'valid' | 'invalid' | 'error' | 'rate-limited';

export interface IssuedCert {
  /** Leaf first, then the intermediates, as the CA sent it. */
  readonly chainPem: string;
  /** PKCS#8 PEM of a fresh ECDSA P-256 key. */
  readonly keyPem: string;
  readonly challenge: ChallengeType | null;
}

/** A failed order. `placed`: the CA received the new-order request (it counts against limits). */
export class AcmeOrderError extends Error {
  readonly outcome: Exclude<OrderOutcome, 'valid'>;
  readonly retryAfterMs: number | null;
  readonly placed: boolean;
  constructor(message: string, outcome: Exclude<OrderOutcome, 'valid'>, placed: boolean, retryAfterMs: number | null = null) {
    super(message);
    this.name = 'AcmeOrderError';
    this.outcome = outcome;
    this.placed = placed;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface AcmeClientLogger {
  info(obj: object, msg: string): void;
}

interface Account {
  readonly keyPem: string;
  readonly url: string;
}

// Problem types (RFC 8555 §6.7) that mean "the CA looked and said no", as opposed to "something
// broke on the way": the former are `invalid` orders, the latter `error`s.
const REFUSALS = ['unauthorized', 'rejectedIdentifier', 'caa', 'dns', 'connection', 'incorrectResponse', 'tls', 'unsupportedIdentifier', 'badCSR'];
const PROBLEM_NS = 'urn:ietf:params:acme:error:';

// Polling an order or authorization: short first waits (pebble answers in ~100 ms), then
// doubling up to a ceiling; the order's own deadline ends the loop.
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 2_000;
// RFC 5280 ub-common-name: a longer name would make the CSR invalid; the SAN carries it anyway.
const MAX_CN = 64;

interface ChallengeLike {
  readonly type: string;
  readonly url: string;
  readonly status: string;
  readonly token?: string;
  readonly error?: { detail?: string };
}

/** The step an order failed in, for a status line that says where it broke. */
class Step {
  name = 'account';
}

export class AcmeClient {
  readonly settings: AcmeSettings;
  readonly #store: CertStore;
  readonly #http: AcmeHttp;
  readonly #log: AcmeClientLogger | null;
  #account: Promise<Account> | null = null;

  constructor(settings: AcmeSettings, store: CertStore, caPem: string | null, log: AcmeClientLogger | null = null) {
    this.settings = settings;
    this.#store = store;
    this.#http = new AcmeHttp(caPem, settings.requestTimeoutMs);
    this.#log = log;
  }

  /** Reads `settings.caFile` (when set) and makes the client; no network yet. */
  static async create(settings: AcmeSettings, store: CertStore, log: AcmeClientLogger | null = null): Promise<AcmeClient> {
    let caPem: string | null = null;
    if (settings.caFile !== null) {
      try {
        caPem = await readFile(settings.caFile, 'utf8');
      } catch (err) {
        throw new Error(`acme caFile ${settings.caFile}: ${(err as Error).message}`);
      }
      if (!caPem.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`acme caFile ${settings.caFile}: no PEM certificate in it`);
    }
    return new AcmeClient(settings, store, caPem, log);
  }

  /**
   * One order for `hostname`: the first challenge type of `preference` the CA offers, answered
   * through `publish` and cleaned up whatever happens; a fresh P-256 key and CSR; the chain.
   * Bounded by `settings.orderTimeoutMs` and by `signal` (stop). Throws AcmeOrderError.
   */
  async issueOne(
    hostname: string,
    preference: readonly ChallengeType[],
    publish: ChallengePublisher,
    signal?: AbortSignal,
  ): Promise<IssuedCert> {
    const deadline = AbortSignal.timeout(this.settings.orderTimeoutMs);
    const sig = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
    for (let attempt = 0; ; attempt++) {
      const trace = new OrderTrace();
      const step = new Step();
      const placed = { value: false };
      try {
        return await this.#order(hostname, preference, publish, sig, trace, step, placed);
      } catch (err) {
        // The CA forgot our account (a test CA restarted, an account purged): register the same
        // key again once, in this same order, instead of failing until the next backoff step.
        if (attempt === 0 && trace.lastProblem?.type === `${PROBLEM_NS}accountDoesNotExist`) {
          const forgot = await this.#forgetAccountUrl().then(
            () => true,
            () => false, // the store failed: report the CA's answer, the next attempt retries
          );
          if (forgot) continue;
        }
        throw classify(err, trace, step.name, placed.value, sig, deadline, this.settings.orderTimeoutMs);
      }
    }
  }

  /** Releases idle connections to the CA. */
  close(): void {
    this.#http.close();
  }

  async #order(
    hostname: string,
    preference: readonly ChallengeType[],
    publish: ChallengePublisher,
    sig: AbortSignal,
    trace: OrderTrace,
    step: Step,
    placed: { value: boolean },
  ): Promise<IssuedCert> {
    step.name = 'account';
    const account = await this.#ensureAccount(sig, trace);
    const client = this.#client(account.keyPem, account.url, sig, trace);

    step.name = 'new order';
    trace.lastPostStatus = null;
    let order: acme.Order;
    try {
      order = await client.createOrder({ identifiers: [{ type: 'dns', value: hostname }] });
    } finally {
      // Answered at all (even with an error) means the CA saw it; a refused connection does not.
      placed.value = trace.lastPostStatus !== null;
    }

    step.name = 'authorization';
    const authzs = await client.getAuthorizations(order);
    let challenge: ChallengeType | null = null;
    for (const authz of authzs) {
      // A still-valid earlier authorization (CAs may reuse them) needs no new validation.
      if (authz.status === 'valid') continue;
      challenge = await this.#validate(client, order, authz, preference, publish, sig, step);
    }

    step.name = 'finalize';
    const ready = await poll(() => client.getOrder(order), (o) => o.status !== 'pending', sig);
    if (ready.status === 'invalid') throw new AcmeOrderError(`order invalid before finalize: ${detailOf(ready.error)}`, 'invalid', true);
    const certKey = await acme.crypto.createPrivateEcdsaKey('P-256');
    const [, csr] = await acme.crypto.createCsr(
      hostname.length <= MAX_CN ? { commonName: hostname, altNames: [hostname] } : { altNames: [hostname] },
      certKey,
    );
    const finalized = await client.finalizeOrder(ready, csr);
    const done = await poll(() => client.getOrder(finalized), (o) => o.status === 'valid' || o.status === 'invalid', sig);
    if (done.status === 'invalid') throw new AcmeOrderError(`order invalid after finalize: ${detailOf(done.error)}`, 'invalid', true);

    step.name = 'download';
    const chainPem = await client.getCertificate(done);
    if (typeof chainPem !== 'string' || !chainPem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new Error('the CA sent no PEM certificate chain');
    }
    return { chainPem, keyPem: certKey.toString('utf8'), challenge };
  }

  async #validate(
    client: acme.Client,
    order: acme.Order,
    authz: acme.Authorization,
    preference: readonly ChallengeType[],
    publish: ChallengePublisher,
    sig: AbortSignal,
    step: Step,
  ): Promise<ChallengeType> {
    const name = authz.identifier.value;
    const offered = authz.challenges as unknown as ChallengeLike[];
    let ch: ChallengeLike | undefined;
    let type: ChallengeType | undefined;
    for (const t of preference) {
      ch = offered.find((c) => c.type === t);
      if (ch !== undefined) {
        type = t;
        break;
      }
    }
    if (ch === undefined || type === undefined || typeof ch.token !== 'string') {
      await client.deactivateAuthorization(authz).catch(() => {});
      throw new AcmeOrderError(
        `the CA offers ${offered.map((c) => c.type).join(', ') || 'no challenges'} for ${name}, none of ${preference.join(', ')}`,
        'error',
        true,
      );
    }
    step.name = `challenge ${type}`;
    // acme-client's typings know http-01 and dns-01 only; the call handles tls-alpn-01 (RFC 8737).
    const keyAuth = await client.getChallengeKeyAuthorization(ch as unknown as Parameters<acme.Client['getChallengeKeyAuthorization']>[0]);
    const token = ch.token;
    let completed = false;
    try {
      if (type === 'http-01') {
        await publish.putHttp01(token, keyAuth);
      } else {
        const alpnKey = await acme.crypto.createPrivateEcdsaKey('P-256');
        const [, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuth, alpnKey);
        await publish.putAlpn(name, alpnCert.toString('utf8'), alpnKey.toString('utf8'));
      }
      await client.completeChallenge(ch as unknown as Parameters<acme.Client['completeChallenge']>[0]);
      completed = true;
      const [final] = await poll(
        () => client.getAuthorizations(order),
        (list) => list.every((a) => a.status !== 'pending'),
        sig,
      );
      if (final === undefined || final.status !== 'valid') {
        const failed = (final?.challenges as unknown as ChallengeLike[] | undefined)?.find((c) => c.url === ch.url);
        throw new AcmeOrderError(`${type} for ${name} ${final?.status ?? 'missing'}: ${detailOf(failed?.error)}`, 'invalid', true);
      }
      return type;
    } finally {
      // Cleanup must not mask the order's own error, and must not be skipped by it either.
      await (type === 'http-01' ? publish.deleteHttp01(token) : publish.deleteAlpn(name)).catch(() => {});
      // An authorization left pending counts against the CA's pending-authorization limit.
      if (!completed && !sig.aborted) await client.deactivateAuthorization(authz).catch(() => {});
    }
  }

  #client(keyPem: string, accountUrl: string | null, sig: AbortSignal, trace: OrderTrace): acme.Client {
    const client = new acme.Client({
      directoryUrl: this.settings.directoryUrl,
      accountKey: keyPem,
      ...(accountUrl !== null ? { accountUrl } : {}),
      ...(this.settings.eab !== null ? { externalAccountBinding: { kid: this.settings.eab.kid, hmacKey: this.settings.eab.hmacKey } } : {}),
    });
    installTransport(client, this.#http, sig, trace);
    return client;
  }

  /** `trace`: the registering order's, so that a refusal (rate limit, EAB) is classified. */
  #ensureAccount(sig: AbortSignal, trace: OrderTrace): Promise<Account> {
    if (this.#account === null) {
      const p = this.#loadOrRegister(sig, trace);
      this.#account = p;
      // A failed registration is tried again by the next order, not cached.
      p.catch(() => {
        if (this.#account === p) this.#account = null;
      });
    }
    return this.#account;
  }

  async #loadOrRegister(sig: AbortSignal, trace: OrderTrace): Promise<Account> {
    const directoryUrl = this.settings.directoryUrl;
    const rec = await this.#store.getAccount(directoryUrl);
    if (rec !== null && rec.accountUrl !== null) return { keyPem: rec.accountKeyPem, url: rec.accountUrl };

    let keyPem = rec?.accountKeyPem ?? null;
    const createdAt = rec?.createdAt ?? Date.now();
    if (keyPem === null) {
      keyPem = (await acme.crypto.createPrivateEcdsaKey('P-256')).toString('utf8');
      await this.#store.putAccount({ directoryUrl, accountKeyPem: keyPem, accountUrl: null, email: this.settings.email, createdAt });
    }
    const client = this.#client(keyPem, null, sig, trace);
    await client.createAccount({
      termsOfServiceAgreed: this.settings.termsAgreed,
      ...(this.settings.email !== null ? { contact: [`mailto:${this.settings.email}`] } : {}),
    });
    const url = client.getAccountUrl();
    await this.#store.putAccount({ directoryUrl, accountKeyPem: keyPem, accountUrl: url, email: this.settings.email, createdAt });
    this.#log?.info({ directoryUrl, accountUrl: url }, 'acme account registered');
    return { keyPem, url };
  }

  async #forgetAccountUrl(): Promise<void> {
    this.#account = null;
    const rec = await this.#store.getAccount(this.settings.directoryUrl);
    if (rec !== null) await this.#store.putAccount({ ...rec, accountUrl: null });
  }
}

async function poll<T>(fetch: () => Promise<T>, done: (v: T) => boolean, sig: AbortSignal): Promise<T> {
  let wait = POLL_FIRST_MS;
  for (;;) {
    const v = await fetch();
    if (done(v)) return v;
    await sleep(wait, undefined, { signal: sig });
    wait = Math.min(wait * 2, POLL_MAX_MS);
  }
}

function detailOf(error: unknown): string {
  if (error !== null && typeof error === 'object') {
    const e = error as { detail?: unknown; type?: unknown };
    if (typeof e.detail === 'string' && e.detail !== '') return e.detail;
    if (typeof e.type === 'string') return e.type;
  }
  return 'no detail from the CA';
}

function classify(
  err: unknown,
  trace: OrderTrace,
  step: string,
  placed: boolean,
  sig: AbortSignal,
  deadline: AbortSignal,
  orderTimeoutMs: number,
): AcmeOrderError {
  if (err instanceof AcmeOrderError) return err;
  let message = err instanceof Error ? err.message : String(err);
  if (sig.aborted) {
    message = deadline.aborted ? `order timed out after ${orderTimeoutMs} ms` : 'order abandoned (stopping)';
    return new AcmeOrderError(`${step}: ${message}`, 'error', placed);
  }
  const problem = trace.lastProblem;
  const type = problem?.type.startsWith(PROBLEM_NS) ? problem.type.slice(PROBLEM_NS.length) : '';
  if (type === 'rateLimited') return new AcmeOrderError(`${step}: rate limited by the CA: ${message}`, 'rate-limited', placed, trace.retryAfterMs);
  if (REFUSALS.includes(type)) return new AcmeOrderError(`${step}: ${message}`, 'invalid', placed);
  return new AcmeOrderError(`${step}: ${message}`, 'error', placed, trace.retryAfterMs);
}
