// Keeps a ChallengeBook (what the listeners read) equal to the challenge answers in the store
// (what every node's ACME manager writes), and is the publisher an AcmeManager hands its orders.
//
// Every node runs one, ACME on or off: in a cluster the CA may validate through any node, so
// each must answer for orders that another node placed.
//
// Per key (token or host name) the refreshes run one after another and each reads the store
// afresh, so the book ends on the store's latest value whatever order the store's events and
// reads complete in; publishing awaits its own refresh, so when putHttp01()/putAlpn() resolve
// the local listeners already answer (the CA may validate the moment it is told to).

import { setTimeout as sleep } from 'node:timers/promises';
import type { ChallengeBook } from '../challenges.ts';
import type { CertStore } from '../store/certStore.ts';
import type { ChallengePublisher } from './client.ts';

export interface ChallengeSyncLogger {
  warn(obj: object, msg: string): void;
}

export class ChallengeSync implements ChallengePublisher {
  readonly #store: CertStore;
  readonly #book: ChallengeBook;
  readonly #log: ChallengeSyncLogger;
  readonly #settleMs: number;
  readonly #tails = new Map<string, Promise<void>>();
  #unwatch: (() => void) | null = null;

  /**
   * `settleMs`: with a shared store, how long a publish waits after the local book answers, so
   * the other nodes (which learn it through the store, in about a millisecond) answer too
   * before the CA is told to validate: the CA may reach any node through anycast.
   */
  constructor(store: CertStore, book: ChallengeBook, log: ChallengeSyncLogger, settleMs = 0) {
    this.#store = store;
    this.#book = book;
    this.#log = log;
    this.#settleMs = settleMs;
  }

  #settle(): Promise<void> {
    return this.#settleMs === 0 ? Promise.resolve() : sleep(this.#settleMs);
  }

  /** Follows the store's changes (also other nodes', with the cluster store). */
  start(): void {
    if (this.#unwatch !== null) return;
    this.#unwatch = this.#store.watch((change) => {
      // Failures are logged by #refresh; nobody awaits these.
      if (change.kind === 'challenge') this.#refresh(`h:${change.token}`, () => this.#applyHttp01(change.token)).catch(() => {});
      else if (change.kind === 'alpn-challenge') this.#refresh(`a:${change.hostname}`, () => this.#applyAlpn(change.hostname)).catch(() => {});
    });
  }

  /** Stops following the store; waits for refreshes under way. */
  async stop(): Promise<void> {
    this.#unwatch?.();
    this.#unwatch = null;
    await Promise.all(this.#tails.values());
  }

  async putHttp01(token: string, keyAuthorization: string): Promise<void> {
    await this.#store.putChallenge(token, keyAuthorization);
    await this.#refresh(`h:${token}`, () => this.#applyHttp01(token));
    await this.#settle();
  }

  async deleteHttp01(token: string): Promise<void> {
    try {
      await this.#store.deleteChallenge(token);
    } finally {
      // Even when the store refuses (closed during shutdown), stop answering locally.
      this.#book.deleteHttp01(token);
    }
  }

  async putAlpn(hostname: string, certPem: string, keyPem: string): Promise<void> {
    await this.#store.putAlpnChallenge({ hostname, certPem, keyPem });
    await this.#refresh(`a:${hostname}`, () => this.#applyAlpn(hostname));
    await this.#settle();
  }

  async deleteAlpn(hostname: string): Promise<void> {
    try {
      await this.#store.deleteAlpnChallenge(hostname);
    } finally {
      this.#book.deleteAlpn(hostname);
    }
  }

  async #applyHttp01(token: string): Promise<void> {
    const answer = await this.#store.getChallenge(token);
    if (answer === null) this.#book.deleteHttp01(token);
    else this.#book.setHttp01(token, answer);
  }

  async #applyAlpn(hostname: string): Promise<void> {
    const ch = await this.#store.getAlpnChallenge(hostname);
    if (ch === null) this.#book.deleteAlpn(hostname);
    else this.#book.setAlpn(hostname, ch.certPem, ch.keyPem);
  }

  /** Runs `apply` after every earlier refresh of `key`; the returned promise rejects on failure. */
  #refresh(key: string, apply: () => Promise<void>): Promise<void> {
    const run = (this.#tails.get(key) ?? Promise.resolve()).then(apply);
    const tail = run.catch((err: unknown) => {
      this.#log.warn({ key, err: (err as Error).message }, 'acme challenge answer not refreshed from the store');
    });
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return run;
  }
}
