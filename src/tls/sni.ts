// Data-plane TLS glue for a port listener:
//
//   tls.createServer({
//     ...tlsServerOptions(table, portPolicy),    // versions, ticket keys, no-SNI default cert
//     SNICallback: makeSniCallback(() => snapshot.get().certs, policyFor),
//     ALPNCallback: makeAlpnCallback(alpnFor),   // omit on ports where no app sets alpn
//     handshakeTimeout,
//   })
//   server.on('tlsClientError', (err, socket) => { log(classifyTlsError(err)); socket.destroy(); });
//   on reload: server.setSecureContext(tlsServerOptions(newTable, portPolicy));
//
// Per handshake this does a normalise, the policy call, and at most two map lookups; no I/O,
// no allocation beyond the lower-cased name (and an Error when it refuses).
import { randomBytes } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import type { TlsVersion } from '../config/types.ts';
import { E, ProxyError, type ProxyErrorDef } from '../proxy/errors.ts';
import type { CertTable } from './certTable.ts';
import { normalizeHostname } from './names.ts';

/** config's TlsOptions satisfies this, so a port's or an app's tls_options can be passed as is. */
export interface TlsPolicy {
  readonly versions: readonly TlsVersion[];
  readonly defaultSelfSigned: boolean;
}

/** A refused handshake; `code` (PT..) is what the listener logs from 'tlsClientError'. */
export class TlsRefusal extends ProxyError {
  readonly code: string;
  readonly servername: string;
  constructor(d: ProxyErrorDef, servername: string, detail?: string) {
    super(d, detail === undefined ? servername : `${servername}: ${detail}`);
    this.code = d.code;
    this.servername = servername;
  }
}

// Session tickets are sealed with the listener's keys (Node never switches SSL_CTX for SNI, so
// per-certificate contexts play no part). One set per process, not per listener or reload:
// server.setSecureContext() without ticketKeys would draw new random ones and every ticket
// issued before a reload would stop resuming. The trade-off is forward secrecy of resumed
// sessions for the life of the process; rotating means calling server.setTicketKeys().
const TICKET_KEYS = randomBytes(48);
// Also listener-level. Node's default (a hash of process.argv) would match across listeners too;
// explicit so that no setSecureContext() call can ever change it under live sessions.
const SESSION_ID_CONTEXT = 'petrel';

/** Options for tls.createServer / server.setSecureContext that belong to a port, not a name. */
export interface ListenerTlsOptions {
  readonly minVersion: TlsVersion;
  readonly maxVersion: TlsVersion;
  readonly honorCipherOrder: true;
  readonly ticketKeys: Buffer;
  readonly sessionIdContext: string;
  /** The default certificate for clients that send no SNI (IP literals, old clients). */
  readonly cert?: string;
  readonly key?: string;
}

/**
 * Versions are enforced here and only here for the whole port: OpenSSL picks the version from
 * the listener's context before the SNI callback runs, and Node copies only cert/key/chain from
 * the context the callback returns. Only TLSv1.2 and TLSv1.3 exist in the policy, so min/max
 * describe any non-empty set exactly. `secureContext` is not accepted here because tls.Server
 * ignores that option and always builds its own from key/cert/minVersion/....
 */
export function tlsServerOptions(table: CertTable, policy: TlsPolicy): ListenerTlsOptions {
  const v12 = policy.versions.includes('TLSv1.2');
  const v13 = policy.versions.includes('TLSv1.3') || !v12; // empty set: the safer default
  const base = {
    minVersion: v12 ? 'TLSv1.2' : 'TLSv1.3',
    maxVersion: v13 ? 'TLSv1.3' : 'TLSv1.2',
    honorCipherOrder: true,
    ticketKeys: TICKET_KEYS,
    sessionIdContext: SESSION_ID_CONTEXT,
  } as const;
  const pem = policy.defaultSelfSigned ? table.defaultPem : null;
  return pem === null ? base : { ...base, cert: pem.certPem, key: pem.keyPem };
}

export type SniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;

/** What Node passes as `this` to SNICallback (the server TLSSocket); undocumented, so optional. */
interface HandshakeSocket {
  getProtocol?(): string | null;
}

/**
 * SNICallback for one port. `table` returns the current snapshot's cert table; `policyFor`
 * returns the policy for the (normalised) name, e.g. the app's port tls_options or the port's.
 * No match: `onMiss` is told (on-demand ACME), then the self-signed default when the policy
 * allows it, else a TlsRefusal with PT05, which Node hands to the server's 'tlsClientError'
 * (the client sees the connection close).
 */
export function makeSniCallback(
  table: () => CertTable,
  policyFor: (servername: string) => TlsPolicy,
  onMiss?: (servername: string) => void,
): SniCallback {
  return function sniCallback(this: HandshakeSocket | undefined, servername, cb) {
    const name = normalizeHostname(servername);
    const policy = policyFor(name);
    // The listener enforces the port's whole version set; an app on a shared port may allow only
    // one of the two. The version is already negotiated when this runs, so the socket knows it.
    if (policy.versions.length === 1 && this !== undefined && typeof this.getProtocol === 'function') {
      const negotiated = this.getProtocol();
      if (negotiated !== null && negotiated !== policy.versions[0]) {
        cb(new TlsRefusal(E.TLS_HANDSHAKE, name, `${negotiated} is not allowed for this host`));
        return;
      }
    }
    const t = table();
    const hit = t.lookup(name);
    if (hit === null && onMiss !== undefined) onMiss(name);
    const entry = hit ?? (policy.defaultSelfSigned ? t.defaultEntry : null);
    if (entry === null) {
      cb(new TlsRefusal(E.NO_CERT, name));
      return;
    }
    cb(null, entry.context);
  };
}

/** RFC 7301 §3.2: the server's preference wins; undefined when nothing overlaps. */
export function selectAlpn(serverPrefs: readonly string[], offered: readonly string[]): string | undefined {
  for (let i = 0; i < serverPrefs.length; i++) {
    if (offered.includes(serverPrefs[i])) return serverPrefs[i];
  }
  return undefined;
}

export type AlpnCallback = (info: { servername: string; protocols: string[] }) => string | undefined;

/**
 * ALPNCallback from the router's `alpnFor(servername)`. Node calls it only when the client sends
 * ALPN, before SNICallback, and turns `undefined` into a fatal no_application_protocol alert
 * (RFC 7301 §3.2); there is no way to decline ALPN and carry on once a callback is installed, so
 * an empty list for a name means clients offering ALPN are refused. `servername` is false when
 * the client sent no SNI; alpnFor then gets ''.
 */
export function makeAlpnCallback(alpnFor: (servername: string) => readonly string[]): AlpnCallback {
  return ({ servername, protocols }) => selectAlpn(alpnFor(servername ? normalizeHostname(servername) : ''), protocols);
}

/** Error registry entry for an error from 'tlsClientError'. */
export function classifyTlsError(err: Error): ProxyErrorDef {
  if (err instanceof ProxyError) return err.def;
  if ((err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return E.TLS_TIMEOUT;
  return E.TLS_HANDSHAKE;
}
