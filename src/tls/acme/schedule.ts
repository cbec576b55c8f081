// The arithmetic of the ACME schedule, kept pure so that it is tested without a CA or a clock.

/** Jitter never exceeds this share of a certificate's lifetime, however large renewJitterMs is. */
const MAX_JITTER_SHARE = 0.05;

/**
 * When to renew: notBefore + fraction × lifetime, moved by up to ± jitter (at most 5 % of the
 * lifetime) so that certificates issued together do not all renew in the same minute.
 * `rand` returns [0, 1).
 */
export function renewalAt(notBefore: number, notAfter: number, fraction: number, jitterMs: number, rand: () => number = Math.random): number {
  const lifetime = Math.max(0, notAfter - notBefore);
  const jitter = Math.min(jitterMs, lifetime * MAX_JITTER_SHARE);
  return Math.round(notBefore + fraction * lifetime + (rand() * 2 - 1) * jitter);
}

/**
 * Delay before retry number `failures` (1 for the first failure): min × 2^(failures-1) capped at
 * max, then shortened by up to 20 % at random so that names that failed together (the CA was
 * down) do not retry in lockstep. Never above max, and growing with `failures` until the cap.
 */
export function backoffDelay(failures: number, minMs: number, maxMs: number, rand: () => number = Math.random): number {
  const exp = Math.min(Math.max(failures, 1) - 1, 52); // 2^52 ms is beyond any cap; avoids Infinity
  const raw = Math.min(maxMs, minMs * 2 ** exp);
  return Math.round(raw * (1 - 0.2 * rand()));
}

/** A token bucket: `burst` tokens, refilled at `perMinute`. */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(perMinute: number, burst: number, now: number) {
    this.#ratePerMs = perMinute / 60_000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  /** Takes one token if there is one. */
  take(now: number): boolean {
    if (now > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#ratePerMs);
      this.#at = now;
    }
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
