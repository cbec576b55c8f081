// TLS server options for a TLS-first public port, on top of src/tls/sni.ts. The SNI and ALPN
// callbacks read the current snapshot (cert table, each app's tls_options), so a reload changes
// certificates and ALPN without rebinding; listener-level settings (versions, the no-SNI
// default cert) are refreshed with setSecureContext(). Per handshake: map lookups only.

import type tls from 'node:tls';
import type { TlsVersion } from '../config/types.ts';
import type { Snapshot } from '../snapshot/snapshot.ts';
import { isIP } from 'node:net';
import { ACME_TLS_ALPN } from '../tls/challenges.ts';
import { makeAlpnCallback, makeSniCallback, tlsServerOptions, type AlpnCallback, type SniCallback, type TlsPolicy } from '../tls/sni.ts';
import type { ProxyContext } from './context.ts';

const DEFAULT_ALPN: readonly string[] = ['h2', 'http/1.1'];
const BOTH: readonly TlsVersion[] = ['TLSv1.2', 'TLSv1.3'];

/** The port's policy: every version some app on it allows, and a default cert if any app wants one. */
export function portPolicy(snap: Snapshot, port: number): TlsPolicy {
  const pr = snap.ports.get(port);
  return { versions: pr?.tlsVersions ?? BOTH, defaultSelfSigned: pr?.defaultSelfSigned ?? false };
}

function appTls(snap: Snapshot, port: number, name: string) {
  return name === '' ? undefined : snap.lookupHost(name)?.byPort.get(port)?.port.tls;
}

export function tlsServerOptionsFor(ctx: ProxyContext, port: number, snap: Snapshot): tls.TlsOptions {
  return {
    ...tlsServerOptions(snap.certs, portPolicy(snap, port)),
    // A hard deadline for the whole handshake (slow clients, stalled SNI lookups alike).
    handshakeTimeout: snap.limits.tlsHandshakeTimeoutMs,
    SNICallback: ignoreIpLiterals(
      acmeAlpnFirst(
        ctx,
        makeSniCallback(
          () => ctx.holder.current.certs,
          (name) => appTls(ctx.holder.current, port, name) ?? portPolicy(ctx.holder.current, port),
          (name) => certMiss(ctx, name),
        ),
      ),
    ),
    // Node rejects a handshake whose ALPN offer has no overlap (no_application_protocol alert):
    // a raw-TCP TLS app whose clients offer ALPN must list what it speaks in tls_options.alpn.
    ALPNCallback: acmeAlpnClaim(ctx, makeAlpnCallback((name) => appTls(ctx.holder.current, port, name)?.alpn ?? DEFAULT_ALPN)),
  };
}

/**
 * TLS-ALPN-01 (RFC 8737): Node calls ALPNCallback before SNICallback, both with the TLSSocket as
 * `this`. A handshake offering `acme-tls/1` for a name with a pending challenge is claimed here
 * and gets the challenge certificate in SNICallback; every other client keeps the real one.
 */
function acmeAlpnClaim(ctx: ProxyContext, inner: AlpnCallback): AlpnCallback {
  return function (this: object, info) {
    if (ctx.challenges.claimAlpnHandshake(this, info.servername, info.protocols)) return ACME_TLS_ALPN;
    return inner(info);
  };
}

function acmeAlpnFirst(ctx: ProxyContext, cb: SniCallback): SniCallback {
  return function (this: object, servername, done) {
    const challenge = ctx.challenges.claimedContext(this);
    if (challenge !== undefined) return done(null, challenge);
    return cb.call(this, servername, done);
  };
}

/** Only names that route to an app may ask for a certificate: random SNI never reaches ACME. */
function certMiss(ctx: ProxyContext, name: string): void {
  if (ctx.onCertMiss !== null && ctx.holder.current.lookupHost(name) !== undefined) ctx.onCertMiss(name);
}

/**
 * RFC 6066 §3: a server name is never an IP literal; some clients (wrk, scripts dialling an IP)
 * send one anyway. Treat it as no SNI: the listener's default certificate, routing by Host.
 */
function ignoreIpLiterals(cb: SniCallback): SniCallback {
  return function (this: unknown, servername, done) {
    if (isIP(servername) !== 0) return done(null);
    return cb.call(this, servername, done);
  };
}

/** After a reload: listener-level TLS settings from the new snapshot (ticket keys stay). */
export function refreshTlsServer(server: tls.Server, port: number, snap: Snapshot): void {
  server.setSecureContext(tlsServerOptions(snap.certs, portPolicy(snap, port)));
}
