// Values and messages travel as JSON text in both implementations, so the embedded store behaves
// like the wire: no shared mutable objects, the same size limit, the same refusals.

import { StoreError } from './errors.ts';
import { MAX_VALUE_BYTES } from './types.ts';

export function serialize(value: unknown, what = 'value'): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new StoreError('invalid', `${what} is not JSON-serialisable: ${(err as Error).message}`, { cause: err });
  }
  if (text === undefined) throw new StoreError('invalid', `${what} is not JSON-serialisable`);
  if (Buffer.byteLength(text) > MAX_VALUE_BYTES) {
    throw new StoreError('invalid', `${what} larger than ${MAX_VALUE_BYTES} bytes as JSON`);
  }
  return text;
}

function deepFreeze(v: unknown): unknown {
  if (typeof v === 'object' && v !== null) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

/** Parsed and deep-frozen, so one decoded value can be handed to every listener. */
export function parse(text: string): unknown {
  return deepFreeze(JSON.parse(text));
}

// Replies to requests: an envelope, so a handler's failure travels back as data instead of being
// confused with a reply whose value happens to look like an error.
type Reply = { ok: true; value?: unknown } | { ok: false; error: { message: string; code?: string } };

export function replyOk(value: unknown): string {
  return serialize({ ok: true, value } satisfies Reply, 'reply');
}

export function replyError(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown } | null;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const code = typeof e?.code === 'string' ? e.code : undefined;
  // The message is cut so an error carrying a huge payload still fits in a reply.
  return JSON.stringify({ ok: false, error: { message: message.slice(0, 4096), code } } satisfies Reply);
}

/** The reply's value, or a `remote` StoreError carrying the responder's message and code. */
export function readReply(text: string, subject: string): unknown {
  let r: Reply;
  try {
    r = parse(text) as Reply;
  } catch (err) {
    throw new StoreError('remote', `malformed reply on ${subject}`, { cause: err });
  }
  if (r.ok) return r.value;
  const { message, code } = r.error;
  throw new StoreError('remote', `${subject}: ${message}`, code === undefined ? {} : { remoteCode: code });
}
