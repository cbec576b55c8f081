// Raw TCP forwarding: handler list without `http` (pass-through, optionally after TLS
// termination, optionally with a PROXY protocol header). Load is counted per connection. Bytes
// flow unchanged both ways with backpressure (pipe) and half-close preserved.

import type net from 'node:net';
import type { MachineSlot } from '../machines/runtime.ts';
import type { ServiceRoute, Snapshot } from '../snapshot/snapshot.ts';
import { QUEUE, tryAcquire, waitForCapacity, wakeFor } from './capacity.ts';
import { ConnectError, connectTo } from './connect.ts';
import { E, type ProxyErrorDef } from './errors.ts';
import { Exchange, finishExchange } from './exchange.ts';
import { proxyHeaderV1, proxyHeaderV2 } from './proxyProto.ts';
import type { ProxyContext } from './context.ts';
import { requestId } from './requestId.ts';

/**
 * Takes capacity on a Machine of `route` (queueing at the hard limit) and connects to it,
 * retrying refused or timed-out connects on other Machines. Sets x.slot / x.holdsLoad.
 */
export async function acquireAndConnect(ctx: ProxyContext, x: Exchange, route: ServiceRoute, snap: Snapshot): Promise<net.Socket> {
  const limits = snap.limits;
  const tried: MachineSlot[] = [];
  let lastFail: ConnectError | null = null;
  for (let attempt = 0; ; attempt++) {
    let got: MachineSlot | ProxyErrorDef | typeof QUEUE = tryAcquire(route, tried.length ? tried : null);
    // Autostart (spec section 5): wake sleeping Machines; wait for them up to wake_timeout.
    const waking = got === QUEUE || (got === E.NO_MACHINE && route.service.autoStartMachines) ? wakeFor(route) : false;
    if (got === QUEUE || waking) {
      const t0 = performance.now();
      got = waking
        ? await waitForCapacity(route, tried, limits, t0, limits.wakeTimeoutMs, E.WAKE_TIMEOUT)
        : await waitForCapacity(route, tried, limits, t0);
      const waited = performance.now() - t0;
      if (waking) x.wakeMs += waited;
      else {
        x.queueMs += waited;
        route.app.metrics.queueWait.observe(waited / 1000);
      }
    }
    // After failed attempts, "no other Machine" is best explained by the last failure.
    if (!isSlot(got)) throw lastFail !== null && got === E.NO_MACHINE ? lastFail : new ConnectError(got, '');
    x.slot = got;
    x.holdsLoad = true;
    const t1 = performance.now();
    try {
      const s = await connectTo(got.machine.host, got.port, limits.connectTimeoutMs, true);
      x.connectMs += performance.now() - t1;
      return s;
    } catch (err) {
      x.connectMs += performance.now() - t1;
      const ce = err as ConnectError;
      // Give the capacity back before trying elsewhere; finish() must not release it twice.
      x.holdsLoad = false;
      ctx.releaseSlot(got, route);
      tried.push(got);
      if (!ce.def.retryable || attempt + 1 >= limits.connectAttempts) throw ce;
      lastFail = ce;
      x.retries++;
      route.app.metrics.retries.inc();
      ctx.log.proxy.debug({ machine: got.machine.id, err: ce.message }, 'connect failed, retrying on another Machine');
    }
  }
}

function isSlot(v: MachineSlot | ProxyErrorDef): v is MachineSlot {
  return (v as MachineSlot).machine !== undefined;
}

/** Forwards one client connection (already routed to `route`) as raw bytes. */
export function forwardTcp(ctx: ProxyContext, client: net.Socket, route: ServiceRoute, snap: Snapshot, clientIp: string, clientPort: number): void {
  const x = new Exchange();
  x.reset(snap, 'tcp', clientIp, performance.now());
  x.app = route.app;
  x.route = route;
  x.id = requestId(snap.node.region);
  client.pause();
  client.on('error', noop);
  const app = route.app;
  if (app.live.connections >= snap.limits.maxConnectionsPerApp) {
    x.fail(E.APP_CONN_LIMIT, `${snap.limits.maxConnectionsPerApp} connections`);
    client.destroy();
    finishExchange(x, ctx.metrics, ctx.log.access);
    return;
  }
  app.live.connections++;
  app.metrics.connections.inc();
  client.once('close', () => {
    app.live.connections--;
    app.metrics.connections.dec();
  });
  acquireAndConnect(ctx, x, route, snap).then(
    (up) => splice(ctx, x, client, up, route, clientIp, clientPort),
    (err: unknown) => {
      const def = err instanceof ConnectError ? err.def : E.INTERNAL;
      x.fail(def, err instanceof Error ? err.message : String(err));
      client.destroy();
      finishExchange(x, ctx.metrics, ctx.log.access);
    },
  );
}

function splice(ctx: ProxyContext, x: Exchange, client: net.Socket, up: net.Socket, route: ServiceRoute, clientIp: string, clientPort: number): void {
  x.upstreamMs = performance.now() - x.startedAt;
  if (route.proxyProto !== null) {
    const dstIp = client.localAddress ?? '0.0.0.0';
    const dstPort = client.localPort ?? route.port.port;
    const hdr = route.proxyProto === 'v2' ? proxyHeaderV2(clientIp, clientPort, dstIp, dstPort) : proxyHeaderV1(clientIp, clientPort, dstIp, dstPort);
    up.write(hdr);
  }
  let done = false;
  const end = (code: ProxyErrorDef | null, detail: string) => {
    if (done) return;
    done = true;
    if (code !== null) x.fail(code, detail);
    x.bytesIn = client.bytesRead;
    x.bytesOut = client.bytesWritten;
    client.destroy();
    up.destroy();
    finishExchange(x, ctx.metrics, ctx.log.access);
  };
  up.on('error', (e: NodeJS.ErrnoException) => end(E.UPSTREAM_RESET, e.code ?? e.message));
  client.on('error', (e: NodeJS.ErrnoException) => end(E.CLIENT_ABORTED, e.code ?? e.message));
  // pipe() carries half-closes across (both sockets allow half-open); 'close' on either side
  // means that side is done in both directions, so the other one can go too.
  const onClose = () => end(null, '');
  up.on('close', onClose);
  client.on('close', onClose);
  // No bytes either way for this long: closed (socket timeouts reset on activity in each direction).
  const idle = x.snapshot!.limits.tunnelIdleTimeoutMs;
  up.setTimeout(idle, onClose);
  client.setTimeout(idle, onClose);
  client.pipe(up);
  up.pipe(client);
  client.resume();
}

function noop(): void {}
