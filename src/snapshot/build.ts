// Builds a whole Snapshot from validated config, the Machine registry, live state and the cert
// table. Everything expensive (maps, prepared header strings, metric children) happens here,
// once per reload, so the data plane only looks things up.

import type { Config, TlsVersion } from '../config/types.ts';
import type { MachineRuntime, MachineSlot } from '../machines/runtime.ts';
import type { Metrics } from '../observe/metrics.ts';
import type { CertTable } from '../tls/certTable.ts';
import type { LiveRegistry } from './live.ts';
import { AppRoute, PortRoute, ServiceRoute, Snapshot } from './snapshot.ts';

export interface MachineLookup {
  get(id: string): MachineRuntime | undefined;
}

export interface BuildInputs {
  readonly version: number;
  readonly config: Config;
  readonly machines: MachineLookup;
  readonly metrics: Metrics;
  readonly live: LiveRegistry;
  readonly certs: CertTable;
}

export function buildSnapshot(inp: BuildInputs): Snapshot {
  const { config, machines, metrics, live } = inp;
  const node = config.node;
  const apps = new Map<string, AppRoute>();
  const exact = new Map<string, AppRoute>();
  const wildcard = new Map<string, AppRoute>();
  // public port -> services using it (to decide listener behaviour)
  const portUsers = new Map<number, ServiceRoute[]>();

  for (const app of config.apps.values()) {
    const route = new AppRoute(app, metrics.forApp(app.name), live.app(app.name));
    apps.set(app.name, route);
    for (const h of app.hostnames) {
      if (h.startsWith('*.')) wildcard.set(h.slice(2), route);
      else exact.set(h, route);
    }
    for (const svc of app.services) {
      const slots: MachineSlot[] = [];
      for (const mc of app.machines) {
        const m = machines.get(mc.id);
        if (m === undefined) continue;
        slots.push(m.slot(svc.internalPort));
      }
      Object.freeze(slots);
      const svcLive = live.service(app.name, svc.internalPort);
      for (const p of svc.ports) {
        const sr = new ServiceRoute(route, svc, p, slots, svcLive, node.limits);
        route.byPort.set(p.port, sr);
        let users = portUsers.get(p.port);
        if (users === undefined) portUsers.set(p.port, (users = []));
        users.push(sr);
      }
    }
    Object.freeze(route.byPort);
  }

  const ports = new Map<number, PortRoute>();
  for (const [port, users] of portUsers) {
    const listen = node.listen.find((l) => l.port === port);
    const bindHost = listen?.host ?? node.bindHost;
    const bindPort = listen?.bindPort ?? port;
    const tlsFirst = users.some((u) => u.tls);
    // The loader guarantees a raw plaintext port has exactly one user.
    const raw = !tlsFirst && !users[0]!.http ? users[0]! : null;
    const defaultSelfSigned = users.some((u) => u.port.tls.defaultSelfSigned);
    const versions = new Set<TlsVersion>();
    for (const u of users) if (u.tls) for (const v of u.port.tls.versions) versions.add(v);
    const pgTls = users[0]!.port.handlers[0] === 'pg_tls';
    const only = users.length === 1 ? users[0]! : null;
    ports.set(port, new PortRoute(port, bindHost, bindPort, tlsFirst, raw, defaultSelfSigned, Object.freeze([...versions].sort()), pgTls, only, users.some((u) => u.http)));
  }
  metrics.retainApps(new Set(apps.keys()));
  return new Snapshot(inp.version, node, apps, exact, wildcard, ports, inp.certs);
}
