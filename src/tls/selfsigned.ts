// Self-signed certificate for development and `default_self_signed` ports (spec section 7).
//
// Key: ECDSA P-256 made by node:crypto (about 1 ms; an RSA-2048 key takes 40-120 ms, and every
// handshake signs with it, where a P-256 signature is far cheaper). Certificate: node-forge
// builds the X.509 structure (names, extensions, DER). forge's own Certificate.sign() only knows
// RSA (it hard-codes `<md>WithRSAEncryption` and an RSA SubjectPublicKeyInfo), so we assemble the
// TBSCertificate from forge ASN.1 parts and sign its DER with node:crypto.
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import { normalizeHostname, subjectAltNames } from './names.ts';

export interface KeyPairPem {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface SelfSigned extends KeyPairPem {
  /** false when an existing certificate on disk was reused. */
  readonly generated: boolean;
}

/** Directory under the certs dir; the leading `_` keeps the cert table scan away from it. */
export const SELF_SIGNED_DIR = '_self-signed';
const VALIDITY_MS = 365 * 24 * 3600_000;
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;
// Clients whose clock is a little behind would reject a certificate that starts "now".
const BACKDATE_MS = 3600_000;
const LOOPBACK_IPS = ['127.0.0.1', '::1'];

const asn1 = forge.asn1;
const U = asn1.Class.UNIVERSAL;
const T = asn1.Type;
const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
// Untyped in @types/node-forge, present in forge's x509.js.
const extensionsToAsn1 = (forge.pki as unknown as { certificateExtensionsToAsn1(exts: unknown[]): forge.asn1.Asn1 })
  .certificateExtensionsToAsn1;

/** Lower-cased, trailing dot stripped, de-duplicated; IP literals separated out. */
function splitNames(hostnames: readonly string[]): { dns: string[]; ips: string[] } {
  const dns = new Set<string>();
  const ips = new Set<string>(LOOPBACK_IPS);
  for (const h of hostnames) {
    const n = normalizeHostname(h.trim());
    if (n === '') continue;
    if (isIP(n) !== 0) ips.add(n);
    else dns.add(n);
  }
  if (dns.size === 0) dns.add('localhost');
  return { dns: [...dns], ips: [...ips] };
}

// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
function timeAsn1(d: Date): forge.asn1.Asn1 {
  return d.getUTCFullYear() < 2050
    ? asn1.create(U, T.UTCTIME, false, asn1.dateToUtcTime(d))
    : asn1.create(U, T.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d));
}

// RFC 5758 §3.2: ecdsa-with-SHA256 has no parameters field at all (not even NULL).
function ecdsaSha256(): forge.asn1.Asn1 {
  return asn1.create(U, T.SEQUENCE, true, [asn1.create(U, T.OID, false, asn1.oidToDer(ECDSA_WITH_SHA256).getBytes())]);
}

/** A fresh self-signed certificate valid for one year, for the given host names plus loopback IPs. */
export function createSelfSigned(hostnames: readonly string[], now: Date = new Date()): KeyPairPem {
  const { dns, ips } = splitNames(hostnames);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spkiDer = publicKey.export({ type: 'spki', format: 'der' });

  // A forge certificate object only to have forge fill in names and extension values.
  const shape = forge.pki.createCertificate();
  shape.setSubject([
    { name: 'organizationName', value: 'petrel' },
    // RFC 5280 ub-common-name is 64; clients use the SANs anyway, the CN is for humans.
    { name: 'commonName', value: dns[0].length <= 64 ? dns[0] : 'petrel self-signed' },
  ]);
  shape.setIssuer(shape.subject.attributes);
  shape.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    // RFC 5480 §3: an ECDSA key signs; keyEncipherment would be wrong for it.
    { name: 'keyUsage', digitalSignature: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [...dns.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))],
    },
  ]);

  // RFC 5280 §4.1.2.2: positive, at most 20 octets; setting bit 6 keeps it positive and minimal.
  const serial = randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x40;

  const tbs = asn1.create(U, T.SEQUENCE, true, [
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [
      asn1.create(U, T.INTEGER, false, asn1.integerToDer(2).getBytes()), // v3
    ]),
    asn1.create(U, T.INTEGER, false, serial.toString('binary')),
    ecdsaSha256(),
    forge.pki.distinguishedNameToAsn1(shape.issuer),
    asn1.create(U, T.SEQUENCE, true, [
      timeAsn1(new Date(now.getTime() - BACKDATE_MS)),
      timeAsn1(new Date(now.getTime() + VALIDITY_MS)),
    ]),
    forge.pki.distinguishedNameToAsn1(shape.subject),
    asn1.fromDer(spkiDer.toString('binary')),
    extensionsToAsn1(shape.extensions), // already wrapped in the [3] EXPLICIT tag
  ]);
  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  const signature = sign('sha256', tbsDer, privateKey); // DER ECDSA-Sig-Value, as X.509 wants
  const cert = asn1.create(U, T.SEQUENCE, true, [
    tbs,
    ecdsaSha256(),
    asn1.create(U, T.BITSTRING, false, '\x00' + signature.toString('binary')),
  ]);
  return {
    certPem: forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(cert).getBytes() }),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/**
 * True when the pair is usable as is: parses, key matches, covers every host name and both
 * loopback IPs, and is not within 30 days of expiry.
 */
export function selfSignedCovers(pair: KeyPairPem, hostnames: readonly string[], now: Date = new Date()): boolean {
  try {
    const x509 = new X509Certificate(pair.certPem);
    if (!x509.checkPrivateKey(createPrivateKey(pair.keyPem))) return false;
    const t = now.getTime();
    if (Date.parse(x509.validFrom) > t || Date.parse(x509.validTo) - RENEW_BEFORE_MS <= t) return false;
    const { dns, ips } = splitNames(hostnames);
    const have = new Set(subjectAltNames(x509).dns);
    return dns.every((n) => have.has(n)) && ips.every((ip) => x509.checkIP(ip) !== undefined);
  } catch {
    return false;
  }
}

/**
 * Atomic replace: a reader never sees a half-written file. No fsync: after a crash a torn pair
 * fails selfSignedCovers() and is simply made again.
 */
async function writeAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * The self-signed pair in `<certsDir>/_self-signed/`, reused when it still covers `hostnames`
 * and has more than 30 days left, otherwise made anew and written (key mode 0600).
 * Control plane only: it does file I/O.
 */
export async function ensureSelfSigned(
  certsDir: string,
  hostnames: readonly string[],
  now: Date = new Date(),
): Promise<SelfSigned> {
  const dir = join(certsDir, SELF_SIGNED_DIR);
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const existing = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]).catch(() => null);
  if (existing !== null) {
    const pair = { certPem: existing[0], keyPem: existing[1] };
    if (selfSignedCovers(pair, hostnames, now)) return { ...pair, generated: false };
  }
  const pair = createSelfSigned(hostnames, now);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Key first: should we stop in between, the old cert no longer matches and the pair is remade.
  await writeAtomic(keyFile, pair.keyPem, 0o600);
  await writeAtomic(certFile, pair.certPem, 0o644);
  return { ...pair, generated: true };
}
