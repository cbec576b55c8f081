// Checks of a PEM chain and key before a certificate store accepts them, and the metadata kept
// next to a stored pair. A refused pair is a CertRejected with a stable `reason` that the admin
// API and the ACME manager can map without reading the message.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { subjectAltNames } from '../names.ts';
import type { CertMeta } from './certStore.ts';

export type CertRejectReason =
  | 'unreadable-cert'
  | 'unreadable-key'
  /** The certificates after the leaf do not each issue the one before (wrong bundle or order). */
  | 'bad-chain'
  | 'key-mismatch'
  | 'no-dns-names'
  | 'hostname-not-covered'
  | 'expired'
  | 'not-yet-valid';

export class CertRejected extends Error {
  readonly reason: CertRejectReason;
  constructor(reason: CertRejectReason, message: string) {
    super(message);
    this.name = 'CertRejected';
    this.reason = reason;
  }
}

// Anything between the blocks (openssl's "Bag Attributes", comments) is allowed and ignored.
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function parseChain(chainPem: string): X509Certificate[] {
  const blocks = typeof chainPem === 'string' ? chainPem.match(PEM_CERT) : null;
  if (blocks === null) throw new CertRejected('unreadable-cert', 'the chain holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new CertRejected('unreadable-cert', `certificate ${i + 1} of the chain is not readable (${(err as Error).message})`);
    }
  });
}

function parseKey(keyPem: string): KeyObject {
  try {
    return createPrivateKey(keyPem);
  } catch (err) {
    throw new CertRejected('unreadable-key', `the key is not a readable unencrypted PEM private key (${(err as Error).message})`);
  }
}

/** `CN=`, else `O=`, else the whole issuer on one line. */
export function issuerName(x509: X509Certificate): string {
  // X509Certificate.issuer is one `KEY=value` per line (node_crypto X509_NAME_print_ex, RFC 2253 escapes).
  const lines = x509.issuer.split('\n');
  const pick = (key: string): string | undefined => lines.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
  return pick('CN') ?? pick('O') ?? lines.join(', ');
}

/**
 * Parse a pair and describe it, checking what makes it unusable whatever the date or host name:
 * every certificate readable, the chain in order (leaf first), the key readable and matching the
 * leaf, at least one DNS name. For reading back what is already stored; new pairs go through
 * inspectPair.
 */
export function describePair(chainPem: string, keyPem: string, storedAt: number): CertMeta {
  const chain = parseChain(chainPem);
  const key = parseKey(keyPem);
  const leaf = chain[0]!;
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.checkIssued(chain[i + 1]!)) {
      throw new CertRejected('bad-chain', `certificate ${i + 2} of the chain (${chain[i + 1]!.subject.replace(/\n/g, ', ')}) did not issue certificate ${i + 1}; the chain must be the leaf, then each issuer in turn`);
    }
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new CertRejected('key-mismatch', 'the key does not match the first certificate of the chain (the chain must start with the leaf)');
  }
  const names = subjectAltNames(leaf).dns;
  // Clients have ignored the subject CN for host names for years (RFC 6125 §6.4.4, CA/B BR).
  if (names.length === 0) throw new CertRejected('no-dns-names', 'the certificate has no DNS names in its subjectAltName');
  return Object.freeze({
    names: Object.freeze(names),
    issuer: issuerName(leaf),
    notBefore: Date.parse(leaf.validFrom),
    notAfter: Date.parse(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
    storedAt,
  });
}

/**
 * RFC 6125 §6.4.3: `a.example.com` is covered by itself or by `*.example.com` (one label, no
 * partial wildcards); a wildcard host name only by the same wildcard.
 */
export function namesCover(names: readonly string[], hostname: string): boolean {
  if (names.includes(hostname)) return true;
  if (hostname.startsWith('*.')) return false;
  const dot = hostname.indexOf('.');
  return dot > 0 && names.includes(`*${hostname.slice(dot)}`);
}

export interface InspectOptions {
  /** ms since epoch; Date.now() by default. Also the returned `storedAt`. */
  readonly now?: number;
  /** When given, the certificate must cover it. */
  readonly hostname?: string;
}

/**
 * Everything describePair checks, plus: the leaf covers `hostname` and is valid at `now`.
 * Throws CertRejected; returns the metadata to store next to the pair.
 */
export function inspectPair(chainPem: string, keyPem: string, opts: InspectOptions = {}): CertMeta {
  const now = opts.now ?? Date.now();
  const meta = describePair(chainPem, keyPem, now);
  if (opts.hostname !== undefined && !namesCover(meta.names, opts.hostname)) {
    throw new CertRejected('hostname-not-covered', `the certificate does not cover ${opts.hostname}: its names are ${meta.names.join(', ')}`);
  }
  const forHost = `the certificate for ${opts.hostname ?? meta.names.join(', ')}`;
  if (meta.notAfter <= now) {
    throw new CertRejected('expired', `${forHost} expired on ${new Date(meta.notAfter).toISOString()}`);
  }
  if (meta.notBefore > now) {
    throw new CertRejected('not-yet-valid', `${forHost} is not valid before ${new Date(meta.notBefore).toISOString()}`);
  }
  return meta;
}
