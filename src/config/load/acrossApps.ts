// Across apps: names, Machine ids, hostnames, certificate names, public ports, bind addresses.
// Each app file is valid on its own by now; these are the rules that only the whole set of apps
// can break.

import { ConfigError } from '../types.ts';
import type { AppConfig, Handler, NodeConfig } from '../types.ts';
import { appOrigins } from './app.ts';
import { BindClaims } from './bindClaims.ts';

interface Claim {
  readonly app: AppConfig;
  readonly path: string;
}

/** How a listener must read the first bytes of a connection on a port. */
type PortLayer = 'tls' | 'pg_tls' | 'plain';

interface PortUse extends Claim {
  readonly layer: PortLayer;
  /** No TLS and no HTTP: nothing in the stream names an app, so the port is the route. */
  readonly raw: boolean;
  readonly handlers: readonly Handler[];
}

export function checkAcrossApps(node: NodeConfig, apps: readonly AppConfig[]): void {
  const names = new Map<string, Claim>();
  const machineIds = new Map<string, Claim>();
  const hostnames = new Map<string, Claim>();
  const ports = new Map<number, PortUse>();
  const binds = new BindClaims();
  const nodeLine = (key: string): number => node.sources.get(key)?.line ?? 1;
  binds.claim(node.admin, `the admin listener (${node.file}:${nodeLine('admin.address')})`);
  // Every [[listen]] entry counts, used by an app or not: a port binding another port's socket is
  // a mistake either way. Node loading already made sure they do not clash with each other.
  node.listen.forEach((l, i) => {
    binds.claim({ host: l.host, port: l.bindPort }, `public port ${l.port} (${node.file}:${nodeLine(`listen[${i}]`)})`);
  });
  const listened = new Set(node.listen.map((l) => l.port));

  for (const app of apps) {
    const origin = appOrigins.get(app);
    const fail = (keyPathText: string, reason: string): never => failIn(app, keyPathText, reason);

    const sameName = names.get(app.name);
    if (sameName !== undefined) fail('app', `app ${JSON.stringify(app.name)} is already defined by ${sameName.app.file}`);
    names.set(app.name, { app, path: 'app' });

    app.machines.forEach((machine, i) => {
      const claim = { app, path: `machines[${i}].id` };
      const first = machineIds.get(machine.id);
      if (first !== undefined) fail(claim.path, `Machine id ${JSON.stringify(machine.id)} is already used by ${where(first)}`);
      machineIds.set(machine.id, claim);
    });

    for (const hostname of app.hostnames) {
      const claim = { app, path: origin?.hostnamePaths.get(hostname) ?? 'hostnames' };
      const first = hostnames.get(hostname);
      if (first !== undefined) fail(claim.path, `hostname ${JSON.stringify(hostname)} is already claimed by ${where(first)}`);
      hostnames.set(hostname, claim);
    }

    for (const service of app.services) {
      for (const port of service.ports) {
        const use: PortUse = {
          app,
          path: origin?.portPaths.get(port) ?? `services[${service.index}].ports`,
          layer: port.handlers[0] === 'tls' || port.handlers[0] === 'pg_tls' ? port.handlers[0] : 'plain',
          raw: !port.handlers.some((h) => h === 'tls' || h === 'pg_tls' || h === 'http'),
          handlers: port.handlers,
        };
        const first = ports.get(port.port);
        if (first === undefined) {
          ports.set(port.port, use);
          if (!listened.has(port.port)) {
            const bind = { host: node.bindHost, port: port.port };
            const clash = binds.claim(bind, `public port ${port.port} (${app.file}:${port.source.line})`);
            if (clash !== undefined) {
              fail(use.path, `port ${port.port} would bind ${bind.host}:${bind.port}, which ${clash} already binds`);
            }
          }
          continue;
        }
        if (first.raw || use.raw) {
          const rawUse = first.raw ? first : use;
          fail(
            use.path,
            `port ${port.port} is also used by ${where(first)}, but with handlers ${JSON.stringify(rawUse.handlers)} ` +
              'it carries no TLS server name or HTTP Host to route by, so only one app can use it',
          );
        }
        if (first.layer !== use.layer) {
          fail(
            use.path,
            `port ${port.port} starts with ${describeLayer(use.layer)} here ` +
              `but with ${describeLayer(first.layer)} in ${where(first)}; ` +
              'every app on a port must start the same way (the listener reads the first bytes before it knows the app)',
          );
        }
      }
    }
  }

  checkCertificates(apps, hostnames);
}

/**
 * `[[certificates]]` names, once every app's hostnames are known: one app per name, as for
 * hostnames (two apps ordering the same name would race for one certificate), and never a name
 * another app has as an exact hostname, because routing prefers that app over a wildcard: the
 * certificate would be for a name this app never answers.
 */
function checkCertificates(apps: readonly AppConfig[], hostnames: ReadonlyMap<string, Claim>): void {
  const certificates = new Map<string, Claim>();
  for (const app of apps) {
    app.certificates.forEach((certificate, i) => {
      const claim = { app, path: `certificates[${i}].hostname` };
      const name = JSON.stringify(certificate.hostname);
      const first = certificates.get(certificate.hostname);
      if (first !== undefined) failIn(app, claim.path, `certificate hostname ${name} is already listed by ${where(first)}`);
      const owner = hostnames.get(certificate.hostname);
      if (owner !== undefined && owner.app !== app) {
        failIn(app, claim.path, `${name} is a hostname of ${where(owner)}, which gets that name's traffic, so this app never answers it`);
      }
      certificates.set(certificate.hostname, claim);
    });
  }
}

function failIn(app: AppConfig, keyPathText: string, reason: string): never {
  throw new ConfigError(app.file, keyPathText, appOrigins.get(app)?.lines.get(keyPathText) ?? 1, reason);
}

function where(claim: Claim): string {
  const line = appOrigins.get(claim.app)?.lines.get(claim.path) ?? 1;
  return `app ${JSON.stringify(claim.app.name)} (${claim.app.file}:${line})`;
}

function describeLayer(layer: PortLayer): string {
  return layer === 'plain' ? 'plaintext' : `"${layer}"`;
}
