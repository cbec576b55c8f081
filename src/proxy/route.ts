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

/** Location for `force_https`: the node's public TLS port, with its bind port when remapped. */
export function httpsLocation(snap: Snapshot, host: string, path: string): string {
  const p443 = snap.ports.get(443);
  const port = p443 !== undefined && p443.bindPort !== 443 ? `:${p443.bindPort}` : '';
  return `https://${host}${port}${path === '*' ? '/' : path}`;
}
