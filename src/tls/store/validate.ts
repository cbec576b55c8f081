// Checks of the keys every certificate store is addressed by (host names, ACME tokens). Shared by
// the implementations so that a name refused by one is refused by all: the file store turns a
// host name into a directory name and the cluster store into a KV key, and neither may let
// `../x` or `a/b` through.
import { isIP } from 'node:net';

export type StoreInputCode = 'bad-hostname' | 'bad-token' | 'bad-input';

/** Refused input: a programming or operator error, never retried. */
export class StoreInputError extends Error {
  readonly code: StoreInputCode;
  constructor(code: StoreInputCode, message: string) {
    super(message);
    this.name = 'StoreInputError';
    this.code = code;
  }
}

// RFC 1123 §2.1 LDH labels. Underscores are refused on purpose: public CAs do not issue for them
// (CA/B BR 7.1.4.2), and `wildcard_.` below relies on no label containing one.
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Throws StoreInputError('bad-hostname') unless `name` is a lower-case DNS name (RFC 1123
 * labels, at most 253 characters, no trailing dot, not an IP literal), optionally preceded by
 * `*.` for a wildcard one label deep (RFC 6125 §6.4.3). No normalising: the caller decides.
 */
export function checkHostname(name: unknown): string {
  if (typeof name !== 'string') throw new StoreInputError('bad-hostname', `host name must be a string, got ${typeof name}`);
  const shown = JSON.stringify(name.length > 80 ? name.slice(0, 80) + '…' : name);
  const bare = name.startsWith('*.') ? name.slice(2) : name;
  if (bare.length === 0 || name.length > 253) {
    throw new StoreInputError('bad-hostname', `host name ${shown} is empty or longer than 253 characters`);
  }
  if (bare !== bare.toLowerCase()) throw new StoreInputError('bad-hostname', `host name ${shown} must be lower-case`);
  if (isIP(bare) !== 0) throw new StoreInputError('bad-hostname', `host name ${shown} is an IP address`);
  for (const label of bare.split('.')) {
    if (!LABEL.test(label)) {
      throw new StoreInputError('bad-hostname', `host name ${shown} is not a DNS name (labels of a-z, 0-9 and inner '-', at most 63 characters; optional leading '*.')`);
    }
  }
  return name;
}

// RFC 8555 §8.1: a token is base64url without padding; 16 bytes of entropy at least, so at
// least 22 characters in practice, but tests and other CAs use shorter ones.
const TOKEN = /^[A-Za-z0-9_-]{1,512}$/;

/** Throws StoreInputError('bad-token') unless `token` is an ACME challenge token (base64url). */
export function checkToken(token: unknown): string {
  if (typeof token !== 'string' || !TOKEN.test(token)) {
    const shown = typeof token === 'string' ? JSON.stringify(token.slice(0, 80)) : typeof token;
    throw new StoreInputError('bad-token', `ACME token ${shown} is not base64url (RFC 8555 §8.1)`);
  }
  return token;
}

/** Throws StoreInputError('bad-input') naming `what` unless `value` is a non-empty string. */
export function checkNonEmpty(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new StoreInputError('bad-input', `${what} must be a non-empty string`);
  return value;
}
