// Host name helpers shared by the cert table (control plane) and the SNI callback (data plane).
import type { X509Certificate } from 'node:crypto';

/**
 * RFC 6066 §3 says SNI carries an ASCII host name without a trailing dot, but clients still send
 * upper case (DNS names are case-insensitive) and a few send the absolute form with a dot.
 */
export function normalizeHostname(name: string): string {
  const n = name.toLowerCase();
  return n.charCodeAt(n.length - 1) === 46 /* . */ ? n.slice(0, -1) : n;
}

export interface SubjectAltNames {
  readonly dns: readonly string[];
  readonly ips: readonly string[];
}

// One `TYPE:value` entry of X509Certificate.subjectAltName. Since CVE-2021-44532 Node prints a
// value that contains `,` `"` or similar as a JSON string, so a plain split(', ') is unsafe.
const SAN_ENTRY = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/gy;

/** DNS names (lower-cased) and IP addresses of a certificate's subjectAltName extension. */
export function subjectAltNames(cert: X509Certificate): SubjectAltNames {
  const dns: string[] = [];
  const ips: string[] = [];
  const text = cert.subjectAltName ?? '';
  SAN_ENTRY.lastIndex = 0;
  let m: RegExpExecArray | null;
  while (SAN_ENTRY.lastIndex < text.length && (m = SAN_ENTRY.exec(text)) !== null) {
    const value = m[2].startsWith('"') ? (JSON.parse(m[2]) as string) : m[2];
    if (m[1] === 'DNS') dns.push(normalizeHostname(value));
    else if (m[1] === 'IP Address') ips.push(value);
  }
  return { dns, ips };
}
