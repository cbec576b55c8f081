// The cert table: built by the control plane at load/reload time, published inside a snapshot,
// read by the SNI callback with map lookups only (architecture: expensive work at build time).
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { subjectAltNames } from './names.ts';
import { issuerName } from './store/inspect.ts';
import type { KeyPairPem } from './selfsigned.ts';

/** Spec section 7: custom (imported) certificates win over ACME ones. */
export type CertOrigin = 'custom' | 'acme' | 'self-signed';
const ORIGIN_RANK: Readonly<Record<CertOrigin, number>> = { custom: 2, acme: 1, 'self-signed': 0 };

export interface CertSource extends KeyPairPem {
  /** Where it came from, for warnings and status: the directory name for `custom`. */
  readonly label: string;
  readonly origin: CertOrigin;
}

export interface CertEntry {
  readonly label: string;
  readonly origin: CertOrigin;
  /** SAN DNS names, lower-cased; wildcards as `*.example.com`. */
  readonly names: readonly string[];
  readonly notBefore: number; // ms since epoch
  readonly notAfter: number;
  readonly fingerprint256: string;
  /** The issuer's CN (else O), for status pages. */
  readonly issuer: string;
  /**
   * Only the certificate, chain and key of this context are used: Node's SNI switch
   * (UseSNIContext in node's crypto_tls.cc) copies just those into the connection. Versions,
   * ciphers, ticket keys and session id context always come from the listener's own options,
   * which is why there is one context per entry and not one per TLS version set.
   */
  readonly context: SecureContext;
}

export interface CertWarning {
  readonly label: string;
  readonly message: string;
}

export interface CertTableBuild {
  readonly table: CertTable;
  readonly warnings: readonly CertWarning[];
}

export class CertTable {
  readonly entries: readonly CertEntry[];
  /** The self-signed entry: for `default_self_signed` ports; never matched by name. */
  readonly defaultEntry: CertEntry | null;
  /** PEM of the default entry, for the listener's own key/cert (clients without SNI). */
  readonly defaultPem: KeyPairPem | null;
  readonly #exact: ReadonlyMap<string, CertEntry>;
  /** `*.example.com` indexed under `example.com`. */
  readonly #wildcard: ReadonlyMap<string, CertEntry>;

  constructor(
    entries: readonly CertEntry[],
    exact: ReadonlyMap<string, CertEntry>,
    wildcard: ReadonlyMap<string, CertEntry>,
    defaultEntry: CertEntry | null,
    defaultPem: KeyPairPem | null,
  ) {
    this.entries = Object.freeze(entries.slice());
    this.#exact = exact;
    this.#wildcard = wildcard;
    this.defaultEntry = defaultEntry;
    this.defaultPem = defaultPem === null ? null : Object.freeze({ certPem: defaultPem.certPem, keyPem: defaultPem.keyPem });
    Object.freeze(this);
  }

  /**
   * `servername` must already be normalised (normalizeHostname). Exact name first, then a
   * wildcard one label deep (RFC 6125 §6.4.3: `*.example.com` matches `a.example.com`, not
   * `a.b.example.com` nor `example.com`), else null. Hot path: two map lookups at most.
   */
  lookup(servername: string): CertEntry | null {
    const hit = this.#exact.get(servername);
    if (hit !== undefined) return hit;
    const dot = servername.indexOf('.');
    if (dot <= 0) return null;
    return this.#wildcard.get(servername.slice(dot + 1)) ?? null;
  }

  // The three below take a version set only to match the listener glue written against an
  // earlier sketch. They return the same context for every set: see CertEntry.context.

  contextFor(entry: CertEntry, _versions?: readonly string[]): SecureContext {
    return entry.context;
  }

  defaultContext(_versions?: readonly string[]): SecureContext | null {
    return this.defaultEntry === null ? null : this.defaultEntry.context;
  }

  /**
   * Beware: tls.Server ignores a `secureContext` option; for clients without SNI give the
   * listener `cert`/`key` from defaultPem instead (sni.ts tlsServerOptions does).
   */
  noSniContext(allowDefault: boolean, _versions?: readonly string[]): SecureContext | null {
    return allowDefault ? this.defaultContext() : null;
  }

  static readonly EMPTY: CertTable = new CertTable([], new Map(), new Map(), null, null);
}

/** Parse and check one pair; throws an Error whose message is the warning. */
function makeEntry(src: CertSource, now: number): CertEntry {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(src.certPem); // the first certificate: must be the leaf
  } catch (err) {
    throw new Error(`cert.pem is not a readable PEM certificate (${(err as Error).message})`);
  }
  let key;
  try {
    key = createPrivateKey(src.keyPem);
  } catch (err) {
    throw new Error(`key.pem is not a readable unencrypted PEM private key (${(err as Error).message})`);
  }
  if (!x509.checkPrivateKey(key)) {
    throw new Error('key.pem does not match the first certificate in cert.pem (cert.pem must start with the leaf)');
  }
  const notBefore = Date.parse(x509.validFrom);
  const notAfter = Date.parse(x509.validTo);
  if (notAfter <= now) throw new Error(`certificate expired on ${x509.validTo}; skipped`);
  if (notBefore > now) throw new Error(`certificate is not valid before ${x509.validFrom}; skipped`);
  const names = subjectAltNames(x509).dns;
  if (names.length === 0 && src.origin !== 'self-signed') {
    // Clients have ignored the subject CN for host names for years (RFC 6125 §6.4.4, CA/B BR).
    throw new Error('certificate has no DNS names in subjectAltName; skipped');
  }
  let context: SecureContext;
  try {
    context = createSecureContext({ cert: src.certPem, key: src.keyPem });
  } catch (err) {
    throw new Error(`OpenSSL refused the pair (${(err as Error).message})`);
  }
  return Object.freeze({
    label: src.label,
    origin: src.origin,
    names: Object.freeze(names),
    notBefore,
    notAfter,
    fingerprint256: x509.fingerprint256,
    issuer: issuerName(x509),
    context,
  });
}

/** Higher origin wins; same origin: the one that lasts longer (an operator's renewed copy). */
function better(a: CertEntry, b: CertEntry): boolean {
  const ra = ORIGIN_RANK[a.origin];
  const rb = ORIGIN_RANK[b.origin];
  return ra !== rb ? ra > rb : a.notAfter > b.notAfter;
}

/**
 * Build a table from PEM pairs already in memory (files, cluster store, ACME). Pure apart from
 * the CPU it takes: parsing and one SecureContext per pair. Bad pairs become warnings.
 */
export function buildCertTable(
  sources: readonly CertSource[],
  selfSigned: KeyPairPem | null,
  now: number = Date.now(),
): CertTableBuild {
  const warnings: CertWarning[] = [];
  const entries: CertEntry[] = [];
  const exact = new Map<string, CertEntry>();
  const wildcard = new Map<string, CertEntry>();
  const shadowed = new Map<string, string[]>();
  for (const src of sources) {
    let entry: CertEntry;
    try {
      entry = makeEntry(src, now);
    } catch (err) {
      warnings.push({ label: src.label, message: (err as Error).message });
      continue;
    }
    entries.push(entry);
    for (const name of entry.names) {
      const wild = name.startsWith('*.');
      const map = wild ? wildcard : exact;
      const key = wild ? name.slice(2) : name;
      if (!wild && name.includes('*')) {
        // Partial wildcards (`f*.example.com`) are not honoured by browsers either.
        warnings.push({ label: src.label, message: `SAN ${name}: partial wildcard ignored` });
        continue;
      }
      const prev = map.get(key);
      if (prev === entry) continue;
      const wins = prev === undefined || better(entry, prev);
      if (wins) map.set(key, entry);
      if (prev !== undefined && prev.origin === entry.origin) {
        const kept = wins ? entry : prev;
        const lost = wins ? prev : entry;
        const pair = `${lost.label}\0${kept.label}`;
        shadowed.set(pair, [...(shadowed.get(pair) ?? []), name]);
      }
    }
  }
  // One warning per pair of directories, not per name: an old copy can repeat dozens of SANs.
  for (const [pair, shadowedNames] of shadowed) {
    const [lost, kept] = pair.split('\0');
    warnings.push({ label: lost, message: `${shadowedNames.join(', ')} served from ${kept} instead (it expires later or sorts first)` });
  }
  let defaultEntry: CertEntry | null = null;
  if (selfSigned !== null) {
    try {
      defaultEntry = makeEntry({ ...selfSigned, label: '_self-signed', origin: 'self-signed' }, now);
    } catch (err) {
      warnings.push({ label: '_self-signed', message: (err as Error).message });
    }
  }
  return {
    table: new CertTable(entries, exact, wildcard, defaultEntry, defaultEntry === null ? null : selfSigned),
    warnings,
  };
}

/** Read `<certsDir>/<name>/{cert,key}.pem` for every directory not starting with `_` or `.`. */
export async function readCertDir(certsDir: string): Promise<{ sources: CertSource[]; warnings: CertWarning[] }> {
  const sources: CertSource[] = [];
  const warnings: CertWarning[] = [];
  let names: string[];
  try {
    names = (await readdir(certsDir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { sources, warnings };
    throw err;
  }
  for (const label of names) {
    // `_` is petrel's own (_self-signed, later ACME); `.` is editors' and temp files.
    if (label.startsWith('_') || label.startsWith('.')) continue;
    const dir = join(certsDir, label);
    // stat, not the dirent: operators symlink certificate directories in.
    if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) continue;
    try {
      const [certPem, keyPem] = await Promise.all([
        readFile(join(dir, 'cert.pem'), 'utf8'),
        readFile(join(dir, 'key.pem'), 'utf8'),
      ]);
      sources.push({ label, origin: 'custom', certPem, keyPem });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const file = e.path === undefined ? 'cert.pem/key.pem' : e.path.slice(dir.length + 1);
      warnings.push({ label, message: `cannot read ${file}: ${e.code ?? e.message}` });
    }
  }
  return { sources, warnings };
}
