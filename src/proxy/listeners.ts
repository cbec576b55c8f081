// One listener per public port. Plaintext ports take raw TCP or HTTP/1.x; TLS-first ports
// terminate TLS (SNI picks the certificate and the app), then hand the decrypted stream to raw
// TCP forwarding, HTTP/2 or HTTP/1.1. Reload syncs the set of listeners to the new snapshot:
// new ports are bound before the swap (a port that cannot be bound fails the reload), removed
// ports stop accepting while their open connections carry on.

import net, { isIP } from 'node:net';
import tls from 'node:tls';
import type { PortRoute, Snapshot } from '../snapshot/snapshot.ts';
import type { ProxyContext } from './context.ts';
import { H2Frontend } from './h2.ts';
import { serveHttp1 } from './h1.ts';
import { E } from './errors.ts';
import { normalizeHost, peerAddress } from './host.ts';
import { forwardTcp } from './tcp.ts';
import { ACME_TLS_ALPN } from '../tls/challenges.ts';
import { classifyTlsError } from '../tls/sni.ts';
import { refreshTlsServer, tlsServerOptionsFor } from './tlsGlue.ts';

interface Bound {
  readonly key: string;
  readonly port: number;
  readonly tlsFirst: boolean;
  readonly server: net.Server;
  readonly address: string;
}

function keyOf(p: PortRoute): string {
  return `${p.port}|${p.bindHost}|${p.bindPort}|${p.pgTls ? 'pg_tls' : p.tlsFirst ? 'tls' : 'plain'}`;
}

export class Listeners {
  private readonly ctx: ProxyContext;
  private readonly bound = new Map<string, Bound>();
  readonly h2: H2Frontend;
  /** Every client socket accepted and still open, for graceful shutdown. */
  readonly sockets = new Set<net.Socket>();

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    this.h2 = new H2Frontend(ctx);
  }

  /** Addresses actually bound, by public port (tests bind port 0 and read these back). */
  addresses(): Map<number, { host: string; port: number }> {
    const out = new Map<number, { host: string; port: number }>();
    for (const b of this.bound.values()) {
      const a = b.server.address() as net.AddressInfo;
      out.set(b.port, { host: a.address, port: a.port });
    }
    return out;
  }

  /**
   * Binds listeners for ports in `next` that are not bound yet. Returns a commit function that
   * closes listeners `next` no longer has; call it after the snapshot swap. On a bind failure
   * the listeners bound by this call are closed again and the error is thrown.
   */
  async prepare(next: Snapshot): Promise<() => Promise<void>> {
    const wanted = new Map<string, PortRoute>();
    for (const p of next.ports.values()) wanted.set(keyOf(p), p);
    const added: Bound[] = [];
    try {
      for (const [key, p] of wanted) {
        if (this.bound.has(key)) continue;
        added.push(await this.bind(key, p, next));
      }
    } catch (err) {
      await Promise.all(added.map((b) => closeServer(b.server)));
      throw err;
    }
    for (const b of added) this.bound.set(b.key, b);
    return async () => {
      // Certificates and version ranges of ports that stay bound come from the new snapshot.
      for (const b of this.bound.values()) if (b.tlsFirst && wanted.has(b.key)) refreshTlsServer(b.server as tls.Server, b.port, next);
      const gone = [...this.bound.values()].filter((b) => !wanted.has(b.key));
      for (const b of gone) this.bound.delete(b.key);
      await Promise.all(gone.map((b) => closeServer(b.server)));
    };
  }

  private bind(key: string, p: PortRoute, snap: Snapshot): Promise<Bound> {
    const server = p.pgTls ? this.pgTlsServer(p.port) : p.tlsFirst ? this.tlsServer(p.port, snap) : this.plainServer(p.port);
    server.maxConnections = snap.limits.maxConnections;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${p.bindHost}:${p.bindPort} for public port ${p.port}: ${err.code ?? err.message}`));
      server.once('error', onError);
      server.listen({ host: p.bindHost, port: p.bindPort, backlog: 1024 }, () => {
        server.off('error', onError);
        server.on('error', (err) => this.ctx.log.proxy.error({ err, port: p.port }, 'listener error'));
        const a = server.address() as net.AddressInfo;
        this.ctx.boundPorts.set(p.port, a.port);
        // pg_tls listeners are plain net.Servers that start TLS per socket: nothing to refresh.
        resolve({ key, port: p.port, tlsFirst: p.tlsFirst && !p.pgTls, server, address: `${a.address}:${a.port}` });
      });
    });
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private plainServer(port: number): net.Server {
    return net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false }, (socket) => {
      this.track(socket);
      const snap = this.ctx.holder.current;
      const pr = snap.ports.get(port);
      if (pr !== undefined && pr.raw !== null) {
        forwardTcp(this.ctx, socket, pr.raw, snap, peerAddress(socket.remoteAddress ?? ''), socket.remotePort ?? 0);
        return;
      }
      serveHttp1(this.ctx, socket, port, false, null);
    });
  }

  /**
   * `pg_tls`: a Postgres client first sends an 8-byte SSLRequest in the clear and waits for one
   * byte, 'S', before its TLS ClientHello (PostgreSQL protocol, "SSL Session Encryption").
   * GSSENCRequest is declined with 'N' (the client then asks for SSL); anything else is refused,
   * because this port only speaks TLS. After the handshake the stream is raw TCP to the Machine.
   */
  private pgTlsServer(port: number): net.Server {
    return net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      this.track(socket);
      const snap = this.ctx.holder.current;
      socket.setTimeout(snap.limits.tlsHandshakeTimeoutMs, () => socket.destroy());
      socket.on('error', () => socket.destroy());
      let pending = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 8) {
          const len = pending.readUInt32BE(0);
          const code = pending.readUInt32BE(4);
          if (len !== 8 || (code !== PG_SSL_REQUEST && code !== PG_GSSENC_REQUEST) || pending.length > 8) {
            this.ctx.metrics.tlsErrors.labels(E.TLS_HANDSHAKE.code).inc();
            socket.destroy();
            return;
          }
          pending = pending.subarray(8);
          if (code === PG_GSSENC_REQUEST) {
            socket.write('N');
            continue;
          }
          socket.off('data', onData);
          socket.pause();
          socket.write('S');
          this.startPgTls(socket, port);
          return;
        }
      };
      socket.on('data', onData);
    });
  }

  private startPgTls(socket: net.Socket, port: number): void {
    const snap = this.ctx.holder.current;
    const opts = tlsServerOptionsFor(this.ctx, port, snap);
    delete opts.ALPNCallback; // Postgres clients do not negotiate ALPN before PG 17's direct TLS
    const t = new tls.TLSSocket(socket, { isServer: true, ...opts, secureContext: tls.createSecureContext(opts) });
    t.on('error', (err: Error) => {
      this.ctx.metrics.tlsErrors.labels(classifyTlsError(err).code).inc();
      t.destroy();
      socket.destroy();
    });
    t.once('secure', () => {
      socket.setTimeout(0);
      const cur = this.ctx.holder.current;
      const sni = typeof t.servername === 'string' ? normalizeHost(t.servername) : null;
      const route = (sni !== null ? cur.lookupHost(sni)?.byPort.get(port) : undefined) ?? cur.ports.get(port)?.only ?? undefined;
      if (route === undefined) {
        t.destroy();
        return;
      }
      forwardTcp(this.ctx, t, route, cur, peerAddress(socket.remoteAddress ?? ''), socket.remotePort ?? 0);
    });
  }

  private tlsServer(port: number, snap: Snapshot): tls.Server {
    const server = tls.createServer({ ...tlsServerOptionsFor(this.ctx, port, snap), allowHalfOpen: true });
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      this.track(socket);
      // A TLS-ALPN-01 validation: the handshake was the whole point (RFC 8737 §3).
      if (socket.alpnProtocol === ACME_TLS_ALPN) {
        socket.end();
        return;
      }
      socket.setNoDelay(true);
      const cur = this.ctx.holder.current;
      // An IP literal is not a server name (RFC 6066 §3): route such clients like no-SNI ones.
      const sni = typeof socket.servername === 'string' && isIP(socket.servername) === 0 ? normalizeHost(socket.servername) : null;
      const pr = cur.ports.get(port);
      // No SNI (a client dialling an IP) or a name without an app: the port's only app, if any.
      const route = (sni !== null ? cur.lookupHost(sni)?.byPort.get(port) : undefined) ?? pr?.only ?? undefined;
      if (route !== undefined && !route.http) {
        forwardTcp(this.ctx, socket, route, cur, peerAddress(socket.remoteAddress ?? ''), socket.remotePort ?? 0);
        return;
      }
      if (route === undefined && pr !== undefined && !pr.anyHttp) {
        // A raw TLS port must never answer in HTTP: nothing here can take this connection.
        this.ctx.metrics.tlsErrors.labels(E.NO_CERT.code).inc();
        socket.destroy();
        return;
      }
      if (socket.alpnProtocol === 'h2') {
        this.h2.accept(socket, port, sni);
        return;
      }
      serveHttp1(this.ctx, socket, port, true, sni);
    });
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      // tls.Server leaves the socket open after a failed or timed-out handshake; close it.
      socket.destroy();
      const code = classifyTlsError(err).code;
      this.ctx.metrics.tlsErrors.labels(code).inc();
      this.ctx.log.tls.debug({ code, err: err.message, port }, 'TLS handshake failed');
    });
    return server;
  }

  /** Stops accepting on every port (shutdown). Open connections are left to the drain. */
  async stopAccepting(): Promise<void> {
    const all = [...this.bound.values()];
    this.bound.clear();
    await Promise.all(all.map((b) => closeServer(b.server)));
  }
}

/** Stops accepting now; close()'s callback would wait for every open connection to end. */
function closeServer(server: net.Server): Promise<void> {
  if (server.listening) server.close();
  return Promise.resolve();
}

const PG_SSL_REQUEST = 80877103;
const PG_GSSENC_REQUEST = 80877104;
