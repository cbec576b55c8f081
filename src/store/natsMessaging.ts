// Publish/subscribe and request/reply on core NATS, under `<prefix>.` so several petrel clusters
// can share servers. Inputs arrive validated and serialised (nats.ts); this module owns the wire
// side: subjects, queue groups, reply envelopes, error mapping.

import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { parse, readReply, replyError, replyOk } from './codec.ts';
import { mapError } from './natsConnect.ts';
import type { StoreLog, Unsubscribe } from './types.ts';

export interface MessagingHost {
  readonly nc: NatsConnection;
  readonly prefix: string;
  readonly log: StoreLog;
  connected(): boolean;
  /** Throws `unavailable` when disconnected. */
  checkConnected(what: string): void;
  guard<T>(what: string, p: Promise<T>): Promise<T>;
}

export type Handler = (data: unknown, subject: string) => unknown;

export class NatsMessaging {
  readonly #h: MessagingHost;

  constructor(host: MessagingHost) {
    this.#h = host;
  }

  #wire(subject: string): string {
    return `${this.#h.prefix}.${subject}`;
  }

  /** The caller's subject for a received message (our prefix removed). */
  #local(msg: Msg): string {
    return msg.subject.slice(this.#h.prefix.length + 1);
  }

  publish(subject: string, text: string): void {
    // While disconnected the client would buffer this and drop it at the next dial: say so instead.
    this.#h.checkConnected(`publish ${subject}`);
    try {
      this.#h.nc.publish(this.#wire(subject), text);
    } catch (err) {
      throw mapError(err, `publish ${subject}`, 'request', this.#h.connected());
    }
  }

  subscribe(subject: string, handler: (data: unknown, subject: string) => void): Unsubscribe {
    // Subscriptions survive disconnects: the client sends them again after reconnecting.
    const sub = this.#h.nc.subscribe(this.#wire(subject), {
      callback: (err, msg) => {
        if (err !== null) {
          this.#h.log.warn({ err, subject }, 'cluster store subscription failed');
          return;
        }
        try {
          handler(parse(msg.string()), this.#local(msg));
        } catch (e) {
          this.#h.log.error({ err: e, subject: msg.subject }, 'store subscriber threw');
        }
      },
    });
    return () => sub.unsubscribe();
  }

  async request(subject: string, text: string, timeoutMs: number): Promise<unknown> {
    const what = `request ${subject}`;
    this.#h.checkConnected(what);
    let reply: Msg;
    try {
      reply = await this.#h.guard(what, this.#h.nc.request(this.#wire(subject), text, { timeout: timeoutMs }));
    } catch (err) {
      throw mapError(err, what, 'request', this.#h.connected());
    }
    return readReply(reply.string(), subject);
  }

  serve(subject: string, handler: Handler): Unsubscribe {
    // A queue group, so with several servers on a subject exactly one answers each request.
    const sub = this.#h.nc.subscribe(this.#wire(subject), {
      queue: `${this.#h.prefix}_serve`,
      callback: (err, msg) => {
        if (err === null) void this.#answer(msg, handler);
      },
    });
    return () => sub.unsubscribe();
  }

  async #answer(msg: Msg, handler: Handler): Promise<void> {
    let reply: string;
    try {
      reply = replyOk(await handler(parse(msg.string()), this.#local(msg)));
    } catch (err) {
      reply = replyError(err);
    }
    if (!msg.respond(reply)) this.#h.log.warn({ subject: msg.subject }, 'cluster store: request had no reply subject');
  }
}
