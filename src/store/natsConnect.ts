// Connection options and error mapping for the NATS store: the client behaviours we rely on or
// work around are decided here, in one place.

import { readFileSync } from 'node:fs';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { credsAuthenticator, errors, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { ResolvedNatsConfig } from './config.ts';
import { StoreError } from './errors.ts';

/**
 * Reconnect pause: as long as the outage has lasted so far (so it doubles, like exponential
 * backoff), between the configured bounds, with jitter so a fleet does not reconnect in step.
 * Based on elapsed time rather than an attempt counter because the client calls the handler
 * more than once per dial while it waits.
 */
export function reconnectDelay(cfg: ResolvedNatsConfig, downSinceMs: number | null): number {
  const down = downSinceMs === null ? 0 : Date.now() - downSinceMs;
  const base = Math.min(cfg.reconnectMaxMs, Math.max(cfg.reconnectMinMs, down));
  return Math.round(base * (0.75 + Math.random() * 0.25));
}

export function connectionOptions(cfg: ResolvedNatsConfig, delay: () => number): NodeConnectionOptions {
  const o: NodeConnectionOptions = {
    servers: [...cfg.servers],
    name: cfg.name,
    // Never give up: a node rides out any outage and resynchronises (the requirement).
    maxReconnectAttempts: -1,
    reconnectDelayHandler: delay,
    timeout: cfg.connectTimeoutMs,
    pingInterval: cfg.pingIntervalMs,
    maxPingOut: cfg.maxPingOut,
  };
  if (cfg.token !== undefined) o.token = cfg.token;
  if (cfg.user !== undefined) {
    o.user = cfg.user;
    o.pass = cfg.pass;
  }
  if (cfg.credsFile !== undefined) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(cfg.credsFile);
    } catch (err) {
      throw new StoreError('invalid', `cannot read store credentials ${cfg.credsFile}: ${(err as Error).message}`, { cause: err });
    }
    o.authenticator = credsAuthenticator(creds);
  }
  return o;
}

/** Rejection used when the connection drops under a pending call; mapped per call below. */
export const LOST = new StoreError('unavailable', 'connection to NATS lost');

/**
 * A StoreError for whatever the client threw. `kind` says what the call was: for a KV operation
 * "no responders" means JetStream is not answering (503-worthy), for a request it means nobody
 * serves the subject.
 */
export function mapError(err: unknown, what: string, kind: 'kv' | 'request', connected: boolean): StoreError {
  if (err === LOST) {
    return new StoreError('unavailable', `${what}: connection to NATS lost before an answer; the outcome is unknown`);
  }
  if (err instanceof StoreError) return err;
  if (err instanceof JetStreamApiError) {
    if (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown) {
      return new StoreError('conflict', `${what}: revision changed (${err.message})`, { cause: err });
    }
    return new StoreError('unavailable', `${what}: ${err.message}`, { cause: err });
  }
  const cause = (err as { cause?: unknown } | null)?.cause;
  const noResponders =
    err instanceof errors.NoRespondersError ||
    cause instanceof errors.NoRespondersError ||
    (err instanceof errors.RequestError && err.isNoResponders());
  if (noResponders) {
    return kind === 'request'
      ? new StoreError('no-responder', `${what}: nobody serves this subject`, { cause: err })
      : new StoreError('unavailable', `${what}: JetStream is not answering`, { cause: err });
  }
  if (err instanceof errors.TimeoutError || cause instanceof errors.TimeoutError) {
    // A KV call that times out while connected means JetStream cannot serve it (no stream
    // leader, no quorum): the store is unavailable for writes, as during an outage.
    if (kind === 'kv' || !connected) {
      return new StoreError('unavailable', `${what}: NATS did not answer in time`, { cause: err });
    }
    return new StoreError('timeout', `${what}: no reply in time`, { cause: err });
  }
  if (err instanceof errors.ClosedConnectionError) return new StoreError('closed', `${what}: connection closed`, { cause: err });
  return new StoreError('unavailable', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
