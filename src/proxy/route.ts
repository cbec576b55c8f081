// Request routing shared by the HTTP/1.1 and HTTP/2 paths (architecture step 5): normalise the
// Host, check it against the TLS server name, find the app and its service on this port.

import type { ServiceRoute, Snapshot } from '../snapshot/snapshot.ts';
import { E, type ProxyErrorDef } from './errors.ts';
import { normalizeHost } from './host.ts';

export class RouteResult {
  route: ServiceRoute | null = null;
  error: ProxyErrorDef | null = null;
  /** Normalised host (set even when routing failed, for logs). */
  host = '';
  /** The app, when found (set even if it has no service on this port). */
  app: ServiceRoute['app'] | null = null;
}

export function routeHttp(snap: Snapshot, port: number, sni: string | null, rawHost: string | null, out: RouteResult): RouteResult {
  out.route = null;
  out.error = null;
  out.app = null;
  out.host = '';
  if (rawHost === null) {
    out.error = E.MISSING_HOST;
    return out;
  }
  const host = normalizeHost(rawHost);
  if (host === null) {
    out.error = E.BAD_REQUEST;
    return out;
  }
  out.host = host;
  // RFC 9110 §7.4 / RFC 9113 §9.1.2: a request for another name on this connection is misdirected.
  if (sni !== null && host !== sni) {
    out.error = E.MISDIRECTED;
    return out;
  }
  const app = snap.lookupHost(host);
  if (app === undefined) {
    out.error = E.UNKNOWN_HOST;
    return out;
  }
  out.app = app;
  const route = app.byPort.get(port);
  if (route === undefined || !route.http) {
    out.error = E.NO_SERVICE;
    return out;
  }
  out.route = route;
  return out;
}

/**
 * Location for `force_https`: the node's public TLS port. `boundTlsPort` is where public port
 * 443 is really bound (remapped in the demo, or port 0 in tests); 443 needs no port in the URL.
 */
export function httpsLocation(boundTlsPort: number | undefined, host: string, path: string): string {
  const port = boundTlsPort !== undefined && boundTlsPort !== 443 ? `:${boundTlsPort}` : '';
  return `https://${host}${port}${path === '*' ? '/' : path}`;
}
