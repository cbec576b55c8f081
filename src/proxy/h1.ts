// The HTTP/1.1 hot path on raw sockets: one Downstream object per client connection, one
// Upstream object per pooled Machine connection, both with handlers bound once at creation.
// Per request: parse the head in place, route, take capacity, write a rewritten head, then move
// body bytes through unchanged (framing checked by the codec), with backpressure both ways.
// Nothing here allocates a closure per request except the slow paths (queue wait, new connect).

import type net from 'node:net';
import type { MachineRuntime, MachineSlot } from '../machines/runtime.ts';
import type { AppRoute, ServiceRoute, Snapshot } from '../snapshot/snapshot.ts';
import { QUEUE, cancelWait, enqueue, tryAcquire, wakeFor } from './capacity.ts';
import { Waiter } from '../snapshot/live.ts';
import { ConnectError, connectTo } from './connect.ts';
import type { ProxyContext } from './context.ts';
import { E, errorBody, type ProxyErrorDef } from './errors.ts';
import { Exchange, finishExchange } from './exchange.ts';
import {
  BODY_CHUNKED,
  BODY_CLOSE,
  BODY_LENGTH,
  BODY_NONE,
  ChunkedScanner,
  DROP,
  H_SERVER,
  RequestHead,
  RequestHeadParser,
  ResponseHead,
  SLOTS,
  requestHeadString,
  responseHeadString,
} from './http1/index.ts';
import { Upstream, upstreamPools } from './upstream.ts';
import { peerAddress } from './host.ts';
import { requestId } from './requestId.ts';
import { RouteResult, httpsLocation, routeHttp } from './route.ts';
import { RoutingPrefs, acquireWithPrefs, prefsFromHead } from './flyRouting.ts';
import { unwatch, watch, type Sweepable } from './sweeper.ts';
import { WsSplice } from './wsSplice.ts';
import { isAcmeChallengePath } from '../tls/challenges.ts';

// Downstream connection states.
const S_HEAD = 0; // reading a request head (or idle between requests)
const S_ROUTE = 1; // head complete; waiting for capacity or an upstream connection
const S_BODY = 2; // forwarding the request body
const S_WAIT = 3; // request sent; waiting for / relaying the response
const S_TUNNEL = 4; // upgraded (101): opaque bytes both ways
const S_CLOSED = 5;

// What the single deadline currently guards.
const D_NONE = 0;
const D_IDLE = 1; // keep-alive idle between requests: close quietly
const D_HEAD = 2; // header read timeout (slowloris): 408
const D_RESPONSE = 3; // upstream response head timeout: 504
const D_BODY = 4; // request body stalled: 408
const D_DRAIN = 5; // shutting down: an idle connection's last chance to send a request

const SERVER_MASK = 1 << H_SERVER;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

const STATUS_TEXT: Record<number, string> = {
  301: 'Moved Permanently',
  400: 'Bad Request',
  404: 'Not Found',
  408: 'Request Timeout',
  414: 'URI Too Long',
  421: 'Misdirected Request',
  431: 'Request Header Fields Too Large',
  499: 'Client Closed Request',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/** One client connection speaking HTTP/1.x. */
export class Downstream implements Sweepable {
  readonly ctx: ProxyContext;
  readonly socket: net.Socket;
  readonly port: number;
  readonly tls: boolean;
  /** Normalised TLS server name, or null (plaintext, or no SNI). */
  readonly sni: string | null;
  readonly clientIp: string;
  readonly clientPort: number;
  /** Request header lines that are the same for every request on this connection. */
  readonly baseHeaders: string;
  readonly parser: RequestHeadParser;
  readonly reqChunked: ChunkedScanner;
  readonly x: Exchange;
  state: number;
  deadline: number;
  deadlineKind: number;
  snap: Snapshot;
  head: RequestHead | null;
  route: ServiceRoute | null;
  up: Upstream | null;
  /** Bytes read from the client but not processed yet (body before connect, pipelined requests). */
  pending: Buffer | null;
  reqRemaining: number;
  reqDone: boolean;
  /** Some request body bytes went to a Machine: a retry then needs the retained copy. */
  bodySent: boolean;
  /** Retained copy of a small request body, so a failed reused connection can be retried. */
  retained: Buffer[] | null;
  retainedBytes: number;
  resKind: number;
  resRemaining: number;
  resStarted: boolean;
  keepAlive: boolean;
  /** For `connections` concurrency: the Machine this client connection is pinned to. */
  pinned: MachineSlot | null;
  pinnedRoute: ServiceRoute | null;
  /** The app this connection is counted under in connection metrics, once known. */
  countedApp: AppRoute | null;
  tried: MachineSlot[];
  /** Our place in the hard-limit queue while waiting for capacity. */
  waiter: Waiter | null;
  /** The wait is for a Machine being woken (autostart), not for capacity at the hard limit. */
  waking: boolean;
  /** Fly-* client routing headers of the current request, read only when present. */
  prefs: RoutingPrefs | null;
  /** The failure that made us try another Machine: reported if no other Machine is left. */
  lastFail: ProxyErrorDef | null;
  lastFailDetail: string;
  readonly routed: RouteResult;
  /** The WebSocket this connection became, registered on its Machine for the stop sequence. */
  ws: WsSplice | null;
  wsMachine: MachineRuntime | null;

  constructor(ctx: ProxyContext, socket: net.Socket, snap: Snapshot, port: number, tls: boolean, sni: string | null) {
    this.ctx = ctx;
    this.socket = socket;
    this.port = port;
    this.tls = tls;
    this.sni = sni;
    this.clientIp = peerAddress(socket.remoteAddress ?? '');
    this.clientPort = socket.remotePort ?? 0;
    this.baseHeaders =
      `fly-client-ip: ${this.clientIp}\r\n` +
      (tls ? 'x-forwarded-proto: https\r\nx-forwarded-ssl: on\r\n' : 'x-forwarded-proto: http\r\nx-forwarded-ssl: off\r\n') +
      `x-forwarded-port: ${port}\r\nfly-forwarded-port: ${port}\r\n` +
      snap.regionHeader +
      'via: 1.1 petrel\r\n';
    this.parser = new RequestHeadParser(snap.limits);
    this.reqChunked = new ChunkedScanner(E.BAD_CHUNK);
    this.x = new Exchange();
    this.state = S_HEAD;
    this.deadline = performance.now() + snap.limits.headerReadTimeoutMs;
    this.deadlineKind = D_HEAD;
    this.snap = snap;
    this.head = null;
    this.route = null;
    this.up = null;
    this.pending = null;
    this.reqRemaining = 0;
    this.reqDone = true;
    this.bodySent = false;
    this.retained = null;
    this.retainedBytes = 0;
    this.resKind = BODY_NONE;
    this.resRemaining = 0;
    this.resStarted = false;
    this.keepAlive = true;
    this.pinned = null;
    this.pinnedRoute = null;
    this.countedApp = null;
    this.tried = [];
    this.waiter = null;
    this.waking = false;
    this.prefs = null;
    this.lastFail = null;
    this.lastFailDetail = '';
    this.routed = new RouteResult();
    this.ws = null;
    this.wsMachine = null;
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.on('end', this.onEnd);
    watch(this);
    ctx.h1Conns.add(this);
  }

  /**
   * Shutdown. A busy connection closes after its current response. An idle one gets a short
   * grace: a request may already be on its way (in the kernel, unread), and closing under it
   * would lose it; whatever arrives is answered with `connection: close`.
   */
  drainIdle(): void {
    if (this.state === S_HEAD && this.parser.buffered === 0) {
      if (this.deadlineKind !== D_DRAIN) this.setDeadline(D_DRAIN, this.snap.limits.drainIdleTimeoutMs);
    } else {
      this.keepAlive = false;
    }
  }

  // ---- client input ----

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === S_HEAD) this.readHead(chunk, 0);
    else if (this.state === S_BODY) this.readBody(chunk, 0);
    else if (this.state === S_TUNNEL) return; // piped directly once tunnelled
    else this.stash(chunk, 0);
  };

  /** Keeps bytes that arrive while we cannot use them, and stops reading more. */
  private stash(buf: Buffer, off: number): void {
    const part = off === 0 ? buf : buf.subarray(off);
    if (part.length === 0) return;
    this.pending = this.pending === null ? part : Buffer.concat([this.pending, part]);
    this.socket.pause();
  }

  private readHead(buf: Buffer, off: number): void {
    const n = this.parser.feed(buf, off);
    if (n < 0) {
      this.x.reset(this.snap, 'http/1.1', this.clientIp, performance.now());
      this.respondError(this.parser.error!, '', true);
      return;
    }
    if (n === 0) {
      // A follow-up request on a connection already routed to an app gets that app's
      // http_options.headers_read_timeout; the first one can only use the node's limit.
      if (this.deadlineKind === D_IDLE || this.deadlineKind === D_DRAIN) this.setDeadline(D_HEAD, this.route?.headerTimeoutMs ?? this.snap.limits.headerReadTimeoutMs);
      return;
    }
    const rest = off + n;
    if (rest < buf.length) this.pending = buf.subarray(rest);
    this.startRequest(this.parser.head!);
  }

  private startRequest(head: RequestHead): void {
    const now = performance.now();
    const snap = this.ctx.holder.current;
    this.snap = snap;
    const x = this.x;
    x.reset(snap, head.versionMinor === 1 ? 'http/1.1' : 'http/1.0', this.clientIp, now);
    x.method = head.method;
    x.target = head.target;
    x.host = head.host ?? '';
    x.id = requestId(snap.node.region);
    this.head = head;
    this.state = S_ROUTE;
    this.deadlineKind = D_NONE;
    this.deadline = Infinity;
    // A request with a body waits for its upstream before reading on; one without keeps reading
    // so a client that leaves while queued is noticed (stash() pauses if it pipelines more).
    if (head.hasBody) this.socket.pause();
    this.reqDone = !head.hasBody;
    this.bodySent = false;
    this.retained = null;
    this.keepAlive = head.keepAlive && !this.ctx.draining;
    this.tried.length = 0;
    this.lastFail = null;
    this.prefs = null;
    this.waking = false;

    // '/.': only then can it be an ACME challenge; ordinary requests pay one char compare.
    if (!this.tls && head.path.charCodeAt(1) === 46) {
      const token = isAcmeChallengePath(head.path);
      const answer = token === null ? undefined : this.ctx.challenges.http01(token);
      // An unknown token goes on to the app: it may answer its own challenges.
      if (answer !== undefined) return this.answerChallenge(answer);
    }
    const r = routeHttp(snap, this.port, this.sni, head.host, this.routed);
    x.app = r.app;
    if (r.route === null) return this.respondError(r.error!, r.host, r.error!.status === 400);
    const route = r.route;
    this.route = route;
    x.route = route;
    if (!this.countConnection(route.app)) return this.respondError(E.APP_CONN_LIMIT, `${this.snap.limits.maxConnectionsPerApp} connections`, true);
    if (route.port.forceHttps && !this.tls) return this.redirectHttps(r.host, head);
    if (this.ctx.draining) this.keepAlive = false;
    this.pick();
  }

  /** Counts this connection under `app`; false when the app is at its per-node connection cap. */
  private countConnection(app: AppRoute): boolean {
    if (this.countedApp === app) return true;
    if (app.live.connections >= this.snap.limits.maxConnectionsPerApp) return false;
    if (this.countedApp !== null) {
      this.countedApp.live.connections--;
      this.countedApp.metrics.connections.dec();
    }
    this.countedApp = app;
    app.live.connections++;
    app.metrics.connections.inc();
    return true;
  }

  // ---- selection and connect ----

  private pick(): void {
    const route = this.route!;
    const x = this.x;
    const head = this.head!;
    if (head.flyRouting) {
      // Client routing headers: the slow path. Capacity is taken per request here, even for
      // `connections` services, since the request may not go where the connection is pinned.
      this.prefs ??= prefsFromHead(head);
      const got = acquireWithPrefs(route, this.prefs, this.tried.length ? this.tried : null);
      if (got !== null) {
        if ((got as MachineSlot).machine === undefined) return this.noCapacity(got as ProxyErrorDef);
        x.holdsLoad = true;
        x.slot = got as MachineSlot;
        return this.dispatch(got as MachineSlot);
      }
    }
    if (!route.perRequest) {
      const p = this.pinned;
      if (p !== null && this.pinnedRoute === route && p.machine.routable && p.healthy && !this.tried.includes(p)) {
        x.slot = p;
        return this.dispatch(p);
      }
      this.unpin();
    }
    const got = tryAcquire(route, this.tried.length ? this.tried : null);
    // Nothing free now. Autostart (spec section 5): wake sleeping Machines for the waiting
    // demand; the request then waits for them, bounded by wake_timeout instead of queue_timeout.
    if (got === QUEUE || (got === E.NO_MACHINE && route.service.autoStartMachines)) {
      const waking = wakeFor(route);
      if (got === QUEUE || waking) {
        const limits = this.snap.limits;
        const w = enqueue(route, this.tried.slice(), limits, performance.now(), this.onQueued, waking ? limits.wakeTimeoutMs : limits.queueTimeoutMs);
        if (w instanceof Waiter) {
          this.waiter = w;
          this.waking = waking;
        } else {
          this.noCapacity(w);
        }
        return;
      }
    }
    if ((got as MachineSlot).machine === undefined) return this.noCapacity(got as ProxyErrorDef);
    this.took(got as MachineSlot);
  }

  /** No Machine to take the request: after failed attempts, the last failure says more. */
  private noCapacity(def: ProxyErrorDef): void {
    if (this.lastFail !== null && def === E.NO_MACHINE) return this.respondError(this.lastFail, this.lastFailDetail, !this.reqDone);
    this.respondError(def, '', !this.reqDone);
  }

  private readonly onQueued = (slot: MachineSlot | null): void => {
    this.waiter = null;
    this.onCapacity(slot ?? (this.waking ? E.WAKE_TIMEOUT : E.QUEUE_TIMEOUT));
  };

  private onCapacity(got: MachineSlot | ProxyErrorDef): void {
    const x = this.x;
    const waited = performance.now() - x.startedAt;
    if (this.waking) {
      this.waking = false;
      x.wakeMs = waited;
    } else {
      x.queueMs = waited;
      this.route!.app.metrics.queueWait.observe(waited / 1000);
    }
    if (this.state === S_CLOSED) {
      // The client left while queued: hand the capacity straight back.
      if ((got as MachineSlot).machine !== undefined) this.ctx.releaseSlot(got as MachineSlot, this.route!);
      return;
    }
    if ((got as MachineSlot).machine === undefined) return this.noCapacity(got as ProxyErrorDef);
    this.took(got as MachineSlot);
  }

  private took(slot: MachineSlot): void {
    const route = this.route!;
    if (route.perRequest) {
      this.x.holdsLoad = true;
    } else {
      this.pinned = slot;
      this.pinnedRoute = route;
    }
    this.x.slot = slot;
    this.dispatch(slot);
  }

  private unpin(): void {
    const p = this.pinned;
    if (p !== null) {
      this.pinned = null;
      this.ctx.releaseSlot(p, this.pinnedRoute!);
      this.pinnedRoute = null;
    }
  }

  private dispatch(slot: MachineSlot): void {
    const pool = upstreamPools.get(slot.machine.host, slot.port);
    const up = pool.take(performance.now());
    if (up !== null) return this.send(up);
    const t0 = performance.now();
    const limits = this.snap.limits;
    connectTo(slot.machine.host, slot.port, limits.connectTimeoutMs).then(
      (sock) => {
        this.x.connectMs += performance.now() - t0;
        const up = new Upstream(sock, pool, limits.maxHeaderBytes * 4, limits.maxHeaderCount * 2);
        if (this.state === S_CLOSED) {
          // Client gone while we connected: keep the fresh connection for the next request.
          if (!pool.put(up, limits.upstreamMaxIdlePerMachine, performance.now())) sock.destroy();
          return;
        }
        this.send(up);
      },
      (err: unknown) => {
        this.x.connectMs += performance.now() - t0;
        this.connectFailed(err instanceof ConnectError ? err : new ConnectError(E.CONNECT_FAILED, String(err)));
      },
    );
  }

  private connectFailed(err: ConnectError): void {
    if (this.state === S_CLOSED) return;
    this.retryOrFail(err.def, err.message);
  }

  /** A failure before any response byte: try another Machine when safe, else answer with `def`. */
  private retryOrFail(def: ProxyErrorDef, detail: string, idempotentRetry = false): void {
    const x = this.x;
    const slot = x.slot!;
    const route = this.route!;
    this.tried.push(slot);
    if (x.holdsLoad) {
      x.holdsLoad = false;
      this.ctx.releaseSlot(slot, route);
    } else if (this.pinned === slot) {
      this.unpin();
    }
    if ((def.retryable || idempotentRetry) && this.canReplay() && this.tried.length < this.snap.limits.connectAttempts) {
      this.lastFail = def;
      this.lastFailDetail = detail;
      x.retries++;
      route.app.metrics.retries.inc();
      x.slot = null;
      this.state = S_ROUTE;
      this.pick();
      return;
    }
    x.slot = slot;
    this.respondError(def, detail, !this.reqDone);
  }

  private canReplay(): boolean {
    return !this.bodySent || this.retained !== null;
  }

  // ---- request out ----

  private send(up: Upstream): void {
    const head = this.head!;
    const x = this.x;
    this.up = up;
    up.owner = this;
    up.uses++;
    up.parser.begin(head.method === 'HEAD', head.upgrade !== null);
    this.resStarted = false;
    this.resKind = BODY_NONE;
    let extra = this.baseHeaders + 'fly-request-id: ' + x.id + '\r\n';
    if (head.host === null) extra += 'host: ' + x.host + '\r\n';
    if (this.prefs !== null && this.prefs.unavailable !== null) extra += 'fly-preferred-instance-unavailable: ' + this.prefs.unavailable + '\r\n';
    const s = up.socket;
    s.cork();
    // One latin1 string write: cheaper than building a Buffer first (bench/micro-http1-parse.ts).
    s.write(requestHeadString(head, this.clientIp, extra, true), 'latin1');
    const replay = this.bodySent;
    if (replay) {
      // Replaying the retained body after a failed attempt on a reused connection.
      for (const b of this.retained!) s.write(b);
    }
    this.setDeadline(D_RESPONSE, this.snap.limits.responseTimeoutMs);
    if (!this.reqDone) {
      if (!replay) {
        if (head.chunked) this.reqChunked.reset();
        else this.reqRemaining = head.contentLength;
        // Only small bodies are kept for a replay; see retryOrFail.
        this.retained = head.contentLength >= 0 && head.contentLength <= this.snap.limits.retryBufferBytes ? [] : null;
        this.retainedBytes = 0;
      }
      this.state = S_BODY;
      const p = this.pending;
      this.pending = null;
      if (p !== null) this.readBody(p, 0);
      if (this.state === S_BODY) this.socket.resume();
    } else {
      this.state = S_WAIT;
    }
    s.uncork();
  }

  private readBody(buf: Buffer, off: number): void {
    const up = this.up!;
    const head = this.head!;
    let n: number;
    if (head.chunked) {
      n = this.reqChunked.scan(buf, off, buf.length);
      if (n < 0) {
        this.abortUpstream();
        return this.respondError(E.BAD_CHUNK, '', true);
      }
      if (this.reqChunked.done) this.reqDone = true;
    } else {
      n = Math.min(this.reqRemaining, buf.length - off);
      this.reqRemaining -= n;
      if (this.reqRemaining === 0) this.reqDone = true;
    }
    const part = off === 0 && n === buf.length ? buf : buf.subarray(off, off + n);
    this.x.bytesIn += n;
    this.bodySent = true;
    if (this.retained !== null) {
      this.retainedBytes += n;
      if (this.retainedBytes > this.snap.limits.retryBufferBytes) this.retained = null;
      else this.retained.push(part);
    }
    const flushed = up.socket.write(part);
    if (this.reqDone) {
      this.state = S_WAIT;
      if (this.deadlineKind === D_BODY) this.setDeadline(D_RESPONSE, this.snap.limits.responseTimeoutMs);
      if (off + n < buf.length) this.stash(buf, off + n);
      else this.socket.pause();
    } else {
      this.setDeadline(D_BODY, this.snap.limits.idleTimeoutMs);
      if (!flushed) this.socket.pause();
    }
  }

  onUpstreamDrain(): void {
    if (this.state === S_BODY) this.socket.resume();
  }

  // ---- response in ----

  onUpstreamData(chunk: Buffer): void {
    let off = 0;
    const up = this.up!;
    if (!this.resStarted || this.resKind === BODY_NONE) {
      for (;;) {
        const n = up.parser.feed(chunk, off);
        if (n === 0) return;
        if (n < 0) return this.upstreamBroken(E.BAD_RESPONSE, up.parser.error?.reason ?? '');
        off += n;
        const rh = up.parser.head!;
        if (!this.resStarted) this.x.upstreamMs = performance.now() - this.x.startedAt;
        if (rh.interim) {
          // 100 Continue / 103 Early Hints: relay to HTTP/1.1 clients, then read the real head.
          if (this.head!.versionMinor === 1) this.socket.write(responseHeadString(rh, '', true), 'latin1');
          up.parser.begin(this.head!.method === 'HEAD', this.head!.upgrade !== null);
          continue;
        }
        if (rh.status === 101) return this.tunnel(rh, chunk, off);
        this.responseHead(rh);
        if (this.resKind === BODY_NONE) {
          if (off < chunk.length) up.reusable = false; // bytes after a body-less response
          return this.responseDone();
        }
        break;
      }
    }
    if (off < chunk.length) this.responseBody(chunk, off);
  }

  private responseHead(rh: ResponseHead): void {
    const x = this.x;
    const route = this.route!;
    this.resStarted = true;
    this.resKind = rh.bodyKind;
    x.status = rh.status;
    if (this.ctx.draining) this.keepAlive = false;
    this.deadlineKind = D_NONE;
    this.deadline = Infinity;
    if (!rh.keepAlive || rh.bodyKind === BODY_CLOSE) this.up!.reusable = false;
    // A request body we have not fully read leaves the connection unusable for a next request.
    if (!this.reqDone) this.keepAlive = false;
    if (this.head!.versionMinor === 0 && rh.bodyKind === BODY_CHUNKED) this.keepAlive = false;
    if (route.dropResponse.size > 1 || (route.dropResponse.size === 1 && !route.dropResponse.has('server'))) markDrops(rh, route.dropResponse);
    let extra = route.addResponse;
    if (!route.port.http.pristine) extra += 'via: 1.1 petrel\r\nfly-request-id: ' + x.id + '\r\n';
    // RFC 9112 §6.1: no Transfer-Encoding towards an HTTP/1.0 client; its body is de-chunked.
    const out = responseHeadString(rh, extra, this.keepAlive, route.port.http.pristine ? 0 : SERVER_MASK, this.head!.versionMinor === 0);
    x.bytesOut += out.length;
    if (rh.bodyKind === BODY_LENGTH) this.resRemaining = rh.contentLength;
    else if (rh.bodyKind === BODY_CHUNKED) this.up!.chunked.reset();
    else if (rh.bodyKind === BODY_CLOSE) this.keepAlive = false;
    this.socket.write(out, 'latin1');
  }

  private responseBody(buf: Buffer, off: number): void {
    const up = this.up!;
    let n: number;
    let done = false;
    if (this.resKind === BODY_LENGTH) {
      n = Math.min(this.resRemaining, buf.length - off);
      this.resRemaining -= n;
      done = this.resRemaining === 0;
    } else if (this.resKind === BODY_CHUNKED) {
      if (this.head!.versionMinor === 0) return this.responseBodyDechunked(buf, off);
      n = up.chunked.scan(buf, off, buf.length);
      if (n < 0) return this.upstreamBroken(E.BAD_RESPONSE, 'malformed chunked body');
      done = up.chunked.done;
    } else {
      n = buf.length - off; // BODY_CLOSE: everything until the upstream closes
    }
    if (done && off + n < buf.length) up.reusable = false; // extra bytes: out of sync
    this.x.bytesOut += n;
    const flushed = this.socket.write(off === 0 && n === buf.length ? buf : buf.subarray(off, off + n));
    if (done) return this.responseDone();
    if (!flushed) up.socket.pause();
  }

  /** HTTP/1.0 client, chunked response: forward only the chunk data; the close ends the body. */
  private responseBodyDechunked(buf: Buffer, off: number): void {
    const up = this.up!;
    const c = up.chunked;
    let flushed = true;
    while (off < buf.length && !c.done) {
      const n = c.decode(buf, off, buf.length);
      if (n < 0) return this.upstreamBroken(E.BAD_RESPONSE, 'malformed chunked body');
      if (c.dataStart >= 0) {
        this.x.bytesOut += c.dataEnd - c.dataStart;
        flushed = this.socket.write(buf.subarray(c.dataStart, c.dataEnd));
      }
      if (n === 0) break;
      off += n;
    }
    if (c.done) {
      if (off < buf.length) up.reusable = false;
      return this.responseDone();
    }
    if (!flushed) up.socket.pause();
  }

  private readonly onDrain = (): void => {
    const up = this.up;
    if (up !== null && this.state !== S_TUNNEL) up.socket.resume();
  };

  private responseDone(): void {
    const up = this.up!;
    const x = this.x;
    this.up = null;
    up.owner = null;
    up.socket.resume();
    if (up.reusable && this.reqDone && !this.ctx.draining) {
      if (!up.pool.put(up, this.snap.limits.upstreamMaxIdlePerMachine, performance.now())) up.socket.destroy();
    } else {
      up.socket.destroy();
    }
    finishExchange(x, this.ctx.metrics, this.ctx.log.access);
    this.nextRequest();
  }

  /** After a complete exchange: wait for the next request, or close. */
  private nextRequest(): void {
    this.head = null;
    this.retained = null;
    if (!this.keepAlive) {
      this.state = S_CLOSED;
      this.socket.end();
      return;
    }
    this.state = S_HEAD;
    this.parser.reset();
    // Draining, but the response already promised keep-alive: allow the short drain grace.
    if (this.ctx.draining) this.setDeadline(D_DRAIN, this.snap.limits.drainIdleTimeoutMs);
    else this.setDeadline(D_IDLE, this.route?.idleTimeoutMs ?? this.snap.limits.idleTimeoutMs);
    const p = this.pending;
    this.pending = null;
    if (p !== null) this.readHead(p, 0);
    if (this.state === S_HEAD) this.socket.resume();
  }

  onUpstreamEnd(): void {
    if (this.resKind === BODY_CLOSE && this.resStarted) {
      this.up!.reusable = false;
      return this.responseDone();
    }
    this.onUpstreamClose(null);
  }

  onUpstreamClose(err: NodeJS.ErrnoException | null): void {
    const up = this.up;
    if (up === null || this.state === S_CLOSED) return;
    if (this.resStarted) {
      if (this.resKind === BODY_CLOSE && err === null) return this.responseDone();
      return this.upstreamBroken(E.UPSTREAM_CLOSED, 'closed mid-response');
    }
    up.owner = null;
    this.up = null;
    const detail = err?.code ?? 'closed before responding';
    const def = err !== null ? E.UPSTREAM_RESET : E.UPSTREAM_CLOSED;
    // A reused keep-alive connection the app closed just as we sent: the classic idle race.
    // Nothing reached the app's handler, so a fresh connection may safely take the request.
    if (up.uses > 1 && this.canReplay() && this.x.retries < this.snap.limits.connectAttempts) {
      this.x.retries++;
      this.route!.app.metrics.retries.inc();
      this.state = S_ROUTE;
      return this.dispatch(this.x.slot!);
    }
    // A fresh connection dropped before any answer: the Machine is likely dying (a killed
    // process's listen socket still accepts for a moment). An idempotent request (RFC 9110
    // §9.2.2) may go to another Machine; anything else must not be sent twice.
    if (IDEMPOTENT.has(this.head!.method)) return this.retryOrFail(def, detail, true);
    this.respondError(def, detail, !this.reqDone);
  }

  /** The Machine broke the exchange: 502 if the client has no response yet, else cut it. */
  private upstreamBroken(def: ProxyErrorDef, detail: string): void {
    const up = this.up;
    if (up !== null) {
      up.owner = null;
      up.reusable = false;
      up.socket.destroy();
      this.up = null;
    }
    if (!this.resStarted) return this.respondError(def, detail, true);
    this.x.fail(def, detail);
    this.close();
  }

  private abortUpstream(): void {
    const up = this.up;
    if (up === null) return;
    up.owner = null;
    up.reusable = false;
    up.socket.destroy();
    this.up = null;
  }

  // ---- upgrade ----

  private tunnel(rh: ResponseHead, chunk: Buffer, off: number): void {
    const up = this.up!;
    const x = this.x;
    const route = this.route!;
    x.status = 101;
    this.state = S_TUNNEL;
    this.deadlineKind = D_NONE;
    this.deadline = Infinity;
    unwatch(this);
    up.reusable = false;
    up.owner = null;
    // The codec keeps the Machine's Upgrade field on a 101 and adds `connection: upgrade`.
    const extra = route.port.http.pristine ? '' : 'via: 1.1 petrel\r\nfly-request-id: ' + x.id + '\r\n';
    this.socket.write(responseHeadString(rh, extra, true, 0), 'latin1');
    const machine = x.slot?.machine;
    // Frame-aware in the Machine→client direction, so a stopping Machine's clients get a Close;
    // it must see every byte after the 101, including those that came with it.
    const ws = this.head!.upgrade === 'websocket' && machine !== undefined ? new WsSplice(up.socket, this.socket) : null;
    if (off < chunk.length) {
      if (ws !== null) ws.fromMachine(chunk.subarray(off));
      else this.socket.write(chunk.subarray(off));
    }
    const p = this.pending;
    this.pending = null;
    if (p !== null) up.socket.write(p);
    const client = this.socket;
    const us = up.socket;
    // From here the tunnel is plain byte splicing; the Upstream object no longer handles events.
    us.removeAllListeners('data');
    us.removeAllListeners('drain');
    us.removeAllListeners('end');
    client.removeListener('data', this.onData);
    client.removeListener('drain', this.onDrain);
    us.on('error', this.onTunnelClose);
    us.on('close', this.onTunnelClose);
    // Bounded like every other wait: a tunnel with no bytes either way for this long is closed.
    us.setTimeout(this.snap.limits.tunnelIdleTimeoutMs, this.onTunnelClose);
    client.setTimeout(this.snap.limits.tunnelIdleTimeoutMs, this.onTunnelClose);
    if (ws !== null) {
      this.ws = ws;
      this.wsMachine = machine!;
      machine!.tunnels.add(ws);
      ws.start();
    } else {
      us.pipe(client);
      client.pipe(us);
    }
    client.resume();
    us.resume();
  }

  private readonly onTunnelClose = (): void => {
    this.close();
  };

  // ---- answers made by the proxy ----

  private redirectHttps(host: string, head: RequestHead): void {
    const loc = httpsLocation(this.ctx.boundPorts.get(443), host, head.path);
    this.answer(301, 'Moved Permanently', `location: ${loc}\r\n`, `Moved to ${loc}\n`);
  }

  /** ACME HTTP-01 (RFC 8555 §8.3): the key authorization, before any app routing or force_https. */
  private answerChallenge(keyAuthorization: string): void {
    this.answer(200, 'OK', '', keyAuthorization);
  }

  /** A small response petrel makes itself (not an error); the connection stays usable. */
  private answer(status: number, text: string, headers: string, bodyText: string): void {
    const x = this.x;
    x.status = status;
    const body = Buffer.from(bodyText);
    const out = Buffer.from(
      `HTTP/1.1 ${status} ${text}\r\n${headers}content-type: text/plain\r\ncontent-length: ${body.length}\r\nserver: petrel\r\nfly-request-id: ${x.id}\r\n` +
        (this.reqDone && this.keepAlive ? '' : 'connection: close\r\n') +
        '\r\n',
      'latin1',
    );
    if (!this.reqDone) this.keepAlive = false;
    x.bytesOut = out.length + body.length;
    this.socket.write(out);
    this.socket.write(body);
    finishExchange(x, this.ctx.metrics, this.ctx.log.access);
    this.nextRequest();
  }

  /** Sends a proxy-made error response (code + reason in the body) and finishes the exchange. */
  respondError(def: ProxyErrorDef, detail: string, close: boolean): void {
    const x = this.x;
    x.fail(def, detail);
    if (this.up !== null) this.abortUpstream();
    if (this.state === S_CLOSED || this.socket.destroyed) {
      finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      return;
    }
    if (!this.reqDone) close = true;
    if (close) this.keepAlive = false;
    x.status = def.status;
    const body = errorBody(def);
    const head = Buffer.from(
      `HTTP/1.1 ${def.status} ${STATUS_TEXT[def.status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\nserver: petrel\r\n` +
        (x.id ? `fly-request-id: ${x.id}\r\n` : '') +
        `x-petrel-error: ${def.code}\r\n` +
        // A Machine may be awake soon: tell well-behaved clients when to come back.
        (def === E.WAKE_TIMEOUT ? 'retry-after: 1\r\n' : '') +
        (this.keepAlive ? '' : 'connection: close\r\n') +
        '\r\n',
      'latin1',
    );
    x.bytesOut += head.length + body.length;
    this.socket.write(head);
    this.socket.write(body);
    finishExchange(x, this.ctx.metrics, this.ctx.log.access);
    if (this.keepAlive) {
      this.nextRequest();
    } else {
      this.state = S_CLOSED;
      this.socket.end();
      // Do not wait forever for a misbehaving client to close its side.
      this.socket.setTimeout(2000, this.onLingerTimeout);
    }
  }

  private readonly onLingerTimeout = (): void => {
    this.socket.destroy();
  };

  // ---- deadlines ----

  private setDeadline(kind: number, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = performance.now() + ms;
  }

  onDeadline(_now: number): void {
    const kind = this.deadlineKind;
    this.deadlineKind = D_NONE;
    this.deadline = Infinity;
    switch (kind) {
      case D_IDLE:
      case D_DRAIN:
        if (this.parser.buffered === 0) return this.close();
        return this.respondHeadTimeout();
      case D_HEAD:
        return this.respondHeadTimeout();
      case D_RESPONSE:
        if (!this.resStarted) return this.upstreamTimeout();
        return;
      case D_BODY:
        this.abortUpstream();
        return this.respondError(E.BODY_TIMEOUT, '', true);
    }
  }

  private respondHeadTimeout(): void {
    // Nothing of a request arrived: close quietly, as for an idle keep-alive connection.
    if (this.parser.buffered === 0) return this.close();
    this.x.reset(this.snap, 'http/1.1', this.clientIp, performance.now());
    this.respondError(E.HEADER_TIMEOUT, '', true);
  }

  private upstreamTimeout(): void {
    this.abortUpstream();
    this.respondError(E.RESPONSE_TIMEOUT, `${this.snap.limits.responseTimeoutMs} ms`, true);
  }

  // ---- teardown ----

  private readonly onEnd = (): void => {
    // Client half-closed. If it is between requests, we are done; mid-request, the response
    // still goes out and the connection closes after it.
    // Before anything went upstream there is nobody left to answer: give up the request.
    // Likewise mid-body: the body can never complete, so holding the Machine would be waste.
    if (this.state === S_HEAD || this.state === S_ROUTE || this.state === S_BODY) return this.close();
    if (this.state !== S_TUNNEL) this.keepAlive = false;
  };

  private readonly onError = (_err: Error): void => {
    this.close();
  };

  private readonly onClose = (): void => {
    this.close();
  };

  /** Tears the connection down once: aborts upstream work, finishes the exchange, gives back capacity. */
  close(): void {
    if (this.state !== S_CLOSED) {
      const x = this.x;
      if (this.state !== S_HEAD && !x.finished) {
        if (this.state === S_TUNNEL) {
          x.bytesIn = this.socket.bytesRead;
          x.bytesOut = this.socket.bytesWritten;
        } else {
          x.fail(E.CLIENT_ABORTED, '');
          if (x.status === 0) x.status = 499;
        }
        finishExchange(x, this.ctx.metrics, this.ctx.log.access);
      }
      this.state = S_CLOSED;
    }
    if (this.up !== null) this.abortUpstream();
    if (this.waiter !== null) {
      cancelWait(this.waiter);
      this.waiter = null;
    }
    this.unpin();
    if (this.ws !== null) {
      this.wsMachine!.tunnels.delete(this.ws);
      this.ws = null;
      this.wsMachine = null;
    }
    if (this.countedApp !== null) {
      this.countedApp.live.connections--;
      this.countedApp.metrics.connections.dec();
      this.countedApp = null;
    }
    unwatch(this);
    this.ctx.h1Conns.delete(this);
    this.socket.destroy();
  }
}

/** Flags response fields named by `Name = false` / set rules so the serializer skips them. */
function markDrops(h: ResponseHead, names: ReadonlySet<string>): void {
  const o = h.offs;
  for (let i = 0; i < h.count; i++) {
    if ((o[i * SLOTS + 4] & DROP) !== 0) continue;
    if (names.has(h.name(i).toLowerCase())) {
      o[i * SLOTS + 4] |= DROP;
      h.dropCount++;
    }
  }
}

/** Entry for plaintext listeners and TLS connections that negotiated HTTP/1.1 (or nothing). */
export function serveHttp1(ctx: ProxyContext, socket: net.Socket, port: number, tls: boolean, sni: string | null): void {
  new Downstream(ctx, socket, ctx.holder.current, port, tls, sni);
}

