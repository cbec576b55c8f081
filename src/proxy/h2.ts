// Downstream HTTP/2 (TLS with ALPN h2): node:http2 parses the frames, each stream becomes one
// HTTP/1.1 request to a Machine over a keep-alive node:http agent per Machine address. This path
// is correct rather than maximal: the benchmark targets are on HTTP/1.1, and nghttp2 is already
// native. Routing, capacity, headers and errors are shared with the HTTP/1.1 path.

import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import type { MachineSlot } from '../machines/runtime.ts';
import type { ServiceRoute, Snapshot } from '../snapshot/snapshot.ts';
import { QUEUE, cancelWait, enqueue, tryAcquire, wakeFor } from './capacity.ts';
import { Waiter } from '../snapshot/live.ts';
import type { ProxyContext } from './context.ts';
import { E, errorBody, type ProxyErrorDef } from './errors.ts';
import { Exchange, finishExchange } from './exchange.ts';
import { peerAddress } from './host.ts';
import { requestId } from './requestId.ts';
import { RouteResult, routeHttp } from './route.ts';
import { connectErrorDef } from './connect.ts';
import { H_CONTENT_LENGTH, KIND_NAMES, REQUEST_DROP_KINDS } from './http1/index.ts';
import { RoutingPrefs, acquireWithPrefs, prefsFromHeaders } from './flyRouting.ts';

/**
 * Request headers never forwarded: the same set as HTTP/1.1 (hop-by-hop, client copies of the
 * ones petrel sets), plus Host, which petrel writes from :authority. Content-Length is kept: the
 * HTTP/1.1 path re-emits it from its parser, here the client's value is the only statement of
 * the body's length (nghttp2 checks it against the DATA frames).
 */
const DROP_REQUEST: ReadonlySet<string> = new Set([
  'host',
  ...REQUEST_DROP_KINDS.filter((k) => k !== H_CONTENT_LENGTH).map((k) => KIND_NAMES[k]!),
]);

/** Response headers HTTP/2 forbids or that are per-hop (RFC 9113 §8.2.2). */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

/** Per-Machine-address keep-alive agents for HTTP/2 streams forwarded as HTTP/1.1. */
const agents = new Map<string, http.Agent>();
function agentFor(host: string, port: number, maxIdle: number, idleMs: number): http.Agent {
  const key = `${host}:${port}`;
  let a = agents.get(key);
  if (a === undefined) {
    a = new http.Agent({ keepAlive: true, maxFreeSockets: maxIdle, timeout: idleMs, scheduling: 'lifo' });
    agents.set(key, a);
  }
  return a;
}

export function closeH2Agents(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

/**
 * One client HTTP/2 connection: what its streams share. For a `connections` service the
 * connection is pinned to one Machine and counted once, like an HTTP/1.1 client connection.
 */
class H2Conn {
  readonly port: number;
  readonly sni: string | null;
  readonly clientIp: string;
  pinned: MachineSlot | null;
  pinnedRoute: ServiceRoute | null;
  constructor(port: number, sni: string | null, clientIp: string) {
    this.port = port;
    this.sni = sni;
    this.clientIp = clientIp;
    this.pinned = null;
    this.pinnedRoute = null;
  }
  unpin(ctx: ProxyContext): void {
    const p = this.pinned;
    if (p === null) return;
    this.pinned = null;
    ctx.releaseSlot(p, this.pinnedRoute!);
    this.pinnedRoute = null;
  }
}

export class H2Frontend {
  readonly ctx: ProxyContext;
  readonly server: http2.Http2Server;
  readonly sessions: Set<http2.ServerHttp2Session>;

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    const limits = ctx.holder.current.limits;
    this.sessions = new Set();
    this.server = http2.createServer({
      maxSessionMemory: 32,
      settings: { maxConcurrentStreams: limits.h2MaxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes },
      maxHeaderListPairs: limits.maxHeaderCount,
      unknownProtocolTimeout: limits.tlsHandshakeTimeoutMs,
    });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      // Bounded like HTTP/1.1 keep-alive: a session with no frames for idle_timeout gets a GOAWAY
      // (close() lets streams in progress finish).
      session.setTimeout(ctx.holder.current.limits.idleTimeoutMs, () => session.close());
      session.once('close', () => this.sessions.delete(session));
      session.on('error', () => session.destroy());
    });
  }

  /** Takes a TLS socket that negotiated h2. */
  accept(socket: tls.TLSSocket, port: number, sni: string | null): void {
    const conn = new H2Conn(port, sni, peerAddress(socket.remoteAddress ?? ''));
    const handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => this.onStream(stream, headers, conn);
    // One stream listener per connection (not per request): port, SNI and pinning are per connection.
    this.server.once('session', (s: http2.ServerHttp2Session) => {
      s.on('stream', handler);
      s.once('close', () => conn.unpin(this.ctx));
    });
    this.server.emit('connection', socket);
  }

  /** Graceful: GOAWAY to every session, so clients finish streams and open no new ones. */
  goaway(): void {
    for (const s of this.sessions) s.close();
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, conn: H2Conn): void {
    const snap = this.ctx.holder.current;
    const x = new Exchange();
    x.reset(snap, 'h2', conn.clientIp, performance.now());
    x.method = String(headers[':method'] ?? '');
    x.target = String(headers[':path'] ?? '');
    x.host = String(headers[':authority'] ?? headers.host ?? '');
    x.id = requestId(snap.node.region);
    stream.on('error', () => undefined);
    if (x.method === 'CONNECT') return this.fail(stream, x, E.BAD_METHOD, '');
    const r = routeHttp(snap, conn.port, conn.sni, x.host || null, new RouteResult());
    x.app = r.app;
    if (r.route === null) return this.fail(stream, x, r.error!, r.host);
    const route = r.route;
    x.route = route;
    this.acquire(stream, headers, x, route, snap, conn, [], prefsFromHeaders(headers));
  }

  private acquire(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    x: Exchange,
    route: ServiceRoute,
    snap: Snapshot,
    conn: H2Conn,
    tried: MachineSlot[],
    prefs: RoutingPrefs | null,
  ): void {
    if (prefs !== null) {
      const wanted = acquireWithPrefs(route, prefs, tried.length ? tried : null);
      if (wanted !== null) return this.took(stream, headers, x, route, snap, conn, tried, wanted, prefs);
    }
    if (!route.perRequest) {
      const p = conn.pinned;
      if (p !== null && conn.pinnedRoute === route && p.machine.routable && p.healthy && !tried.includes(p)) {
        return this.took(stream, headers, x, route, snap, conn, tried, p, prefs, false);
      }
      conn.unpin(this.ctx);
    }
    const got = tryAcquire(route, tried.length ? tried : null);
    // Autostart (spec section 5), as on HTTP/1.1: wake sleeping Machines for the waiting demand.
    const waking = got === QUEUE || (got === E.NO_MACHINE && route.service.autoStartMachines) ? wakeFor(route) : false;
    if (got === QUEUE || waking) {
      const t0 = performance.now();
      const limits = snap.limits;
      const w = enqueue(
        route,
        tried.slice(),
        limits,
        t0,
        (slot) => {
          stream.off('close', cancel);
          const waited = performance.now() - t0;
          if (waking) x.wakeMs += waited;
          else {
            x.queueMs += waited;
            route.app.metrics.queueWait.observe(waited / 1000);
          }
          this.took(stream, headers, x, route, snap, conn, tried, slot ?? (waking ? E.WAKE_TIMEOUT : E.QUEUE_TIMEOUT), prefs);
        },
        waking ? limits.wakeTimeoutMs : limits.queueTimeoutMs,
      );
      if (!(w instanceof Waiter)) return this.took(stream, headers, x, route, snap, conn, tried, w, prefs);
      // The client gave up (RST_STREAM or connection gone) while queued: free the place at once.
      const cancel = () => {
        cancelWait(w);
        x.fail(E.CLIENT_ABORTED, 'left while queued');
        x.status = 499;
        finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      };
      stream.once('close', cancel);
      return;
    }
    this.took(stream, headers, x, route, snap, conn, tried, got, prefs);
  }

  private took(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    x: Exchange,
    route: ServiceRoute,
    snap: Snapshot,
    conn: H2Conn,
    tried: MachineSlot[],
    got: MachineSlot | ProxyErrorDef,
    prefs: RoutingPrefs | null,
    fresh = true,
  ): void {
    if ((got as MachineSlot).machine === undefined) return this.fail(stream, x, got as ProxyErrorDef, '');
    const slot = got as MachineSlot;
    x.slot = slot;
    // `fresh`: this stream took the load. A `connections` service keeps it on the connection.
    if (fresh && !route.perRequest && prefs === null) {
      conn.pinned = slot;
      conn.pinnedRoute = route;
      x.holdsLoad = false;
    } else {
      x.holdsLoad = fresh;
    }
    const clientIp = conn.clientIp;
    const port = conn.port;
    const out: http.OutgoingHttpHeaders = {};
    let xff = '';
    for (const name in headers) {
      if (name.charCodeAt(0) === 58 /* : */) continue;
      const v = headers[name];
      if (v === undefined) continue;
      if (name === 'x-forwarded-for') {
        xff = Array.isArray(v) ? v.join(', ') : v;
        continue;
      }
      if (DROP_REQUEST.has(name)) continue;
      out[name] = v;
    }
    out.host = x.host;
    out['fly-client-ip'] = clientIp;
    out['x-forwarded-for'] = xff === '' ? clientIp : `${xff}, ${clientIp}`;
    out['x-forwarded-proto'] = 'https';
    out['x-forwarded-ssl'] = 'on';
    out['x-forwarded-port'] = String(port);
    out['fly-forwarded-port'] = String(port);
    out['fly-region'] = snap.node.region;
    out['fly-request-id'] = x.id;
    out.via = '2 petrel';
    if (prefs !== null && prefs.unavailable !== null) out['fly-preferred-instance-unavailable'] = prefs.unavailable;
    const limits = snap.limits;
    const t0 = performance.now();
    const req = http.request({
      host: slot.machine.host,
      port: slot.port,
      method: x.method,
      path: x.target,
      headers: out,
      agent: agentFor(slot.machine.host, slot.port, limits.upstreamMaxIdlePerMachine, limits.upstreamIdleTimeoutMs),
      timeout: limits.responseTimeoutMs,
    });
    let bodySent = false;
    let responded = false;
    req.once('socket', (s: net.Socket) => {
      if (s.connecting) s.once('connect', () => (x.connectMs += performance.now() - t0));
    });
    req.once('timeout', () => {
      req.destroy(Object.assign(new Error('response timeout'), { code: 'PETREL_RESPONSE_TIMEOUT' }));
    });
    req.once('error', (err: NodeJS.ErrnoException) => {
      if (responded) {
        x.fail(E.UPSTREAM_CLOSED, err.code ?? err.message);
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      }
      const isConnect = err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT' || err.code === 'EHOSTUNREACH';
      const def = err.code === 'PETREL_RESPONSE_TIMEOUT' ? E.RESPONSE_TIMEOUT : isConnect ? connectErrorDef(err) : E.UPSTREAM_RESET;
      if (x.holdsLoad) {
        x.holdsLoad = false;
        this.ctx.releaseSlot(slot, route);
      } else if (conn.pinned === slot) {
        conn.unpin(this.ctx);
      }
      tried.push(slot);
      if (def.retryable && !bodySent && tried.length < limits.connectAttempts && !stream.destroyed) {
        x.retries++;
        route.app.metrics.retries.inc();
        x.slot = null;
        return this.acquire(stream, headers, x, route, snap, conn, tried, prefs);
      }
      this.fail(stream, x, def, err.code ?? err.message);
    });
    req.once('response', (res: http.IncomingMessage) => {
      responded = true;
      x.upstreamMs = performance.now() - x.startedAt;
      const status = res.statusCode ?? 502;
      x.status = status;
      const rh: http2.OutgoingHttpHeaders = { ':status': status };
      const drop = route.dropResponse;
      const raw = res.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!.toLowerCase();
        if (DROP_RESPONSE.has(name) || drop.has(name)) continue;
        addHeader(rh, name, raw[i + 1]!);
      }
      for (const [name, v] of route.addResponsePairs) addHeader(rh, name, v);
      if (!route.port.http.pristine) {
        rh.via = '2 petrel';
        rh['fly-request-id'] = x.id;
      }
      if (stream.destroyed) {
        res.destroy();
        return finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      }
      stream.respond(rh);
      res.on('data', (c: Buffer) => (x.bytesOut += c.length));
      res.pipe(stream);
      res.once('end', () => finishExchange(x, this.ctx.metrics, this.ctx.log.access));
      res.once('error', () => {
        x.fail(E.UPSTREAM_CLOSED, 'closed mid-response');
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      });
    });
    stream.once('close', () => {
      if (!x.finished && !stream.writableFinished) {
        x.fail(E.CLIENT_ABORTED, '');
        if (x.status === 0) x.status = 499;
        req.destroy();
        finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      }
    });
    stream.on('data', (c: Buffer) => {
      bodySent = true;
      x.bytesIn += c.length;
    });
    stream.pipe(req);
  }

  private fail(stream: http2.ServerHttp2Stream, x: Exchange, def: ProxyErrorDef, detail: string): void {
    x.fail(def, detail);
    x.status = def.status;
    if (!stream.destroyed && !stream.headersSent) {
      const body = errorBody(def);
      stream.respond({
        ':status': def.status,
        'content-type': 'text/plain; charset=utf-8',
        'content-length': body.length,
        server: 'petrel',
        'fly-request-id': x.id,
        'x-petrel-error': def.code,
      });
      stream.end(body);
      x.bytesOut += body.length;
    }
    finishExchange(x, this.ctx.metrics, this.ctx.log.access);
  }
}

function addHeader(h: http2.OutgoingHttpHeaders, name: string, v: string): void {
  const prev = h[name];
  h[name] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
}
