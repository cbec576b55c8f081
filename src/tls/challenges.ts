// ACME challenge answers as the data plane reads them: in memory, map lookups only. The control
// plane (src/tls/acme/challengeSync.ts) fills the book from the certificate store, so a node
// answers validations for orders that another node of the cluster placed.
//
// Data-plane safe: no store, no acme-client, no config loading here.
//
// How a listener uses it:
// - HTTP, before any app routing: `const token = isAcmeChallengePath(path)`; when not null,
//   `book.http01(token)` is the body (200, text/plain) or undefined (404).
// - TLS (RFC 8737): Node calls ALPNCallback before SNICallback, both with the server TLSSocket as
//   `this`. In ALPNCallback, `if (book.claimAlpnHandshake(this, servername, protocols)) return
//   ACME_TLS_ALPN;` then in SNICallback, `const ctx = book.claimedContext(this)` first and answer
//   with it when defined. After the handshake, a socket whose alpnProtocol is ACME_TLS_ALPN is
//   closed: the validation carries no application data.
// The claim keeps the challenge certificate away from ordinary clients: only a handshake that
// offers `acme-tls/1` ever sees it, so renewing a name does not disturb its live traffic.

import { createSecureContext, type SecureContext } from 'node:tls';

/** RFC 8737 §4: the ALPN protocol id of TLS-ALPN-01 validation handshakes. */
export const ACME_TLS_ALPN = 'acme-tls/1';

/** RFC 8555 §8.3: where HTTP-01 answers live. */
const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
// Tokens are base64url of at least 128 bits (RFC 8555 §8.1); Let's Encrypt's are 43 characters.
// The cap keeps junk requests from being looked up at all.
const MAX_TOKEN = 256;

function isBase64UrlChar(c: number): boolean {
  return (
    (c >= 65 && c <= 90) || // A-Z
    (c >= 97 && c <= 122) || // a-z
    (c >= 48 && c <= 57) || // 0-9
    c === 45 || // -
    c === 95 // _
  );
}

/**
 * The token of an HTTP-01 request path (`/.well-known/acme-challenge/<token>`, a query string
 * ignored), or null when the path is not one or the token is not base64url.
 */
export function isAcmeChallengePath(path: string): string | null {
  if (!path.startsWith(CHALLENGE_PREFIX)) return null;
  const q = path.indexOf('?', CHALLENGE_PREFIX.length);
  const end = q === -1 ? path.length : q;
  const len = end - CHALLENGE_PREFIX.length;
  if (len === 0 || len > MAX_TOKEN) return null;
  for (let i = CHALLENGE_PREFIX.length; i < end; i++) {
    if (!isBase64UrlChar(path.charCodeAt(i))) return null;
  }
  return path.slice(CHALLENGE_PREFIX.length, end);
}

/** DNS names are case-insensitive; SNI may carry an absolute name with a trailing dot. */
function hostKey(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

export class ChallengeBook {
  readonly #http = new Map<string, string>();
  readonly #alpn = new Map<string, SecureContext>();
  // Handshakes that offered acme-tls/1 for a name with a challenge, from ALPNCallback to
  // SNICallback. Weak: a socket that goes away takes its entry with it.
  readonly #claims = new WeakMap<object, SecureContext>();

  /** The key authorization for an HTTP-01 token, or undefined. */
  http01(token: string): string | undefined {
    return this.#http.get(token);
  }

  /** The TLS-ALPN-01 context for a host name (any case, trailing dot allowed), or undefined. */
  alpnContext(hostname: string): SecureContext | undefined {
    if (this.#alpn.size === 0) return undefined;
    return this.#alpn.get(hostKey(hostname));
  }

  /** True while any TLS-ALPN-01 challenge is published (lets a listener skip all ACME work). */
  get hasAlpn(): boolean {
    return this.#alpn.size > 0;
  }

  /**
   * For ALPNCallback: true when the client offers `acme-tls/1` and a challenge exists for
   * `servername`; the handshake (`socket`) is then remembered for claimedContext().
   * `servername` is false/empty when the client sent no SNI: never a validation.
   */
  claimAlpnHandshake(socket: object, servername: string | false | undefined, protocols: readonly string[]): boolean {
    if (this.#alpn.size === 0 || !servername || !protocols.includes(ACME_TLS_ALPN)) return false;
    const ctx = this.#alpn.get(hostKey(servername));
    if (ctx === undefined) return false;
    this.#claims.set(socket, ctx);
    return true;
  }

  /** For SNICallback: the challenge context of a handshake claimed in ALPNCallback. */
  claimedContext(socket: object): SecureContext | undefined {
    return this.#claims.get(socket);
  }

  // Mutators: control plane only (challengeSync), never per request.

  setHttp01(token: string, keyAuthorization: string): void {
    this.#http.set(token, keyAuthorization);
  }

  deleteHttp01(token: string): void {
    this.#http.delete(token);
  }

  /** Builds the SecureContext once, here, so the handshake only looks it up. */
  setAlpn(hostname: string, certPem: string, keyPem: string): void {
    this.#alpn.set(hostKey(hostname), createSecureContext({ cert: certPem, key: keyPem }));
  }

  deleteAlpn(hostname: string): void {
    this.#alpn.delete(hostKey(hostname));
  }
}
