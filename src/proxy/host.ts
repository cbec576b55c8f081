// Host header / SNI normalisation for routing: lower-case, no port, no trailing dot. Returns
// null for values that cannot be a hostname, so junk never reaches the route tables.

const HOST_CHAR = new Uint8Array(128);
for (const c of 'abcdefghijklmnopqrstuvwxyz0123456789-._') HOST_CHAR[c.charCodeAt(0)] = 1;

export function normalizeHost(raw: string): string | null {
  let end = raw.length;
  if (end === 0) return null;
  if (raw.charCodeAt(0) === 91 /* [ */) {
    // IPv6 literal: never routes to an app, but is valid syntax; keep it verbatim without port.
    const close = raw.indexOf(']');
    return close > 0 ? raw.slice(0, close + 1).toLowerCase() : null;
  }
  const colon = raw.indexOf(':');
  if (colon !== -1) {
    for (let i = colon + 1; i < end; i++) {
      const c = raw.charCodeAt(i);
      if (c < 48 || c > 57) return null;
    }
    end = colon;
  }
  if (end > 0 && raw.charCodeAt(end - 1) === 46 /* . */) end--;
  if (end === 0 || end > 253) return null;
  let lower = false;
  for (let i = 0; i < end; i++) {
    const c = raw.charCodeAt(i);
    if (c >= 65 && c <= 90) lower = true;
    else if (c >= 128 || HOST_CHAR[c] !== 1) return null;
  }
  const h = end === raw.length ? raw : raw.slice(0, end);
  return lower ? h.toLowerCase() : h;
}

/** A peer address as apps expect it: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) shown as plain IPv4. */
export function peerAddress(ip: string): string {
  return ip.startsWith('::ffff:') && ip.indexOf('.') !== -1 ? ip.slice(7) : ip;
}
